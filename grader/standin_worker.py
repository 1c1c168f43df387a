"""The process that runs reference functions for stand-in calls: `python -m grader.standin_worker PROBLEM`.

Started by grader/engine/standins.py; kept apart from the grader package's engine so that it
imports only numpy, the wire format and `reference/<PROBLEM>.py`. Its arguments come from a
candidate's code, so it limits itself before importing anything heavy: address space (a padding
that asks for gigabytes is a MemoryError here), CPU time, no core files. It answers each
{"call": name} frame with {"ok": true} and (result, args_after, kwargs_after), where an argument
the call did not change is sent as None (only what the caller must write back travels), or with
{"ok": false, "error": the exception's type}: never the reference's own messages.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import resource
import sys
from types import ModuleType
from typing import Any

ADDRESS_SPACE_BYTES = 1024**3  # no more than a sandbox may use; the imports take about 140 MB of it
CPU_SECONDS = 120


def public_functions(module: ModuleType) -> frozenset[str]:
    """The functions a reference module defines itself (no classes, nothing private or imported)."""
    return frozenset(name for name, value in vars(module).items()
                     if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_"))


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    if type(a) is not type(b):
        return False
    if type(a) is np.ndarray:
        return bool(a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _changed(before: Any, after: Any) -> Any:
    return None if _same(before, after) else after


def main(problem_id: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from sandbox import wire

    module = importlib.import_module(f"reference.{problem_id}")
    allowed = public_functions(module)
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print in the reference can never corrupt a frame
    wire.send(proto_out, {"ready": True})
    while True:
        try:
            header, value = wire.receive(proto_in)
        except EOFError:
            return
        name = header.get("call")
        try:
            if name not in allowed:
                raise LookupError(name)
            args, kwargs = value
            kept = copy.deepcopy((args, kwargs))
            result = getattr(module, name)(*args, **kwargs)
            wire.send(proto_out, {"ok": True}, (result, [_changed(b, a) for b, a in zip(kept[0], args)],
                                                {k: _changed(kept[1][k], v) for k, v in kwargs.items()}))
        except Exception as exc:  # the reference refused the arguments: the proxy raises it inside the sandbox
            wire.send(proto_out, {"ok": False, "error": f"the reference raised {type(exc).__name__}"})


if __name__ == "__main__":
    main(sys.argv[1])
