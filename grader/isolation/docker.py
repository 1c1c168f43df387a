"""The Docker sandbox backend: one fresh, locked-down container per session, from a warm pool.

Each session is one container of a sandbox image (`dl-grader/sandbox:numpy` or
`:torch`, built by scripts/build-images.sh), used once and removed:

- no network (`--network none`), a read-only root, a private size-capped
  tmpfs `/tmp`, no volume, no host path and never the Docker socket;
- an unprivileged uid of its own (random in 100000-164999), every capability
  dropped, no-new-privileges, never privileged;
- Docker's default seccomp profile, and on top of it the local sandbox's
  filter (grader/isolation/seccomp.py), installed by `sandbox/boot.py` before
  the interpreter imports anything;
- `sandbox/boot.py` as pid 1: it installs the filter first, then forks the
  runner and reaps what the candidate orphans (Docker's own init would run
  without the stacked filter, as the candidate's uid);
- memory limit equal to memory+swap, a CPU quota of `cpu_cores`, a pids limit,
  ulimits on file size, open files, processes, CPU time and core dumps; no log
  driver (what the candidate prints is never written to the host's disk).

Code goes in and results come out over the container's attached stdin and
stdout (the protocol of sandbox/wire.py); what the candidate prints goes to its
stderr, which Docker keeps apart from stdout, drained with the output cap. The
host never reads a file the candidate could have written.

Time limits are CPU seconds read from the container's cgroup (by the
container's id, on the host's cgroup file system: `cgroup_root`); a wall-clock
backstop kills the container from outside. Processes left running after a call
are listed from the same cgroup and killed by host pid.

Warm pool: starting a container and importing numpy costs about half a second
(torch, about two). For each image and set of limits the backend keeps
`pool_size` containers started and waiting at the runner's ready line; a
session takes one, and a background thread starts its replacement. A container
that served a session, or failed, is removed, never returned.

Every container carries labels naming this grader process; at start-up the
backend removes containers of graders that no longer run (a crash leaves none
behind for long), and any sandbox container older than `MAX_AGE_S`.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import secrets
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from grader.errors import SandboxUnavailable
from grader.isolation import seccomp
from grader.isolation.base import (
    DockerOptions,
    Isolation,
    OutputCapture,
    PipeSession,
    SandboxCrashed,
    SandboxFault,
    SandboxLimits,
    SandboxSpec,
    SandboxWithdrawn,
    SessionStartFailed,
    describe_exit,
)
from grader.isolation.images import PYTHON, RUNNER_LABEL, RUNNER_PATH, runner_digest

log = logging.getLogger(__name__)

UID_RANGE = (100_000, 165_000)
LABEL = "dl-grader.sandbox"
OWNER_LABEL = "dl-grader.owner"  # hostname/pid/start time of the grader process that started it
INSTANCE_LABEL = "dl-grader.backend"  # which backend object of that process (each has its own pools)
SWEEP_EVERY_S = 600
MAX_AGE_S = 3 * 3600  # no sandbox lives this long: older ones are leftovers whoever started them
POOL_IDLE_S = 900  # a warm container waiting longer is replaced (bounds every container's age)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
COMMAND = [PYTHON, "-s", "-m", "sandbox.boot"]


def _process_identity(pid: int) -> str | None:
    """pid plus the process's start time: a pid reused by another process does not match."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid}-{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def _owner() -> str:
    return f"{socket.gethostname()}/{_process_identity(os.getpid())}"


def _container_limits(limits: SandboxLimits) -> SandboxLimits:
    """The limits a container is created with; the others (output cap, reply size) are the host's."""
    return replace(limits, output_bytes=0, max_reply_mb=0.0, start_timeout_s=0.0)


