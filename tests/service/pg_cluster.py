"""A throwaway PostgreSQL cluster for the tests: its own data dir and unix socket, no TCP, stopped at teardown."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
PORT = 54329  # only names the socket file: the cluster listens on no TCP address


def find_initdb() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found)
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists():
            return d / "initdb"
    return None


class MissingPostgres(RuntimeError):
    """The PostgreSQL server programs are not installed: the tests fail with this reason, they never skip."""


@contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """A started cluster for a fixture, stopped afterwards; missing server programs fail the test with the
    reason (never a skip: CI installs them)."""
    try:
        pg = start_cluster()
    except MissingPostgres as exc:
        pytest.fail(str(exc))
    try:
        yield pg
    finally:
        pg.stop()


def start_cluster() -> PgCluster:
    """A started throwaway cluster; MissingPostgres says what to install when the programs are missing."""
    initdb = find_initdb()
    if initdb is None:
        raise MissingPostgres("the PostgreSQL server programs are not installed (Debian: apt-get install "
                              "postgresql; scripts/test.sh installs them)")
    return PgCluster(initdb).start()


class PgCluster:
    def __init__(self, initdb: Path) -> None:
        self.bin = initdb.parent
        self.root = Path(tempfile.mkdtemp(prefix="grader-pg-"))
        self.data = self.root / "data"
        # initdb refuses to run as root: run the server as the postgres user when we are root.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PgCluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "grader", "--no-sync",
                  "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"),
                  "-o", f"-k {self.root} -p {PORT} -c listen_addresses='' -c fsync=off", "start")
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://grader@/{database}?host={self.root}&port={PORT}"

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host=str(self.root), port=PORT, user="grader", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
