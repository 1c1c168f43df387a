"""PostgreSQL stops for a few seconds under a real `grader serve` (embedded queue) while a batch is graded.

Meanwhile writes answer 503 with Retry-After (never 500) and /healthz says degraded; once the database is
back, the CLI client's retried submission is accepted, and every accepted submission ends with exactly one
report whose checksum holds: a grading whose report could not be stored is taken back and graded again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader.client import GraderClient
from tests.faults.harness import (
    FaultServer,
    assert_nothing_left,
    assert_one_verified_report_each,
    batch,
    submit,
    wait_finished,
)
from tests.faults.leftovers import grader_cgroups
from tests.service.pg_cluster import PORT, PgCluster, running_cluster

pytestmark = [pytest.mark.slow, pytest.mark.faults]

OUTAGE_S = 3.0


@pytest.fixture
def postgres() -> Iterator[PgCluster]:
    with running_cluster() as pg:
        yield pg


def pg_stop(pg: PgCluster) -> None:
    """Stop the server as a crash would (immediate: no checkpoint, every connection cut); its data stays."""
    pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data), "-m", "immediate", "-w", "stop")


def pg_start(pg: PgCluster) -> None:
    """Start it again on the same socket (what PgCluster.start does after initdb)."""
    pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data), "-w", "-l", str(pg.root / "log"),
            "-o", f"-k {pg.root} -p {PORT} -c listen_addresses='' -c fsync=off", "start")


@pytest.fixture
def server(tmp_path: Path, postgres: PgCluster) -> Iterator[FaultServer]:
    live = FaultServer(tmp_path, database_url=postgres.new_database())
    yield live
    live.stop()


def test_the_database_stops_for_a_few_seconds(server: FaultServer, postgres: PgCluster, rng: random.Random,
                                              seed: int) -> None:
    before = set(grader_cgroups({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}))
    token = server.token("submitter", "faults")
    server.start()
    ids = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _, code in [*batch(3, real=False), *batch(0)[:1]]:  # trivial ones and one correct (a real grading)
            r = submit(client, token, code)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
    delay = round(rng.uniform(0.3, 2.0), 2)
    context = f"(seed {seed}, database stopped {delay} s after the batch for {OUTAGE_S} s)"
    server.watch(delay)

    pg_stop(postgres)
    stopped_at = time.monotonic()
    log: list[str] = []
    result: dict[str, object] = {}
    code = batch(1, real=False)[0][1]

    def client_submit() -> None:
        with GraderClient(server.url, token, log=log.append) as grader:
            result["submitted"] = grader.submit("mlp", {"solution.py": code})

    answers: list[tuple[str, int, str]] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = submit(client, token, code, key="during-the-outage")
        answers.append(("POST", r.status_code, r.headers.get("Retry-After", "")))
        health = client.get("/healthz")
        answers.append(("healthz", health.status_code, health.json().get("status", "")))
        r = client.get(f"/v1/submissions/{ids[0]}", headers={"Authorization": f"Bearer {token}"})
        answers.append(("GET", r.status_code, r.headers.get("Retry-After", "")))
        thread = threading.Thread(target=client_submit, daemon=True)
        thread.start()
        server.watch(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
    pg_start(postgres)
    outage_s = time.monotonic() - stopped_at
    context += f" answers during the outage: {answers}; client: {log}"
    assert answers[0][1] == 503 and int(answers[0][2]) >= 1, context
    assert answers[1][1] == 503 and answers[1][2] == "degraded", context
    assert answers[2][1] == 503, context

    thread.join(60)
    assert not thread.is_alive() and "submitted" in result, f"the client's retry was not accepted {context}"
    ids.append(result["submitted"].id)  # type: ignore[attr-defined]
    final = wait_finished(server, token, ids, timeout_s=120, context=context)
    assert {sid: s["status"] for sid, s in final.items()} == dict.fromkeys(ids, "done"), context
    assert_one_verified_report_each(server, ids, context)
    server.stop()
    assert_nothing_left(server, before, context)
    print(f"\nseed {seed}: PostgreSQL down {outage_s:.1f} s; answers {answers}; client retries {len(log)}; "
          f"attempts {[final[s]['attempts'] for s in ids]}")
