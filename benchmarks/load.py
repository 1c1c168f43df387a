"""Load test: a bounded burst of submissions from a second process against a real `grader serve`.

One run, one machine:
  1. a real `grader serve --workers 2` on loopback (throwaway data directory, SQLite, local sandbox) with its
     per-token rate limits (GRADER_RATE_LIMIT_*; --burst and --per-min set them here);
  2. a second process (this file, `generate`) posts --n submissions at once from --tokens submitter tokens
     (the pipelines of several hiring teams), --concurrency requests in flight: mixed exercises, and per
     submission one of: trivial (defines nothing: every test fails at once), hostile (exits at import, reads
     a host file, allocates 8 GB, prints megabytes), known-wrong (a tests/solutions/<problem>/wrong_*.py) and
     correct (a correct_*.py), drawn with --seed. A 429 or 503 is retried after its Retry-After with the same
     Idempotency-Key, as `grader submit` does; any other refusal is counted as an error;
  3. meanwhile an interviewer token reads `GET /v1/submissions/{id}` of accepted submissions (--read-rate per
     second) and the submissions queued or running are sampled from /metrics: the read latencies while at
     least 2 x workers are queued or running are the "reads under load"; the queue has drained when every
     POST is answered and none is queued or running;
  4. the server's memory (its own RSS, and the peak of its process tree with sandboxes) is sampled every
     0.5 s from /proc;
  5. after the queue drained, the database is read: every accepted id must have its submission row, a final
     status and exactly one report; rows nobody was told about are duplicates.
Printed: accepted, graded, failed, lost, duplicated, refusals (429 with and without Retry-After, 503, other),
POST and read latencies (p50, p95, max), the drain time, and the server's memory (after warm-up, peak, at the
end).

Usage: .venv/bin/python benchmarks/load.py [--n 500] [--tokens 10] [--burst 20] [--per-min 60] [--seed 1]
                                           [--mix trivial=4,hostile=2,wrong=3,correct=1] [--problems mlp,cnn]
                                           [--separate-worker]
tests/load/test_load.py runs a small burst of the same code in CI and checks nothing is lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.procmem import MemorySampler, rss  # noqa: E402
from tests.service.live_server import LiveServer  # noqa: E402

SOLUTIONS = ROOT / "tests" / "solutions"
PROBLEMS = ("mlp", "cnn", "rnn", "regularization", "gan", "attention", "optim")
TRIVIAL = "# defines nothing: every test fails at once\n"
HOSTILE = {
    "exit_at_import": "import os\nos._exit(3)\n",
    "reads_host_file": "SECRET = open('/etc/shadow').read()\n",
    "allocates_8gb": "BLOB = bytearray(8 * 1024 ** 3)\n",
    "floods_stdout": "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 4096)\n",
}
DEFAULT_MIX = "trivial=4,hostile=2,wrong=3,correct=1"
RETRY_CAP_S = 30.0  # a Retry-After larger than this is waited for this long (and counted)
GIVE_UP_S = 600.0  # one submission's POST retried this long at most


@dataclass
class Item:
    kind: str
    problem: str
    code: str
    token: int  # index into the submitter tokens


@dataclass
class Post:
    index: int
    kind: str
    problem: str
    token: int
    key: str
    id: str | None = None
    status: int | None = None
    attempts: int = 0
    n429: int = 0
    n429_without_retry_after: int = 0
    n503: int = 0
    other: list[str] = field(default_factory=list)  # unexpected answers: "STATUS body"
    first_attempt_s: float | None = None  # latency of the first attempt, whatever it answered
    accepted_after_s: float | None = None  # from the first attempt to the 202 (rate-limit waits included)


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile, nearest rank; None without values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def parse_mix(text: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name not in ("trivial", "hostile", "wrong", "correct") or not weight.isdigit():
            raise SystemExit(f"--mix: {part!r} is not KIND=WEIGHT with KIND trivial, hostile, wrong or correct")
        mix[name] = int(weight)
    return mix


def build_items(n: int, tokens: int, seed: int, problems: list[str], mix: dict[str, int]) -> list[Item]:
    """n submissions drawn with `seed`: kinds by weight, exercises uniformly, tokens round robin; every code is
    unique (a comment with its index), so nothing is deduplicated by content."""
    rng = random.Random(seed)
    kinds = [k for k, w in mix.items() for _ in range(w)]
    items = []
    for i in range(n):
        kind, problem = rng.choice(kinds), rng.choice(problems)
        if kind == "trivial":
            code = TRIVIAL
        elif kind == "hostile":
            code = HOSTILE[rng.choice(sorted(HOSTILE))]
        else:
            files = sorted((SOLUTIONS / problem).glob(f"{kind}_*.py"))
            code = rng.choice(files).read_text() if files else TRIVIAL
        items.append(Item(kind, problem, f"{code}\n# load item {i} seed {seed}\n", i % tokens))
    return items


# ---- the second process: posts, reads, samples the queue ----

def _post_one(http: httpx.Client, url: str, token: str, item: Item, index: int) -> Post:
    post = Post(index, item.kind, item.problem, item.token, key=f"load-{uuid.uuid4().hex}")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": post.key}
    body = {"problem": item.problem, "code": item.code, "candidate": f"load-{index}"}
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_S:
        post.attempts += 1
        sent = time.monotonic()
        try:
            r = http.post(f"{url}/v1/submissions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            post.other.append(f"transport {type(exc).__name__}")
            time.sleep(1.0)
            continue
        if post.first_attempt_s is None:
            post.first_attempt_s = time.monotonic() - sent
        post.status = r.status_code
        if r.status_code == 202:
            post.id = r.json()["id"]
            post.accepted_after_s = time.monotonic() - started
            return post
        if r.status_code in (429, 503):
            if r.status_code == 429:
                post.n429 += 1
            else:
                post.n503 += 1
            retry_after = r.headers.get("retry-after")
            if retry_after is None or not retry_after.isdigit():
                post.n429_without_retry_after += r.status_code == 429
                wait = 1.0
            else:
                wait = min(float(retry_after), RETRY_CAP_S)
            time.sleep(wait + random.random() * 0.2)
            continue
        post.other.append(f"{r.status_code} {r.text[:200]}")
        return post
    post.other.append("gave up")
    return post


def _unfinished(http: httpx.Client, url: str) -> int:
    """Submissions queued or running, from /metrics (healthz's depth counts the queued ones only); -1 unknown."""
    try:
        text = http.get(f"{url}/metrics").text
    except httpx.HTTPError:
        return -1
    total, seen = 0, 0
    for line in text.splitlines():
        for status in ("queued", "running"):
            if line.startswith(f'grader_queue_depth{{status="{status}"}} '):
                total += int(float(line.rsplit(" ", 1)[1]))
                seen += 1
    return total if seen else -1


def generate(plan: dict[str, Any]) -> dict[str, Any]:
    """Post every item of `plan`, read while the queue drains, and return what was seen (JSON-able)."""
    url, tokens, reader = plan["url"], plan["tokens"], plan["reader_token"]
    items = [Item(**i) for i in plan["items"]]
    t0 = time.monotonic()
    accepted: list[str] = []
    lock = threading.Lock()
    posting_done = threading.Event()
    drained = threading.Event()
    depth_samples: list[tuple[float, int]] = []
    reads: list[tuple[float, float, int]] = []  # (t, latency, status)

    def watch_queue() -> None:
        with httpx.Client(timeout=10) as http:
            while not drained.is_set():
                depth = _unfinished(http, url)
                depth_samples.append((time.monotonic() - t0, depth))
                if posting_done.is_set() and depth == 0:
                    drained.set()
                time.sleep(0.25)

    def read_loop() -> None:
        rng = random.Random(plan["seed"] + 1)
        period = 1.0 / plan["read_rate"]
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {reader}"}) as http:
            while not drained.is_set():
                with lock:
                    sid = rng.choice(accepted) if accepted else None
                if sid is not None:
                    sent = time.monotonic()
                    try:
                        code = http.get(f"{url}/v1/submissions/{sid}").status_code
                    except httpx.HTTPError:
                        code = 0
                    reads.append((sent - t0, time.monotonic() - sent, code))
                time.sleep(period)

    def post(index: int, item: Item, http: httpx.Client) -> Post:
        result = _post_one(http, url, tokens[item.token], item, index)
        if result.id:
            with lock:
                accepted.append(result.id)
        return result

    threads = [threading.Thread(target=watch_queue, daemon=True), threading.Thread(target=read_loop, daemon=True)]
    for t in threads:
        t.start()
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=plan["concurrency"])) as http, \
            ThreadPoolExecutor(plan["concurrency"]) as pool:
        posts = list(pool.map(lambda pair: post(pair[0], pair[1], http), enumerate(items)))
    posted_s = time.monotonic() - t0
    posting_done.set()
    drained.wait(plan["drain_timeout_s"])
    drain_s = time.monotonic() - t0 if drained.is_set() else None
    drained.set()
    for t in threads:
        t.join(15)
    return {"posts": [asdict(p) for p in posts], "reads": reads, "depth": depth_samples, "posted_s": posted_s,
            "drain_s": drain_s}


