"""`grader submit --wait` outlives the service: killed mid-grading, started again on the same port and data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.client.conftest import Service, submit_slow_then_kill
from tests.service.live_server import LiveServer

pytestmark = pytest.mark.slow

def test_wait_survives_a_server_killed_and_restarted(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    service = Service(live, live.token("submitter", "ci"))
    live.start()
    client, port = submit_slow_then_kill(live, service, tmp_path)
    try:
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
