#!/usr/bin/env bash
# Builds the images of the Docker sandbox backend:
#   dl-grader/base:bookworm     a debootstrap root filesystem imported with `docker import` (skipped with --base-image)
#   dl-grader/sandbox:numpy     runner + numpy          (docker/sandbox.Dockerfile)
#   dl-grader/sandbox:torch     runner + numpy + torch  (docker/sandbox.Dockerfile)
#   dl-grader/service:latest    the grader service      (Dockerfile; only with --service)
#   dl-grader/redis:7           the cluster's broker    (docker/redis.Dockerfile; only with --cluster)
#   dl-grader/postgres:15       the cluster's database  (docker/postgres.Dockerfile; only with --cluster)
#
# Usage: scripts/build-images.sh [--base-image IMAGE] [--service] [--cluster] [--only-cluster]
#   (docker-compose.cluster.yml needs --service --cluster; --only-cluster builds the base, Redis and
#   PostgreSQL images and leaves the sandbox and service images alone)
#
# No build has network access (they all run with --network none). Python packages are wheels prepared
# here on the host under .build/wheels/, pinned to the versions installed in .venv. The Redis and PostgreSQL
# images install Debian packages (.deb files) fetched beforehand under .build/debs/ by a throwaway container
# of the base image, whose own apt resolves them (DEBIAN_MIRROR, default deb.debian.org, and its security
# archive DEBIAN_SECURITY_MIRROR); that fetch is the only step here that uses a network, and it is skipped
# while .build/debs/ holds the complete set for the current base image, mirrors and package list. Each image
# is built from a minimal context under .build/ctx/ and labelled dl-grader.build=<sha256 of its inputs>; an
# image that already carries the label of the current inputs is reused, not rebuilt (for the two Debian
# ones: remove .build/debs/ to fetch and build them with Debian's latest updates).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BASE_TAG=dl-grader/base:bookworm
ROOTFS=${DL_GRADER_ROOTFS:-/var/cache/dl-grader/rootfs}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBOOTSTRAP_ARGS=(--variant=minbase --include=python3,python3-venv,ca-certificates bookworm)
TORCH_VERSION=2.13.0  # exact: a looser spec pulls the CUDA build
BUILD=$ROOT/.build
PY=$ROOT/.venv/bin/python

base_image=""
with_service=0
with_cluster=0
only_cluster=0
while [ $# -gt 0 ]; do
  case "$1" in
    --base-image) [ $# -ge 2 ] || { echo "build-images: --base-image needs an image name" >&2; exit 2; }
                  base_image=$2; shift 2 ;;
    --base-image=*) base_image=${1#*=}; shift ;;
    --service) with_service=1; shift ;;
    --cluster) with_cluster=1; shift ;;
    --only-cluster) with_cluster=1; only_cluster=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images: unknown argument: $1 (usage: scripts/build-images.sh [--base-image IMAGE] [--service] [--cluster] [--only-cluster])" >&2
       exit 2 ;;
  esac
done

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

command -v docker >/dev/null 2>&1 || die "no docker command; run scripts/setup-docker.sh (as root)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed); run scripts/setup-docker.sh (as root)"
[ -x "$PY" ] && "$PY" -c 'import numpy, grader.isolation.images' >/dev/null 2>&1 \
  || die ".venv is missing or incomplete; run scripts/setup.sh"

t_all=$(now)
summary=()

sha_stdin() { sha256sum | cut -d' ' -f1; }
# sha256 over a folder: every file's path and content, except wheels, which count by name and size
# (a wheel's file name fixes its version; reading 200 MB of torch each run would only cost time).
tree_hash() {
  (cd "$1" && {
    find . -type f ! -name '*.whl' ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 -r sha256sum
    find . -type f -name '*.whl' -printf '%p %s\n' | sort
  }) | sha_stdin
}
image_label() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect --format '{{.Id}}' "$1"; }

