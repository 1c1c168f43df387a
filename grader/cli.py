"""The `grader` command: list problems, grade a file or a folder of candidates, submit to a grading service.

The service adds `serve` and `tokens`.

Exit status: 0 when grading ran (whatever the score), 1 when the score is under
--min-score, 2 for a usage error (or a request the service refused), 3 for a
fault of the grader or the service, 4 when the service could not be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader import logs
from grader.client import ClientError
from grader.errors import GraderError, InvalidRequest
from grader.isolation import BACKENDS
from grader.submission_files import read_submission

if TYPE_CHECKING:
    from grader.client import GraderClient
    from grader.config import Settings
    from grader.engine.report import Report

SUBMISSION_HELP = "solution .py file, a Jupyter notebook (.ipynb), or a folder with solution.py (or one notebook)"
EXIT_OK, EXIT_LOW_SCORE, EXIT_USAGE, EXIT_FAULT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def cmd_problems(args: argparse.Namespace) -> int:
    from grader.engine.catalog import list_problems

    for p in list_problems():
        print(f"{p.id:<16} v{p.version:<8} {p.max_score:>5g} pts  {p.test_count:>3} tests  {p.title}")
    return EXIT_OK


def verdict_exit(report: Report, min_score: float | None) -> int:
    """The exit status a report earns: a fault when the grader failed somewhere (the score is not the
    candidate's, so it is not judged at all), low when under --min-score, else OK."""
    if not report.complete:
        print(f"grader: the report is {report.status}: {report.error}", file=sys.stderr)
        return EXIT_FAULT
    if min_score is not None and report.score < min_score:
        print(f"score {report.score:g} is under --min-score {min_score:g}", file=sys.stderr)
        return EXIT_LOW_SCORE
    return EXIT_OK


def cmd_grade(args: argparse.Namespace) -> int:
    from grader.config import Settings
    from grader.engine import grade
    from grader.engine.files import ENTRY, check_submission
    from grader.reports.text import render_text

    settings = Settings()
    options = settings.grading_options()
    if args.batch is not None:
        return _grade_batch(args, settings)
    if args.file is None:
        raise InvalidRequest("name the solution file or folder to grade, or a folder of candidates with --batch")
    # The rules the API applies, checked before any sandbox starts: one message for one mistake everywhere.
    files = check_submission(read_submission(Path(args.file), ENTRY), ENTRY, max_files=options.max_files,
                             max_code_bytes=options.max_code_bytes)
    report = grade(args.problem, files, backend=settings.sandbox(args.sandbox),
                   options=options, entry=ENTRY)
    if args.format == "json":
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    elif args.format == "junit":
        from grader.reports.junit import render_junit

        sys.stdout.write(render_junit(report))
    else:
        print(render_text(report))
    return verdict_exit(report, args.min_score)


def _grade_batch(args: argparse.Namespace, settings: Settings) -> int:
    from grader import batch

    if args.file is not None:
        raise InvalidRequest("give either a solution to grade or --batch DIR, not both")
    if args.format != "text":
        raise InvalidRequest("--batch writes a CSV (--csv) and HTML reports (--out); --format is for one solution")
    folder = Path(args.batch)
    entries = batch.list_entries(folder)
    csv_path = Path(args.csv) if args.csv else batch.default_csv_path(folder)
    out_dir = Path(args.out) if args.out else csv_path.parent / f"{csv_path.stem.removesuffix('-results')}-reports"
    rows = batch.grade_batch(args.problem, entries, backend=settings.sandbox(args.sandbox),
                             options=settings.grading_options(), out_dir=out_dir, jobs=_jobs(args))
    batch.write_csv(rows, csv_path)
    batch.print_summary(rows, csv_path)
    return batch.exit_code(rows, args.min_score)


def _jobs(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise InvalidRequest(f"--jobs must be at least 1 (got {args.jobs})")
    return int(args.jobs)


def _read_token(args: argparse.Namespace) -> str:
    token = _token_text(args)
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        where = f"--token-file {args.token_file}" if args.token_file else "GRADER_TOKEN"
        raise InvalidRequest(f"{where} does not hold a token: a token is one word of printable ASCII")
    return token


def _token_text(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InvalidRequest(f"--token-file {args.token_file} cannot be read: {reason}") from None
        if not token:
            raise InvalidRequest(f"--token-file {args.token_file} is empty")
        return token
    token = os.environ.get("GRADER_TOKEN", "").strip()
    if not token:
        raise InvalidRequest("no API token: set GRADER_TOKEN or pass --token-file FILE")
    return token


def _stderr(message: str) -> None:
    print(f"grader: {message}", file=sys.stderr, flush=True)


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror}") from None


def _progress_line(submission_id: str, started: float) -> Callable[[dict[str, Any]], None]:
    def show(body: dict[str, Any]) -> None:
        status, elapsed = body.get("status"), time.monotonic() - started
        extra = ""
        if status == "done" and body.get("score") is not None:
            extra = f": {body['score']:g}/{body.get('max_score') or 0:g} points"
        elif status == "failed":
            extra = f": {body.get('error')}"
        elif status == "running" and (body.get("attempts") or 0) > 1:
            extra = f" (attempt {body['attempts']})"
        _stderr(f"submission {submission_id} {status}{extra} [{elapsed:.0f} s]")
    return show


REPORT_FETCH_S = 60.0  # at least this long to fetch the reports of a graded submission, whatever --timeout is


def cmd_submit(args: argparse.Namespace) -> int:
    """Send a solution (or a folder of candidates) to a grading service; optionally wait for the report."""
    from grader.client import RESUBMIT_HINT, GraderClient, RetryPolicy, ServiceFault

    server = args.server or os.environ.get("GRADER_SERVER", "")
    if not server.strip():
        raise InvalidRequest("no server: pass --server URL or set GRADER_SERVER")
    if args.retries < 1:
        raise InvalidRequest(f"--retries must be at least 1 (got {args.retries})")
    if args.timeout <= 0 or args.retry_delay < 0:
        raise InvalidRequest("--timeout must be positive and --retry-delay not negative")
    if (args.path is None) == (args.batch is None):
        raise InvalidRequest("give either the solution to submit (a .py file or a folder) or --batch DIR")
    token = _read_token(args)
    retry = RetryPolicy(attempts=args.retries, base_delay_s=args.retry_delay,
                        max_delay_s=max(args.retry_delay, 8.0))
    with GraderClient(server, token, retry=retry, log=_stderr) as client:
        if args.batch is not None:
            return _submit_batch(args, client)
        files = read_submission(Path(args.path))
        submitted = client.submit(args.problem, files, args.candidate, resubmit=args.resubmit)
        again = " (already submitted with this content: the same submission)" if submitted.replayed else ""
        wait = args.wait or any(x is not None for x in (args.junit, args.json, args.html, args.min_score))
        if not wait:
            print(submitted.id)
            for name in ("self", "report", "report_html", "report_junit"):
                if name in submitted.links:
                    print(f"  {name.replace('self', 'status'):<13} {submitted.links[name]}")
            _stderr(f"submission {submitted.id} {submitted.status}{again}")
            if submitted.replayed and submitted.status == "failed":
                _stderr(f"that submission failed: {RESUBMIT_HINT}")
            return EXIT_OK
        started = time.monotonic()
        _stderr(f"submitted {submitted.id}{again}; waiting up to {args.timeout:g} s")
        final = client.wait(submitted.id, args.timeout, on_status=_progress_line(submitted.id, started))
        if final.get("status") == "failed":
            raise submitted.grading_failed(final.get("error"))
        # The reports' fetches get a budget of their own: a grading done near --timeout must not leave them
        # no time to outlast one transient 503.
        deadline = max(started + args.timeout, time.monotonic() + REPORT_FETCH_S)
        from grader.engine.report import Report
        from grader.reports.text import render_text

        data = client.report_json(submitted.id, deadline=deadline)
        try:
            report = Report.model_validate(data)
        except ValueError as exc:
            raise ServiceFault(f"the service's report cannot be read: {str(exc)[:300]}") from None
        if args.json:
            _write(args.json, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        if args.junit:
            _write(args.junit, client.report_text(submitted.id, ".junit.xml", deadline=deadline))
        if args.html:
            _write(args.html, client.report_text(submitted.id, ".html", deadline=deadline))
        print(render_text(report))
        print(f"report: {submitted.links.get('report_html', '')}")
    return verdict_exit(report, args.min_score)


def _submit_batch(args: argparse.Namespace, client: GraderClient) -> int:
    from grader import batch

    for option in ("junit", "json", "html", "candidate"):
        if getattr(args, option) is not None:
            raise InvalidRequest(f"--{option} is for one submission; --batch writes a CSV (--csv)")
    folder = Path(args.batch)
    entries = batch.list_entries(folder)
    csv_path = Path(args.csv) if args.csv else batch.default_csv_path(folder)
    rows = batch.submit_batch(client, args.problem, entries, jobs=_jobs(args), timeout_s=args.timeout,
                              resubmit=args.resubmit)
    batch.write_csv(rows, csv_path)
    batch.print_summary(rows, csv_path)
    return batch.exit_code(rows, args.min_score)


def _batch_arguments(p: argparse.ArgumentParser, default_jobs: int) -> None:
    p.add_argument("--batch", default=None, metavar="DIR",
                   help="grade every candidate of DIR: one subfolder (with solution.py) or .py/.ipynb file each")
    p.add_argument("--jobs", type=int, default=default_jobs,
                   help=f"with --batch: candidates graded at once (default {default_jobs})")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="with --batch: where the results go (default DIR-results.csv in the current folder)")


def _submit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "submit", help="send a solution to a grading service (for CI); exit codes like `grade`, 4 if unreachable",
        description="Submit to a grading service. The server comes from --server or GRADER_SERVER, the token from "
                    "GRADER_TOKEN or --token-file. Exit status: 0 ok, 1 under --min-score, 2 usage or a request "
                    "the service refused, 3 a fault of the service, 4 the service could not be reached.")
    p.add_argument("problem", help="problem id (see `grader problems`)")
    p.add_argument("path", nargs="?", help=SUBMISSION_HELP)
    p.add_argument("--server", default=None, metavar="URL", help="the service's URL (default: $GRADER_SERVER)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the API token here (default: $GRADER_TOKEN)")
    p.add_argument("--candidate", default=None, metavar="NAME",
                   help="the candidate's name, stored with the submission")
    p.add_argument("--wait", action="store_true", help="follow the grading and print the report's summary")
    p.add_argument("--resubmit", action="store_true",
                   help="grade this content again: without it, content already submitted (with this token) "
                        "gets its first submission back, even a failed one")
    p.add_argument("--min-score", type=float, default=None, help="exit 1 when the score is lower (implies --wait)")
    p.add_argument("--junit", default=None, metavar="FILE", help="write the report as JUnit XML (implies --wait)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON (implies --wait)")
    p.add_argument("--html", default=None, metavar="FILE", help="write the report as HTML (implies --wait)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="longest wait for the grading, per submission (default 900)")
    p.add_argument("--retries", type=int, default=6, help="tries per request before giving up (default 6)")
    p.add_argument("--retry-delay", type=float, default=0.5, metavar="SECONDS",
                   help="first backoff delay, doubled at each retry, with jitter (default 0.5)")
    _batch_arguments(p, default_jobs=4)
    p.set_defaults(func=cmd_submit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description="Grade deep-learning interview exercises.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("problems", help="list the exercises")
    p.set_defaults(func=cmd_problems)
    p = sub.add_parser("grade", help="grade a submission and print its report")
    p.add_argument("problem", help="problem id (see `grader problems`)")
    p.add_argument("file", nargs="?", help=SUBMISSION_HELP)
    p.add_argument("--format", choices=("text", "json", "junit"), default="text")
    p.add_argument("--min-score", type=float, default=None, help="exit 1 when the score is lower")
    p.add_argument("--sandbox", default=None, choices=BACKENDS,
                   help="sandbox backend: local (bubblewrap; the default, or GRADER_SANDBOX_BACKEND) or docker")
    _batch_arguments(p, default_jobs=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=None, metavar="DIR",
                   help="with --batch: folder for each candidate's HTML report (default: beside the CSV)")
    p.set_defaults(func=cmd_grade)
    _submit_parser(sub)
    from grader.engine.similarity import register as register_similarity  # here: the CLI starts fast

    register_similarity(sub)
    from grader.mutation.cli import register as register_check_problem

    register_check_problem(sub)
    for register in extra_commands():
        register(sub)
    return parser


def extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:  # type: ignore[type-arg]
    """Subcommands contributed by the service (serve, tokens), when installed."""
    registrations: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]
    try:
        from grader.api.commands import register

        registrations.append(register)
    except ImportError:
        pass
    return registrations


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Human text for a person at a terminal; `serve` and `worker` switch to GRADER_LOG_FORMAT (JSON by
    # default) once their settings are loaded, so a bad setting cannot break the client commands.
    logs.configure("text", args.verbose)
    try:
        return int(args.func(args))
    except ClientError as exc:
        print(f"grader: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except InvalidRequest as exc:
        print(f"grader: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except GraderError as exc:
        print(f"grader: {exc.message}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:
        # A submission already sent stays on the service: `grader submit` without --wait prints its links.
        print("grader: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of the grader: never the low-score exit code, never a bare traceback
        logging.getLogger("grader").debug("unexpected failure", exc_info=True)
        print(f"grader: internal error ({type(exc).__name__}: {str(exc)[:200]}); run with -v for details",
              file=sys.stderr)
        return EXIT_FAULT
    finally:
        logs.reset()  # the command ran inside a caller's process (a test): leave its logging as it was


if __name__ == "__main__":
    sys.exit(main())
