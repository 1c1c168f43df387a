"""The sandbox backends compared in one run: local (bubblewrap), Docker cold, Docker with its warm pool.

For each exercise, the wall time to grade its correct solution end to end (the engine's `grade`, every test,
every sandbox it starts), median of --repeat runs; the ratio against the local sandbox measured in the
same run. "Docker cold" starts a container for every session (pool size 0); "Docker warm" waits, before each
submission, until its pool has refilled (steady state under a light load), so sessions start from waiting
containers. Then the acquire latency alone (from asking for a session to a sandbox ready for `load`),
warm vs cold, for the numpy and the torch image; and one call's round trip (the transport alone: a pipe
for local, the daemon's attach stream for Docker).

Usage: .venv/bin/python benchmarks/backends.py [--repeat N] [problem ...]
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
from grader.engine.catalog import get_problem, list_problems  # noqa: E402
from grader.isolation import DockerOptions, get_backend  # noqa: E402
from grader.isolation.base import Backend, SandboxSpec  # noqa: E402
from grader.isolation.docker import DockerBackend  # noqa: E402

POOL = 2


def correct_solution(problem_id: str) -> Path:
    found = sorted((ROOT / "tests" / "solutions" / problem_id).glob("correct_*.py"))
    return found[0] if found else ROOT / "reference" / f"{problem_id}.py"


def settle(backend: Backend, spec: SandboxSpec) -> None:
    """Wait until the warm pool of this spec is full again (no-op for backends without one)."""
    if isinstance(backend, DockerBackend) and backend.options.pool_size:
        backend.pool(backend.image_for(spec), spec).wait_ready(backend.options.pool_size, 300)


def timed(problem_id: str, files: dict[str, str], backend: Backend) -> tuple[float, float]:
    settle(backend, get_problem(problem_id).sandbox)
    start = time.perf_counter()
    report = grade(problem_id, files, backend=backend)
    assert report.complete, report.error
    return time.perf_counter() - start, report.score / report.max_score


def acquire(backend: Backend, spec: SandboxSpec, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        settle(backend, spec)
        start = time.perf_counter()
        session = backend.start(spec)
        times.append(time.perf_counter() - start)
        session.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("problems", nargs="*")
    args = parser.parse_args()
    chosen = [p for p in list_problems() if not args.problems or p.id in args.problems]
    backends: dict[str, Backend] = {
        "local": get_backend("local"),
        "docker cold": get_backend("docker", docker=DockerOptions(pool_size=0)),
        "docker warm": get_backend("docker", docker=DockerOptions(pool_size=POOL)),
    }
    warm = backends["docker warm"]
    assert isinstance(warm, DockerBackend)
    warm.warm([p.sandbox for p in chosen])

    print(f"end to end, correct solution, median of {args.repeat} (s; ratio to local)")
    print(f"{'problem':<16}{'local':>8}{'docker cold':>18}{'docker warm':>18}{'score':>7}")
    for problem in chosen:
        files = {"solution.py": correct_solution(problem.id).read_text()}
        times: dict[str, float] = {}
        scores: list[float] = []
        for name, backend in backends.items():
            runs = [timed(problem.id, files, backend) for _ in range(args.repeat)]
            times[name] = statistics.median(t for t, _ in runs)
            scores += [s for _, s in runs]
        base = times["local"]
        print(f"{problem.id:<16}{base:>8.2f}"
              + "".join(f"{times[n]:>10.2f} ({times[n] / base:4.2f}x)" for n in ("docker cold", "docker warm"))
              + f"{min(scores):>7.0%}")

    print(f"\nacquire latency, median of {max(args.repeat, 5)} (ms; from asking for a session to one ready to load)")
    print(f"{'image':<10}{'local':>8}{'docker cold':>13}{'docker warm':>13}{'cold/warm':>11}")
    for label, spec in (("numpy", get_problem("mlp").sandbox), ("torch", get_problem("gan").sandbox)):
        n = max(args.repeat, 5)
        local, cold, hot = (acquire(backends[k], spec, n) for k in ("local", "docker cold", "docker warm"))
        print(f"{label:<10}{local * 1e3:>8.1f}{cold * 1e3:>13.1f}{hot * 1e3:>13.2f}{cold / hot:>10.0f}x")

    print("\none call's round trip, 300 calls (us; median / p95): what call-heavy tests pay per call")
    spec = get_problem("mlp").sandbox
    for name in ("local", "docker cold"):
        median, p95 = round_trip(backends[name], spec)
        print(f"{name.split()[0]:<10}{median * 1e6:>8.0f} / {p95 * 1e6:.0f}")


def round_trip(backend: Backend, spec: SandboxSpec, calls: int = 300) -> tuple[float, float]:
    """Median and p95 of one call of a function that returns its argument (s): the transport alone."""
    session = backend.start(spec)
    try:
        assert session.load({"solution.py": "def echo(x):\n    return x\n"}, "solution.py", 30).ok
        for _ in range(20):
            session.call({"fn": "echo"}, (1,), timeout_s=10)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            session.call({"fn": "echo"}, (1,), timeout_s=10)
            times.append(time.perf_counter() - start)
    finally:
        session.close()
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


if __name__ == "__main__":
    main()
