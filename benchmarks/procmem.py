"""Memory of a process and of its process tree, sampled from /proc (the benchmarks' one sampler)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.service.live_server import descendants

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    """Resident bytes of one process; 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class MemorySampler:
    """Every `every_s` seconds: the process's own RSS (kept in `own`, in order) and the summed RSS of it and
    every process below it (its peak in `peak`; shared pages count once per process, so forked children are
    overstated)."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.own: list[int] = []
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.own.append(rss(self.pid))
            self.peak = max(self.peak, sum(rss(p) for p in {self.pid, *descendants(self.pid)}))
            self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
