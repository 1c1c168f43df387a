"""Sandbox backends, chosen by name: 'local' (bubblewrap, the default) and 'inprocess' (unit-test fake)."""

from __future__ import annotations

import threading
from typing import Callable

from grader.errors import InvalidRequest
from grader.sandbox.base import Backend

_backends: dict[str, Backend] = {}
_lock = threading.Lock()


def _local() -> Backend:
    from grader.sandbox.local import LocalBackend

    return LocalBackend()


def _inprocess() -> Backend:
    from grader.sandbox.inprocess import InProcessBackend

    return InProcessBackend()


FACTORIES: dict[str, Callable[[], Backend]] = {"local": _local, "inprocess": _inprocess}


def get_backend(name: str) -> Backend:
    """The backend called `name`, created once per process."""
    if name not in FACTORIES:
        raise InvalidRequest(f"unknown sandbox backend {name!r}; choose one of: {', '.join(FACTORIES)}")
    with _lock:
        if name not in _backends:
            _backends[name] = FACTORIES[name]()
        return _backends[name]
