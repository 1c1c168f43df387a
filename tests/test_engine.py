"""The engine end to end on `mlp` in the real sandbox: determinism, scoring rules, the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.engine.catalog import list_problems
from grader.engine.report import Report
from grader.errors import InvalidRequest
from tests.conftest import ROOT, Solution, solutions
from tests.grading import grade_submission

REFERENCE = (ROOT / "reference" / "mlp.py").read_text()


def stable(report: Report) -> dict:
    """A report without what legitimately varies between runs: measured times and the sandbox's uid."""
    data = report.model_dump()
    data.pop("duration_s")
    data["environment"].pop("isolation")
    for t in data["tests"]:
        t.pop("duration_s")
        # Measured durations are named *_s / *_ms (docs/writing-a-problem.md); the speed ratio is one too.
        t["details"] = {k: v for k, v in t["details"].items()
                        if not (k.endswith(("_s", "_ms")) or (t["category"] == "efficiency" and k == "ratio"))}
    return data


def first_wrong_solution(problem_id: str) -> Solution:
    return next(s for s in solutions("wrong") if s.problem == problem_id)


@pytest.mark.slow
@pytest.mark.parametrize("problem_id", [p.id for p in list_problems()])
def test_same_submission_same_report(problem_id: str) -> None:
    wrong = first_wrong_solution(problem_id)
    first = grade_submission(problem_id, wrong.files)
    second = grade_submission(problem_id, wrong.files)
    assert first.score < first.max_score
    assert stable(first) == stable(second)


@pytest.mark.slow
def test_autodiff_import_zeroes_the_gradient_tests() -> None:
    report = grade_submission("mlp", {"solution.py": "import torch\n" + REFERENCE})
    assert any(f.kind == "forbidden-import" and f.line == 1 for f in report.findings)
    for t in report.tests:
        if t.category in ("backward", "gradient check"):
            assert t.earned == 0, t.id
    assert report.score == 0  # torch is not even importable in this sandbox


def test_bad_requests_say_what_to_fix() -> None:
    for files, match in [({}, "no files"), ({"../x.py": "x"}, "not allowed"), ({"a/b.py": "x"}, "not allowed"),
                         ({"helpers.py": "x = 1"}, "entry file"), ({"solution.py": "  \n"}, "empty"),
                         ({"solution.py": "x" * 300_000}, "limit is")]:
        with pytest.raises(InvalidRequest, match=match):
            grade_submission("mlp", files)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_cli_lists_problems() -> None:
    proc = run_cli("problems")
    assert proc.returncode == 0
    assert any(line.split()[:2] == ["mlp", "v1.0.0"] for line in proc.stdout.splitlines())
    assert "A neural network from scratch" in proc.stdout


@pytest.mark.slow
def test_cli_grade_json_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(REFERENCE)
    proc = run_cli("grade", "mlp", str(good), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["score"] == report["max_score"] == 100
    assert report["problem"] == {"id": "mlp", "version": "1.0.0"}
    assert {"grader_version", "seed", "sandbox_backend"} <= set(report["environment"])
    template = tmp_path / "template.py"
    template.write_text((ROOT / "problems" / "mlp" / "template.py").read_text())
    proc = run_cli("grade", "mlp", str(template), "--min-score", "50")
    assert proc.returncode == 1 and "under --min-score" in proc.stderr
    assert run_cli("grade", "nope", str(good)).returncode == 2
    assert run_cli("grade", "mlp", str(tmp_path / "missing.py")).returncode == 2
    assert run_cli("grade", "mlp", str(good), "--sandbox", "nope").returncode == 2
    proc = run_cli("grade", "mlp", str(good), "--format", "text")
    assert proc.returncode == 0 and "100/100 points" in proc.stdout


def test_stop_at_first_loss_stops_there_and_is_never_a_grade() -> None:
    """`grader check-problem` asks whether a mutant loses points, not its grade: the engine stops at the first
    test that loses points and says the report is no grade; a correct solution still runs every test."""
    from grader.engine import GradingOptions, grade
    from grader.isolation.inprocess import InProcessBackend

    wrong = (ROOT / "tests" / "solutions" / "mlp" / "wrong_db_mean.py").read_text()
    full = grade("mlp", {"solution.py": wrong}, backend=InProcessBackend())
    first_lost = next(t.id for t in full.tests if t.earned < t.points)
    stopped = grade("mlp", {"solution.py": wrong}, backend=InProcessBackend(),
                    options=GradingOptions(stop_at_first_loss=True))
    assert [t.id for t in stopped.tests] == [t.id for t in full.tests][:len(stopped.tests)]
    assert stopped.tests[-1].id == first_lost and len(stopped.tests) < len(full.tests)
    assert stopped.status == "incomplete" and "not a grade" in (stopped.error or "")
    correct = (ROOT / "reference" / "mlp.py").read_text()
    whole = grade("mlp", {"solution.py": correct}, backend=InProcessBackend(),
                  options=GradingOptions(stop_at_first_loss=True))
    assert whole.status == "graded" and whole.score == whole.max_score and len(whole.tests) == len(full.tests)
