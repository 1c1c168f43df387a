"""The `check-problem` subcommand; grader/cli.py adds it with `register(sub)`."""

from __future__ import annotations

import argparse
import sys

from grader.mutation.check import JobResult, check_problem, render


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `check-problem ID [--backend] [--max-mutants N] [--seed S] [--jobs J]` to a subparsers object."""
    p = sub.add_parser("check-problem", help="grade the reference's mutants and the known-wrong solutions of a "
                                             "problem; fails under the problem's kill-rate floor")
    p.add_argument("problem_id", metavar="ID")
    p.add_argument("--backend", choices=["inprocess", "local"], default="inprocess",
                   help="sandbox for the gradings (default inprocess: the mutants are our own reference; every job "
                        "still runs in its own process under a wall-clock and a memory limit)")
    p.add_argument("--max-mutants", type=_positive, default=None, help="grade a seeded sample of N mutants")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-mutants sample")
    p.add_argument("--jobs", type=_positive, default=1, help="gradings at once")
    p.add_argument("--no-known-wrong", action="store_true", help="mutants only")
    p.add_argument("--quiet", action="store_true", help="no line per job while running")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def progress(r: JobResult) -> None:
        if not args.quiet:
            print(f"  {r.kind} {r.name}: {r.outcome} ({r.duration_s:.1f} s)", file=sys.stderr, flush=True)

    result = check_problem(args.problem_id, backend=args.backend, max_mutants=args.max_mutants, seed=args.seed,
                           jobs=args.jobs, known_wrong=not args.no_known_wrong, progress=progress)
    print(render(result))
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grader")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
