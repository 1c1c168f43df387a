"""Fixtures of the client tests: a real `grader serve` on loopback per module, tokens, and a CLI runner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
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
