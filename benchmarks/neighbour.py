"""A correct solution graded alone, then beside a CPU hog graded at the same time: time and score.

The hog is a submission whose import forks children that call setsid() and
spin (and the process itself spins), so it owns every core it can get. Each
sandbox has a CPU quota of one core and time limits count the sandbox's own
CPU seconds, so the correct solution must keep full marks beside it.
Usage: .venv/bin/python benchmarks/neighbour.py [problem ...]   (default: mlp gan)
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader.engine import grade  # noqa: E402
from grader.isolation import get_backend  # noqa: E402
from tests.sandbox.garbage import CPU_HOG as HOG  # noqa: E402


def correct(problem_id: str) -> dict[str, str]:
    found = sorted((ROOT / "tests" / "solutions" / problem_id).glob("correct_*.py"))
    return {"solution.py": (found[0] if found else ROOT / "reference" / f"{problem_id}.py").read_text()}


def graded(problem_id: str) -> tuple[float, float, float]:
    start = time.perf_counter()
    report = grade(problem_id, correct(problem_id), backend=get_backend("local"))
    return time.perf_counter() - start, report.score, report.max_score


def beside_hog(problem_id: str) -> tuple[float, float, float]:
    stop = threading.Event()

    def hogs() -> None:  # one hog submission after another, for as long as the correct one is graded
        while not stop.is_set():
            grade("mlp", {"solution.py": HOG}, backend=get_backend("local"))

    threads = [threading.Thread(target=hogs, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # let the hogs start spinning
    try:
        return graded(problem_id)
    finally:
        stop.set()


def main(problems: list[str]) -> None:
    print("| problem | alone | score | beside a CPU hog (2 hog sandboxes) | score | slowdown |")
    print("|---|---|---|---|---|---|")
    for pid in problems or ["mlp", "gan"]:
        t0, s0, m = graded(pid)
        t1, s1, _ = beside_hog(pid)
        print(f"| {pid} | {t0:.2f} s | {s0:g}/{m:g} | {t1:.2f} s | {s1:g}/{m:g} | {t1 / t0:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
