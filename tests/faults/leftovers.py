"""What a fault test checks is left behind by the grader processes it started (and killed).

- sandbox processes: any live process in a session or fork-server cgroup of one of those processes
  (dl-grader/s<pid>-*, dl-grader/z<pid>-*), or with bwrap / sandbox.runner / sandbox.zygote in its command
  line among the processes they had started (`Tracker.snapshot` while they run);
- cgroups: the s<pid>-*, z<pid>-* directories of those processes in the session folders of the hierarchy
  the local backend uses (`cgroups.detect()`: <root>/<controller>/dl-grader on cgroup v1, <root>/dl-grader
  on cgroup v2), and in both layouts where no hierarchy is usable here;
- files on the host: the local backend writes no temporary file (the sandbox's /tmp is a bwrap tmpfs in its
  own mount namespace, the fork server speaks over a socketpair, the seccomp filter is a memfd), so what it
  does write outside cgroups is its data directory, which must hold the SQLite database and its WAL/SHM
  files only (`stray_data_files`). The servers also run with TMPDIR set to a directory of the test's own,
  which must end empty: a guard for a change that starts writing there, not a check of anything written now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.isolation import cgroups
from tests.service.live_server import alive, descendants

CGROUP_ROOT = cgroups.CGROUP_ROOT
CGROUP_PARENT = cgroups.PARENT
# What the service keeps in its data directory: the SQLite database, and its WAL and shared-memory
# files (left beside it when the last connection did not close cleanly, e.g. a SIGKILL).
DATA_FILES = frozenset({"grader.db", "grader.db-wal", "grader.db-shm"})
NUL = b"\0"
SANDBOX_CMDLINE = re.compile(rb"bwrap|sandbox\.runner|sandbox\.zygote")


def session_parents() -> list[Path]:
    """The folders that hold the sandbox's session and fork-server cgroups: the ones of the hierarchy
    `cgroups.detect()` picks here (what the local backend uses), or both layouts when none is usable."""
    try:
        return cgroups.detect(CGROUP_ROOT)._parents()
    except cgroups.CgroupsUnavailable:
        return [CGROUP_ROOT / CGROUP_PARENT, *CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}")]


def grader_cgroups(owners: set[int]) -> list[Path]:
    """Session and fork-server cgroups of these grader processes, in every session folder (every v1
    controller, or the unified hierarchy's one)."""
    found = []
    for parent in session_parents():
        try:
            children = list(parent.iterdir())
        except OSError:  # not created yet: nothing graded here since boot
            continue
        for path in children:
            m = re.fullmatch(r"[sz](\d+)-.*", path.name)
            if m and int(m.group(1)) in owners and path.is_dir():
                found.append(path)
    return sorted(found)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def processes_in(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for path in cgroups:
        try:
            pids |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
        except OSError:
            continue
    return alive(pids)


@dataclass
class Tracker:
    """The grader processes a test started (`owners`) and every sandbox-looking process seen below them."""

    owners: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)

    def own(self, pid: int) -> None:
        self.owners.add(pid)

    def snapshot(self) -> None:
        for owner in list(self.owners):
            for pid in alive(descendants(owner)):
                if SANDBOX_CMDLINE.search(_cmdline(pid)):
                    self.seen.add(pid)

    def sandboxes_alive(self) -> set[int]:
        """Sandbox processes of these graders still running: in their cgroups, or seen below them."""
        in_groups = processes_in(grader_cgroups(self.owners))
        return in_groups | {p for p in alive(self.seen) if SANDBOX_CMDLINE.search(_cmdline(p))}

    def describe(self, pids: set[int]) -> str:
        return "; ".join(f"{p}: {_cmdline(p).replace(NUL, b' ')[:120].decode(errors='replace')}" for p in sorted(pids))


def temporary_files(tmpdir: Path) -> list[str]:
    return sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))


def stray_data_files(data_dir: Path) -> list[str]:
    """Files of the data directory other than the database's own (none when it was never created: a server
    on PostgreSQL)."""
    if not data_dir.is_dir():
        return []
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.name not in DATA_FILES
                  or p.parent != data_dir)
