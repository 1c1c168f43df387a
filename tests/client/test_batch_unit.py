"""Batch bookkeeping without grading: which entries are candidates, the CSV's columns, the batch's exit code."""

from __future__ import annotations

import csv
import re
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


def _graded(entry: batch.Entry) -> batch.Row:
    return batch.Row(entry.candidate, entry.path.name, "graded", 71.0, 100.0, 10, 14, ["affine_backward"])


def _cohort(tmp_path: Path) -> list[batch.Entry]:
    return [batch.Entry(name, tmp_path / f"{name}.py") for name in ("ada", "bo", "cy")]


def test_a_terminal_gets_the_rich_progress_bar_and_no_progress_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import rich.console
    import rich.progress

    class TerminalConsole(rich.console.Console):
        """stderr as a terminal would be: what `grader submit --batch` meets in a person's shell."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **{**kwargs, "force_terminal": True, "width": 120})  # type: ignore[arg-type]

    bars: list[rich.progress.Progress] = []

    class SeenProgress(rich.progress.Progress):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            bars.append(self)

    monkeypatch.setenv("TERM", "xterm-256color")  # not a dumb terminal
    monkeypatch.setattr(rich.console, "Console", TerminalConsole)
    monkeypatch.setattr(rich.progress, "Progress", SeenProgress)
    rows = batch.run_concurrently(_cohort(tmp_path), _graded, jobs=2)
    assert [r.candidate for r in rows] == ["ada", "bo", "cy"]
    err = capsys.readouterr().err
    (bar,) = bars
    assert not bar.disable and bar.console.is_terminal
    (task,) = bar.tasks
    assert (task.completed, task.total) == (3, 3)
    # Drawn on the terminal: the live display's escape codes, the bar's glyphs, its count and the last candidate.
    assert "\x1b[" in err and "━" in err and "grading" in err, err
    assert re.search(r"3/3", err) and re.search(r"(ada|bo|cy): 71/100", err), err
    assert not re.search(r"^\[\d/3\] ", err, re.M), err  # no line per candidate beside the bar


def test_a_stderr_that_is_not_a_terminal_gets_a_plain_line_per_candidate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import rich.progress

    bars: list[rich.progress.Progress] = []

    class SeenProgress(rich.progress.Progress):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            bars.append(self)

    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(rich.progress, "Progress", SeenProgress)
    rows = batch.run_concurrently(_cohort(tmp_path), _graded, jobs=2)
    assert [r.candidate for r in rows] == ["ada", "bo", "cy"]
    err = capsys.readouterr().err
    (bar,) = bars
    assert bar.disable and not bar.console.is_terminal
    lines = err.splitlines()
    assert len(lines) == 3 and [line.split("] ")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"], err
    assert sorted(line.split("] ", 1)[1] for line in lines) == ["ada: 71/100", "bo: 71/100", "cy: 71/100"]
    assert "\x1b[" not in err and "━" not in err  # no escape codes, no bar in a log file


def test_a_dumb_terminal_gets_the_plain_lines_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import rich.console

    class TerminalConsole(rich.console.Console):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **{**kwargs, "force_terminal": True})  # type: ignore[arg-type]

    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(rich.console, "Console", TerminalConsole)
    batch.run_concurrently(_cohort(tmp_path), _graded, jobs=1)
    err = capsys.readouterr().err
    assert re.findall(r"^\[(\d)/3\] ", err, re.M) == ["1", "2", "3"], err
    assert "━" not in err
