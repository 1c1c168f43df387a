"""Notebooks graded for real: the local sandbox, the engine and the CLI, on the mlp problem."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.cli import main
from tests.conftest import ROOT
from tests.grading import grade_submission

pytestmark = pytest.mark.slow

CORRECT = (ROOT / "tests" / "solutions" / "mlp" / "correct_vectorized.py").read_text()


def notebook_of(code: str, *, bug_in_cell_3: bool = False) -> str:
    """Cell 1 is markdown; then one code cell per top-level block (cell 3 is affine_forward), with a magic,
    a shell escape and an output that grading must ignore."""
    cells = [new_markdown_cell("# The exercise")]
    cells += [new_code_cell(block) for block in code.split("\n\n\n")]
    cells[1].source = "%matplotlib inline\n!pip install numpy\n" + cells[1].source
    if bug_in_cell_3:
        assert "out = x2d @ w + b" in cells[2].source
        cells[2].source = cells[2].source.replace("out = x2d @ w + b", "out = x2d @ w + b + undefined_name")
    cells[2].outputs = [new_output("stream", name="stdout", text="OUTPUT-SECRET-1234")]
    return nbformat.writes(new_notebook(cells=cells))


def test_a_notebook_gets_the_score_of_its_py() -> None:
    as_py = grade_submission("mlp", {"solution.py": CORRECT})
    as_notebook = grade_submission("mlp", {"solution.ipynb": notebook_of(CORRECT)})
    assert as_notebook.environment.sandbox_backend == "local" and as_notebook.environment.isolation
    assert as_py.score == as_py.max_score
    assert as_notebook.score == as_py.score
    assert [(t.id, t.status) for t in as_notebook.tests] == [(t.id, t.status) for t in as_py.tests]
    dropped = [f.message for f in as_notebook.findings if f.kind == "notebook" and f.severity == "warning"]
    assert len(dropped) == 2 and dropped[0].startswith("notebook cell 2, line 1: ")
    assert "OUTPUT-SECRET-1234" not in as_notebook.model_dump_json()


def test_a_bug_in_cell_3_is_named_in_the_failing_tests() -> None:
    report = grade_submission("mlp", {"solution.ipynb": notebook_of(CORRECT, bug_in_cell_3=True)})
    failing = [t for t in report.tests if t.status != "passed"]
    assert failing and report.score < report.max_score
    for t in failing:
        # header, cell 2's marker and its 5 lines (2 dropped), cell 3's marker, def, x2d, the bug: line 11
        assert "(solution.py, line 11; notebook cell 3, line 3)" in t.message, t.message


def test_the_cli_grades_a_notebook_file_and_a_notebook_folder(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Exercise-1.ipynb"
    path.write_text(notebook_of(CORRECT, bug_in_cell_3=True))
    assert main(["grade", "mlp", str(path)]) == 0
    text = capsys.readouterr().out
    assert "notebook cell 3, line 3" in text and "OUTPUT-SECRET-1234" not in text

    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "work.ipynb").write_text(notebook_of(CORRECT))
    assert main(["grade", "mlp", str(folder), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["score"] == report["max_score"]

    as_py = tmp_path / "solution.py"
    as_py.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{}]}))
    assert main(["grade", "mlp", str(as_py)]) == 2
    assert "solution.py (a Jupyter notebook) is not a valid nbformat 4 notebook" in capsys.readouterr().err
