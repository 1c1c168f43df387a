"""Hostile submissions shared by the sandbox tests and the benchmarks.

First, those that answer with garbage: the reference, with every answer corrupted one way.

Each mode wraps every public function and method of the reference so its
result (or every array and number inside it) is replaced by something a
careless or hostile candidate could return. Grading such a file must blame the
candidate for every lost point, never the grader: no test may end as a fault
of the grader, whatever comes back.

    python -m tests.sandbox.garbage [PROBLEM ...]   # grade every mode, print grader faults
"""

from __future__ import annotations

import sys

from tests.conftest import ROOT

MODES = (
    "none",
    "str",
    "nested",
    "leaf_str",
    "leaf_none",
    "leaf_obj",
    "leaf_complex",
    "leaf_int",
    "leaf_bool",
    "leaf_shape",
    "leaf_0d",
    "leaf_empty",
    "leaf_list",
    "leaf_nan",
    "leaf_huge",
    "leaf_dict",
    "short_tuple",
    "helpers",
)
PROBLEMS = ("mlp", "cnn", "rnn", "regularization", "gan", "attention", "optim")

# A neighbour that takes every core it can: children that leave the session (setsid) and spin, and the
# parent spinning too, all at import time. Used by the CPU-share test and benchmarks/neighbour.py.
CPU_HOG = """
import os
for _ in range(8):
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
while True:
    pass
"""

WRAPPER = r"""

# ---- garbage: every answer corrupted ({mode}) ----
import types as _types
import numpy as _np

_MODE = {mode!r}


class _Opaque:
    pass


def _leaf(v, _MODE):
    if _MODE == "leaf_str":
        return "garbage"
    if _MODE == "leaf_none":
        return None
    if _MODE == "leaf_obj":
        return _Opaque()
    if _MODE == "leaf_dict":
        return {{"a": 1}}
    if _MODE == "leaf_list":
        return _np.asarray(v, dtype=float).tolist()
    a = _np.asarray(v, dtype=float) if not hasattr(v, "detach") else v.detach().numpy().astype(float)
    if _MODE == "leaf_complex":
        return a.astype(complex) * 1j
    if _MODE == "leaf_int":
        return a.astype(_np.int64)
    if _MODE == "leaf_bool":
        return a.astype(bool)
    if _MODE == "leaf_shape":
        return _np.zeros((2, 3, 4, 5, 1))
    if _MODE == "leaf_0d":
        return _np.float64(1.0)
    if _MODE == "leaf_empty":
        return _np.zeros((0,))
    if _MODE == "leaf_nan":
        return _np.full(a.shape, _np.nan)
    if _MODE == "leaf_huge":
        return _np.full(a.shape, 1e308)
    return v


def _garbage(value, _MODE):
    if _MODE == "none":
        return None
    if _MODE == "str":
        return "not an answer"
    if _MODE == "nested":
        out = []
        for _ in range(30):
            out = [out]
        return out
    if _MODE == "short_tuple":
        return value[:1] if isinstance(value, tuple) and value else value
    if isinstance(value, (tuple, list)):
        return type(value)(_garbage(v, _MODE) for v in value)
    if isinstance(value, dict):
        return {{k: _garbage(v, _MODE) for k, v in value.items()}}
    if isinstance(value, (float, int, _np.ndarray, _np.generic)) and not isinstance(value, bool):
        return _leaf(value, _MODE)
    if type(value).__module__.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter"):
        return _leaf(value, _MODE)
    return value


def _wrap(fn, mode):
    def wrapped(*args, **kwargs):
        return _garbage(fn(*args, **kwargs), mode)
    wrapped.__name__ = fn.__name__
    return wrapped


def _corrupt(namespace, module_name, mode):
    for _name, _value in list(namespace.items()):
        if _name.startswith("_"):
            continue
        if isinstance(_value, _types.FunctionType) and _value.__module__ == module_name:
            namespace[_name] = _wrap(_value, mode)
        elif isinstance(_value, type) and _value.__module__ == module_name:
            for _m, _f in list(vars(_value).items()):
                if isinstance(_f, _types.FunctionType) and not _m.startswith("__"):
                    setattr(_value, _m, _wrap(_f, mode))


if _MODE == "helpers":
    # The grader's own helpers run in this interpreter too: make every one of them lie.
    import importlib as _importlib
    import pkgutil as _pkgutil
    try:
        import sandbox.builtins as _builtins
        for _info in _pkgutil.iter_modules(_builtins.__path__):
            _mod = _importlib.import_module("sandbox.builtins." + _info.name)
            _corrupt(vars(_mod), _mod.__name__, "leaf_nan")
    except ImportError:
        pass
else:
    _corrupt(globals(), __name__, _MODE)
"""


def garbage_submission(problem: str, mode: str) -> str:
    base = (ROOT / "reference" / f"{problem}.py").read_text().replace("from __future__ import annotations\n", "")
    return base + WRAPPER.format(mode=mode)


def main(argv: list[str]) -> int:
    from tests.grading import grade_submission

    bad = 0
    for problem in argv or PROBLEMS:
        for mode in MODES:
            report = grade_submission(problem, {"solution.py": garbage_submission(problem, mode)})
            faults = [
                (t.id, t.message)
                for t in report.tests
                if getattr(t, "fault", None) == "grader" or "internal grader error" in t.message
            ]
            bad += len(faults)
            print(f"{problem:<15} {mode:<13} {report.score:>5g}/{report.max_score:g} {report.status}", flush=True)
            for test_id, message in faults:
                print(f"    GRADER FAULT {test_id}: {message[:300]}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
