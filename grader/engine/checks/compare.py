"""T0 conformance and T1/T2 comparison: shapes and dtypes first, then values, normwise.

Shape first: numpy broadcasting hides a db that was not summed from any
dot-product style check, so every array is required to have exactly the
reference's shape and dtype before its values are looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.engine.plan import CheckFailed
from grader.isolation.base import Handle


class NotFinite(CheckFailed):
    """An answer holds nan or inf (a plan may add a diagnosis, such as an overflow hint)."""


RTOL = 1e-7
ATOL = 1e-10


def kind_of(value: Any) -> str:
    if isinstance(value, Handle):
        return f"a {value.type} object"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def expect_tuple(value: Any, length: int, what: str, names: str = "") -> tuple[Any, ...]:
    """The contract's `(a, b, ...)` return: a tuple (or list) of exactly `length` items."""
    if not isinstance(value, (tuple, list)) or len(value) != length:
        got = f"{len(value)} values" if isinstance(value, (tuple, list)) else kind_of(value)
        expected = f" ({names})" if names else ""
        raise CheckFailed(f"{what} must return {length} values{expected}; it returned {got}")
    return tuple(value)


def expect_array(value: Any, name: str, shape: tuple[int, ...], dtype: Any = np.float64,
                 finite: bool = True) -> np.ndarray:
    """T0: an exact numpy array with the expected shape and dtype, and finite values."""
    if not isinstance(value, np.ndarray):
        hint = " (return a numpy array, not a scalar)" if np.isscalar(value) or value is None else ""
        raise CheckFailed(f"{name} must be a numpy array of shape {shape}; got {kind_of(value)}{hint}")
    if value.shape != tuple(shape):
        hint = ""
        if value.size == int(np.prod(shape)):
            hint = " (right number of values: reshape it back to the input's shape)"
        elif value.ndim == len(shape) + 1:
            hint = " (a sum over the batch axis missing, or an extra axis kept?)"
        raise CheckFailed(f"{name} has shape {value.shape}; expected {tuple(shape)}{hint}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise CheckFailed(f"{name} has dtype {value.dtype}; expected {np.dtype(dtype)} (grading is in float64)")
    if finite and not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise NotFinite(f"{name} has {bad} non-finite value(s) (nan or inf)")
    return value


def expect_params(value: Any, shapes: dict[str, tuple[int, ...]], owner: str,
                  diverged_hint: str | None = None) -> dict[str, np.ndarray]:
    """T0 for a params dict: a dict with every expected key, each an exact float64 array of its shape, finite.

    `diverged_hint` turns non-finite values into one verdict about training ("training diverged: ...");
    without it the first non-finite array is named.
    """
    if not isinstance(value, dict):
        raise CheckFailed(f"{owner} must be a dict of arrays; got {kind_of(value)}")
    missing = sorted(set(shapes) - set(value))
    if missing:
        raise CheckFailed(f"{owner} is missing {missing}; it must hold {', '.join(shapes)}")
    checked = {k: expect_array(value[k], f"params['{k}']", shape, finite=diverged_hint is None)
               for k, shape in shapes.items()}
    if diverged_hint is not None and not all(np.all(np.isfinite(v)) for v in checked.values()):
        raise CheckFailed(f"{owner} has non-finite values: training diverged ({diverged_hint})")
    return checked


def expect_scalar(value: Any, name: str, finite: bool = True) -> float:
    """A scalar: a Python number, a numpy scalar or a 0-d (or one-element) array."""
    if isinstance(value, (bool, np.bool_, np.complexfloating)) or not (
        isinstance(value, (int, float, np.number))
        or (isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu")
    ):
        raise CheckFailed(f"{name} must be a scalar; got {kind_of(value)}")
    try:
        result = float(np.asarray(value).reshape(()))
    except OverflowError:  # a Python int beyond float range
        raise CheckFailed(f"{name} is not a finite number") from None
    if finite and not np.isfinite(result):
        raise NotFinite(f"{name} is not finite ({result})")
    return result


@dataclass(frozen=True)
class Comparison:
    ok: bool
    normwise: float
    worst_index: tuple[int, ...]
    worst_got: float
    worst_expected: float

    def describe(self, name: str) -> str:
        where = f" at index {self.worst_index}" if self.worst_index else ""
        return (
            f"{name} differs from the reference: normwise error {self.normwise:.2e}; "
            f"worst element{where}: got {self.worst_got:.6g}, expected {self.worst_expected:.6g}"
        )


def normwise_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / (‖a‖ + ‖b‖), 0 when both are zero, infinite when either holds a non-finite value."""
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    with np.errstate(over="ignore", invalid="ignore"):
        denom = float(np.linalg.norm(a) + np.linalg.norm(b))
        error = float(np.linalg.norm(a - b)) / denom if denom > 0 else 0.0
    return error if np.isfinite(error) or denom == 0 else float("inf")


def compare(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> Comparison:
    """Elementwise closeness with atol scaled by the reference's largest magnitude."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1.0)
    diff = np.abs(a - b)
    ok = bool(np.all(diff <= atol * scale + rtol * np.abs(b))) if b.size else True
    if not b.size:
        return Comparison(True, 0.0, (), 0.0, 0.0)
    excess = diff - rtol * np.abs(b)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), b.shape)) if b.ndim else ()
    return Comparison(ok, normwise_error(a, b), idx, float(a[idx]), float(b[idx]))


def assert_close(
    actual: np.ndarray, expected: np.ndarray, name: str, rtol: float = RTOL, atol: float = ATOL, hint: str = ""
) -> None:
    result = compare(actual, expected, rtol, atol)
    if not result.ok:
        raise CheckFailed(result.describe(name) + (f". {hint}" if hint else ""))


def check_output(
    value: Any, expected: np.ndarray, name: str, rtol: float = RTOL, atol: float = ATOL, hint: str = ""
) -> np.ndarray:
    """T0 then T1/T2 in one step: exact shape and dtype, finite, then close to the reference."""
    arr = expect_array(value, name, expected.shape, expected.dtype)
    assert_close(arr, expected, name, rtol, atol, hint)
    return arr
