"""The Celery queue end to end on real services: redis-server, PostgreSQL, `grader serve --workers 0` and
`grader worker` processes, graded in the real local sandbox.

Every submission the API accepts (202) ends with exactly one stored report, read from the PostgreSQL database
directly: through a mixed batch on two workers (every problem of the catalog, correct, known-wrong and hostile
solutions), a worker SIGKILLed mid-grading, only its grading pool process SIGKILLed, a job whose worker is
killed three times (failed with the reason, no report), and a Redis restart that loses every message it held.
The queue's depth and live workers show in /healthz, /metrics and `grader worker --health`; a worker's
`--concurrency` is what it publishes and the number of pool processes that grade at once.

Needs redis-server and PostgreSQL (scripts/test.sh installs both); without them these tests fail with the
reason: deselect them with -m 'not cluster'.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grader.engine.catalog import get_problem, list_problems
from tests.cluster.services import Cluster, MissingService, RedisServer, sandbox_processes, start_postgres
from tests.conftest import Solution, load_solution
from tests.grading import grade_submission
from tests.service.live_server import ROOT
from tests.service.pg_cluster import PORT as PG_PORT
from tests.service.pg_cluster import PgCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SOLUTIONS = ROOT / "tests" / "solutions"
MLP_CORRECT = (SOLUTIONS / "mlp" / "correct_vectorized.py").read_text()
REFERENCE_MLP = (ROOT / "reference" / "mlp.py").read_text().replace("from __future__ import annotations\n", "")

# Correct, but train_mlp (the last test) sleeps first: a submission that is still being graded seconds later.
SLOW_CORRECT = MLP_CORRECT + '''

import time as _time

_train_mlp = train_mlp


def train_mlp(*args, **kwargs):
    _time.sleep(6)
    return _train_mlp(*args, **kwargs)
'''

# Every process of the sandbox forks until its pids cgroup is full, and every one spins: at import time.
FORK_BOMB = '''import os

while True:
    try:
        os.fork()
    except OSError:
        pass
'''

# The reference with a relu_forward that fails when the sandbox let it reach anything of the cluster: the
# host's secrets, the grader's files, the worker's environment (broker and database URLs), the broker's port,
# PostgreSQL's socket. Full marks mean contained.
PROBE = REFERENCE_MLP + '''

import os as _os
import socket as _socket


def _reached():
    found = []
    for path in ("/etc/shadow", "{root}/reference/mlp.py", "{root}/problems/mlp/plan.py"):
        try:
            with open(path, "rb"):
                found.append("read " + path)
        except OSError:
            pass
    # the worker's settings (the sandbox's own GRADER_TORCH flag is the grader's, set for the runner)
    found += [k for k, v in _os.environ.items()
              if k in ("GRADER_BROKER_URL", "GRADER_DATABASE_URL", "GRADER_QUEUE") or "redis://" in v
              or "postgresql" in v]
    tcp = _socket.socket()
    tcp.settimeout(1)
    try:
        tcp.connect(("127.0.0.1", {redis_port}))
        found.append("connected to the broker")
    except OSError:
        pass
    finally:
        tcp.close()
    unix = _socket.socket(_socket.AF_UNIX)
    unix.settimeout(1)
    try:
        unix.connect("{pg_socket}")
        found.append("connected to PostgreSQL")
    except OSError:
        pass
    finally:
        unix.close()
    return found


_REACHED = _reached()
_relu_forward = relu_forward


def relu_forward(x):
    if _REACHED:
        raise RuntimeError("escaped: " + ", ".join(_REACHED))
    return _relu_forward(x)
'''

# Hostile pieces for any problem of the catalog, appended to its reference (whose tests then show what they cost).
# The same reach check as PROBE's, at import: a contained submission imports and earns full marks; one that
# reached anything fails at import, every test.
IMPORT_PROBE = PROBE[PROBE.index("\nimport os as _os"):PROBE.index("\n_REACHED = _reached()")] + """

_REACHED = _reached()
if _REACHED:
    raise RuntimeError("escaped: " + ", ".join(_REACHED))
"""

# 64 MiB written to stdout while importing: the grading goes on, only a capped tail reaches the stored report.
STDOUT_FLOOD = """

import sys as _sys

_chunk = "x" * 2**20
for _ in range(64):
    _sys.stdout.write(_chunk)
