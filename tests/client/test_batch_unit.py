"""Batch bookkeeping without grading: which entries are candidates, the CSV's columns, the batch's exit code."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from grader import batch
from grader.cli import main
from grader.errors import InvalidRequest
from tests.service.live_server import free_port


def test_entries_are_folders_and_py_or_ipynb_files_named_by_stem(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob.py").write_text("x = 1\n")
    (tmp_path / "carol.ipynb").write_text("{}\n")
    (tmp_path / "dan").mkdir()
    (tmp_path / "dan.py").write_text("x = 1\n")  # dan/ and dan.py: two candidates
    (tmp_path / ".git").mkdir()
    (tmp_path / "README.md").write_text("not a candidate\n")
    (tmp_path / "notes.txt").write_text("not a candidate\n")
    (tmp_path / "eve.py").symlink_to(tmp_path / "bob.py")
    entries = batch.list_entries(tmp_path)
    assert [(e.candidate, e.path.name) for e in entries] == [
        ("alice", "alice"), ("bob", "bob.py"), ("carol", "carol.ipynb"), ("dan", "dan"), ("dan.py", "dan.py"),
        ("eve", "eve.py")]


def test_an_empty_or_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x\n")
    with pytest.raises(InvalidRequest, match="holds no candidates"):
        batch.list_entries(tmp_path)
    with pytest.raises(InvalidRequest, match="--batch needs a folder"):
        batch.list_entries(tmp_path / "absent")


def row(status: str, score: float | None = None) -> batch.Row:
    return batch.Row("c", "c.py", status, score=score, max_score=100.0)


@pytest.mark.parametrize(("rows", "min_score", "code"), [
    ([row("graded", 100), row("graded", 10)], None, 0),
    ([row("graded", 100), row("invalid")], None, 0),
    ([row("graded", 100), row("graded", 79.5)], 80, 1),
    ([row("graded", 100), row("invalid")], 80, 1),
    ([row("graded", 100), row("graded", 80)], 80, 0),
    ([row("graded", 10), row("failed")], 80, 3),
    ([row("failed"), row("unreachable"), row("graded", 10)], 80, 4),
])
def test_the_batch_exit_code(rows: list[batch.Row], min_score: float | None, code: int) -> None:
    assert batch.exit_code(rows, min_score) == code


def test_the_csv_has_a_row_per_candidate_with_every_column(tmp_path: Path) -> None:
    rows = [batch.Row("ada", "ada", "graded", 71.0, 100.0, 10, 14, ["t1", "t2"], "f" * 32, "http://x/r.html"),
            batch.Row("bo", "bo.py", "invalid", error="bo.py: line 1, a NUL byte")]
    batch.write_csv(rows, tmp_path / "out" / "r.csv")
    with open(tmp_path / "out" / "r.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert records == [
        {"candidate": "ada", "entry": "ada", "status": "graded", "score": "71", "max_score": "100", "passed": "10",
         "tests": "14", "failed_tests": "t1 t2", "submission_id": "f" * 32, "report_link": "http://x/r.html",
         "error": ""},
        {"candidate": "bo", "entry": "bo.py", "status": "invalid", "score": "", "max_score": "", "passed": "",
         "tests": "", "failed_tests": "", "submission_id": "", "report_link": "", "error": "bo.py: line 1, a NUL byte"}]


def test_a_batch_to_a_service_that_is_down_exits_4_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "ada.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    code = main(["submit", "mlp", "--batch", "cohort", "--server", f"http://127.0.0.1:{free_port()}",
                 "--retries", "2", "--retry-delay", "0.01"])
    assert code == 4
    assert "could not reach the service" in capsys.readouterr().err
    assert not (tmp_path / "cohort-results.csv").exists()


def test_a_notebook_is_told_by_its_name_in_any_case_as_the_reader_does(tmp_path: Path) -> None:
    from grader.submission_files import read_submission

    (tmp_path / "frank.IPYNB").write_text("{}\n")
    (tmp_path / "gina.Ipynb").write_text("{}\n")
    assert [(e.candidate, e.path.name) for e in batch.list_entries(tmp_path)] == [
        ("frank", "frank.IPYNB"), ("gina", "gina.Ipynb")]
    assert read_submission(tmp_path / "frank.IPYNB") == {"solution.ipynb": "{}\n"}
    folder = tmp_path / "hal"
    folder.mkdir()
    (folder / "Analysis.IPYNB").write_text("{}\n")
    assert read_submission(folder) == {"solution.ipynb": "{}\n"}  # a folder's lone notebook, as a lone file is


def test_candidate_and_entry_names_from_file_names_are_never_formulas_in_the_csv(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / '=HYPERLINK("x").py').write_text("x = 1\n")
    (cohort / "-1+1.py").write_text("x = 1\n")
    rows = [batch.Row(e.candidate, e.path.name, "invalid", error=f"{e.path.name}: refused")
            for e in batch.list_entries(cohort)]
    rows.append(batch.Row("@ann", "+ann.py", "graded", -1.0, 100.0, 0, 1, ["=t1"], report_link="=x"))
    batch.write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert [(r["candidate"], r["entry"], r["error"]) for r in records[:2]] == [
        ("'-1+1", "'-1+1.py", "'-1+1.py: refused"),
        ("'=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\").py", "'=HYPERLINK(\"x\").py: refused")]
    assert records[2] == {"candidate": "'@ann", "entry": "'+ann.py", "status": "graded", "score": "'-1",
                          "max_score": "100", "passed": "0", "tests": "1", "failed_tests": "'=t1",
                          "submission_id": "", "report_link": "'=x", "error": ""}
