"""End-to-end speed of the grading service: the sandbox fork server (zygote) against a fresh sandbox per session.

Everything goes through a real `grader serve --workers 2` on loopback (a throwaway data directory, SQLite, the
local sandbox), in two configurations measured in the same run, each with its own server:
  - zygote:   GRADER_SANDBOX_ZYGOTE=1, sandboxes forked from a warm fork server;
  - baseline: GRADER_SANDBOX_ZYGOTE=0, a fresh bubblewrap + python per sandbox session (what a
              container-per-submission grader does).
Figures, per configuration:
  1. per exercise, p50 and p95 latency (the POST leaving the client to the report stored: the server's
     `finished_at`; polled every 100 ms, see POLL_S), --repeat submissions each,
     of its correct solution (the first tests/solutions/<problem>/correct_*.py) and of a faulty one generated
     here from it: every function and method starts with `os._exit(3)`, so every test that calls the
     candidate's code crashes its sandbox and the next test needs a new one; the ratio faulty/correct;
  2. the checks' share: the same correct solution graded in this process with the unisolated fake
     (InProcessBackend, as benchmarks/grading.py does), measured in this process right after each submission
     (the same load), is the time of the checks themselves; the rest of the
     end-to-end p50 is overhead (sandbox start, transport, queue, database, HTTP); its share and the ratio
     end-to-end / in-process;
  3. a warm trivial submission (a file defining nothing: every test fails at once), per exercise, --trivial of
     them after a warm-up: end-to-end p50 and p95, and its overhead over the in-process time of the same file;
  4. throughput: --concurrent mixed submissions (every exercise's correct and known-wrong files from
     tests/solutions, round robin) posted at once, first POST to last `done`, submissions per minute; the peak
     memory of the service: the sum of the RSS of the server's process tree (its sandboxes and fork servers
     included), read from /proc every 100 ms (shared pages count once per process, so forked children are
     overstated);
  5. a table of the targets: figure, target, met or not.
The in-process measurements run first, with no server up. Then both servers start (each warmed up with one
trivial submission per exercise) and only one works at any time: the throughput of each, then each exercise's
latencies on one and then the other. p95 is the nearest rank: of 2 or 3 values, the largest.

How long: --budget-min (default 14) bounds the run: a wait past it stops the measuring, and what was measured
is printed with a note (a cut run loses the last exercises' latencies, in both configurations alike).
Measured on a shared 2-core machine under others' test runs (2026-12-03): the in-process part 1.2 min, each
server's throughput phase 3.5 to 3.6 min, the latencies with the defaults (--repeat 2 --trivial 5) about 1 to
1.5 min per exercise (gan 2.5 min); the bound of 14 min cut that run before rnn's latencies. One exercise with
--repeat 1 --concurrent 4 takes about a minute (numpy exercises) to five (gan).

Usage: .venv/bin/python benchmarks/speed.py [--repeat N] [--trivial N] [--problems mlp,rnn] [--concurrent N]
                                            [--skip-baseline] [--budget-min M]
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.procmem import MemorySampler  # noqa: E402
from grader.config import Settings  # noqa: E402
from grader.engine import grade  # noqa: E402
from grader.engine.catalog import list_problems  # noqa: E402
from grader.isolation.inprocess import InProcessBackend  # noqa: E402
from tests.service.live_server import LiveServer  # noqa: E402

SOLUTIONS = ROOT / "tests" / "solutions"
TRIVIAL = "# defines nothing: every test fails at once\n"
PAGE = os.sysconf("SC_PAGE_SIZE")
# Polling every 10 ms cost the grading thread a third of the server's interpreter lock (a first run measured
# mlp's correct solution at 2.3 s end to end against 1.1 s with the report's own timestamps and a slow poll).
POLL_S = 0.1
CONFIGS = {"zygote": "1", "baseline": "0"}


class OutOfTime(Exception):
    pass


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


def correct_solution(problem_id: str) -> Path:
    found = sorted((SOLUTIONS / problem_id).glob("correct_*.py"))
    return found[0] if found else ROOT / "reference" / f"{problem_id}.py"


def faulty(code: str) -> str:
    """`code` with `os._exit(3)` as the first statement of every function and method."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.body.insert(0, ast.parse("__import__('os')._exit(3)").body[0])
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def mixed(problems: list[str], n: int) -> list[Path]:
    """n files from tests/solutions, round robin over the exercises, each one's correct files then wrong ones."""
    lists = {p: sorted((SOLUTIONS / p).glob("correct_*.py")) + sorted((SOLUTIONS / p).glob("wrong_*.py"))
             for p in problems}
    out: list[Path] = []
    i = 0
    while len(out) < n and any(lists.values()):
        for p in problems:
            if i < len(lists[p]) and len(out) < n:
                out.append(lists[p][i])
        i += 1
        if all(i >= len(v) for v in lists.values()):
            i = 0  # every file taken once: start again (each copy gets its own comment)
    return out


