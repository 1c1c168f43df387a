"""End to end: a real uvicorn server on loopback, a real SQLite file, the real local sandbox and grading engine."""

from __future__ import annotations

import json
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from live_server import ROOT, LiveServer, alive

from grader.service.webhooks import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.slow

SOLUTIONS = ROOT / "tests" / "solutions" / "mlp"
CORRECT = (SOLUTIONS / "correct_vectorized.py").read_text()
SLOW_TRAIN_S = 6.0
# Correct, but train_mlp sleeps first: long enough to kill the server while this submission is graded.
SLOW_CORRECT = CORRECT + f'''

import time as _time

_train_mlp = train_mlp


def train_mlp(*args, **kwargs):
    _time.sleep({SLOW_TRAIN_S})
    return _train_mlp(*args, **kwargs)
'''


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "data", env={"GRADER_WEBHOOK_SECRET": "e2e-secret",
                                               "GRADER_WEBHOOK_ALLOWED_NETWORKS": "[\"127.0.0.0/8\"]"})
    yield live
    live.stop()


def wait_status(client: httpx.Client, sid: str, token: str, statuses: tuple[str, ...],
                timeout_s: float = 120.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/submissions/{sid}", headers=auth(token)).json()
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{sid} still {body['status']}"
        time.sleep(0.1)


def db_rows(data_dir: Path, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(data_dir / "grader.db") as conn:
        return conn.execute(sql, args).fetchall()


def test_kill_9_mid_grading_then_restart_completes_with_one_report(server: LiveServer) -> None:
    submitter, interviewer = server.token("submitter", "ci"), server.token("interviewer", "ivy")
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": SLOW_CORRECT, "candidate": "ada"},
                        headers=auth(submitter))
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_status(client, sid, submitter, ("running",), timeout_s=30)
        time.sleep(1.5)  # well inside grading: the slow train_mlp runs for SLOW_TRAIN_S
        sandbox_procs = server.kill_9()
    assert sandbox_procs, "the server had started no sandbox: it was not grading when killed"
    assert db_rows(server.data_dir, "SELECT status, attempts FROM submissions WHERE id = ?", sid) == [("running", 1)]
    time.sleep(1.0)
    assert alive(sandbox_procs) == set(), "sandbox processes outlived the killed server"

    restarted_at = time.monotonic()
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        done = wait_status(client, sid, submitter, ("done", "failed"))
        recovery_s = time.monotonic() - restarted_at
        assert done["status"] == "done" and done["attempts"] == 2
        assert done["score"] == done["max_score"] == 100.0
        detail = client.get(f"/v1/submissions/{sid}/detail", headers=auth(interviewer)).json()
    assert db_rows(server.data_dir, "SELECT count(*) FROM reports WHERE submission_id = ?", sid) == [(1,)]
    assert db_rows(server.data_dir, "SELECT attempt FROM reports WHERE submission_id = ?", sid) == [(2,)]
    actions = [e["action"] for e in detail["audit"]]
    assert actions == ["submission.created", "job.requeued", "submission.graded"]
    print(f"\nrestart to graded: {recovery_s:.1f} s (train_mlp sleeps {SLOW_TRAIN_S} s)")


class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()
                outer.got.set()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/graded"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_real_grading_over_http(server: LiveServer) -> None:
    submitter, other = server.token("submitter", "ci"), server.token("submitter", "ci-2")
    interviewer = server.token("interviewer", "ivy")
    server.start()
    receiver = Receiver()
    wrong = (SOLUTIONS / "wrong_db_mean.py").read_text()
    noisy = CORRECT + "\nprint('<script>alert(1)</script>')\n"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            latencies_s, ids = [], {}
            for name, body in (("correct", {"code": CORRECT, "callback_url": receiver.url}),
                               ("wrong", {"code": wrong}),
                               ("noisy", {"files": {"solution.py": noisy}})):
                t0 = time.monotonic()
                r = client.post("/v1/submissions", json={"problem": "mlp", "candidate": name, **body},
                                headers=auth(submitter))
                latencies_s.append(time.monotonic() - t0)
                assert r.status_code == 202, r.text
                ids[name] = r.json()["id"]
            results = {n: wait_status(client, sid, submitter, ("done", "failed")) for n, sid in ids.items()}
            assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(ids, "done")
            assert results["correct"]["score"] == 100.0 == results["noisy"]["score"]
            assert results["wrong"]["score"] < 100.0
            report = client.get(f"/v1/submissions/{ids['wrong']}/report", headers=auth(submitter)).json()
            lost = {t["id"] for t in report["tests"] if t["earned"] < t["points"]}
            assert {"affine_backward", "affine_gradcheck"} <= lost  # the tests its Expect: line names
            assert "affine_forward" not in lost
            junit = client.get(f"/v1/submissions/{ids['wrong']}/report.junit.xml", headers=auth(submitter))
            assert junit.status_code == 200 and f'failures="{len(lost)}"' in junit.text
            html = client.get(f"/v1/submissions/{ids['noisy']}/report.html", headers=auth(submitter))
            assert html.status_code == 200
            assert "<script>alert(1)</script>" not in html.text and "&lt;script&gt;alert(1)" in html.text
            assert client.get(f"/v1/submissions/{ids['noisy']}", headers=auth(other)).status_code == 404
            listed = client.get("/v1/submissions", params={"candidate": "wrong"}, headers=auth(interviewer)).json()
            assert [i["id"] for i in listed["items"]] == [ids["wrong"]]
            metrics = client.get("/metrics").text
            assert 'grader_gradings_total{outcome="graded"} 3' in metrics
            assert receiver.got.wait(20)
            headers, body = receiver.calls[0]
            assert verify(body, "e2e-secret", headers[SIGNATURE_HEADER])
            assert json.loads(body)["score"] == 100.0
            grading_s = [client.get(f"/v1/submissions/{sid}/report", headers=auth(interviewer)).json()["duration_s"]
                         for sid in ids.values()]
        print(f"\nPOST /v1/submissions -> 202: median {statistics.median(latencies_s) * 1000:.0f} ms; "
              f"grading mlp in the real sandbox: {', '.join(f'{s:.1f}' for s in grading_s)} s")
    finally:
        receiver.httpd.shutdown()
        receiver.httpd.server_close()


def test_throughput_and_the_concurrency_limit_on_a_real_server(server: LiveServer) -> None:
    from datetime import datetime

    submitter = server.token("submitter", "load")
    server.start()  # --workers 2
    n = 8
    with httpx.Client(base_url=server.url, timeout=30) as client:
        latencies_s, ids = [], []
        started = time.monotonic()
        for i in range(n):
            t0 = time.monotonic()
            r = client.post("/v1/submissions", json={"problem": "mlp", "code": CORRECT, "candidate": f"c{i}"},
                            headers=auth(submitter))
            latencies_s.append(time.monotonic() - t0)
            assert r.status_code == 202
            ids.append(r.json()["id"])
        results = [wait_status(client, sid, submitter, ("done", "failed")) for sid in ids]
        drain_s = time.monotonic() - started
        metrics = client.get("/metrics").text
    assert all(r["status"] == "done" and r["score"] == 100.0 for r in results)
    spans = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in results]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == server.workers == 2
    assert f'grader_gradings_total{{outcome="graded"}} {n}' in metrics
    assert 'grader_queue_depth{status="done"} 8' in metrics
    print(f"\n{n} correct mlp submissions, {server.workers} workers: drained in {drain_s:.1f} s "
          f"({n / drain_s * 60:.0f} per minute); POST -> 202 median {statistics.median(latencies_s) * 1000:.0f} ms, "
          f"max {max(latencies_s) * 1000:.0f} ms")


