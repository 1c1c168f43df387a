"""`grader grade --batch`: a folder of candidates graded here, in the real sandbox, two at a time."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from tests.client.conftest import CORRECT, WRONG, WRONG_FAILS, run_cli

pytestmark = pytest.mark.slow


def test_grade_batch_writes_the_csv_and_an_html_report_per_candidate(tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    (folder / "bob").mkdir(parents=True)
    (folder / "alice.py").write_text(CORRECT.read_text())
    (folder / "bob" / "solution.py").write_text(WRONG.read_text())
    (folder / "eve.py").symlink_to(CORRECT)  # a symlink is refused by the reader: a row, not an abort
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = run_cli("grade", "mlp", "--batch", str(folder), "--jobs", "2", "--min-score", "80", env=env,
                   cwd=tmp_path)
    assert done.returncode == 1, done.stderr + done.stdout  # bob is under 80, eve was not graded
    with open(tmp_path / "cohort-results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == ["alice", "bob", "eve"]
    alice, bob, eve = rows
    assert (alice["status"], alice["score"], alice["max_score"], alice["passed"], alice["tests"]) == (
        "graded", "100", "100", "14", "14")
    assert alice["failed_tests"] == "" and alice["error"] == "" and alice["submission_id"] == ""
    assert (bob["status"], bob["score"], bob["passed"]) == ("graded", "71", "10")
    assert sorted(bob["failed_tests"].split(" ")) == sorted(WRONG_FAILS)
    assert eve["status"] == "invalid" and "symlink" in eve["error"] and eve["report_link"] == ""
    for row in (alice, bob):
        page = Path(row["report_link"])
        assert page == tmp_path / "cohort-reports" / f"{row['candidate']}.html"
        html = page.read_text()
        assert html.lstrip().lower().startswith("<!doctype html") and row["candidate"] in html
    assert "db is averaged over the batch" in Path(bob["report_link"]).read_text()
    for text in ("alice", "bob", "eve", "100/100", "71/100", str(tmp_path / "cohort-reports" / "bob.html")):
        assert text in done.stdout
