"""Shared fixtures. Tests are split by cost: see tests/README.md."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

pytest_plugins = ["tests.backends"]  # the sandbox_backend fixture: local and docker

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tests" / "solutions"


@dataclass(frozen=True)
class Solution:
    problem: str
    path: Path
    correct: bool
    expect: tuple[str, ...]
    mistake: str

    @property
    def files(self) -> dict[str, str]:
        return {"solution.py": self.path.read_text()}


def load_solution(path: Path) -> Solution:
    """A correct_*.py or wrong_*.py file; wrong ones name their mistake and expected failing tests."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    expect: tuple[str, ...] = ()
    mistake = ""
    for line in doc.splitlines():
        if line.startswith("Expect:"):
            expect = tuple(t.strip() for t in line.removeprefix("Expect:").split(",") if t.strip())
        if line.startswith("Known-wrong:"):
            mistake = line.removeprefix("Known-wrong:").strip()
    return Solution(path.parent.name, path, path.name.startswith("correct_"), expect, mistake)


def solutions(kind: str) -> list[Solution]:
    return [load_solution(p) for p in sorted(SOLUTIONS.glob(f"*/{kind}_*.py"))]
