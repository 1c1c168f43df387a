"""Wall time to grade each exercise's correct solution, in the real sandbox and in-process.

The in-process fake (same runner, same wire format, no isolation) is the
baseline measured in the same run, so the ratio is what isolation costs.
Usage: .venv/bin/python benchmarks/grading.py [--repeat N] [problem ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader.engine import grade  # noqa: E402
from grader.engine.catalog import list_problems  # noqa: E402
from grader.isolation import get_backend  # noqa: E402
from grader.isolation.base import Backend  # noqa: E402
from grader.isolation.inprocess import InProcessBackend  # noqa: E402


def correct_solution(problem_id: str) -> Path:
    found = sorted((ROOT / "tests" / "solutions" / problem_id).glob("correct_*.py"))
    return found[0] if found else ROOT / "reference" / f"{problem_id}.py"


def timed(problem_id: str, files: dict[str, str], backend: Backend) -> tuple[float, float]:
    start = time.perf_counter()
    report = grade(problem_id, files, backend=backend)
    return time.perf_counter() - start, report.score / report.max_score


def sandbox_start(spec, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        get_backend("local").start(spec).close()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("problems", nargs="*")
    args = parser.parse_args()
    chosen = [p for p in list_problems() if not args.problems or p.id in args.problems]
    print(f"{'problem':<16}{'solution':<28}{'sandbox s':>10}{'in-process s':>14}{'ratio':>7}"
          f"{'start s':>9}{'score':>7}")
    for problem in chosen:
        path = correct_solution(problem.id)
        files = {"solution.py": path.read_text()}
        local = [timed(problem.id, files, get_backend("local")) for _ in range(args.repeat)]
        inproc = [timed(problem.id, files, InProcessBackend()) for _ in range(args.repeat)]
        local_s = statistics.median(t for t, _ in local)
        inproc_s = statistics.median(t for t, _ in inproc)
        start_s = sandbox_start(problem.sandbox, args.repeat)
        print(f"{problem.id:<16}{path.name:<28}{local_s:>10.2f}{inproc_s:>14.2f}{local_s / inproc_s:>7.2f}"
              f"{start_s:>9.2f}{min(s for _, s in local):>7.0%}")


if __name__ == "__main__":
    main()