# ---- the orchestrator: the server, its memory, the database's verdict ----

@dataclass
class Figures:
    n: int
    accepted: int
    graded: int
    failed: int
    lost: list[str]
    duplicated: list[str]
    refused_429: int
    refused_429_without_retry_after: int
    refused_503: int
    errors: list[str]
    post_p50_s: float | None
    post_p95_s: float | None
    accept_p95_s: float | None
    reads: int
    read_errors: int
    read_p50_s: float | None
    read_p95_s: float | None
    read_max_s: float | None
    reads_under_load: int
    read_under_load_p95_s: float | None
    max_depth: int
    posted_s: float
    drain_s: float | None
    rss_after_warmup: int
    rss_peak: int
    rss_end: int
    rss_quarters: list[int]  # the API process's RSS a quarter, half and three quarters into the run
    tree_peak: int
    separate_worker: bool = False
    worker_rss: list[int] = field(default_factory=list)  # the `grader worker` process: first, peak, last


def database_verdict(data_dir: Path, accepted: list[str]) -> tuple[int, int, list[str], list[str]]:
    """(graded, failed, lost, duplicated) from the server's SQLite file."""
    with sqlite3.connect(data_dir / "grader.db") as conn:
        status = dict(conn.execute("SELECT id, status FROM submissions WHERE candidate LIKE 'load-%'").fetchall())
        reports = dict(conn.execute("SELECT submission_id, count(*) FROM reports GROUP BY submission_id").fetchall())
    lost = [sid for sid in accepted if status.get(sid) not in ("done", "failed")
            or (status[sid] == "done" and reports.get(sid, 0) != 1)]
    duplicated = sorted(set(status) - set(accepted)) + [sid for sid in accepted if reports.get(sid, 0) > 1]
    graded = sum(status.get(sid) == "done" for sid in accepted)
    failed = sum(status.get(sid) == "failed" for sid in accepted)
    return graded, failed, lost, duplicated


