"""Sandboxes killed from outside while a real `grader serve` grades: the session's processes (SIGKILL to
everything in its dl-grader/s<pid>-* cgroup), then the fork server (dl-grader/z<pid>-*) under a session.

What the design says (DESIGN.md, the sandbox boundary): a call that is killed costs that test only, the
session is torn down and grading goes on; the host cannot tell a kill from outside from the candidate's own
`os.kill(os.getpid(), 9)`, so the killed test says so honestly ("killed by signal SIGKILL"). A fork server
that dies under a running session withdraws the sandbox: a grader fault, never charged to the candidate, the
submission is graded again. Either way each submission ends with exactly one report and nothing is left.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import (
    CORRECT,
    FaultServer,
    assert_nothing_left,
    assert_one_verified_report_each,
    auth,
    sqlite_rows,
    submit,
    wait_finished,
)
from tests.faults.leftovers import grader_cgroups, processes_in

pytestmark = [pytest.mark.slow, pytest.mark.faults]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FaultServer]:
    live = FaultServer(tmp_path, workers=1)
    yield live
    live.stop()


def kill_group(server: FaultServer, prefix: str, sid: str, timeout_s: float = 30.0) -> set[int]:
    """SIGKILL every process in the server's `prefix` cgroups (s: sessions, z: fork servers) as soon as some
    hold a process while submission `sid` is still being graded; returns what was killed."""
    deadline = time.monotonic() + timeout_s
    while True:
        groups = [g for g in grader_cgroups({server.pid}) if g.name.startswith(prefix)]
        pids = processes_in(groups)
        if pids:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return pids
        status = sqlite_rows(server.data_dir, "SELECT status FROM submissions WHERE id = ?", sid)
        assert status == [("running",)], f"{sid} was graded before a {prefix}-cgroup process could be killed"
        assert time.monotonic() < deadline, f"no {prefix}-cgroup process of the server appeared"
        server.watch(0.01)


def grade_and_kill(server: FaultServer, prefix: str, delay_s: float, context: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Submit a correct solution, SIGKILL the server's `prefix` sandbox processes `delay_s` into its grading;
    the final summary and report (interviewer's view)."""
    token = server.token("submitter", "faults")
    interviewer = server.token("interviewer", "ivy")
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = submit(client, token, CORRECT)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        deadline = time.monotonic() + 30
        while sqlite_rows(server.data_dir, "SELECT status FROM submissions WHERE id = ?", sid) != [("running",)]:
            assert time.monotonic() < deadline, f"{sid} never started {context}"
            time.sleep(0.02)
        server.watch(delay_s)
        kill_group(server, prefix, sid)
        summary = wait_finished(server, token, [sid], timeout_s=90, context=context)[sid]
        report = client.get(f"/v1/submissions/{sid}/report", headers=auth(interviewer)).json()
    assert_one_verified_report_each(server, [sid], context)
    return summary, report


def lost_tests(report: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(t["id"], t["message"][:200]) for t in report["tests"] if t["earned"] < t["points"]]


def test_a_session_killed_from_outside_costs_the_killed_test_only(server: FaultServer, rng: random.Random,
                                                                   seed: int) -> None:
    before = set(grader_cgroups({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}))
    delay = round(rng.uniform(0.2, 1.2), 2)
    context = f"(seed {seed}, session killed {delay} s into grading)"
    summary, report = grade_and_kill(server, "s", delay, context)
    lost = lost_tests(report)
    # The test whose call was killed says so; the others pass (one mistake, one root); graded once.
    assert summary["status"] == "done" and summary["attempts"] == 1, (summary, context)
    assert len(lost) <= 1 and all(re.search(r"SIGKILL", m) for _, m in lost), (lost, context)
    server.stop()
    assert_nothing_left(server, before, context)
    print(f"\nseed {seed}: session killed {delay} s in -> score {summary['score']}, lost {lost}")


def test_a_fork_server_killed_under_a_session_is_the_graders_fault(server: FaultServer, rng: random.Random,
                                                                   seed: int) -> None:
    before = set(grader_cgroups({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}))
    delay = round(rng.uniform(0.2, 1.2), 2)
    context = f"(seed {seed}, fork server killed {delay} s into grading)"
    summary, report = grade_and_kill(server, "z", delay, context)
    # Withdrawn: a grader fault, graded again in full; never charged to the candidate.
    assert summary["status"] == "done" and summary["score"] == 100.0, (summary["attempts"], lost_tests(report),
                                                                       context)
    server.stop()
    assert_nothing_left(server, before, context)
    print(f"\nseed {seed}: fork server killed {delay} s in -> score {summary['score']}, "
          f"attempts {summary['attempts']}")
