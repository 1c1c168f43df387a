"""Grade a folder of candidates at once: through the service (`grader submit --batch`) or here (`grader grade --batch`).

Every entry of the folder is one candidate, named by the entry: a subfolder with
solution.py (named by the folder), or a .py or .ipynb file (named by its stem).
Hidden entries and other files are skipped. Candidates are graded concurrently
(`jobs` at a time) with a progress bar on stderr (a line per candidate when stderr
is not a terminal). The results go to a CSV file, one row per candidate, and a
summary table on stdout.

A candidate whose entry cannot be read, or whose submission the service refuses,
is a row with status `invalid` and the reason, never an abort. Statuses:

    graded        a complete report; score and failed tests in the row
    invalid       the candidate's entry could not be read or was refused (the message says why)
    failed        the grader could not grade it (a fault of the grader or the service; also any
                  refusal after the submission was accepted, e.g. a 404 or 409 while waiting for it)
    unreachable   the service did not answer (after the client's retries)

The batch's exit code: 4 if the service was unreachable for any candidate, else 3
if any failed, else 1 if any score is under --min-score (an invalid entry counts
as under it), else 0.
"""

from __future__ import annotations

import csv
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.client import ClientError, GraderClient, ServiceFault, Unreachable, UsageError
from grader.engine.notebook import is_notebook_name
from grader.errors import GraderError, InvalidRequest
from grader.reports.csvsafe import safe_cell
from grader.submission_files import read_submission

if TYPE_CHECKING:
    from grader.engine import GradingOptions
    from grader.engine.report import Report
    from grader.isolation.base import Backend

CSV_COLUMNS = ("candidate", "entry", "status", "score", "max_score", "passed", "tests", "failed_tests",
               "submission_id", "report_link", "error")
EXIT_OK, EXIT_LOW_SCORE, EXIT_FAULT, EXIT_UNREACHABLE = 0, 1, 3, 4


@dataclass(frozen=True)
class Entry:
    """One candidate of a batch folder."""

    candidate: str
    path: Path


@dataclass
class Row:
    """One candidate's result: a line of the CSV and of the summary table."""

    candidate: str
    entry: str
    status: str
    score: float | None = None
    max_score: float | None = None
    passed: int | None = None
    tests: int | None = None
    failed_tests: list[str] = field(default_factory=list)
    submission_id: str = ""
    report_link: str = ""
    error: str = ""

    def csv_record(self) -> dict[str, str]:
        def num(x: float | int | None) -> str:
            return "" if x is None else f"{x:g}"

        record = {"candidate": self.candidate, "entry": self.entry, "status": self.status, "score": num(self.score),
                  "max_score": num(self.max_score), "passed": num(self.passed), "tests": num(self.tests),
                  "failed_tests": " ".join(self.failed_tests), "submission_id": self.submission_id,
                  "report_link": self.report_link, "error": self.error}
        return {column: safe_cell(value) for column, value in record.items()}  # names come from file names


def list_entries(folder: Path) -> list[Entry]:
    """The candidates of `folder`, sorted by name; a usage error when the folder cannot be listed."""
    if folder.is_symlink() or not folder.is_dir():
        raise InvalidRequest(f"{folder}: --batch needs a folder (one subfolder or .py/.ipynb file per candidate)")
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise InvalidRequest(f"{folder} cannot be listed: {exc.strerror}") from None
    entries: list[Entry] = []
    taken: set[str] = set()
    for name in names:
        path = folder / name
        if name.startswith("."):
            continue
        # A symlink is listed too, so that it becomes an `invalid` row with the reader's reason.
        linked = path.is_symlink()
        if (path.suffix == ".py" or is_notebook_name(name)) and (linked or path.is_file()):
            candidate = path.stem
        elif linked or path.is_dir():
            candidate = name
        else:
            continue
        if candidate in taken:
            candidate = name  # alice/ and alice.py: two candidates, told apart by the entry's full name
        taken.add(candidate)
        entries.append(Entry(candidate, path))
    if not entries:
        raise InvalidRequest(f"{folder} holds no candidates: put one subfolder (with solution.py) or one "
                             ".py/.ipynb file per candidate in it")
    return entries


