"""Host-side sandbox clients: how the grader starts and talks to the sandbox that runs a candidate's code.

(The code that runs *inside* a sandbox is the top-level `sandbox` package.) Backends are chosen by name;
only real, isolating backends can be chosen: the unisolated in-process fake
(`grader.isolation.inprocess.InProcessBackend`) is constructed explicitly by the tests that want it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from grader.errors import InvalidRequest
from grader.isolation.base import Backend

_backends: dict[str, Backend] = {}
_lock = threading.Lock()


def _local() -> Backend:
    from grader.isolation.local import LocalBackend

    return LocalBackend()


FACTORIES: dict[str, Callable[[], Backend]] = {"local": _local}


def get_backend(name: str) -> Backend:
    """The backend called `name`, created once per process."""
    if name not in FACTORIES:
        raise InvalidRequest(f"unknown sandbox backend {name!r}; choose one of: {', '.join(FACTORIES)}")
    with _lock:
        if name not in _backends:
            _backends[name] = FACTORIES[name]()
        return _backends[name]
