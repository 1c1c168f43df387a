"""The cgroup hierarchy the local sandbox limits and measures its sessions with: v1 or v2, detected at start.

What the backend needs from a hierarchy is small: a group per session with memory, pids and CPU-quota limits
(and one per zygote with memory and pids limits), the `cgroup.procs` files a process joins it through, the
processes in it, its CPU clock (read often: one pread on a kept descriptor), whether the kernel OOM-killed in
it, its removal (what is left is killed, then rmdir), and a sweep of the empty groups of graders that were
killed before they could remove theirs.

- `CgroupV1`: one mount per controller, `<root>/{memory,pids,cpu,cpuacct}/dl-grader/<name>`;
  `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` when swap is accounted), `pids.max`,
  `cpu.cfs_period_us`/`cpu.cfs_quota_us`; the clock is `cpuacct.usage` (ns); an OOM kill is `oom_kill` in
  `memory.oom_control` (older kernels: a non-zero `memory.failcnt`).
- `CgroupV2`: the unified hierarchy at `<root>` (`cgroup.controllers` lists memory, pids and cpu);
  `<root>/dl-grader` gets the three controllers in its `cgroup.subtree_control` and each session is a leaf
  under it with `memory.max`, `memory.swap.max` 0 (when swap is accounted), `pids.max` and `cpu.max`
  ("quota period"); the clock is `usage_usec` of `cpu.stat` (x1000); an OOM kill is `oom_kill` in
  `memory.events`; removal writes `cgroup.kill` where the kernel has it (5.14+).

`detect(root)` picks v2 when `<root>/cgroup.controllers` lists the three controllers, else v1 when its four
controllers are mounted writable, else raises `CgroupsUnavailable` naming what is missing for both.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "dl-grader"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
STALE_AFTER_S = 60.0


class CgroupsUnavailable(RuntimeError):
    """Neither a usable cgroup v2 hierarchy nor the cgroup v1 controllers: the reason says what is missing."""


def cpu_quota_us(cpu_cores: float) -> int:
    """The CFS quota of `cpu_cores` cores per CFS_PERIOD_US (at least 1 ms, the kernel's minimum)."""
    return max(1000, int(CFS_PERIOD_US * cpu_cores))


def rmdir_cgroup(path: Path, attempts: int = 50) -> bool:
    """rmdir a cgroup, retrying while its killed processes are still leaving it; False when it stayed."""
    for _ in range(attempts):
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.02)
    return False


def _read_procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _keyed(text: str, key: str) -> int | None:
    """The value of `key` in a flat-keyed cgroup file ("key value" lines: cpu.stat, memory.events)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _rmdir_quietly(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            path.rmdir()
        except OSError:
            pass


class Group:
    """One session's (or zygote's) cgroup: its directories, in the order of the hierarchy's controllers."""

    def __init__(self, name: str, dirs: list[Path]) -> None:
        self.name = name
        self.dirs = dirs
        self._clock_fd = -1

    def distinct(self) -> list[Path]:
        """Its folders, each once (v1's co-mounted cpu and cpuacct are one folder under two names)."""
        return list({d.resolve(): d for d in reversed(self.dirs)}.values())[::-1]

    @property
    def procs_files(self) -> list[Path]:
        """The `cgroup.procs` files a process writes itself into to join the group (one per distinct folder)."""
        return [d / "cgroup.procs" for d in self.distinct()]

    def _procs_dir(self) -> Path:
        return self.dirs[0]

    def _clock_file(self) -> Path:
        raise NotImplementedError

    def _parse_clock(self, raw: bytes) -> int:
        raise NotImplementedError

    def procs(self) -> list[int]:
        """The pids in the group (host pids), [] when it cannot be read."""
        return _read_procs(self._procs_dir())

    def cpu_ns(self) -> int | None:
        """CPU time used by every process of the group so far, in ns: one pread on a descriptor kept open."""
        try:
            if self._clock_fd < 0:
                self._clock_fd = os.open(self._clock_file(), os.O_RDONLY | os.O_CLOEXEC)
            return self._parse_clock(os.pread(self._clock_fd, 4096, 0))
        except (OSError, ValueError, TypeError):
            return None

    def oom_killed(self) -> bool:
        raise NotImplementedError

    def misplaced(self, pid: int) -> list[str]:
        """The controllers in which `pid` is not in this group (OSError when its cgroups cannot be read)."""
        raise NotImplementedError

    def _kill_rest(self) -> None:
        for d in self.distinct():
            _kill_all(_read_procs(d))

    def remove(self, attempts: int = 50) -> bool:
        """Kill what is left in it, close the clock and rmdir; False when a folder stayed."""
        if self._clock_fd >= 0:
            os.close(self._clock_fd)
            self._clock_fd = -1
        self._kill_rest()
        removed = True
        for d in self.distinct():
            removed = rmdir_cgroup(d, attempts) and removed
        return removed