def test_multipart_files_and_the_candidate_safe_view_on_a_real_server(server: LiveServer) -> None:
    submitter, interviewer = server.token("submitter", "ci"), server.token("interviewer", "ivy")
    server.start()
    helpers = (SOLUTIONS / "wrong_train_noop.py").read_text()  # everything right except training
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/submissions", headers=auth(submitter), data={"problem": "mlp", "candidate": "bo"},
                        files=[("files", ("solution.py", b"from helpers import *  # noqa\n")),
                               ("files", ("helpers.py", helpers.encode()))])
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        done = wait_status(client, sid, submitter, ("done", "failed"))
        mine = client.get(f"/v1/submissions/{sid}/report", headers=auth(submitter)).json()
        full = client.get(f"/v1/submissions/{sid}/report", headers=auth(interviewer)).json()
    assert done["status"] == "done" and done["score"] == 100.0 - 16.0  # only the hidden training test lost
    train_mine = next(t for t in mine["tests"] if t["id"] == "train_mlp")
    train_full = next(t for t in full["tests"] if t["id"] == "train_mlp")
    assert train_full["hidden"] and train_full["status"] == train_mine["status"] == "failed"
    assert train_full["message"] and train_full["message"] != "hidden test"
    assert (train_mine["message"], train_mine["details"], train_mine["figures"]) == ("hidden test", {}, [])
