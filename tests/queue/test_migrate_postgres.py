"""Concurrent start-ups migrate one PostgreSQL database safely: the advisory lock makes the others wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_helpers import make_settings
from sqlalchemy import text

from grader.store.db import newest_migration, open_store
from tests.service.pg_cluster import PgCluster, running_cluster

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


def test_processes_starting_at_once_migrate_one_database_once(cluster: PgCluster, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=cluster.new_database())
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            open_store(settings).close()
        except BaseException as exc:  # a lost race would be a DuplicateTable error here
            errors.append(exc)

    # daemon threads and a bounded join: start-ups that deadlock one another fail the test instead of hanging it
    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a start-up is still migrating after 60 s"
    assert errors == []
    store = open_store(settings, migrate=False)
    try:
        with store.session() as db:
            assert db.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [newest_migration()]
            db.execute(text("SELECT published_at FROM submissions"))
            db.execute(text("SELECT checksum FROM reports"))
    finally:
        store.close()
