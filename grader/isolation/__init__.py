"""Host-side sandbox clients: how the grader starts and talks to the sandbox that runs a candidate's code.

(The code that runs *inside* a sandbox is the top-level `sandbox` package.) Backends are chosen by name;
only real, isolating backends can be chosen: `local` (bubblewrap, cgroups, seccomp) and `docker` (one
container per session, from a warm pool). The unisolated in-process fake
(`grader.isolation.inprocess.InProcessBackend`) is constructed explicitly by the tests that want it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from grader.errors import InvalidRequest
from grader.isolation.base import Backend, DockerOptions

__all__ = ["BACKENDS", "DockerOptions", "close_backends", "get_backend"]

_backends: dict[tuple[str, DockerOptions, bool], Backend] = {}
_lock = threading.Lock()


def _local(options: DockerOptions, zygote: bool) -> Backend:
    from grader.isolation.local import LocalBackend

    return LocalBackend(zygote=zygote)


def _docker(options: DockerOptions, zygote: bool) -> Backend:
    from grader.isolation.docker import DockerBackend

    return DockerBackend(options)


FACTORIES: dict[str, Callable[[DockerOptions, bool], Backend]] = {"local": _local, "docker": _docker}
BACKENDS = tuple(FACTORIES)


def get_backend(name: str, docker: DockerOptions | None = None, zygote: bool = True) -> Backend:
    """The backend called `name`, created once per process (and per set of Docker options, or per choice of
    the local backend's fork server)."""
    if name not in FACTORIES:
        raise InvalidRequest(f"unknown sandbox backend {name!r}; choose one of: {', '.join(FACTORIES)}")
    key = (name, (docker or DockerOptions()) if name == "docker" else DockerOptions(), zygote and name == "local")
    with _lock:
        if key not in _backends:
            _backends[key] = FACTORIES[name](key[1], key[2])
        return _backends[key]


def close_backends() -> None:
    """Shut down every backend created so far (the Docker backend removes its containers); at exit."""
    with _lock:
        created = list(_backends.values())
        _backends.clear()
    for backend in created:
        shutdown = getattr(backend, "shutdown", None)
        if shutdown is not None:
            shutdown()
