"""Generic helpers the grader calls inside the sandbox on objects that stay there."""

from __future__ import annotations

from typing import Any


def setitem(container: Any, key: Any, value: Any) -> None:
    """container[key] = value, e.g. to perturb one entry of a model's params dict in place."""
    container[key] = value


def getitem(container: Any, key: Any) -> Any:
    return container[key]
