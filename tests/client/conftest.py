"""Fixtures of the client tests: a real `grader serve` on loopback per module, tokens, and a CLI runner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.live_server import ROOT, LiveServer

SOLUTIONS = ROOT / "tests" / "solutions" / "mlp"
CORRECT = SOLUTIONS / "correct_vectorized.py"
CORRECT_LOOPS = SOLUTIONS / "correct_loops.py"
WRONG = SOLUTIONS / "wrong_db_mean.py"  # 71/100: these four tests fail
WRONG_FAILS = ["affine_backward", "affine_gradcheck", "net_grads", "net_gradcheck"]


@dataclass
class Service:
    server: LiveServer
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "GRADER_SERVER": self.url, "GRADER_TOKEN": self.token, **extra}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `grader` script
        return env

    def rows(self, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
        with sqlite3.connect(self.server.data_dir / "grader.db") as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    live = LiveServer(tmp_path_factory.mktemp("client") / "data")
    token = live.token("submitter", "ci")
    live.start()
    try:
        yield Service(live, token)
    finally:
        live.stop()


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`grader ARGS` in a process of its own, as CI runs it."""
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s)


# Correct, but train_mlp sleeps first: the submission is still being graded when the service is killed.
SLOW_CORRECT = CORRECT.read_text() + """

import time as _time

_train_mlp = train_mlp


def train_mlp(*args, **kwargs):
    _time.sleep(5)
    return _train_mlp(*args, **kwargs)
"""


def submit_slow_then_kill(live: LiveServer, service: Service, cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """`grader submit --wait` of SLOW_CORRECT; once it is being graded, the service is SIGKILLed (and what it
    left in its session ended). Returns the waiting client and the port to start the service again on."""
    (cwd / "slow.py").write_text(SLOW_CORRECT)
    client = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "submit", "mlp", "slow.py", "--wait", "--timeout", "240",
         "--retry-delay", "0.2", "--junit", "r.xml"], cwd=cwd, env=service.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while not service.rows("SELECT id FROM submissions WHERE status = 'running'"):
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the submission never started grading"
            time.sleep(0.1)
        time.sleep(1.0)
        port = live.port
        live.kill_9()
        live.stop()  # ends what the killed service left in its session (its sandboxes)
    except BaseException:
        client.kill()
        client.communicate()
        raise
    return client, port
