"""`grader submit --wait` outlives the service: killed mid-grading, started again on the same port and data."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.client.conftest import CORRECT, Service
from tests.service.live_server import LiveServer

pytestmark = pytest.mark.slow

# Correct, but train_mlp sleeps first: the submission is still being graded when the server is killed.
SLOW_CORRECT = CORRECT.read_text() + '''

import time as _time

_train_mlp = train_mlp


def train_mlp(*args, **kwargs):
    _time.sleep(5)
    return _train_mlp(*args, **kwargs)
'''


def test_wait_survives_a_server_killed_and_restarted(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    service = Service(live, live.token("submitter", "ci"))
    live.start()
    (tmp_path / "slow.py").write_text(SLOW_CORRECT)
    client = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "submit", "mlp", "slow.py", "--wait", "--timeout", "240",
         "--retry-delay", "0.2", "--junit", "r.xml"], cwd=tmp_path, env=service.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not service.rows("SELECT id FROM submissions WHERE status = 'running'"):
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the submission never started grading"
            time.sleep(0.1)
        time.sleep(1.0)
        port = live.port
        live.kill_9()
        live.stop()  # ends what the killed server left in its session (its sandboxes)
        (sid, status, attempts), = service.rows("SELECT id, status, attempts FROM submissions")
        assert (status, attempts) == ("running", 1)
        time.sleep(3.0)  # the client meets a closed port for a while
        assert client.poll() is None, "the client gave up while the service was down"
        live.start(port=port)
        out, err = client.communicate(timeout=240)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        live.stop()
    assert client.returncode == 0, err
    assert "could not reach the service" in err and "retrying in" in err
    assert out.startswith("mlp v1.0.0: 100/100 points, 14/14 tests passed"), out
    assert (tmp_path / "r.xml").read_text().count("<testcase") == 14
    assert service.rows("SELECT status, attempts FROM submissions WHERE id = ?", sid) == [("done", 2)]
    assert service.rows("SELECT count(*) FROM reports WHERE submission_id = ?", sid) == [(1,)]
    assert service.rows("SELECT count(*) FROM submissions") == [(1,)]
