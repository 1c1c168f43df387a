"""A real `grader serve` process on loopback, with its own data directory, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc (children of children included)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    frontier.append(kid)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids that still exist and are not zombies."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.add(pid)
    return out


class LiveServer:
    """`python -m grader.cli serve` on 127.0.0.1 with GRADER_DATA_DIR pointing at `data_dir`."""

    def __init__(self, data_dir: Path, *, workers: int = 2, env: dict[str, str] | None = None,
                 database_url: str | None = None) -> None:
        """`database_url`: a shared store (PostgreSQL) instead of the data directory's own SQLite file."""
        self.data_dir = data_dir
        self.workers = workers
        self.env = {**os.environ, "GRADER_DATA_DIR": str(data_dir), **(env or {})}
        self.env.pop("GRADER_DATABASE_URL", None)
        if database_url is not None:
            self.env["GRADER_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.parent / f"server-{data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def token(self, role: str, name: str = "") -> str:
        return self.cli("tokens", "create", "--role", role, "--name", name or role).strip()

    def start(self, timeout_s: float = 60.0, port: int | None = None) -> LiveServer:
        """Start on a free port, or on `port` (e.g. the one a stopped server had, to restart it in place)."""
        self.port = port or free_port()
        log = open(self.log_path, "ab")
        # Its own session: teardown can end whatever it leaves behind, and nothing else.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grader.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers)], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log_path.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not answer within {timeout_s} s: {self.log_path.read_text()[-3000:]}")

    def kill_9(self) -> set[int]:
        """SIGKILL the server process alone, as a crash would; returns the processes it had started."""
        assert self.proc is not None
        below = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return below

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session this server was started in, nothing else
        except ProcessLookupError:
            pass
        self.proc = None
