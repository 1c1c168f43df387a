"""What a fault test checks is left behind by the grader processes it started (and killed).

- sandbox processes: any live process in a session or fork-server cgroup of one of those processes
  (dl-grader/s<pid>-*, dl-grader/z<pid>-*), or with bwrap / sandbox.runner / sandbox.zygote in its command
  line among the processes they had started (`Tracker.snapshot` while they run);
- cgroups: the dl-grader/s<pid>-*, z<pid>-* directories of those processes under every controller;
- temporary files: the servers run with TMPDIR set to a directory of the test's own, which must end empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.service.live_server import alive, descendants

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "dl-grader"
NUL = b"\0"
SANDBOX_CMDLINE = re.compile(rb"bwrap|sandbox\.runner|sandbox\.zygote")


def grader_cgroups(owners: set[int]) -> list[Path]:
    """Session and fork-server cgroups of these grader processes, under every controller."""
    found = []
    for parent in CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}"):
        for path in parent.iterdir():
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
