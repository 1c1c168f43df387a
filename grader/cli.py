"""The `grader` command: list problems, grade a file; the service adds `serve` and `tokens`.

Exit status: 0 when grading ran (whatever the score), 1 when the score is under
--min-score, 2 for a usage error, 3 for a fault of the grader itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from grader.errors import GraderError, InvalidRequest
from grader.isolation import BACKENDS
from grader.submission_files import read_submission

EXIT_OK, EXIT_LOW_SCORE, EXIT_USAGE, EXIT_FAULT = 0, 1, 2, 3


def cmd_problems(args: argparse.Namespace) -> int:
    from grader.engine.catalog import list_problems

    for p in list_problems():
        print(f"{p.id:<16} v{p.version:<8} {p.max_score:>5g} pts  {p.test_count:>3} tests  {p.title}")
    return EXIT_OK


def cmd_grade(args: argparse.Namespace) -> int:
    from grader.config import Settings
    from grader.engine import grade
    from grader.engine.files import ENTRY, check_submission
    from grader.reports.text import render_text

    settings = Settings()
    options = settings.grading_options()
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
    if not report.complete:
        # The grader failed somewhere: the score is not the candidate's, so it is not judged at all.
        print(f"grader: the report is incomplete: {report.error}", file=sys.stderr)
        return EXIT_FAULT
    if args.min_score is not None and report.score < args.min_score:
        print(f"score {report.score:g} is under --min-score {args.min_score:g}", file=sys.stderr)
        return EXIT_LOW_SCORE
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description="Grade deep-learning interview exercises.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("problems", help="list the exercises")
    p.set_defaults(func=cmd_problems)
    p = sub.add_parser("grade", help="grade a submission and print its report")
    p.add_argument("problem", help="problem id (see `grader problems`)")
    p.add_argument("file", help="solution .py file, or a folder with solution.py as its entry")
    p.add_argument("--format", choices=("text", "json", "junit"), default="text")
    p.add_argument("--min-score", type=float, default=None, help="exit 1 when the score is lower")
    p.add_argument("--sandbox", default=None, choices=BACKENDS,
                   help="sandbox backend: local (bubblewrap; the default, or GRADER_SANDBOX_BACKEND) or docker")
    p.set_defaults(func=cmd_grade)
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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except InvalidRequest as exc:
        print(f"grader: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except GraderError as exc:
        print(f"grader: {exc.message}", file=sys.stderr)
        return EXIT_FAULT
    except Exception as exc:  # a bug of the grader: never the low-score exit code, never a bare traceback
        logging.getLogger("grader").debug("unexpected failure", exc_info=True)
        print(f"grader: internal error ({type(exc).__name__}: {str(exc)[:200]}); run with -v for details",
              file=sys.stderr)
        return EXIT_FAULT


if __name__ == "__main__":
    sys.exit(main())