# --- wheels -------------------------------------------------------------------------------------
# prepare_wheels NAME SPEC-FILE [extra pip args...]: .build/wheels/NAME holds the wheels for the
# requirements in SPEC-FILE (copied there as requirements.txt). Skipped when SPEC-FILE, the
# constraints and the extra arguments are unchanged.
constraints=$BUILD/constraints.txt
write_constraints() {
  mkdir -p "$BUILD"
  # The host venv's versions, so images run what the tests ran (the editable project itself left out).
  "$PY" -m pip freeze --all --disable-pip-version-check --exclude-editable 2>/dev/null \
    | grep -v -i -E '^(-e |#|dl-grader|dl_grader)' >"$constraints.new"
  mv "$constraints.new" "$constraints"
}
prepare_wheels() {
  local name=$1 spec=$2; shift 2
  local dir=$BUILD/wheels/$name stamp
  stamp=$( { cat "$spec" "$constraints"; printf '%s\n' "$@"; } | sha_stdin)
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    log "wheels $name: reused ($(find "$dir" -name '*.whl' | wc -l) wheels)"
    return
  fi
  local t0; t0=$(now)
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  "$PY" -m pip download --disable-pip-version-check -q --only-binary=:all: -d "$dir.tmp" \
      -c "$constraints" -r "$spec" "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2) \
    || die "pip download for $name failed (see above); the wheels come from PyPI and /opt/wheels"
  cp "$spec" "$dir.tmp/requirements.txt"
  echo "$stamp" >"$dir.tmp/.stamp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "wheels $name: downloaded $(find "$dir" -name '*.whl' | wc -l) wheels in $(since "$t0")"
}

# --- base image ---------------------------------------------------------------------------------
# Left out of the image: kernel file systems, caches and logs of the debootstrap run.
IMPORT_EXCLUDES=('./proc/*' './sys/*' './dev/*' './run/*' './tmp/*' './var/cache/apt/*' './var/lib/apt/lists/*'
                 './var/log/*')
IMPORT_CHANGES=('ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8'
                'CMD ["python3"]')
build_base() {
  local t0; t0=$(now)
  if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    [ "$(id -u)" -eq 0 ] || die "$ROOTFS is missing and creating it needs root (debootstrap); run scripts/setup-docker.sh as root"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed; run scripts/setup-docker.sh (as root)"
    log "creating $ROOTFS with debootstrap (a few minutes; log: $BUILD/debootstrap.log)"
    rm -rf "$ROOTFS.tmp" && mkdir -p "$(dirname "$ROOTFS")" "$BUILD"
    debootstrap "${DEBOOTSTRAP_ARGS[@]}" "$ROOTFS.tmp" "$DEBIAN_MIRROR" >"$BUILD/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $BUILD/debootstrap.log"
    rm -rf "$ROOTFS" && mv "$ROOTFS.tmp" "$ROOTFS"  # (a folder there without python3 is a broken run)
  fi
  # The root filesystem counts by what is installed in it (dpkg's database) and how it was made.
  local key
  key=$( { echo "${DEBOOTSTRAP_ARGS[*]}"; printf '%s\n' "${IMPORT_EXCLUDES[@]}" "${IMPORT_CHANGES[@]}"
           sha256sum <"$ROOTFS/var/lib/dpkg/status"; } | sha_stdin)
  if [ "$(image_label "$BASE_TAG" dl-grader.build)" = "$key" ]; then
    summary+=("$BASE_TAG: reused")
    log "$BASE_TAG: reused (inputs unchanged)"
    return
  fi
  log "$BASE_TAG: importing $ROOTFS"
  local args=() x
  for x in "${IMPORT_EXCLUDES[@]}"; do args+=(--exclude="$x"); done
  local changes=(--change "LABEL dl-grader.build=$key")
  for x in "${IMPORT_CHANGES[@]}"; do changes+=(--change "$x"); done
  tar -C "$ROOTFS" --numeric-owner -c "${args[@]}" . \
    | docker import "${changes[@]}" - "$BASE_TAG" >/dev/null \
    || die "docker import of $ROOTFS failed"
  summary+=("$BASE_TAG: built in $(since "$t0")")
  log "$BASE_TAG: imported in $(since "$t0")"
}