def pct(values: list[float], q: float) -> float:
    """The q-quantile, nearest rank (p95 of 5 values is the largest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def sec(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


class Api:
    def __init__(self, url: str, token: str, clock: Clock) -> None:
        self.url, self.headers, self.clock = url, {"Authorization": f"Bearer {token}"}, clock
        self.http = httpx.Client(timeout=30)

    def submit(self, problem: str, code: str) -> str:
        code = f"{code}\n# {uuid.uuid4().hex}\n"  # each submission its own file: nothing is replayed
        r = self.http.post(f"{self.url}/v1/submissions", headers=self.headers, json={"problem": problem, "code": code})
        assert r.status_code == 202, r.text
        sid: str = r.json()["id"]
        return sid

    def get(self, path: str) -> Any:
        r = self.http.get(f"{self.url}{path}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_one(self, sid: str, poll_s: float = POLL_S) -> dict[str, Any]:
        while True:
            body: dict[str, Any] = self.get(f"/v1/submissions/{sid}")
            if body["status"] in ("done", "failed"):
                if body["status"] != "done":
                    raise SystemExit(f"submission {sid} failed: {body.get('error')}")
                return body
            if self.clock.left() < 0:
                raise OutOfTime(f"submission {sid} not done within the time bound")
            time.sleep(poll_s)

    def timed(self, problem: str, code: str) -> tuple[float, dict[str, Any]]:
        """From the POST leaving this process to the report stored (the server's `finished_at`; same host, same
        clock), so the figure holds no polling lag, and the polling, slow enough not to compete with the
        grading thread for the server's interpreter lock, does not inflate it."""
        start = time.time()
        body = self.wait_one(self.submit(problem, code))
        finished = datetime.fromisoformat(str(body["finished_at"]).replace("Z", "+00:00")).timestamp()
        return finished - start, body

    def wait_all(self, ids: list[str], poll_s: float = 0.1) -> dict[str, dict[str, Any]]:
        """Every id `done`, read from the list endpoint (one request per poll)."""
        want, final = set(ids), {}
        while True:
            page = self.get("/v1/submissions?limit=200&offset=0")
            for item in page["items"]:
                if item["id"] in want and item["status"] in ("done", "failed"):
                    final[item["id"]] = item
            if len(final) == len(want):
                break
            if self.clock.left() < 0:
                raise OutOfTime(f"{len(final)}/{len(want)} submissions done when the time bound ran out")
            time.sleep(poll_s)
        bad = {sid: b.get("error") for sid, b in final.items() if b["status"] != "done"}
        if bad:
            raise SystemExit(f"submissions failed: {bad}")
        return final


