"""A real `grader serve` for the fault suite, the submissions it grades, and the checks every fault test ends with.

The batch mixes a few real gradings (a correct and a known-wrong mlp from tests/solutions/) with a hostile one
(an infinite loop in one function, cut by a small per-test cap) and trivial-fast ones (the unfilled template:
every test fails at once), so a run stays within the CI budget on two cores.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from grader.store.db import Store, verify_reports
from tests.faults.leftovers import Tracker, grader_cgroups, stray_data_files, temporary_files
from tests.service.live_server import ROOT, LiveServer

SOLUTIONS = ROOT / "tests" / "solutions" / "mlp"
CORRECT = (SOLUTIONS / "correct_vectorized.py").read_text()
WRONG = (SOLUTIONS / "wrong_db_mean.py").read_text()
TEMPLATE = (ROOT / "problems" / "mlp" / "template.py").read_text()
# relu_backward never returns: the tests that call it hit the per-test time limit (capped below), the rest pass.
HOSTILE = CORRECT + '''

def relu_backward(dout, cache):
    while True:
        pass
'''
TEST_TIMEOUT_CAP_S = 3


def batch(n_trivial: int, *, real: bool = True) -> list[tuple[str, str]]:
    """(kind, code) of a mixed batch; every code unique (no two submissions alike)."""
    kinds = ([("correct", CORRECT), ("wrong", WRONG), ("hostile", HOSTILE)] if real else []) + \
        [("trivial", TEMPLATE)] * n_trivial
    return [(kind, f"{code}\n# {uuid.uuid4().hex}\n") for kind, code in kinds]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FaultServer(LiveServer):
    """A LiveServer whose temporary files go to a directory of the test's own, with quick recovery settings;
    every server process it starts is tracked (its sandboxes, cgroups)."""

    def __init__(self, root: Path, *, workers: int = 2, env: dict[str, str] | None = None,
                 database_url: str | None = None, data_dir: Path | None = None) -> None:
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        settings = {"TMPDIR": str(self.tmpdir), "GRADER_TEST_TIMEOUT_CAP_S": str(TEST_TIMEOUT_CAP_S),
                    "GRADER_JOB_MAX_ATTEMPTS": "6", "GRADER_JOB_LEASE_S": "8", **(env or {})}
        super().__init__(data_dir or root / "data", workers=workers, env=settings, database_url=database_url)
        self.log_path = root / "server.log"  # never on the data directory's disk (it may be the full one)
        self.tracker = Tracker()

    def start(self, timeout_s: float = 60.0, port: int | None = None) -> FaultServer:
        super().start(timeout_s, port)
        assert self.proc is not None
        self.tracker.own(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def watch(self, seconds: float) -> None:
        """Wait, noting the sandbox processes the server starts meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tracker.snapshot()
            time.sleep(0.05)

    def store(self) -> Store:
        url = self.env.get("GRADER_DATABASE_URL") or f"sqlite:///{(self.data_dir / 'grader.db').resolve()}"
        return Store(url)


def submit(client: httpx.Client, token: str, code: str, *, key: str | None = None) -> httpx.Response:
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    return client.post("/v1/submissions", json={"problem": "mlp", "code": code}, headers=headers)


def sqlite_rows(data_dir: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "grader.db", timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def wait_finished(server: FaultServer, token: str, ids: list[str], timeout_s: float,
                  context: str = "") -> dict[str, dict[str, Any]]:
    """Poll the API until every submission is done or failed; the last summaries."""
    deadline = time.monotonic() + timeout_s
    final: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            for sid in ids:
                if sid not in final:
                    r = client.get(f"/v1/submissions/{sid}", headers=auth(token))
                    if r.status_code == 200 and r.json()["status"] in ("done", "failed"):
                        final[sid] = r.json()
            if len(final) == len(ids):
                return final
            assert time.monotonic() < deadline, \
                f"not finished after {timeout_s} s: {sorted(set(ids) - set(final))} {context}\n" \
                f"{server.log_path.read_text(errors='replace')[-3000:]}"
            server.watch(0.3)


def report_counts(store: Store) -> dict[str, int]:
    """Submission id -> stored reports, every submission of the store (read directly, not through the API)."""
    from sqlalchemy import func, select

    from grader.store.models import ReportRow, Submission

    with store.session() as db:
        rows = db.execute(select(Submission.id, func.count(ReportRow.submission_id))
                          .outerjoin(ReportRow, ReportRow.submission_id == Submission.id)
                          .group_by(Submission.id)).all()
    return {sid: n for sid, n in rows}


def assert_one_verified_report_each(server: FaultServer, accepted: list[str], context: str = "") -> None:
    """Every accepted submission has exactly one report, nothing else was stored, every checksum holds."""
    store = server.store()
    try:
        counts = report_counts(store)
        assert {sid: counts.get(sid, 0) for sid in accepted} == dict.fromkeys(accepted, 1), context
        assert sorted(counts) == sorted(accepted), f"submissions the API never accepted were stored {context}"
        assert verify_reports(store) == [], context
        from sqlalchemy import text

        with store.session() as db:
            unchecked = db.execute(text("SELECT submission_id FROM reports WHERE checksum IS NULL")).all()
        assert unchecked == [], f"reports stored without a checksum: {unchecked} {context}"
    finally:
        store.close()


def assert_nothing_left(server: FaultServer, cgroups_before: set[Path], context: str = "") -> None:
    """No sandbox process, session/zygote cgroup, temporary file or stray file in the data directory of the
    test's servers remains (tests/faults/leftovers.py says what each check covers).

    The server must be stopped. The empty cgroups of servers killed with SIGKILL are swept by the next
    start of a grader once they are a minute old (cgroups.Hierarchy.sweep): `sweep_dead_owners` shows it.
    """
    assert server.proc is None, "stop the server first"
    deadline = time.monotonic() + 10
    while (left := server.tracker.sandboxes_alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"sandbox processes outlived their server: {server.tracker.describe(left)} {context}"
    groups = set(grader_cgroups(server.tracker.owners)) - cgroups_before
    assert not groups, f"cgroups left behind: {sorted(map(str, groups))} {context}"
    assert temporary_files(server.tmpdir) == [], f"temporary files left: {temporary_files(server.tmpdir)} {context}"
    stray = stray_data_files(server.data_dir)
    assert not stray, f"files other than the database in the data directory: {stray} {context}"


def age_cgroups(paths: list[Path], seconds: float = 120.0) -> None:
    """Make these (empty) cgroups look `seconds` old, so the next grader start's sweep may take them."""
    then = time.time() - seconds
    for path in paths:
        try:
            os.utime(path, (then, then))
        except OSError:
            pass