# --- docker build with a content label ------------------------------------------------------------
# build_image TAG CONTEXT DOCKERFILE [--build-arg K=V ...]: builds unless TAG already carries the
# dl-grader.build label of these inputs (Dockerfile, context files, base image id, build args).
# The build runs with --network none unless BUILD_NETWORK names another network.
build_image() {
  local tag=$1 ctx=$2 dockerfile=$3; shift 3
  local t0 key; t0=$(now)
  key=$( { tree_hash "$ctx"; sha256sum <"$dockerfile"; echo "base $base_id"; printf '%s\n' "$@"; } | sha_stdin)
  if [ "$(image_label "$tag" dl-grader.build)" = "$key" ]; then
    summary+=("$tag: reused")
    log "$tag: reused (inputs unchanged)"
    return
  fi
  log "$tag: building (context $(du -sh "$ctx" | cut -f1))"
  local old_id; old_id=$(image_id "$tag" 2>/dev/null || true)
  local out=$BUILD/log/${tag//[\/:]/_}.log
  mkdir -p "$BUILD/log"
  if ! docker build --network "${BUILD_NETWORK:-none}" --pull=false --force-rm -f "$dockerfile" -t "$tag" \
         --label "dl-grader.build=$key" --build-arg "BASE_IMAGE=$base_ref" "$@" "$ctx" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    die "building $tag failed; full log: $out"
  fi
  # The build stage's image (wheels inside) is left untagged by the builder: nothing needs it later.
  docker image prune -f --filter label=dl-grader.stage=build >/dev/null 2>&1 || true
  # The image this one replaces goes too, unless a container still uses it.
  if [ -n "$old_id" ] && [ "$old_id" != "$(image_id "$tag")" ]; then docker rmi "$old_id" >/dev/null 2>&1 || true; fi
  summary+=("$tag: built in $(since "$t0")")
  log "$tag: built in $(since "$t0") (log: $out)"
}

# --- Debian packages ----------------------------------------------------------------------------
# prepare_debs NAME PACKAGE...: .build/debs/NAME holds the .deb files that installing PACKAGE... on the
# base image takes: the packages and every dependency the base lacks (or holds at an older version), as
# the base's own apt resolves them against bookworm, bookworm-updates and bookworm-security. A throwaway
# container of the base image (default bridge network) runs `apt-get install --download-only`; apt checks
# each file against the archive's signed index. Skipped when the folder is complete for these packages,
# this base image and these mirrors: .stamp names them, MANIFEST lists each file's sha256 and size.
DEBS_FETCH_IMAGE_OPTS=(--rm --pull=never --network "${DEBS_NETWORK:-bridge}" --user 0 --entrypoint /bin/sh)
debs_complete() {
  local dir=$1 stamp=$2
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] && [ -s "$dir/MANIFEST" ] || return 1
  # Every listed file present with its size and no other file,
  local sum size name
  while read -r sum size name; do
    [ "$(stat -c %s "$dir/$name" 2>/dev/null)" = "$size" ] || return 1
  done <"$dir/MANIFEST"
  [ "$(find "$dir" -maxdepth 1 -name '*.deb' | wc -l)" = "$(wc -l <"$dir/MANIFEST")" ] || return 1
  # and each file's content as fetched (the offline install has no archive signature to check against)
  awk '{print $1 "  " $3}' "$dir/MANIFEST" | (cd "$dir" && sha256sum --check --quiet --status)
}
# What the throwaway container runs: the sources the images always used (and no others, whatever the base
# image lists), an index update that fails when any source fails (a missing security index would otherwise
# resolve older packages and cache them as complete), then only the download. Part of the cache's stamp.
DEBS_FETCH_SCRIPT='
  set -eu
  printf "deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n" \
      "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" >/etc/apt/sources.list
  apt-get -o Dir::Etc::SourceParts=/dev/null update -q --error-on=any
  rm -f /var/cache/apt/archives/*.deb
  DEBIAN_FRONTEND=noninteractive apt-get -o Dir::Etc::SourceParts=/dev/null install -y -q \
      --no-install-recommends --download-only "$@"
  cp /var/cache/apt/archives/*.deb /debs/
  chown -R "$OWNER" /debs'
prepare_debs() {
  local name=$1; shift
  local dir=$BUILD/debs/$name stamp
  stamp=$( { echo "base $base_id"; echo "$DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR"; echo "$DEBS_FETCH_SCRIPT"
             printf '%s\n' "$@"; } | sha_stdin)
  if debs_complete "$dir" "$stamp"; then
    log "debs $name: reused ($(wc -l <"$dir/MANIFEST") packages)"
    return
  fi
  local t0; t0=$(now)
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  local out=$BUILD/log/debs-$name.log
  mkdir -p "$BUILD/log"
  # Nothing is installed in the container (it goes with --rm); the files are handed over to the caller's uid.
  # A fetch that hangs (an unanswering mirror) is stopped after 15 minutes, its container removed.
  local container=dl-grader-debs-$name-$$
  if ! timeout 900 docker run "${DEBS_FETCH_IMAGE_OPTS[@]}" --name "$container" -v "$dir.tmp:/debs" \
         -e "DEBIAN_MIRROR=$DEBIAN_MIRROR" -e "DEBIAN_SECURITY_MIRROR=$DEBIAN_SECURITY_MIRROR" \
         -e "OWNER=$(id -u):$(id -g)" "$base_ref" -c "$DEBS_FETCH_SCRIPT" debs "$@" >"$out" 2>&1; then
    docker rm -f "$container" >/dev/null 2>&1 || true
    tail -n 30 "$out" >&2
    die "fetching the Debian packages for $name failed (full log: $out); the container needs $DEBIAN_MIRROR"
  fi
  (cd "$dir.tmp" && find . -maxdepth 1 -name '*.deb' -printf '%f\n' | sort | while read -r f; do
     printf '%s %s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"; done) >"$dir.tmp/MANIFEST"
  [ -s "$dir.tmp/MANIFEST" ] || die "fetching the Debian packages for $name gave no .deb file (log: $out)"
  echo "$stamp" >"$dir.tmp/.stamp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "debs $name: fetched $(wc -l <"$dir/MANIFEST") packages ($(du -sh "$dir" | cut -f1)) in $(since "$t0")"
}

# --- main ---------------------------------------------------------------------------------------
mkdir -p "$BUILD"
if [ -n "$base_image" ]; then
  if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    log "pulling $base_image"
    docker pull -q "$base_image" >/dev/null || die "cannot pull $base_image and it is not present locally"
  fi
  base_ref=$base_image
else
  build_base
  base_ref=$BASE_TAG
fi
base_id=$(image_id "$base_ref")

if [ "$only_cluster" -eq 0 ]; then
write_constraints
numpy_version=$("$PY" -c 'import numpy; print(numpy.__version__)')
mkdir -p "$BUILD/spec"
printf 'numpy==%s\n' "$numpy_version" >"$BUILD/spec/sandbox-numpy.txt"
printf 'numpy==%s\ntorch==%s\n' "$numpy_version" "$TORCH_VERSION" >"$BUILD/spec/sandbox-torch.txt"
prepare_wheels sandbox-numpy "$BUILD/spec/sandbox-numpy.txt"
prepare_wheels sandbox-torch "$BUILD/spec/sandbox-torch.txt"

runner_digest=$("$PY" -W ignore::RuntimeWarning -m grader.isolation.images digest)
for variant in numpy torch; do
  ctx=$BUILD/ctx/sandbox-$variant
  rm -rf "$ctx" && mkdir -p "$ctx/sandbox"
  cp docker/sandbox.Dockerfile "$ctx/Dockerfile"
  (cd sandbox && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
     | xargs -0 cp --parents -t "$ctx/sandbox")
  cp -al "$BUILD/wheels/sandbox-$variant" "$ctx/wheels"
  rm -f "$ctx/wheels/.stamp"
  build_image "dl-grader/sandbox:$variant" "$ctx" "$ctx/Dockerfile" \
    --build-arg "VARIANT=$variant" --build-arg "RUNNER_DIGEST=$runner_digest"
done
fi

if [ "$with_cluster" -eq 1 ]; then
  # Debian's packages, fetched here and installed offline by the build; the context holds the Dockerfile,
  # the entrypoint script and debs/ (the .deb files).
  for svc_name in redis postgres; do
    case $svc_name in
      redis) tag=dl-grader/redis:7; packages=(redis-server redis-tools) ;;
      postgres) tag=dl-grader/postgres:15; packages=(postgresql-15) ;;
    esac
    prepare_debs "$svc_name" "${packages[@]}"
    ctx=$BUILD/ctx/$svc_name
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "docker/$svc_name.Dockerfile" "$ctx/Dockerfile"
    cp -p "docker/$svc_name-entrypoint.sh" "$ctx/"
    mkdir "$ctx/debs" && cp -l "$BUILD/debs/$svc_name"/*.deb "$ctx/debs/"
    build_image "$tag" "$ctx" "$ctx/Dockerfile"
  done
fi

if [ "$with_service" -eq 1 ] && [ "$only_cluster" -eq 0 ]; then
  # The project's wheel is built from a copy of its sources, so no build/ folder lands in the tree.
  src=$BUILD/src/service
  rm -rf "$src" && mkdir -p "$src"
  cp pyproject.toml README.md "$src/"
  for d in grader sandbox reference problems; do
    (find "$d" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | xargs -0 cp --parents -t "$src")
  done
  src_hash=$(tree_hash "$src")
  wheel_dir=$BUILD/wheels/dl-grader
  if [ "$(cat "$wheel_dir/.stamp" 2>/dev/null)" != "$src_hash" ]; then
    t0=$(now)
    rm -rf "$wheel_dir" && mkdir -p "$wheel_dir"
    "$PY" -m pip wheel --disable-pip-version-check -q --no-deps --no-build-isolation -w "$wheel_dir" "$src" \
      >"$BUILD/wheel-build.log" 2>&1 || { cat "$BUILD/wheel-build.log" >&2; die "building the project's wheel failed"; }
    echo "$src_hash" >"$wheel_dir/.stamp"
    log "wheel dl-grader: built in $(since "$t0")"
  fi
  project_wheel=$(find "$wheel_dir" -name 'dl_grader-*.whl' | head -n1)
  [ -n "$project_wheel" ] || die "no dl_grader wheel in $wheel_dir"
  # Dependencies: everything the project's wheel requires, at the host venv's versions. They change
  # only with pyproject.toml (the wheel's metadata), not with every source edit.
  # pip download evaluates environment markers with the host venv's Python, the image installs with the base
  # image's (bookworm: 3.11.2): a dependency only older Pythons need is missing unless named here. redis
  # requires async-timeout on Python < 3.11.3 (harmless above it).
  { echo "# pyproject.toml $(sha256sum <pyproject.toml | cut -d' ' -f1)"
    printf 'dl-grader\ntorch==%s\nasync-timeout>=4.0.3\n' "$TORCH_VERSION"; } >"$BUILD/spec/service.txt"
  prepare_wheels service-deps "$BUILD/spec/service.txt" --find-links "$wheel_dir"
  rm -f "$BUILD"/wheels/service-deps/dl_grader-*.whl
  # The service Dockerfile also builds with the whole tree as context (docker-compose build), so
  # the minimal context keeps the same layout: .build/wheels/service/ next to the Dockerfile.
  svc=$BUILD/wheels/service
  rm -rf "$svc" && cp -al "$BUILD/wheels/service-deps" "$svc" && rm -f "$svc/.stamp"
  cp -l "$project_wheel" "$svc/"
  ctx=$BUILD/ctx/service
  rm -rf "$ctx" && mkdir -p "$ctx/.build/wheels"
  cp Dockerfile "$ctx/Dockerfile"
  cp -al "$svc" "$ctx/.build/wheels/service"
  # The project's wheel bytes differ from build to build (zip timestamps): its source hash stands in.
  echo "$src_hash" >"$ctx/.build/wheels/service/dl-grader.source-sha256"
  build_image dl-grader/service:latest "$ctx" "$ctx/Dockerfile"
fi

log "done in $(since "$t_all"):"
for line in "${summary[@]}"; do echo "  $line"; done
