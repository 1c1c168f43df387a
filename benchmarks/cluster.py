"""The Celery queue against the embedded pool, on real services, in one run.

Throughput: one fixed mixed set of fast submissions (correct and known-wrong mlp, regularization and rnn
solutions, each with a comment of its own so nothing is replayed) posted at once, timed from the first POST
to the last submission done, on
  - the embedded pool: `grader serve --workers 2` on SQLite (the default deployment of one machine);
  - the Celery path: `grader serve --workers 0` and 1, then 2, `grader worker --concurrency 1` processes on a
    throwaway redis-server, with a throwaway PostgreSQL as the shared store.
Latency: one mlp submission, alone, from its POST to `done` (polled every 20 ms), p50 of --latency-runs, on the
embedded pool and on the Celery path with 2 idle workers; the difference is what the Celery path adds.

Every setup grades one warm-up submission first (not counted). The local sandbox grades in every case.

The Celery path runs with the settings' defaults (GRADER_REDELIVER_AFTER_S, GRADER_JOB_LEASE_S) unless
--quick-recovery asks for the cluster tests' low ones.

Usage: .venv/bin/python benchmarks/cluster.py [--latency-runs N] [--set-size N] [--quick-recovery]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.services import Cluster, RedisServer, start_postgres  # noqa: E402
from tests.service.live_server import LiveServer  # noqa: E402

SOLUTIONS = ROOT / "tests" / "solutions"
MIXED = [  # fast ones: about 1 to 2 s each in the local sandbox
    "mlp/correct_vectorized.py", "mlp/correct_functional.py", "mlp/correct_loops.py", "mlp/wrong_db_mean.py",
    "regularization/correct_compact.py", "regularization/correct_graph.py", "regularization/correct_loops.py",
    "regularization/wrong_dropout_not_inverted.py", "rnn/correct_vectorized.py", "rnn/correct_einsum.py",
    "rnn/correct_cache_preactivations.py", "rnn/wrong_tanh_derivative.py",
]
LATENCY_SOLUTION = "mlp/correct_vectorized.py"


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(timeout=30)

    def submit(self, rel: str) -> str:
        path = SOLUTIONS / rel
        code = f"{path.read_text()}\n# {uuid.uuid4().hex}\n"
        r = self.http.post(f"{self.url}/v1/submissions", headers=self.headers,
                           json={"problem": path.parent.name, "code": code})
        assert r.status_code == 202, r.text
        sid: str = r.json()["id"]
        return sid

    def status(self, sid: str) -> dict[str, object]:
        r = self.http.get(f"{self.url}/v1/submissions/{sid}", headers=self.headers)
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    def wait(self, ids: list[str], timeout_s: float = 900, poll_s: float = 0.02) -> dict[str, dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        final: dict[str, dict[str, object]] = {}
        while len(final) < len(ids):
            for sid in ids:
                if sid not in final:
                    body = self.status(sid)
                    if body["status"] in ("done", "failed"):
                        final[sid] = body
            if time.monotonic() > deadline:
                raise SystemExit(f"not finished after {timeout_s} s: {len(final)}/{len(ids)} done")
            if len(final) < len(ids):
                time.sleep(poll_s)
        bad = {sid: b.get("error") for sid, b in final.items() if b["status"] != "done"}
        if bad:
            raise SystemExit(f"submissions failed: {bad}")
        return final


def throughput(api: Api, items: list[str]) -> tuple[float, dict[str, float]]:
    """Seconds from the first POST to the last `done`, and the score of each file."""
    start = time.perf_counter()
    ids = {api.submit(rel): rel for rel in items}
    final = api.wait(list(ids), poll_s=0.1)
    elapsed = time.perf_counter() - start
    return elapsed, {ids[sid]: float(body["score"]) for sid, body in final.items()}  # type: ignore[arg-type]


def latency(api: Api, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sid = api.submit(LATENCY_SOLUTION)
        api.wait([sid], poll_s=0.02)
        times.append(time.perf_counter() - start)
    return times


def measure(api: Api, items: list[str], latency_runs: int) -> tuple[float, dict[str, float], list[float]]:
    api.wait([api.submit(LATENCY_SOLUTION)])  # warm-up: imports, first sandbox, connections
    lat = latency(api, latency_runs) if latency_runs else []
    elapsed, scores = throughput(api, items)
    return elapsed, scores, lat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--set-size", type=int, default=len(MIXED), help="submissions in the set (cycled)")
    parser.add_argument("--quick-recovery", action="store_true",
                        help="the cluster tests' settings (republish after 3 s, 6 s leases) instead of the defaults")
    args = parser.parse_args()
    items = [MIXED[i % len(MIXED)] for i in range(args.set_size)]
    root = Path(tempfile.mkdtemp(prefix="grader-bench-cluster-"))
    results: dict[str, tuple[float, dict[str, float], list[float]]] = {}

    embedded = LiveServer(root / "embedded", workers=2)
    token = embedded.token("submitter", "bench")
    embedded.start()
    try:
        print("embedded pool (grader serve --workers 2, SQLite) ...", file=sys.stderr, flush=True)
        results["embedded"] = measure(Api(embedded.url, token), items, args.latency_runs)
    finally:
        embedded.stop()

    pg = start_postgres()
    redis = RedisServer(root / "redis").start()
    try:
        for n in (1, 2):
            cluster = Cluster(root / f"celery-{n}", redis.url, pg.new_database(), workers=n,
                              quick_recovery=args.quick_recovery)
            try:
                cluster.start()
                api = Api(cluster.url, cluster.token("submitter", "bench"))
                print(f"celery, {n} worker process(es) ...", file=sys.stderr, flush=True)
                results[f"celery-{n}"] = measure(api, items, args.latency_runs if n == 2 else 0)
            finally:
                cluster.stop()
    finally:
        redis.close()
        pg.stop()

    reference = results["embedded"][1]
    for name, (_, scores, _) in results.items():
        if scores != reference:
            raise SystemExit(f"{name} scored differently from the embedded pool: {scores} vs {reference}")

    base = results["embedded"][0]
    print(f"\nthroughput: {len(items)} submissions ({', '.join(sorted({i.split('/')[0] for i in items}))}), "
          "posted at once, first POST to last done")
    print("| setup | graders | wall | submissions/min | vs embedded |")
    print("|---|---|---|---|---|")
    rows = [("embedded pool, SQLite", "2 threads", "embedded"), ("Celery on Redis, PostgreSQL", "1 process",
                                                                  "celery-1"),
            ("Celery on Redis, PostgreSQL", "2 processes", "celery-2")]
    for label, graders, key in rows:
        wall = results[key][0]
        print(f"| {label} | {graders} | {wall:.1f} s | {60 * len(items) / wall:.1f} | {base / wall:.2f}x |")
    if args.latency_runs:
        emb, cel = results["embedded"][2], results["celery-2"][2]
        p_emb, p_cel = statistics.median(emb), statistics.median(cel)
        print(f"\nlatency: one {LATENCY_SOLUTION} alone, POST to done, p50 of {args.latency_runs}")
        print("| embedded pool | Celery (2 idle workers) | added by Celery | ratio |")
        print("|---|---|---|---|")
        print(f"| {p_emb:.2f} s | {p_cel:.2f} s | {1000 * (p_cel - p_emb):+.0f} ms | {p_cel / p_emb:.2f}x |")
        print(f"(runs: embedded {', '.join(f'{t:.2f}' for t in emb)}; celery {', '.join(f'{t:.2f}' for t in cel)})")


if __name__ == "__main__":
    main()