_sys.stdout.flush()
"""

# The problem besides mlp that gets the hostile pieces above (a numpy problem, quick to grade).
HOSTILE_ELSEWHERE = "optim"


def first(problem: str, kind: str) -> Solution:
    """The first (by name) correct_ or wrong_ solution of a problem; every problem of the catalog has both."""
    found = sorted((SOLUTIONS / problem).glob(f"{kind}_*.py"))
    assert found, f"{problem} has no tests/solutions/{problem}/{kind}_*.py for the mixed batch"
    return load_solution(found[0])


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgCluster]:
    try:
        pg = start_postgres()
    except MissingService as exc:
        pytest.fail(str(exc))
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except MissingService as exc:
        pytest.fail(str(exc))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer,
            postgres: PgCluster) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"), redis_server.url, postgres.new_database(), workers=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def submitter(cluster: Cluster) -> str:
    return cluster.token("submitter", "ci")


def unique(code: str) -> str:
    """The same code with a comment of its own: a submission no other one replays."""
    return f"{code}\n# {uuid.uuid4().hex}\n"


def submit(cluster: Cluster, token: str, problem: str, code: str, candidate: str = "") -> str:
    r = httpx.post(f"{cluster.url}/v1/submissions", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                   json={"problem": problem, "code": code, "candidate": candidate or None})
    assert r.status_code == 202, r.text
    sid: str = r.json()["id"]
    return sid


def status(cluster: Cluster, token: str, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{cluster.url}/v1/submissions/{sid}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_all(cluster: Cluster, token: str, ids: list[str], timeout_s: float,
             until: tuple[str, ...] = ("done", "failed")) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    final: dict[str, dict[str, Any]] = {}
    while True:
        for sid in ids:
            if sid not in final:
                body = status(cluster, token, sid)
                if body["status"] in until:
                    final[sid] = body
        if len(final) == len(ids):
            return final
        if time.monotonic() > deadline:
            waiting = {sid: status(cluster, token, sid)["status"] for sid in ids if sid not in final}
            logs = "\n".join(f"--- worker {w.index}\n{w.log_tail()}" for w in cluster.workers)
            raise AssertionError(f"not finished after {timeout_s} s: {waiting}\n{logs}")
        time.sleep(0.2)


def wait_for(cluster: Cluster, token: str, sid: str, wanted: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = status(cluster, token, sid)
        if body["status"] == wanted:
            return body
        assert body["status"] in ("queued", "running"), body
        assert time.monotonic() < deadline, f"{sid} still {body['status']} after {timeout_s} s"
        time.sleep(0.05)


def stored_report(cluster: Cluster, sid: str) -> tuple[dict[str, Any], int]:
    """The one report row of a submission, from the database itself: (report, attempt)."""
    rows = cluster.sql("SELECT report_json, attempt FROM reports WHERE submission_id = %s", sid)
    assert len(rows) == 1, f"{sid}: {len(rows)} report rows"
    (text, attempt), = rows
    report: dict[str, Any] = json.loads(text)
    return report, int(attempt)


def assert_one_report_each(cluster: Cluster, ids: list[str]) -> None:
    counts = dict(cluster.sql("SELECT submission_id, count(*) FROM reports WHERE submission_id = ANY(%s) "
                              "GROUP BY submission_id", ids))
    assert {sid: counts.get(sid, 0) for sid in ids} == {sid: 1 for sid in ids}


def audit(cluster: Cluster, sid: str) -> list[tuple[str, int | None]]:
    """A submission's audit events in order: (action, the attempt it names, for the queue's own events)."""
    rows = cluster.sql("SELECT action, detail FROM audit_events WHERE submission_id = %s ORDER BY id", sid)
    return [(action, (json.loads(d) if isinstance(d, str) else d or {}).get("attempt")
             if action.startswith("job.") or action == "submission.failed" else None) for action, d in rows]


def test_a_mixed_batch_on_two_workers_ends_with_the_scores_graded_locally(
        cluster: Cluster, submitter: str, postgres: PgCluster, redis_server: RedisServer) -> None:
    """Every problem of the catalog (read from it: a new exercise joins the batch by itself), one correct and
    one known-wrong solution each, and hostile submissions on two problems, mlp and HOSTILE_ELSEWHERE."""
    catalog = [p.id for p in list_problems()]
    assert "mlp" in catalog and HOSTILE_ELSEWHERE in catalog, catalog
    correct = [first(p, "correct") for p in catalog]
    wrong = [first(p, "wrong") for p in catalog]
    assert all(w.expect and "TBD" not in w.expect for w in wrong), [w.path.name for w in wrong if not w.expect]
    secrets = {"{root}": str(ROOT), "{redis_port}": str(redis_server.port),
               "{pg_socket}": str(postgres.root / f".s.PGSQL.{PG_PORT}")}

    def filled(text: str) -> str:
        for key, value in secrets.items():
            text = text.replace(key, value)
        return text

    probe = filled(PROBE)
    reference_elsewhere = (ROOT / "reference" / f"{HOSTILE_ELSEWHERE}.py").read_text()
    assert (postgres.root / f".s.PGSQL.{PG_PORT}").exists()  # the socket the probe must not reach is there
    problem: dict[str, str] = {}
    code: dict[str, str] = {}

    def send(problem_id: str, text: str, name: str) -> str:
        sid = submit(cluster, submitter, problem_id, unique(text), name)
        problem[sid], code[sid] = problem_id, text
        return sid

    correct_ids = [send(s.problem, s.path.read_text(), s.path.stem) for s in correct]
    wrong_ids = [send(s.problem, s.path.read_text(), s.path.stem) for s in wrong]
    expected = dict(zip(wrong_ids, wrong, strict=True))
    bomb = send("mlp", FORK_BOMB, "fork-bomb")
    probed = send("mlp", probe, "probe")
    probed_elsewhere = send(HOSTILE_ELSEWHERE, reference_elsewhere + filled(IMPORT_PROBE), "import-probe")
    flood = send(HOSTILE_ELSEWHERE, reference_elsewhere + STDOUT_FLOOD, "stdout-flood")
    assert {problem[sid] for sid in correct_ids} == {problem[sid] for sid in wrong_ids} == set(catalog)

    # What the same files earn graded here, in this process's own local sandbox (while the cluster grades).
    local = {sid: grade_submission(problem[sid], {"solution.py": code[sid]}, backend="local")
             for sid in [*wrong_ids, probed, probed_elsewhere, flood]}

    ids = list(problem)
    final = wait_all(cluster, submitter, ids, timeout_s=420)
    assert {sid: body["status"] for sid, body in final.items()} == {sid: "done" for sid in ids}
    assert_one_report_each(cluster, ids)
    reports = {}
    for sid in ids:
        report, attempt = stored_report(cluster, sid)
        assert attempt == 1 and final[sid]["attempts"] == 1, (problem[sid], attempt, final[sid]["attempts"])
        assert report["status"] == "graded" and report["score"] == final[sid]["score"], problem[sid]
        reports[sid] = report

    def statuses(sid: str) -> dict[str, str]:
        return {t["id"]: t["status"] for t in reports[sid]["tests"]}

    def not_passed(sid: str) -> list[tuple[str, str]]:
        return [(t["id"], t["message"]) for t in reports[sid]["tests"] if t["status"] != "passed"]

    for sid in correct_ids:  # full marks, every test passed
        assert reports[sid]["score"] == get_problem(problem[sid]).max_score, (problem[sid], statuses(sid))
        assert set(statuses(sid).values()) == {"passed"}, (problem[sid], statuses(sid))
    for sid in [*wrong_ids, probed, probed_elsewhere, flood]:  # exactly what the local sandbox says, test by test
        assert reports[sid]["score"] == local[sid].score, (problem[sid], reports[sid]["score"], local[sid].score)
        assert statuses(sid) == {t.id: t.status for t in local[sid].tests}, problem[sid]
    for sid, solution in expected.items():  # each known-wrong solution loses points on each test it names
        graded = statuses(sid)
        assert set(solution.expect) <= set(graded), (solution.path.name, set(solution.expect) - set(graded))
        lost = [t for t in solution.expect if graded[t] == "passed"]
        assert not lost, (solution.path.name, lost, statuses(sid))
        assert reports[sid]["score"] < reports[sid]["max_score"], solution.path.name
    # contained: nothing of the cluster was in reach, so both probes earn full marks
    for sid in (probed, probed_elsewhere):
        assert reports[sid]["score"] == reports[sid]["max_score"], (problem[sid], not_passed(sid))
    # the flood costs nothing but its output: full marks, and the capped start of it stored
    assert reports[flood]["score"] == reports[flood]["max_score"], not_passed(flood)
    output = reports[flood]["output"]
    assert output["truncated"] and 0 < len(output["text"]) <= 64 * 1024, (output["bytes_total"], len(output["text"]))
    assert output["text"].startswith("x" * 1024) and output["bytes_total"] >= 64 * 2**20, output["bytes_total"]
    # the fork bomb is stopped at import: every test says so, nothing earned, and the worker graded on
    assert reports[bomb]["score"] == 0
    assert all(t["status"] != "passed" and t["message"].startswith("importing solution.py")
               for t in reports[bomb]["tests"]), reports[bomb]["tests"]
    assert all(w.running() for w in cluster.workers), [w.log_tail() for w in cluster.workers if not w.running()]


def test_a_worker_killed_mid_grading_its_job_is_graded_again_once(cluster: Cluster, submitter: str) -> None:
    slow = submit(cluster, submitter, "mlp", unique(SLOW_CORRECT), "slow")
    wait_for(cluster, submitter, slow, "running")
    victim = cluster.holder()  # the one worker with a sandbox: the slow submission is its only job
    fast = [submit(cluster, submitter, "mlp", unique(MLP_CORRECT), f"fast-{i}") for i in range(3)]
    time.sleep(1.0)
    assert status(cluster, submitter, slow)["status"] == "running"
    cluster.kill_9(victim)
    assert cluster.sql("SELECT status, attempts FROM submissions WHERE id = %s", slow) == [("running", 1)]
    cluster.restart_worker(victim)

    ids = [slow, *fast]
    final = wait_all(cluster, submitter, ids, timeout_s=150)
    assert {sid: body["status"] for sid, body in final.items()} == {sid: "done" for sid in ids}
    assert_one_report_each(cluster, ids)
    report, attempt = stored_report(cluster, slow)
    assert report["score"] == 100.0 and final[slow]["score"] == 100.0
    assert attempt == 2 and final[slow]["attempts"] == 2  # the killed grading was the first attempt
    # the audit trail: the killed first attempt taken back, then graded once
    assert audit(cluster, slow) == [("submission.created", None), ("job.requeued", 1), ("submission.graded", None)]
    for sid in fast:
        assert stored_report(cluster, sid)[0]["score"] == 100.0


def test_a_grading_child_killed_mid_grading_its_job_is_graded_again_once(cluster: Cluster, submitter: str) -> None:
    """SIGKILL to the prefork pool process that grades, not to its worker: the worker sees the child lost, the
    message goes back, the job is taken back and graded again, once; the worker lives on with a new child."""
    slow = submit(cluster, submitter, "mlp", unique(SLOW_CORRECT), "slow-child")
    wait_for(cluster, submitter, slow, "running")
    worker = cluster.workers[cluster.holder()]
    parent = worker.pid
    grading = worker.grading_children()
    assert len(grading) == 1, (grading, worker.pool_children())
    child, = grading
    assert child != parent and child in worker.pool_children()
    time.sleep(1.0)
    assert status(cluster, submitter, slow)["status"] == "running"
    assert sandbox_processes(child) & worker.sandboxes()  # the session grading it is the child's own
    os.kill(child, signal.SIGKILL)

    final = wait_all(cluster, submitter, [slow], timeout_s=150)[slow]
    assert final["status"] == "done" and final["attempts"] == 2, final
    assert_one_report_each(cluster, [slow])
    report, attempt = stored_report(cluster, slow)
    assert report["score"] == 100.0 and final["score"] == 100.0 and attempt == 2
    assert audit(cluster, slow) == [("submission.created", None), ("job.requeued", 1), ("submission.graded", None)]
    # the worker itself was not touched: the same process, with a new pool child in place of the killed one
    assert worker.running() and worker.pid == parent, worker.log_tail()
    pool = worker.pool_children()
    assert child not in pool and len(pool) == worker.concurrency, pool
    # the killed child's sandbox (session and fork server) did not outlive it
    deadline = time.monotonic() + 15
    while sandbox_processes(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sandbox_processes(child) == set()


def test_a_job_whose_worker_is_killed_three_times_fails_with_the_reason(cluster: Cluster, submitter: str) -> None:
    doomed = submit(cluster, submitter, "mlp", unique(SLOW_CORRECT), "doomed")
    for attempt in (1, 2, 3):
        deadline = time.monotonic() + 90
        while True:
            body = status(cluster, submitter, doomed)
            if body["status"] == "running" and body["attempts"] == attempt:
                break
            assert body["status"] in ("queued", "running"), body
            assert time.monotonic() < deadline, f"attempt {attempt} never started: {body}"
            time.sleep(0.05)
        victim = cluster.holder()
        time.sleep(0.5)
        cluster.kill_9(victim)
        cluster.restart_worker(victim)
    final = wait_all(cluster, submitter, [doomed], timeout_s=90)[doomed]
    assert final["status"] == "failed" and final["attempts"] == 3, final
    assert final["error"] and "3" in final["error"], final
    assert cluster.sql("SELECT count(*) FROM reports WHERE submission_id = %s", doomed) == [(0,)]
    assert audit(cluster, doomed) == [("submission.created", None), ("job.requeued", 1), ("job.requeued", 2),
                                      ("submission.failed", 3)]


def test_a_redis_restart_loses_no_accepted_submission(cluster: Cluster, submitter: str,
                                                      redis_server: RedisServer) -> None:
    fast = [SOLUTIONS / "mlp" / "correct_vectorized.py", SOLUTIONS / "mlp" / "correct_functional.py",
            SOLUTIONS / "regularization" / "correct_compact.py", SOLUTIONS / "rnn" / "correct_vectorized.py"]
    ids = [submit(cluster, submitter, p.parent.name, unique(p.read_text()), f"r{i}")
           for i, p in enumerate(fast * 2)]
    held = redis_server.waiting_messages()
    assert held > 0, "the broker held no message: nothing for the restart to lose"
    redis_server.restart()
    assert not [p.name for p in redis_server.dir.iterdir() if p.suffix in (".rdb", ".aof")]
    final = wait_all(cluster, submitter, ids, timeout_s=150)
    assert {sid: body["status"] for sid, body in final.items()} == {sid: "done" for sid in ids}
    assert_one_report_each(cluster, ids)
    for sid in ids:
        assert stored_report(cluster, sid)[0]["score"] == final[sid]["score"] == final[sid]["max_score"]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found[1])


def test_health_shows_the_queue_and_the_workers(cluster: Cluster, submitter: str) -> None:
    body = cluster.wait_workers_alive(2)
    assert body["status"] == "ok"
    queue = body["queue"]
    assert queue["backend"] == "celery" and queue["workers_alive"] == 2 and queue["depth"] == 0, queue
    assert queue["broker"] == "ok", queue
    metrics = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    assert metric(metrics, "grader_workers_alive") == 2
    assert metric(metrics, 'grader_queue_depth{status="queued"}') == 0
    health = cluster.cli("worker", "--health")
    assert health.returncode == 0, health.stdout + health.stderr
    for i, w in enumerate(cluster.workers):  # --concurrency 1: one grading process each, as published
        beat = cluster.heartbeat(i)
        assert beat is not None and beat["pid"] == w.pid and beat["concurrency"] == 1, beat
        assert len(w.pool_children()) == 1, w.pool_children()

    for w in cluster.workers:
        w.stop()
    wide = cluster.workers[0]
    try:
        ids = [submit(cluster, submitter, "mlp", unique(MLP_CORRECT), f"h{i}") for i in range(3)]
        body = cluster.wait_workers_alive(0)
        assert body["queue"]["depth"] == 3, body
        metrics = httpx.get(f"{cluster.url}/metrics", timeout=10).text
        assert metric(metrics, "grader_workers_alive") == 0
        assert metric(metrics, 'grader_queue_depth{status="queued"}') == 3
        health = cluster.cli("worker", "--health")
        assert health.returncode == 1, health.stdout + health.stderr

        # One worker with --concurrency 2 alone takes the three: two grading processes, two gradings at once.
        wide.concurrency = 2
        wide.start()
        cluster.wait_workers_alive(1)
        final = wait_all(cluster, submitter, ids, timeout_s=120)
        assert {sid: b["status"] for sid, b in final.items()} == {sid: "done" for sid in ids}
        assert_one_report_each(cluster, ids)
        beat = cluster.heartbeat(0)
        assert beat is not None and beat["pid"] == wide.pid and beat["concurrency"] == 2, beat
        assert len(wide.pool_children()) == 2, wide.pool_children()
        spans = cluster.sql("SELECT started_at, finished_at FROM submissions WHERE id = ANY(%s)", ids)
        overlapping = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
        assert overlapping == 2, spans  # never three: two processes
    finally:
        wide.stop()
        wide.concurrency = 1
        for w in cluster.workers:
            w.start()
    cluster.wait_workers_alive(2)