@dataclass
class ConfigResult:
    correct: dict[str, list[float]] = field(default_factory=dict)
    faulty: dict[str, list[float]] = field(default_factory=dict)
    crashed: dict[str, str] = field(default_factory=dict)  # "k/n" tests that ended their sandbox
    trivial: dict[str, list[float]] = field(default_factory=dict)
    inproc: dict[str, list[float]] = field(default_factory=dict)  # the checks, measured beside each latency
    inproc_trivial: dict[str, list[float]] = field(default_factory=dict)
    throughput_s: float | None = None
    peak_rss: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def code_version() -> str:
    """The commit measured, and the files under grader/ and sandbox/ that differ from it (others' work in progress)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "grader", "sandbox").splitlines()]
    zygote = "committed" if git("log", "-1", "--format=%h", "--", "grader/isolation/zygote.py") else "not committed"
    return (f"commit {git('rev-parse', '--short', 'HEAD')}, grader/isolation/zygote.py {zygote}"
            + (f"; uncommitted changes in {', '.join(dirty)}" if dirty else "; no uncommitted changes"))


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def measure_inprocess(problems: list[str], repeat: int, n_trivial: int
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    checks: dict[str, list[float]] = {}
    trivial: dict[str, list[float]] = {}
    for p in problems:
        code = correct_solution(p).read_text()
        for store, files, n in ((checks, {"solution.py": code}, repeat),
                                (trivial, {"solution.py": TRIVIAL}, n_trivial)):
            grade(p, files, backend=InProcessBackend())  # warm-up: imports, caches
            times = []
            for _ in range(n):
                start = time.perf_counter()
                report = grade(p, files, backend=InProcessBackend())
                times.append(time.perf_counter() - start)
                assert report.status == "graded", report.error
            store[p] = times
        log(f"in-process {p}: checks p50 {statistics.median(checks[p]):.2f} s, "
            f"trivial p50 {statistics.median(trivial[p]) * 1000:.0f} ms")
    return checks, trivial


def inprocess_s(p: str, code: str) -> float:
    start = time.perf_counter()
    report = grade(p, {"solution.py": code}, backend=InProcessBackend())
    assert report.status == "graded", report.error
    return time.perf_counter() - start


def latency(name: str, api: Api, p: str, args: argparse.Namespace, res: ConfigResult) -> None:
    """Correct and faulty submissions of exercise p, interleaved (a change in the machine's load hits both alike),
    then the trivial ones; kept only when all of them finished."""
    code = correct_solution(p).read_text()
    bad = faulty(code)
    correct: list[float] = []
    wrong: list[float] = []
    for i in range(args.repeat):
        t, _ = api.timed(p, code)
        correct.append(t)
        res.inproc.setdefault(p, []).append(inprocess_s(p, code))  # under the same load as the line above
        t, body = api.timed(p, bad)
        wrong.append(t)
        if i == 0:
            report = api.get(f"/v1/submissions/{body['id']}/report")
            crashed = [t for t in report["tests"] if t["status"] == "error" and "stopped" in t["message"]]
            res.crashed[p] = f"{len(crashed)}/{len(report['tests'])}"
    res.trivial[p] = []
    for _ in range(args.trivial):
        res.trivial[p].append(api.timed(p, TRIVIAL)[0])
        res.inproc_trivial.setdefault(p, []).append(inprocess_s(p, TRIVIAL))
    res.correct[p], res.faulty[p] = correct, wrong
    log(f"{name} {p}: correct p50 {statistics.median(correct):.2f} s, faulty p50 {statistics.median(wrong):.2f} s "
        f"({res.crashed[p]} tests crashed their sandbox), "
        f"trivial p50 {statistics.median(res.trivial[p]) * 1000:.0f} ms")


def throughput(name: str, server: LiveServer, api: Api, items: list[Path], res: ConfigResult) -> None:
    log(f"{name}: throughput, {len(items)} submissions at once")
    assert server.proc is not None
    with MemorySampler(server.proc.pid) as mem:
        start = time.perf_counter()
        ids = {api.submit(path.parent.name, path.read_text()): path for path in items}
        try:
            final = api.wait_all(list(ids))
        finally:
            res.peak_rss = mem.peak
        res.throughput_s = time.perf_counter() - start
    for sid, body in final.items():
        res.scores[f"{ids[sid].parent.name}/{ids[sid].name}"] = float(body["score"])
    log(f"{name}: {len(items)} in {res.throughput_s:.1f} s, peak RSS {mem.peak / 2**20:.0f} MiB "
        f"({mem.samples} samples)")


def measure_servers(configs: list[tuple[str, str]], root: Path, problems: list[str], args: argparse.Namespace,
                    items: list[Path], clock: Clock) -> dict[str, ConfigResult]:
    """Every configuration's server up at once, only one of them working at any time: the throughput of each
    first, then each exercise's latencies on one server and then the other. A run cut by the bound loses the
    last exercises' latencies, in both configurations alike, not one configuration's figures."""
    servers: dict[str, LiveServer] = {}
    apis: dict[str, Api] = {}
    results = {name: ConfigResult() for name, _ in configs}
    try:
        for name, flag in configs:
            # No per-token rate limits: 50 submissions at once from one token, and their polling, are the load
            # measured here, not abuse (benchmarks/load.py measures the limits).
            server = LiveServer(root / name, workers=2, env={"GRADER_SANDBOX_ZYGOTE": flag,
                                                             "GRADER_SANDBOX_BACKEND": "local",
                                                             "GRADER_QUEUE": "embedded",
                                                             "GRADER_RATE_LIMIT_SUBMISSIONS_PER_MIN": "0",
                                                             "GRADER_RATE_LIMIT_REQUESTS_PER_MIN": "0"})
            servers[name] = server
            token = server.token("submitter", "bench")
            server.start()
            apis[name] = Api(server.url, token, clock)
            log(f"{name}: server up on {server.url}; warm-up (a trivial submission per exercise)")
            for p in problems:  # the server's imports, each plan, the first sandbox (and fork server) of each image
                apis[name].timed(p, TRIVIAL)
        for name, _ in configs:
            throughput(name, servers[name], apis[name], items, results[name])
        for p in problems:
            for name, _ in configs:
                latency(name, apis[name], p, args, results[name])
    except OutOfTime as exc:
        for res in results.values():
            res.notes.append(f"stopped by the time bound ({args.budget_min:g} min): {exc}")
    finally:
        for server in servers.values():
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="submissions per solution and exercise (default 2)")
    parser.add_argument("--trivial", type=int, default=5, help="trivial submissions per exercise (default 5)")
    parser.add_argument("--problems", default="", help="comma-separated exercise ids (default: the whole catalog)")
    parser.add_argument("--concurrent", type=int, default=50, help="submissions posted at once (default 50)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure the fork server only")
    parser.add_argument("--budget-min", type=float, default=14.0, help="bound on the whole run (default 14)")
    args = parser.parse_args()
    clock = Clock(args.budget_min * 60)
    started = time.monotonic()
    version = code_version()  # what the servers start from; others may commit while the run goes on
    wanted = [p for p in args.problems.split(",") if p]
    problems = [p.id for p in list_problems() if not wanted or p.id in wanted]
    if wanted and len(problems) != len(wanted):
        raise SystemExit(f"unknown exercises: {sorted(set(wanted) - set(problems))}")
    if "sandbox_zygote" not in Settings.model_fields:
        log("WARNING: this checkout has no sandbox_zygote setting: GRADER_SANDBOX_ZYGOTE is ignored and both "
            "configurations run the same code")
    configs = [(k, v) for k, v in CONFIGS.items() if k == "zygote" or not args.skip_baseline]
    items = mixed(problems, args.concurrent)
    root = Path(tempfile.mkdtemp(prefix="grader-bench-speed-"))

    log(f"in-process checks: {', '.join(problems)}, repeat {args.repeat}")
    checks, trivial_inproc = measure_inprocess(problems, args.repeat, args.trivial)
    results = measure_servers(configs, root, problems, args, items, clock)
    report(args, problems, checks, trivial_inproc, results, items, time.monotonic() - started, version)


def report(args: argparse.Namespace, problems: list[str], checks: dict[str, list[float]],
           trivial_inproc: dict[str, list[float]], results: dict[str, ConfigResult], items: list[Path],
           elapsed_s: float, version: str) -> None:
    targets: list[tuple[str, str, str, bool | None]] = []  # figure, value, target, met
    print(f"\nspeed benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"repeat {args.repeat}, {len(items)} concurrent; run took {elapsed_s / 60:.1f} min")
    print(f"code at the start: {version}")
    if code_version() != version:
        print(f"code at the end:   {code_version()} (a running server picks up later changes only in files it "
              "reads afterwards)")

    for name, res in results.items():
        print(f"\n## {name} (GRADER_SANDBOX_ZYGOTE={CONFIGS[name]})")
        print(f"\nlatency, POST to the report stored (the server's finished_at), {args.repeat} each; faulty: "
              "every function starts with os._exit(3)")
        print("| exercise | correct p50 | correct p95 | faulty p50 | faulty p95 | faulty/correct (p50) "
              "| tests that crashed a sandbox |")
        print("|---|---|---|---|---|---|---|")
        for p in problems:
            if p not in res.correct:
                print(f"| {p} | not measured | | | | | |")
                targets.append((f"{name}: {p} latencies", "not measured", "-", None))
                continue
            c50, f50 = statistics.median(res.correct[p]), statistics.median(res.faulty[p])
            print(f"| {p} | {sec(c50)} | {sec(pct(res.correct[p], 0.95))} | {sec(f50)} | "
                  f"{sec(pct(res.faulty[p], 0.95))} | {f50 / c50:.2f}x | {res.crashed.get(p, '?')} |")
            targets.append((f"{name}: {p} faulty/correct p50", f"{f50 / c50:.2f}x", "<= 1.5x", f50 / c50 <= 1.5))

        print("\nthe checks' share: correct solution, end-to-end p50 against the same file graded in-process "
              "(InProcessBackend, no isolation, measured right after each submission) p50")
        print("| exercise | end to end | in-process (the checks) | overhead | overhead share | ratio |")
        print("|---|---|---|---|---|---|")
        for p in problems:
            if p not in res.correct:
                continue
            e2e, inproc = statistics.median(res.correct[p]), statistics.median(res.inproc.get(p) or checks[p])
            share, ratio = (e2e - inproc) / e2e, e2e / inproc
            print(f"| {p} | {sec(e2e)} | {sec(inproc)} | {ms(e2e - inproc)} | {share:.1%} | {ratio:.2f}x |")
            # In-process slower than end to end is noise (or load), not a met target: no verdict either way.
            valid = share >= 0
            targets.append((f"{name}: {p} overhead share", f"{share:.1%}", "< 10%", share < 0.10 if valid else None))
            targets.append((f"{name}: {p} end-to-end / in-process", f"{ratio:.2f}x", "<= 1.05x",
                            ratio <= 1.05 if valid else None))

        print("\nwarm trivial submission (defines nothing; every test fails at once), after one warm-up")
        print("| exercise | end to end p50 | p95 | in-process p50 | overhead p50 | overhead p95 |")
        print("|---|---|---|---|---|---|")
        for p in problems:
            if p not in res.trivial:
                continue
            t50, t95, i50 = statistics.median(res.trivial[p]), pct(res.trivial[p], 0.95), statistics.median(
                res.inproc_trivial.get(p) or trivial_inproc[p])
            print(f"| {p} | {ms(t50)} | {ms(t95)} | {ms(i50)} | {ms(t50 - i50)} | {ms(t95 - i50)} |")
            targets.append((f"{name}: {p} trivial overhead p50", ms(t50 - i50), "< 100 ms", t50 - i50 < 0.1))

        if res.throughput_s is not None and res.peak_rss is not None:
            per_min = 60 * len(items) / res.throughput_s
            print(f"\nthroughput: {len(items)} mixed submissions posted at once: {res.throughput_s:.1f} s, "
                  f"{per_min:.1f}/min; peak RSS of the server's process tree {res.peak_rss / 2**20:.0f} MiB")
        for note in res.notes:
            print(f"NOTE: {note}")

    zy, base = results.get("zygote"), results.get("baseline")
    if zy and base and zy.throughput_s and base.throughput_s:
        ratio = base.throughput_s / zy.throughput_s
        print(f"\nthroughput, fork server / baseline: {60 * len(items) / zy.throughput_s:.1f} / "
              f"{60 * len(items) / base.throughput_s:.1f} submissions per minute = {ratio:.2f}x")
        targets.append(("throughput, fork server / baseline", f"{ratio:.2f}x", ">= 5x", ratio >= 5))
        same = zy.scores == base.scores
        diff = sorted(k for k in zy.scores if zy.scores[k] != base.scores.get(k))
        print(f"scores of the mixed set: {'the same in both configurations' if same else 'DIFFER: ' + str(diff)}")
        targets.append(("mixed set scores equal in both", "yes" if same else f"no ({len(diff)} differ)", "equal",
                        same))
    elif zy and zy.throughput_s:
        targets.append(("throughput, fork server / baseline", "not measured", ">= 5x", None))

    print("\n## targets")
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    for figure, value, target, met in targets:
        print(f"| {figure} | {value} | {target} | {'n/a' if met is None else 'yes' if met else 'NO'} |")
    measured = [t for t in targets if t[3] is not None]
    print(f"\n{sum(1 for t in measured if t[3])} of {len(measured)} measured targets met"
          + (f"; {len(targets) - len(measured)} not measured" if len(measured) < len(targets) else ""))


if __name__ == "__main__":
    main()