def default_csv_path(folder: Path) -> Path:
    return Path.cwd() / f"{folder.resolve().name}-results.csv"


def _score_rows(report: Report, row: Row) -> Row:
    row.score, row.max_score = report.score, report.max_score
    row.passed, row.tests = report.passed, len(report.tests)
    row.failed_tests = [t.id for t in report.tests if t.status != "passed"]
    if not report.complete:
        row.status = "failed"
        row.error = f"the report is incomplete: {report.error}"
    return row


# -- through the service -------------------------------------------------------------------------------------


def submit_one(client: GraderClient, problem: str, entry: Entry, timeout_s: float, *,
               resubmit: bool = False) -> Row:
    """Submit one candidate, wait for its grading and read its report; every failure becomes the row's status.

    `resubmit`: grade the content again even if it was submitted before (see GraderClient.submit).
    """
    from grader.engine.report import Report

    row = Row(entry.candidate, entry.path.name, "graded")
    try:
        files = read_submission(entry.path)
    except InvalidRequest as exc:
        row.status, row.error = "invalid", exc.message
        return row
    try:
        submitted = client.submit(problem, files, entry.candidate, resubmit=resubmit)
        row.submission_id = submitted.id
        row.report_link = submitted.links.get("report_html", "")
        final = client.wait(submitted.id, timeout_s)
        if final.get("status") == "failed":
            row.status = "failed"
            row.error = f"the service could not grade it: {final.get('error')}{submitted.failed_hint()}"
            return row
        report = Report.model_validate(client.report_json(submitted.id, deadline=time.monotonic() + timeout_s))
    except Unreachable as exc:
        row.status, row.error = "unreachable", exc.message
        return row
    except UsageError as exc:  # refused: the candidate's entry; once it was accepted (404/409 later), a fault
        row.status, row.error = "failed" if row.submission_id else "invalid", exc.message
        return row
    except (ServiceFault, ClientError) as exc:
        row.status, row.error = "failed", exc.message
        return row
    except ValueError as exc:  # a report that does not fit the Report model
        row.status, row.error = "failed", f"the service's report cannot be read: {str(exc)[:200]}"
        return row
    return _score_rows(report, row)


def submit_batch(client: GraderClient, problem: str, entries: Sequence[Entry], *, jobs: int,
                 timeout_s: float, resubmit: bool = False) -> list[Row]:
    # A wrong token or problem id would fail every candidate alike: say it once, before submitting anything.
    client.check_problem(problem)
    return run_concurrently(entries, lambda e: submit_one(client, problem, e, timeout_s, resubmit=resubmit),
                            jobs=jobs)


# -- here, in the local sandbox -------------------------------------------------------------------------------


def grade_one(problem: str, entry: Entry, *, backend: Backend, options: GradingOptions, out_dir: Path) -> Row:
    """Grade one candidate here and write its HTML report under `out_dir`."""
    from grader.engine import grade
    from grader.engine.files import ENTRY, check_submission
    from grader.reports.html import SubmissionRow, render_report_page

    row = Row(entry.candidate, entry.path.name, "graded")
    try:
        files = check_submission(read_submission(entry.path, ENTRY), ENTRY, max_files=options.max_files,
                                 max_code_bytes=options.max_code_bytes)
    except InvalidRequest as exc:
        row.status, row.error = "invalid", exc.message
        return row
    try:
        report = grade(problem, files, backend=backend, options=options, entry=ENTRY)
    except GraderError as exc:
        row.status, row.error = "failed", exc.message
        return row
    _score_rows(report, row)
    page = render_report_page(
        submission=SubmissionRow(id=entry.candidate, problem=problem, candidate=entry.candidate,
                                 status="done" if report.complete else "failed", score=report.score,
                                 max_score=report.max_score, error=report.error),
        report=report, files=files, entry=ENTRY)
    path = out_dir / f"{entry.candidate}.html"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        row.error = f"the HTML report could not be written to {path}: {exc.strerror}"
    else:
        row.report_link = str(path)
    return row


