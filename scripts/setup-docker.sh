#!/usr/bin/env bash
# Makes this machine ready for the Docker sandbox backend, then builds its images:
#   1. installs the Debian packages docker.io, debootstrap and docker-compose when missing (needs root);
#   2. starts dockerd in the background when `docker info` fails (log: /var/log/dockerd.log);
#   3. runs scripts/build-images.sh with this script's arguments (e.g. --service, --cluster, --base-image IMAGE):
#      `--service --cluster` also builds the Redis and PostgreSQL images of docker-compose.cluster.yml.
# Safe to run again: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup-docker: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

need_apt=()
command -v docker >/dev/null 2>&1 || need_apt+=(docker.io)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  is_root || die "need root to install: ${need_apt[*]} (run: sudo scripts/setup-docker.sh)"
  command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${need_apt[*]} by hand"
  echo "setup-docker: installing ${need_apt[*]}"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null \
    || die "apt-get install ${need_apt[*]} failed"
fi

if ! docker info >/dev/null 2>&1; then
  is_root || die "the Docker daemon is not running and starting it needs root (run: sudo scripts/setup-docker.sh)"
  if pgrep -x dockerd >/dev/null 2>&1; then
    echo "setup-docker: dockerd is running but not answering yet; waiting"
  else
    echo "setup-docker: starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 \
    || die "dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:
$(tail -n 15 /var/log/dockerd.log 2>/dev/null)"
  echo "setup-docker: dockerd is up"
fi

exec scripts/build-images.sh "$@"
