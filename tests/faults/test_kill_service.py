"""SIGKILL `grader serve` (embedded queue, SQLite, local sandbox) at seeded random points of a mixed batch,
restarting it each time: every accepted submission ends with exactly one report, every report passes its
checksum, and no sandbox process, cgroup or temporary file of the killed servers is left."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import (
    FaultServer,
    age_cgroups,
    assert_nothing_left,
    assert_one_verified_report_each,
    batch,
    sqlite_rows,
    submit,
    wait_finished,
)
from tests.faults.leftovers import grader_cgroups

pytestmark = [pytest.mark.slow, pytest.mark.faults]

KILLS = 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FaultServer]:
    live = FaultServer(tmp_path)
    yield live
    live.stop()


def test_sigkill_the_service_at_random_points_of_a_batch(server: FaultServer, rng: random.Random,
                                                         seed: int) -> None:
    before = set(grader_cgroups({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}))
    token = server.token("submitter", "faults")
    server.start()
    ids, kinds = [], {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for kind, code in batch(4):
            r = submit(client, token, code)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            kinds[ids[-1]] = kind
    schedule = [round(rng.uniform(0.5, 2.5), 2) for _ in range(KILLS)]
    context = f"(seed {seed}, kill after {schedule} s of each run)"
    killed_while: list[dict[str, int]] = []
    for delay in schedule:
        server.watch(delay)
        port = server.port
        server.kill_9()
        statuses = dict(sqlite_rows(server.data_dir, "SELECT status, count(*) FROM submissions GROUP BY status"))
        killed_while.append(statuses)
        server.start(port=port)
    context += f" statuses at each kill: {killed_while}"
    final = wait_finished(server, token, ids, timeout_s=150, context=context)
    assert {sid: s["status"] for sid, s in final.items()} == dict.fromkeys(ids, "done"), context
    scores = {kinds[sid]: s["score"] for sid, s in final.items() if kinds[sid] != "trivial"}
    assert scores["correct"] == 100.0 and scores["wrong"] < 100.0 and scores["hostile"] < 100.0, (scores, context)
    assert all(s["score"] == 0.0 for sid, s in final.items() if kinds[sid] == "trivial"), context
    assert_one_verified_report_each(server, ids, context)

    # The killed servers' empty cgroups are swept by the next start once stale: age them, start once more.
    killed = server.tracker.owners - {server.pid}
    server.stop()
    age_cgroups(grader_cgroups(killed))
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = submit(client, token, batch(1, real=False)[0][1])
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    wait_finished(server, token, ids[-1:], timeout_s=60, context=context)
    server.stop()
    assert_nothing_left(server, before, context)
    attempts = sqlite_rows(server.data_dir, "SELECT max(attempts), sum(attempts) FROM submissions")[0]
    print(f"\nseed {seed}: {KILLS} SIGKILLs after {schedule} s; statuses at each kill {killed_while}; "
          f"{len(ids)} submissions, one report each; max attempts {attempts[0]}, gradings started {attempts[1]}")