class _Cgroups:
    """The cgroup folders of one container on the host.

    Where the daemon's cgroup driver puts them (`docker/<id>` with cgroupfs, `system.slice/docker-<id>.scope`
    with systemd), else where the kernel says the container's first process is (`/proc/<pid>/cgroup`, read
    before any candidate code runs; a rootless daemon's containers sit under the user's slice). Used only
    if the container's first process is listed there.
    """

    def __init__(self, root: Path, version: str, driver: str, container_id: str, pid: int) -> None:
        self.v2 = version == "2"
        leaves = [f"system.slice/docker-{container_id}.scope" if driver == "systemd" else f"docker/{container_id}"]
        try:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                wanted = controllers == "" if self.v2 else "pids" in controllers.split(",")
                if wanted and container_id in path:
                    leaves.append(path.lstrip("/"))
        except (OSError, ValueError):
            pass
        for leaf in leaves:
            self._place(root, leaf)
            if pid in self.pids_in():
                return
        self._place(root, leaves[0])

    def _place(self, root: Path, leaf: str) -> None:
        if self.v2:
            self.cpu = self.pids = self.memory = root / leaf
        else:
            self.cpu, self.pids, self.memory = root / "cpuacct" / leaf, root / "pids" / leaf, root / "memory" / leaf

    def cpu_seconds(self) -> float | None:
        try:
            if self.v2:
                for line in (self.cpu / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int((self.cpu / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def pids_in(self) -> list[int]:
        try:
            return [int(p) for p in (self.pids / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []


class DockerBackend:
    """Starts one fresh container per session, from a warm pool when one is waiting."""

    name = "docker"

    def __init__(self, options: DockerOptions | None = None) -> None:
        self.options = options or DockerOptions()
        try:
            from docker.errors import DockerException

            import docker
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise SandboxUnavailable(f"the Docker backend needs the docker Python package: {exc}") from exc
        try:
            self.client = (docker.DockerClient(base_url=self.options.docker_url) if self.options.docker_url
                           else docker.from_env())
            self.client.ping()
            info = self.client.info()
        except DockerException as exc:
            raise SandboxUnavailable(
                f"the Docker backend cannot reach a Docker daemon ({exc}); start one with scripts/setup-docker.sh "
                "(it installs docker.io, starts dockerd and builds the sandbox images)") from exc
        self.api = self.client.api
        security = " ".join(info.get("SecurityOptions") or [])
        if "name=seccomp" not in security or "profile=unconfined" in security:
            raise SandboxUnavailable(
                f"the Docker daemon applies no seccomp profile to containers ({security or 'no security options'}); "
                "the Docker backend stacks its filter on Docker's default profile and does not run without it")
        base_url = str(getattr(self.api, "base_url", ""))
        if not base_url.startswith(("http+docker://localhost", "http+unix://")):
            raise SandboxUnavailable(
                f"the Docker backend talks to its sandboxes over the daemon's local unix socket; {base_url} is not "
                "one (run the grader on the Docker host, or mount its socket)")
        self.cgroup_version = str(info.get("CgroupVersion") or "1")
        self.cgroup_driver = str(info.get("CgroupDriver") or "cgroupfs")
        self.seccomp_hex = seccomp.build_filter().hex()
        self.owner = _owner()
        self.instance = secrets.token_hex(8)
        self._uids: set[int] = set()
        self._checked_images: set[str] = set()
        self._pools: dict[tuple[str, SandboxLimits], WarmPool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.sweep()
        self._sweeper = threading.Thread(target=self._sweep_now_and_then, name="sandbox sweeper", daemon=True)
        self._sweeper.start()
        atexit.register(self.shutdown)

    def _sweep_now_and_then(self) -> None:
        """Sweep every SWEEP_EVERY_S too: leftovers of graders on other hosts age out while this one runs."""
        while True:
            time.sleep(SWEEP_EVERY_S)
            with self._lock:
                if self._closed:
                    return
            self.sweep()

    def allocate_uid(self) -> int:
        """A uid no live session of this backend has (per-uid kernel limits are never shared)."""
        with self._lock:
            while True:
                uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
                if uid not in self._uids:
                    self._uids.add(uid)
                    return uid

    def release_uid(self, uid: int) -> None:
        with self._lock:
            self._uids.discard(uid)

    # images -------------------------------------------------------------------------------
    def image_for(self, spec: SandboxSpec) -> str:
        """The image of this spec's variant, checked once: present, and carrying this grader's runner."""
        name = self.options.image_torch if spec.torch else self.options.image_numpy
        if name not in self._checked_images:
            from docker.errors import DockerException, ImageNotFound

            try:
                labels = self.api.inspect_image(name).get("Config", {}).get("Labels") or {}
            except ImageNotFound:
                raise SandboxUnavailable(f"the sandbox image {name} is not built here; run scripts/build-images.sh"
                                         ) from None
            except DockerException as exc:
                raise SandboxUnavailable(f"the Docker daemon could not inspect {name}: {exc}") from exc
            if labels.get(RUNNER_LABEL) != runner_digest():
                raise SandboxUnavailable(
                    f"the sandbox image {name} holds another version of the runner than this grader's sandbox/ "
                    "(label dl-grader.runner differs); rebuild it with scripts/build-images.sh")
            self._checked_images.add(name)
        return name

    # sessions -----------------------------------------------------------------------------
    def start(self, spec: SandboxSpec) -> DockerSession:
        image = self.image_for(spec)
        return self.pool(image, spec).acquire(spec)

    def pool(self, image: str, spec: SandboxSpec) -> WarmPool:
        """The pool of containers this spec can use: same image, same limits on the container itself (the
        limits the host enforces, such as the output cap, are set when a session is handed out)."""
        key = (image, _container_limits(spec.limits))
        with self._lock:
            if self._closed:
                raise SandboxUnavailable("the Docker backend was closed")
            if key not in self._pools:
                self._pools[key] = WarmPool(self, image, spec, self.options.pool_size)
            return self._pools[key]

    def warm(self, specs: list[SandboxSpec]) -> None:
        """Start filling the pools of these specs now, so that their first sessions are warm too."""
        for spec in specs:
            self.pool(self.image_for(spec), spec)

    def launch(self, image: str, spec: SandboxSpec) -> DockerSession:
        """A new container, started and past its ready line (a cold start)."""
        return DockerSession(self, image, spec)

    @property
    def closing(self) -> bool:
        """True once the backend was closed: every container of it is being removed."""
        return self._closed

    def close(self) -> None:
        """Stop the pools and remove their waiting containers."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()

    def shutdown(self) -> None:
        """At exit: stop the pools and remove every container of this process, in use or not."""
        from docker.errors import DockerException, NotFound

        self.close()
        try:
            leftover = self.containers()
        except DockerException:
            return
        for cid in leftover:
            try:
                self.api.remove_container(cid, force=True)
            except NotFound:
                pass
            except DockerException as exc:
                log.warning("could not remove sandbox container %s at exit: %s", cid[:12], exc)

    # leftovers ----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove sandbox containers whose grader no longer runs (a crash), and any older than MAX_AGE_S."""
        from docker.errors import DockerException

        host = socket.gethostname()
        removed = 0
        try:
            containers = self.api.containers(all=True, filters={"label": LABEL})
        except DockerException as exc:
            log.warning("could not list sandbox containers to sweep: %s", exc)
            return 0
        now = time.time()
        for c in containers:
            labels = c.get("Labels") or {}
            owner = labels.get(OWNER_LABEL, "")
            owner_host, _, identity = owner.partition("/")
            pid = identity.split("-", 1)[0]
            orphan = owner_host == host and (not pid.isdigit() or _process_identity(int(pid)) != identity)
            if orphan or now - float(c.get("Created") or now) > MAX_AGE_S:
                try:
                    self.api.remove_container(c["Id"], force=True)
                    removed += 1
                except DockerException as exc:
                    log.warning("could not remove leftover sandbox container %s: %s", c["Id"][:12], exc)
        if removed:
            log.info("removed %d leftover sandbox container(s)", removed)
        return removed

    def containers(self) -> list[str]:
        """Ids of the sandbox containers this grader process owns (running or not)."""
        found = self.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"})
        return [c["Id"] for c in found]

    def in_use(self, settle_s: float = 60.0) -> list[str]:
        """Ids of this process's containers that are not waiting unused in a pool: sessions not yet closed.

        Waits (up to `settle_s`) for the pools to finish the containers they are starting, which are
        neither in use nor waiting yet."""
        deadline = time.monotonic() + settle_s
        with self._lock:
            pools = list(self._pools.values())
        while any(pool.starting for pool in pools) and time.monotonic() < deadline:
            time.sleep(0.1)
        waiting = {s.container_id for pool in pools for s in pool.waiting()}
        return [cid for cid in self.containers() if cid not in waiting]


class WarmPool:
    """Containers of one image and one set of limits, started ahead and waiting at their ready line."""

    def __init__(self, backend: DockerBackend, image: str, spec: SandboxSpec, size: int) -> None:
        self.backend = backend
        self.image = image
        self.spec = spec
        self.size = max(0, size)
        self._ready: collections.deque[tuple[float, DockerSession]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.warm_acquired = 0
        self.cold_acquired = 0
        self.starting = False  # a container is being started for the pool, not yet waiting
        self._thread: threading.Thread | None = None
        if self.size:
            self._thread = threading.Thread(target=self._refill, name=f"warm-pool {image}", daemon=True)
            self._thread.start()

    def acquire(self, spec: SandboxSpec | None = None) -> DockerSession:
        """A session nobody used before: a waiting one if any is alive, else a container started now."""
        spec = spec or self.spec
        dead: list[DockerSession] = []
        found: DockerSession | None = None
        with self._cond:
            while self._ready and found is None:
                _, session = self._ready.popleft()
                self._cond.notify_all()
                if session.alive():
                    self.warm_acquired += 1
                    found = session
                else:
                    dead.append(session)
        for session in dead:  # removed outside the lock: other acquirers and the refill do not wait on it
            session.close()
        if found is not None:
            found.adopt(spec)
            return found
        self.cold_acquired += 1
        return self.backend.launch(self.image, spec)

    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def waiting(self) -> list[DockerSession]:
        with self._cond:
            return [s for _, s in self._ready]

    def wait_ready(self, count: int, timeout_s: float) -> bool:
        """True once `count` containers are waiting (for tests and the benchmark)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._ready) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)
            return True

    def _refill(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self.size and not self._stale():
                    self._cond.wait(30)
                if self._closed:
                    return
                stale = [s for t, s in self._ready if time.monotonic() - t > POOL_IDLE_S]
                for entry in list(self._ready):
                    if entry[1] in stale:
                        self._ready.remove(entry)
                self.starting = not stale
            for session in stale:
                session.close()
            if stale:
                continue
            try:
                session = self.backend.launch(self.image, self.spec)
                failures = 0
            except Exception as exc:  # the daemon is busy or gone: try again later, never give up the pool
                self.starting = False
                failures += 1
                log.warning("warm pool for %s could not start a container: %s", self.image, exc)
                with self._cond:
                    self._cond.wait(min(60.0, 0.5 * 2 ** min(failures, 7)))
                continue
            with self._cond:
                self.starting = False
                if self._closed:
                    session.close()
                    return
                self._ready.append((time.monotonic(), session))
                self._cond.notify_all()

    def _stale(self) -> bool:
        return bool(self._ready) and time.monotonic() - self._ready[0][0] > POOL_IDLE_S

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting = [s for _, s in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        for session in waiting:
            session.close()
        if self._thread is not None:
            self._thread.join(30)


class DockerSession(PipeSession):
    """One container: the protocol over its attached stdin/stdout, the candidate's prints from its stderr."""

    def __init__(self, backend: DockerBackend, image: str, spec: SandboxSpec) -> None:
        self.backend = backend
        self.api = backend.api
        self.spec = spec
        self.limits = lim = spec.limits
        self.uid = backend.allocate_uid()
        self.container_id = ""
        self._sock: Any = None
        self._raw: Any = None
        self._to = self._from = self._from_w = -1
        self._pump: threading.Thread | None = None
        self._eof = threading.Event()
        self._dead = None
        self._output = OutputCapture(None, lim.output_bytes)
        try:
            self._start(image)
            self._handshake(lim.start_timeout_s)
        except BaseException as exc:
            # Nothing of the candidate's has run: whatever went wrong is the grader's (or the daemon's), and
            # nothing of it may stay behind: container, socket, pump thread, pipe.
            if self._dead is None:
                self._dead = SandboxCrashed("the sandbox did not start")
            self._terminate()
            if isinstance(exc, Exception) and not isinstance(exc, SandboxUnavailable):
                raise SessionStartFailed(f"a sandbox container did not start: {exc}") from exc
            raise
        if self.cgroups.cpu_seconds() is None or self.pid not in self.cgroups.pids_in():
            self.close()
            raise SandboxUnavailable(
                f"the Docker backend reads each sandbox's CPU clock and processes from the host's cgroups, and "
                f"cannot find them under {backend.options.cgroup_root} (cgroup v{backend.cgroup_version}, driver "
                f"{backend.cgroup_driver}); run the grader on the Docker host, or give it the host's cgroup file "
                "system read-only and its pid namespace (GRADER_DOCKER_CGROUP_ROOT, see docs/deployment.md)")
        self.baseline = set(self.cgroups.pids_in())
        self.isolation = Isolation(backend="docker", enforced=(
            "container (pid, ipc, uts, mount namespaces)", "network none", "read-only root", "clean environment",
            "no capabilities", "no-new-privileges", f"uid {self.uid}",
            f"seccomp (Docker's default + {len(seccomp.REFUSED)} system calls refused)",
            f"memory {lim.memory_mb}MB (memory+swap)", f"processes {lim.max_processes} (pids limit)",
            f"cpu share {lim.cpu_cores:g} core(s) (quota)", "time limits in CPU seconds (cgroup)",
            f"cpu {lim.cpu_time_s}s", f"file size {lim.file_size_mb}MB", f"open files {lim.open_files}",
            f"/tmp {lim.tmp_size_mb}MB"))

    def _start(self, image: str) -> None:
        """Create the container, attach to it before it starts (nothing it says is lost), start it."""
        from docker.types import LogConfig, Ulimit

        lim = self.limits
        env = {"PYTHONPATH": RUNNER_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "GRADER_TORCH": "1" if self.spec.torch else "0",
               "PATH": "/usr/bin:/bin", "GRADER_SECCOMP": self.backend.seccomp_hex}
        env.update({k: "1" for k in THREAD_ENV})
        memory = f"{lim.memory_mb}m"
        host_config = self.api.create_host_config(
            network_mode="none", read_only=True, privileged=False, cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={lim.tmp_size_mb}m,mode=1777"},
            mem_limit=memory, memswap_limit=memory, nano_cpus=int(lim.cpu_cores * 1e9),
            pids_limit=lim.max_processes, shm_size="16m", ipc_mode="private",
            ulimits=[Ulimit(name="fsize", soft=lim.file_size_mb << 20, hard=lim.file_size_mb << 20),
                     Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
                     Ulimit(name="nproc", soft=lim.max_processes, hard=lim.max_processes),
                     Ulimit(name="cpu", soft=lim.cpu_time_s, hard=lim.cpu_time_s + 5),
                     Ulimit(name="core", soft=0, hard=0)],
            log_config=LogConfig(type="none"), auto_remove=False, binds=[], devices=[])
        # stdin_open also sets StdinOnce: when the grader goes, the runner reads EOF and the container ends.
        created = self.api.create_container(
            image, command=COMMAND, user=f"{self.uid}:{self.uid}", environment=env, working_dir="/tmp",
            stdin_open=True, tty=False, network_disabled=True, hostname="sandbox",
            labels={LABEL: "1", OWNER_LABEL: self.backend.owner, INSTANCE_LABEL: self.backend.instance},
            host_config=host_config)
        self.container_id = created["Id"]
        self._sock = self.api.attach_socket(self.container_id,
                                            params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._raw = getattr(self._sock, "_sock", self._sock)
        from_r, self._from_w = os.pipe()
        PipeSession.__init__(self, self._raw.fileno(), from_r, self._output, lim.wire_limits())
        self._pump = threading.Thread(target=self._demultiplex, args=(self._raw.fileno(),),
                                      name=f"sandbox {self.container_id[:12]}", daemon=True)
        self._pump.start()
        self.api.start(self.container_id)
        self.pid = int(self.api.inspect_container(self.container_id)["State"].get("Pid") or 0)
        # Found before the runner says it is ready, so before any candidate code exists in the container.
        self.cgroups = _Cgroups(Path(self.backend.options.cgroup_root), self.backend.cgroup_version,
                                self.backend.cgroup_driver, self.container_id, self.pid)

    # transport --------------------------------------------------------------------------
    def _demultiplex(self, fd: int) -> None:
        """Split Docker's attach stream: stdout frames to the protocol pipe, stderr to the capped output.

        Each chunk is an 8-byte header (stream, three zero bytes, big-endian length) and its bytes; a chunk is
        never held whole, so a claimed length of gigabytes costs nothing but the bytes that really come, and
        each byte read is handled once (a flood of tiny chunks costs linear time). The socket is closed only
        after this thread has ended, so its fd number is never read after another session got it.
        """
        pending = b""  # an incomplete header
        stream, left = 0, 0
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while True:
                if not poller.poll(1000):
                    if self._dead is not None:
                        return
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                view = memoryview(pending + chunk) if pending else memoryview(chunk)
                pending = b""
                at = 0
                while at < len(view):
                    if left == 0:
                        if len(view) - at < 8:
                            pending = bytes(view[at:])
                            break
                        stream, left = view[at], struct.unpack(">I", view[at + 4:at + 8])[0]
                        at += 8
                        continue
                    piece = view[at:at + left]
                    at += len(piece)
                    left -= len(piece)
                    if stream == 1:
                        try:
                            self._write_protocol(piece)
                        except OSError:  # the host closed its end: the session is over
                            return
                    else:
                        self._output.feed(bytes(piece))
        finally:
            self._eof.set()
            try:
                os.close(self._from_w)
            except OSError:
                pass

    def _write_protocol(self, data: memoryview) -> None:
        view = data
        while view:
            try:
                view = view[os.write(self._from_w, view):]
            except BlockingIOError:
                poller = select.poll()
                poller.register(self._from_w, select.POLLOUT)
                poller.poll(1000)

    def adopt(self, spec: SandboxSpec) -> None:
        """Take the host-side limits of the spec this session serves (a warm container was started for
        another spec with the same container limits)."""
        assert _container_limits(spec.limits) == _container_limits(self.limits)
        self.spec, self.limits = spec, spec.limits
        self._limits = spec.limits.wire_limits()
        self._output.cap = spec.limits.output_bytes

    def alive(self) -> bool:
        return self._dead is None and not self._eof.is_set()

    def _fail(self, fault: SandboxFault) -> None:
        """A fault while the backend shuts down is the shutdown's doing (it removed the container), not the
        candidate's: say so with an error the engine charges to the grader."""
        if self.backend.closing:
            if self._dead is None:
                self._dead = fault
                self._terminate()
            raise SandboxWithdrawn(f"the grader shut down while this sandbox ran ({fault})") from fault
        super()._fail(fault)

    # observation ------------------------------------------------------------------------
    def cpu_seconds(self) -> float | None:
        return self.cgroups.cpu_seconds() if hasattr(self, "cgroups") else None

    def stray_processes(self) -> int:
        """Kill processes the candidate left running after a call; return how many there were.

        Each is killed through a pidfd taken before checking that the pid is still in this container's
        cgroup, so a pid reused by another process of the host in between is never signalled.
        """
        strays = [p for p in self.cgroups.pids_in() if p not in self.baseline and p > 1]
        for pid in strays:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone
            try:
                if self.container_id in Path(f"/proc/{pid}/cgroup").read_text():
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except OSError as exc:
                log.warning("could not kill stray process %d of sandbox %s: %s", pid, self.container_id[:12], exc)
            finally:
                os.close(pidfd)
        return len(strays)

    def _describe_death(self) -> str:
        from docker.errors import DockerException

        state: dict[str, Any] = {}
        for _ in range(20):
            try:
                state = self.api.inspect_container(self.container_id)["State"]
            except DockerException:
                return "the sandbox container is gone"
            if not state.get("Running"):
                break
            time.sleep(0.1)
        code = None if state.get("Running") else int(state.get("ExitCode") or 0)
        return describe_exit(code, oom=bool(state.get("OOMKilled")), memory_mb=self.limits.memory_mb)

    # teardown ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        if self._dead is None:
            self._dead = SandboxCrashed("the session was closed")
        # Stop reading first: the daemon may be blocked writing to the attach stream (a flood of output,
        # a reply nobody reads), and it would not remove the container until that write returns.
        if self._from >= 0:
            try:
                os.close(self._from)  # unblocks the pump if it waits to write a reply nobody reads
            except OSError:
                pass
        self._close_stream()
        self._remove()
        self._to = self._from = -1
        self.backend.release_uid(self.uid)

    def _close_stream(self) -> None:
        """Shut the attach socket down, let the pump end, then close it (in that order: see _demultiplex)."""
        if self._sock is None:
            return
        if self._raw is not None:
            try:
                self._raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._pump is not None and self._pump.ident is not None and self._pump is not threading.current_thread():
            self._pump.join(10)
        for closable in (self._sock, self._raw):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._sock = None
        if self._pump is None and self._from_w >= 0:  # the pump never started: its end of the pipe is ours
            try:
                os.close(self._from_w)
            except OSError:
                pass

    def _remove(self) -> None:
        """Kill and remove the container; a failure is logged and left to the sweep."""
        from docker.errors import APIError, NotFound

        if self.container_id:
            try:
                self.api.remove_container(self.container_id, force=True)
            except NotFound:
                pass
            except APIError as exc:
                if exc.status_code != 409:  # 409: being removed already (a shutdown beside this session)
                    log.error("could not remove sandbox container %s: %s", self.container_id[:12], exc)
            except Exception as exc:  # the daemon's errors and its transport's (timeouts) alike
                log.error("could not remove sandbox container %s: %s", self.container_id[:12], exc)