class GroupV1(Group):
    """dirs: memory, pids, cpu, cpuacct (a zygote's: memory, pids); co-mounted controllers share a folder."""

    def _procs_dir(self) -> Path:
        return self.dirs[1]  # the pids controller's

    def _clock_file(self) -> Path:
        return self.dirs[3] / "cpuacct.usage"

    def _parse_clock(self, raw: bytes) -> int:
        return int(raw)

    def oom_killed(self) -> bool:
        try:
            control = (self.dirs[0] / "memory.oom_control").read_text()
            return int(control.split("oom_kill ")[1].split()[0]) > 0 if "oom_kill " in control else \
                int((self.dirs[0] / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError, IndexError):
            return False

    def misplaced(self, pid: int) -> list[str]:
        want = f"/{PARENT}/{self.name}"
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError as exc:
            raise OSError(f"cannot read the cgroups of sandbox process {pid}: {exc}") from exc
        placed = {c for line in lines if line.count(":") >= 2 and line.split(":", 2)[2] == want
                  for c in line.split(":", 2)[1].split(",")}
        return [c for c in V1_CONTROLLERS[:len(self.dirs)] if c not in placed]


class GroupV2(Group):
    """dirs: the one leaf of the unified hierarchy."""

    def __init__(self, name: str, dirs: list[Path], root: Path) -> None:
        super().__init__(name, dirs)
        self.root = root

    def _clock_file(self) -> Path:
        return self.dirs[0] / "cpu.stat"

    def _parse_clock(self, raw: bytes) -> int:
        usec = _keyed(raw.decode(), "usage_usec")
        if usec is None:
            raise ValueError("no usage_usec in cpu.stat")
        return usec * 1000

    def oom_killed(self) -> bool:
        try:
            return (_keyed((self.dirs[0] / "memory.events").read_text(), "oom_kill") or 0) > 0
        except (OSError, ValueError):
            return False

    def misplaced(self, pid: int) -> list[str]:
        want = "/" + self.dirs[0].relative_to(self.root).as_posix()
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError as exc:
            raise OSError(f"cannot read the cgroups of sandbox process {pid}: {exc}") from exc
        return [] if f"0::{want}" in lines else list(V2_CONTROLLERS)

    def _kill_rest(self) -> None:
        kill = self.dirs[0] / "cgroup.kill"
        if kill.exists():
            try:
                kill.write_text("1")  # the whole group at once, racing no fork
                return
            except OSError:
                pass
        super()._kill_rest()


class Hierarchy:
    """What the local backend needs from a cgroup hierarchy."""

    version = 0
    controllers: tuple[str, ...] = ()

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root

    def describe(self) -> str:
        raise NotImplementedError

    def session(self, name: str, *, memory_bytes: int, pids: int, cpu_cores: float) -> Group:
        """A session's group with its memory (swap included where accounted), pids and CPU-quota limits."""
        raise NotImplementedError

    def zygote(self, name: str, *, memory_bytes: int, pids: int) -> Group:
        """A zygote's group: memory and pids limits only (its sessions move to groups of their own at once)."""
        raise NotImplementedError

    def _parents(self) -> list[Path]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make what every group needs (at the backend's start, so a hierarchy that refuses fails there)."""

    def sweep(self, prefixes: tuple[str, ...] = ("z", "s")) -> None:
        """Remove the empty groups of zygotes (z<pid>-*) and sessions (s<pid>-*) whose grader was killed
        before it could (its pid is gone). Several graders share the parent: a live owner's are never touched.

        Only empty ones older than a minute: a live zygote's group is never empty after its first
        milliseconds, and rmdir refuses a cgroup that still holds a process anyway."""
        for parent in self._parents():
            for prefix in prefixes:
                for path in parent.glob(f"{prefix}*-*"):
                    owner = path.name[1:].split("-", 1)[0]
                    try:
                        if not owner.isdigit() or Path(f"/proc/{owner}").exists() or \
                                time.time() - path.stat().st_mtime < STALE_AFTER_S or \
                                (path / "cgroup.procs").read_text().strip():
                            continue
                        path.rmdir()
                    except OSError:
                        pass


class CgroupV1(Hierarchy):
    version = 1
    controllers = V1_CONTROLLERS

    def describe(self) -> str:
        return f"cgroup v1 ({', '.join(V1_CONTROLLERS)} under {self.root})"

    def _parents(self) -> list[Path]:
        return [self.root / c / PARENT for c in V1_CONTROLLERS]

    def session(self, name: str, *, memory_bytes: int, pids: int, cpu_cores: float) -> Group:
        dirs: list[Path] = []
        made: list[Path] = []
        try:
            for controller in V1_CONTROLLERS:
                path = self.root / controller / PARENT / name
                if path.resolve() in [p.resolve() for p in dirs]:
                    dirs.append(path)  # cpu and cpuacct co-mounted: one directory serves both
                    continue
                path.mkdir(parents=True, exist_ok=True)
                dirs.append(path)
                made.append(path)
            mem, pid_dir, cpu, _ = dirs
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(cpu_quota_us(cpu_cores)))
            limit = str(memory_bytes)
            (mem / "memory.limit_in_bytes").write_text(limit)
            if (mem / "memory.memsw.limit_in_bytes").exists():
                try:
                    (mem / "memory.memsw.limit_in_bytes").write_text(limit)
                except OSError:
                    pass  # swap accounting off: there is no swap to escape to either
            (pid_dir / "pids.max").write_text(str(pids))
        except BaseException:
            _rmdir_quietly(made)
            raise
        return GroupV1(name, dirs)

    def zygote(self, name: str, *, memory_bytes: int, pids: int) -> Group:
        made: list[Path] = []
        try:
            for controller, knob, value in (("memory", "memory.limit_in_bytes", str(memory_bytes)),
                                            ("pids", "pids.max", str(pids))):
                path = self.root / controller / PARENT / name
                path.mkdir(parents=True, exist_ok=True)
                made.append(path)
                (path / knob).write_text(value)
        except BaseException:
            _rmdir_quietly(made)
            raise
        return GroupV1(name, made)


class CgroupV2(Hierarchy):
    version = 2
    controllers = V2_CONTROLLERS

    def describe(self) -> str:
        return f"cgroup v2 ({', '.join(V2_CONTROLLERS)} in the unified hierarchy at {self.root})"

    def _parents(self) -> list[Path]:
        return [self.root / PARENT]

    def prepare(self) -> None:
        try:
            self._parent()
        except OSError as exc:
            raise CgroupsUnavailable(
                f"cannot enable {', '.join(V2_CONTROLLERS)} for {self.root / PARENT} in the unified cgroup "
                f"hierarchy ({exc}); a v2 cgroup that holds processes cannot pass controllers to its children, "
                "so the grader must run in a leaf cgroup of its own (in a container: move its processes out of "
                "the namespace's root cgroup first)") from exc

    def _parent(self) -> Path:
        """<root>/dl-grader with the three controllers enabled for its children (idempotent)."""
        want = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        for path in (self.root, self.root / PARENT):
            path.mkdir(exist_ok=True)
            control = path / "cgroup.subtree_control"
            if not set(V2_CONTROLLERS) <= set(control.read_text().split()):
                control.write_text(want)
        return self.root / PARENT

    def _leaf(self, name: str, knobs: list[tuple[str, str]], optional: list[tuple[str, str]]) -> Group:
        path = self._parent() / name
        path.mkdir(exist_ok=True)
        try:
            for knob, value in knobs:
                (path / knob).write_text(value)
            for knob, value in optional:
                if (path / knob).exists():
                    try:
                        (path / knob).write_text(value)
                    except OSError:
                        pass  # swap accounting off: there is no swap to escape to either
        except BaseException:
            _rmdir_quietly([path])
            raise
        return GroupV2(name, [path], self.root)

    def session(self, name: str, *, memory_bytes: int, pids: int, cpu_cores: float) -> Group:
        return self._leaf(name, [("cpu.max", f"{cpu_quota_us(cpu_cores)} {CFS_PERIOD_US}"),
                                 ("memory.max", str(memory_bytes)), ("pids.max", str(pids))],
                          [("memory.swap.max", "0")])

    def zygote(self, name: str, *, memory_bytes: int, pids: int) -> Group:
        return self._leaf(name, [("memory.max", str(memory_bytes)), ("pids.max", str(pids))], [])


def v2_problem(root: Path = CGROUP_ROOT) -> str | None:
    """Why `root` is not a usable cgroup v2 hierarchy for the sandbox, or None when it is."""
    controllers = root / "cgroup.controllers"
    if not controllers.exists():
        return f"{controllers} absent: {root} is not a cgroup v2 hierarchy"
    try:
        available = controllers.read_text().split()
    except OSError as exc:
        return f"cannot read {controllers}: {exc}"
    missing = [c for c in V2_CONTROLLERS if c not in available]
    if missing:
        return (f"{controllers} lists {' '.join(available) or 'nothing'}, not {', '.join(missing)} "
                "(bound to a cgroup v1 hierarchy, or not delegated)")
    if not os.access(root, os.W_OK) or not os.access(root / "cgroup.subtree_control", os.W_OK):
        return f"{root} is read-only here"
    return None


def v1_missing(root: Path = CGROUP_ROOT) -> list[str]:
    """cgroup v1 controllers the sandbox needs that are not mounted writable under `root`."""
    return [c for c in V1_CONTROLLERS if not os.access(root / c, os.W_OK)
            or not (root / c / "cgroup.procs").exists()]


def detect(root: Path = CGROUP_ROOT) -> Hierarchy:
    """The hierarchy to use: v2 when `root` is a unified hierarchy with memory, pids and cpu, else v1 when
    its controllers are mounted writable; otherwise CgroupsUnavailable saying what is missing for both."""
    problem = v2_problem(root)
    if problem is None:
        return CgroupV2(root)
    missing = v1_missing(root)
    if not missing:
        return CgroupV1(root)
    raise CgroupsUnavailable(
        f"the local sandbox needs either the unified cgroup hierarchy (cgroup v2) at {root} with the "
        f"controllers {', '.join(V2_CONTROLLERS)} ({problem}), or the cgroup v1 controllers "
        f"{', '.join(V1_CONTROLLERS)} mounted writable under {root} (missing or read-only: {', '.join(missing)})")