def grade_batch(problem: str, entries: Sequence[Entry], *, backend: Backend, options: GradingOptions,
                out_dir: Path, jobs: int) -> list[Row]:
    from grader.engine.catalog import get_problem

    get_problem(problem)  # an unknown id is a usage error before any sandbox starts
    return run_concurrently(entries, lambda e: grade_one(problem, e, backend=backend, options=options,
                                                          out_dir=out_dir), jobs=jobs)


# -- shared: concurrency with progress, the CSV, the table, the exit code ------------------------------------


def run_concurrently(entries: Sequence[Entry], work: Callable[[Entry], Row], *, jobs: int) -> list[Row]:
    """`work` on every entry, `jobs` at a time; rows in the entries' order. Progress goes to stderr."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[int, Row] = {}
    lock = threading.Lock()

    def guarded(i: int, entry: Entry) -> Row:
        try:
            return work(entry)
        except Exception as exc:  # a bug must not lose the other candidates' results
            return Row(entry.candidate, entry.path.name, "failed",
                       error=f"internal error ({type(exc).__name__}: {str(exc)[:200]})")

    console = Console(stderr=True)
    animated = console.is_terminal and not console.is_dumb_terminal
    progress = Progress(TextColumn("[bold]grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console, disable=not animated)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="batch")
    try:
        with progress:
            task = progress.add_task("", total=len(entries))
            futures = {pool.submit(guarded, i, e): i for i, e in enumerate(entries)}
            for future in as_completed(futures):
                i = futures[future]
                row = future.result()
                with lock:
                    results[i] = row
                    done = len(results)
                progress.update(task, advance=1, description=escape(f"{row.candidate}: {_outcome(row)}"))
                if not animated:
                    print(f"[{done}/{len(entries)}] {row.candidate}: {_outcome(row)}", file=sys.stderr, flush=True)
    finally:
        # On Ctrl-C, candidates not started yet are dropped (the ones under way still finish before the exit).
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[i] for i in range(len(entries))]


def _outcome(row: Row) -> str:
    if row.status == "graded":
        return f"{row.score:g}/{row.max_score:g}"
    return f"{row.status}: {row.error}" if row.error else row.status


def write_csv(rows: Sequence[Row], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(row.csv_record() for row in rows)
    except OSError as exc:
        raise InvalidRequest(f"the results cannot be written to {path}: {exc.strerror}") from None


def print_summary(rows: Sequence[Row], csv_path: Path, out: Any = None) -> None:
    """A table on stdout: candidate, status, score, failed tests, report link."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out or sys.stdout)
    if not console.is_terminal:
        console = Console(file=out or sys.stdout, width=240)
    table = Table()
    table.add_column("candidate")
    table.add_column("status")
    table.add_column("score", justify="right")
    table.add_column("failed tests", overflow="fold")
    table.add_column("report", overflow="fold")
    for row in rows:
        score = f"{row.score:g}/{row.max_score:g}" if row.score is not None and row.max_score is not None else "-"
        failed = " ".join(row.failed_tests) if row.status == "graded" else row.error
        table.add_row(*(Text(cell) for cell in (row.candidate, row.status, score, failed, row.report_link)))
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    console.print(Text(f"{len(rows)} candidates ({tally}); results: {csv_path}"))


def exit_code(rows: Sequence[Row], min_score: float | None) -> int:
    statuses = {row.status for row in rows}
    if "unreachable" in statuses:
        return EXIT_UNREACHABLE
    if "failed" in statuses:
        return EXIT_FAULT
    if min_score is not None and any(row.status == "invalid" or (row.score or 0.0) < min_score for row in rows):
        return EXIT_LOW_SCORE
    return EXIT_OK
