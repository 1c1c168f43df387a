"""The data directory's disk fills up (a 20 MB tmpfs, filled with a file) under a real `grader serve`.

- New submissions answer 503 with Retry-After (never 500), nothing half-written stays, the server stays up
  and serves what it has; once space is back the CLI client's retry (same Idempotency-Key) is accepted and
  graded, and the reports written before are intact.
- The disk fills while a grading's report is being written: that write fails, the job is not lost: it is
  taken back when its lease lapses and graded again once there is space.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader.client import GraderClient
from tests.faults.harness import (
    CORRECT,
    FaultServer,
    assert_nothing_left,
    assert_one_verified_report_each,
    auth,
    batch,
    sqlite_rows,
    submit,
    wait_finished,
)
from tests.faults.leftovers import grader_cgroups

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TMPFS_MB = 20
# Correct, but train_mlp (the last test) sleeps first: the report is written seconds after the disk is full.
SLOW_CORRECT = CORRECT + '''

import time as _time

_train_mlp = train_mlp


def train_mlp(*args, **kwargs):
    _time.sleep(4)
    return _train_mlp(*args, **kwargs)
'''


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs of the test's own (root only), always unmounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the data directory (the fault suite runs as root): {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def server(tmp_path: Path, small_disk: Path) -> Iterator[FaultServer]:
    live = FaultServer(tmp_path, data_dir=small_disk / "data")
    yield live
    live.stop()


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last block; returns the file that holds the space."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):  # megabytes, then the last blocks
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    assert os.statvfs(disk).f_bavail == 0
    return filler


def empty_wal(data_dir: Path) -> None:
    """Checkpoint and truncate the WAL: the next write must grow a file (SQLite reuses a WAL's space)."""
    sqlite_rows(data_dir, "PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_full_disk_answers_503_then_the_retry_is_graded(server: FaultServer, small_disk: Path) -> None:
    before = set(grader_cgroups({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}))
    token = server.token("submitter", "faults")
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        earlier = [submit(client, token, code).json()["id"] for _, code in batch(2, real=False)]
    wait_finished(server, token, earlier, timeout_s=60)
    rows_before = sqlite_rows(server.data_dir, "SELECT count(*) FROM submissions")

    empty_wal(server.data_dir)
    filler = fill(small_disk)
    code = batch(1, real=False)[0][1]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refusals = [submit(client, token, code, key="disk-full-1") for _ in range(3)]
        for r in refusals:
            assert r.status_code == 503, (r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"] == "StorageUnavailable", r.headers
            assert "nothing was accepted" in r.json()["detail"]
        # The server is up and serves what it has: reads need no space.
        assert client.get("/healthz").status_code in (200, 503)
        for sid in earlier:
            assert client.get(f"/v1/submissions/{sid}/report", headers=auth(token)).status_code == 200
    assert server.proc is not None and server.proc.poll() is None
    assert sqlite_rows(server.data_dir, "SELECT count(*) FROM submissions") == rows_before, "a half-written row"

    # The CLI client retries on 503 after Retry-After, with its content-derived key; the space comes back.
    log: list[str] = []
    result: dict[str, object] = {}

    def client_submit() -> None:
        with GraderClient(server.url, token, log=log.append) as grader:
            result["submitted"] = grader.submit("mlp", {"solution.py": code})

    thread = threading.Thread(target=client_submit, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not any("503" in line for line in log):
        assert time.monotonic() < deadline and thread.is_alive(), f"the client never saw a 503: {log}"
        time.sleep(0.05)
    filler.unlink()
    thread.join(40)
    assert not thread.is_alive() and "submitted" in result, f"the client's retry was not accepted: {log}"
    sid = result["submitted"].id  # type: ignore[attr-defined]
    assert wait_finished(server, token, [sid], timeout_s=60)[sid]["status"] == "done"
    assert_one_verified_report_each(server, [*earlier, sid])
    server.stop()
    assert_nothing_left(server, before)
    print(f"\nfull disk: 3 POSTs answered 503 + Retry-After {refusals[0].headers['Retry-After']} s; the client "
          f"retried ({len(log)} retries logged) and was accepted after the space came back")


def test_the_disk_fills_while_a_report_is_written_and_the_job_is_not_lost(server: FaultServer,
                                                                          small_disk: Path) -> None:
    token = server.token("submitter", "faults")
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = submit(client, token, SLOW_CORRECT)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
    deadline = time.monotonic() + 30
    while sqlite_rows(server.data_dir, "SELECT status FROM submissions WHERE id = ?", sid) != [("running",)]:
        assert time.monotonic() < deadline, "never started"
        time.sleep(0.05)
    empty_wal(server.data_dir)
    filler = fill(small_disk)
    # Grading ends a few seconds later; storing its report fails on the full disk.
    deadline = time.monotonic() + 40
    while f"finishing {sid} failed" not in server.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the report write never failed: {server.log_path.read_text()[-2000:]}"
        server.watch(0.2)
    assert sqlite_rows(server.data_dir, "SELECT count(*) FROM reports WHERE submission_id = ?", sid) == [(0,)]
    filler.unlink()
    final = wait_finished(server, token, [sid], timeout_s=60)[sid]
    assert final["status"] == "done" and final["score"] == 100.0 and final["attempts"] >= 2, final
    assert_one_verified_report_each(server, [sid])
    print(f"\nreport write on a full disk: failed, taken back, graded again (attempt {final['attempts']})")