def warm_up(url: str, token: str, problems: list[str]) -> None:
    """One trivial submission per exercise, waited for: imports, plans and fork servers are warm."""
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
        ids = [http.post("/v1/submissions", json={"problem": p, "code": TRIVIAL, "candidate": "warm-up"}).json()["id"]
               for p in problems]
        deadline = time.monotonic() + 300
        for sid in ids:
            while http.get(f"/v1/submissions/{sid}").json()["status"] not in ("done", "failed"):
                if time.monotonic() > deadline:
                    raise SystemExit("the warm-up submissions were not graded within 300 s")
                time.sleep(0.2)


@contextmanager
def server(root: Path, burst: int, per_min: float, workers: int) -> Iterator[LiveServer]:
    live = LiveServer(root / "data", workers=workers, env={
        "GRADER_RATE_LIMIT_SUBMISSIONS_BURST": str(burst), "GRADER_RATE_LIMIT_SUBMISSIONS_PER_MIN": str(per_min),
        "GRADER_LOG_FORMAT": "json"})
    try:
        yield live
    finally:
        live.stop()


@contextmanager
def worker_process(live: LiveServer, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    """`grader worker` on the server's database (the embedded queue), grading beside an API that does not."""
    log = open(live.data_dir.parent / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "worker", "--concurrency", str(concurrency)],
                            cwd=ROOT, env=live.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        log.close()


def run(*, n: int, tokens: int, burst: int, per_min: float, seed: int, problems: list[str], mix: dict[str, int],
        concurrency: int = 32, read_rate: float = 10.0, workers: int = 2, drain_timeout_s: float = 1800.0,
        root: Path | None = None, separate_worker: bool = False) -> Figures:
    """The whole load test; the figures it measured. `separate_worker`: the API grades nothing (`--workers 0`)
    and one `grader worker` process grades `workers` submissions at once."""
    root = root or Path(tempfile.mkdtemp(prefix="grader-bench-load-"))
    items = build_items(n, tokens, seed, problems, mix)
    with server(root, burst, per_min, 0 if separate_worker else workers) as live, ExitStack() as stack:
        submitters = [live.token("submitter", f"pipeline-{i}") for i in range(tokens)]
        reader = live.token("interviewer", "reader")
        warm_token = live.token("submitter", "warm-up")
        live.start()
        assert live.proc is not None
        grader_pid = live.proc.pid
        if separate_worker:
            grader_pid = stack.enter_context(worker_process(live, workers)).pid
        warm_up(live.url, warm_token, problems)
        plan = {"url": live.url, "tokens": submitters, "reader_token": reader, "seed": seed,
                "items": [asdict(i) for i in items], "concurrency": concurrency, "read_rate": read_rate,
                "drain_timeout_s": drain_timeout_s}
        plan_path, out_path = root / "plan.json", root / "seen.json"
        plan_path.write_text(json.dumps(plan))
        with MemorySampler(live.proc.pid, 0.5) as memory, MemorySampler(grader_pid, 0.5) as grading_memory:
            warm_rss = rss(live.proc.pid)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "generate", str(plan_path),
                                   str(out_path)], cwd=ROOT, timeout=drain_timeout_s + GIVE_UP_S + 120)
        if done.returncode != 0:
            raise SystemExit(f"the load generator failed (exit {done.returncode})")
        seen = json.loads(out_path.read_text())
        posts = [Post(**p) for p in seen["posts"]]
        accepted = [p.id for p in posts if p.id]
        graded, failed, lost, duplicated = database_verdict(live.data_dir, accepted)
    reads = [tuple(r) for r in seen["reads"]]
    depth = seen["depth"]
    full = 2 * workers

    def depth_at(t: float) -> int:
        before = [d for (s, d) in depth if s <= t]
        return before[-1] if before else 0

    under_load = [lat for (t, lat, code) in reads if code == 200 and depth_at(t) >= full]
    ok_reads = [lat for (_, lat, code) in reads if code == 200]
    return Figures(
        n=n, accepted=len(accepted), graded=graded, failed=failed, lost=lost, duplicated=duplicated,
        refused_429=sum(p.n429 for p in posts),
        refused_429_without_retry_after=sum(p.n429_without_retry_after for p in posts),
        refused_503=sum(p.n503 for p in posts), errors=[e for p in posts for e in p.other],
        post_p50_s=pct([p.first_attempt_s for p in posts if p.first_attempt_s is not None], 0.5),
        post_p95_s=pct([p.first_attempt_s for p in posts if p.first_attempt_s is not None], 0.95),
        accept_p95_s=pct([p.accepted_after_s for p in posts if p.accepted_after_s is not None], 0.95),
        reads=len(reads), read_errors=sum(code != 200 for (_, _, code) in reads),
        read_p50_s=pct(ok_reads, 0.5), read_p95_s=pct(ok_reads, 0.95), read_max_s=max(ok_reads, default=None),
        reads_under_load=len(under_load), read_under_load_p95_s=pct(under_load, 0.95),
        max_depth=max((d for (_, d) in depth), default=0), posted_s=seen["posted_s"], drain_s=seen["drain_s"],
        rss_after_warmup=warm_rss, rss_peak=max(memory.own, default=0), rss_end=memory.own[-1] if memory.own else 0,
        rss_quarters=[memory.own[min(len(memory.own) - 1, len(memory.own) * q // 4)] for q in (1, 2, 3)]
        if memory.own else [], tree_peak=max(memory.peak, grading_memory.peak),
        separate_worker=separate_worker,
        worker_rss=[] if not separate_worker or not grading_memory.own else
        [grading_memory.own[0], max(grading_memory.own), grading_memory.own[-1]])


def render(f: Figures, args: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 1000:.0f} ms"

    def mb(v: int) -> str:
        return f"{v / 2 ** 20:.0f} MB"

    def some(ids: list[str]) -> str:
        return "  " + ", ".join(ids[:5]) if ids else ""

    met = f.read_under_load_p95_s is not None and f.read_under_load_p95_s < 0.1
    lines = [
        f"load test, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores: {args}",
        f"  submissions posted          {f.n} in {f.posted_s:.1f} s (429s waited out included)",
        f"  accepted (202)              {f.accepted}",
        f"  graded (done)               {f.graded}",
        f"  failed (grader gave up)     {f.failed}",
        f"  lost                        {len(f.lost)}{some(f.lost)}",
        f"  duplicated                  {len(f.duplicated)}{some(f.duplicated)}",
        f"  429 answers                 {f.refused_429} ({f.refused_429_without_retry_after} without Retry-After)",
        f"  503 answers                 {f.refused_503}",
        f"  other refusals / errors     {len(f.errors)}{'  ' + '; '.join(f.errors[:3]) if f.errors else ''}",
        f"  POST latency (one attempt)  p50 {ms(f.post_p50_s)}, p95 {ms(f.post_p95_s)}",
        f"  POST to 202 (with waits)    p95 {ms(f.accept_p95_s)}",
        f"  GET /v1/submissions/{{id}}   {f.reads} reads, {f.read_errors} not 200: p50 {ms(f.read_p50_s)}, "
        f"p95 {ms(f.read_p95_s)}, max {ms(f.read_max_s)}",
        f"  ... while queue >= 2x workers  {f.reads_under_load} reads: p95 {ms(f.read_under_load_p95_s)} "
        f"(target < 100 ms: {'met' if met else 'NOT met'})",
        f"  queued + running at most    {f.max_depth}",
        f"  drained after               {'not within the bound' if f.drain_s is None else f'{f.drain_s:.0f} s'}",
        f"  API process RSS             after warm-up {mb(f.rss_after_warmup)}, at 1/4, 1/2, 3/4 of the run "
        f"{', '.join(mb(v) for v in f.rss_quarters)}, peak {mb(f.rss_peak)}, at the end {mb(f.rss_end)}",
        f"  process tree peak           {mb(f.tree_peak)} (sandboxes and fork servers included; shared pages "
        "counted once per process)",
    ]
    if f.separate_worker:
        lines.insert(1, "  configuration               grader serve --workers 0 + one `grader worker` process")
        if f.worker_rss:
            lines.append(f"  grader worker RSS           first {mb(f.worker_rss[0])}, peak {mb(f.worker_rss[1])}, "
                         f"at the end {mb(f.worker_rss[2])}")
    else:
        lines.insert(1, "  configuration               grader serve --workers 2 (grading threads in the API process)")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "generate":
        plan = json.loads(Path(sys.argv[2]).read_text())
        Path(sys.argv[3]).write_text(json.dumps(generate(plan)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="submissions in the burst (default 500)")
    parser.add_argument("--tokens", type=int, default=10, help="submitter tokens sharing the burst (default 10)")
    parser.add_argument("--burst", type=int, default=20, help="the server's per-token submission burst")
    parser.add_argument("--per-min", type=float, default=60.0, help="the server's per-token submissions per minute")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"kinds and weights (default {DEFAULT_MIX})")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated exercise ids")
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight (default 32)")
    parser.add_argument("--separate-worker", action="store_true",
                        help="grade in one `grader worker` process beside an API that grades nothing")
    args = parser.parse_args()
    problems = [p for p in args.problems.split(",") if p]
    unknown = set(problems) - set(PROBLEMS)
    if unknown:
        raise SystemExit(f"unknown exercises: {sorted(unknown)}")
    figures = run(n=args.n, tokens=args.tokens, burst=args.burst, per_min=args.per_min, seed=args.seed,
                  problems=problems, mix=parse_mix(args.mix), concurrency=args.concurrency,
                  separate_worker=args.separate_worker)
    print(render(figures, vars(args)))
    if figures.lost or figures.duplicated:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
