"""Which database errors are "storage unavailable" (503 with Retry-After, worth retrying) and which are the
grader's own fault (500): classified by the driver's code, with real SQLite errors and psycopg's own classes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from grader.api.app import create_app
from grader.config import Settings
from grader.errors import StorageUnavailable
from grader.store.db import Store, unavailable
from tests.service.conftest import Tokens, make_settings, standin_grade


def _error_of(store: Store, sql: str) -> DBAPIError:
    """The driver error a statement raises in a session, as the session passes it on."""
    with pytest.raises((DBAPIError, StorageUnavailable)) as info:
        with store.session() as db:
            db.execute(text(sql))
    exc = info.value
    if isinstance(exc, StorageUnavailable):
        assert isinstance(exc.__cause__, DBAPIError)
        return exc.__cause__
    assert isinstance(exc, DBAPIError)
    return exc


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'grader.db'}")
    with s.session() as db:
        db.execute(text("CREATE TABLE t (a INTEGER, b TEXT)"))
    return s


def test_a_schema_error_is_a_bug_not_unavailable_storage(store: Store) -> None:
    for sql in ("SELECT missing FROM t", "SELECT * FROM no_such_table", "SELEC 1"):
        with pytest.raises(OperationalError) as info:  # not StorageUnavailable
            with store.session() as db:
                db.execute(text(sql))
        assert not unavailable(info.value), sql
    store.close()


def test_a_full_database_is_unavailable_storage(store: Store) -> None:
    # A real SQLITE_FULL: the database may not grow beyond its current pages.
    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA max_page_count = 3")
        cursor.close()

    store.engine.dispose()
    exc = _error_of(store, "INSERT INTO t (a, b) SELECT 1, hex(randomblob(100000))")
    assert exc.orig.sqlite_errorname == "SQLITE_FULL"  # type: ignore[union-attr]
    assert unavailable(exc)
    store.close()


def test_a_read_only_database_is_unavailable_storage(tmp_path: Path, store: Store) -> None:
    store.close()
    readonly = Store(f"sqlite:///file:{tmp_path / 'grader.db'}?mode=ro&uri=true")
    try:
        exc = _error_of(readonly, "INSERT INTO t (a) VALUES (1)")
        assert exc.orig.sqlite_errorname.startswith("SQLITE_READONLY")  # type: ignore[union-attr]
        assert unavailable(exc)
    finally:
        readonly.close()


def test_a_database_that_cannot_be_opened_is_unavailable_storage(tmp_path: Path) -> None:
    missing = Store(f"sqlite:///{tmp_path / 'no-such-dir' / 'grader.db'}")
    try:
        exc = _error_of(missing, "SELECT 1")
        assert exc.orig.sqlite_errorname == "SQLITE_CANTOPEN"  # type: ignore[union-attr]
        assert unavailable(exc)
    finally:
        missing.close()


@pytest.mark.parametrize(("orig", "expected"), [
    (psycopg.errors.DiskFull("could not extend file"), True),  # 53100
    (psycopg.errors.TooManyConnections("too many clients"), True),  # 53300
    (psycopg.errors.AdminShutdown("terminating connection"), True),  # 57P01
    (psycopg.errors.CannotConnectNow("the database system is starting up"), True),  # 57P03
    (psycopg.errors.ConnectionFailure("connection failure"), True),  # 08006
    (psycopg.OperationalError("connection refused"), True),  # libpq's own: no SQLSTATE
    (psycopg.errors.UndefinedColumn("column checksum does not exist"), False),  # 42703
    (psycopg.errors.UndefinedTable("relation reports does not exist"), False),  # 42P01
    (psycopg.errors.SyntaxError("syntax error"), False),  # 42601
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),  # 57014
])
def test_postgresql_errors_are_classified_by_sqlstate(orig: Exception, expected: bool) -> None:
    assert unavailable(OperationalError("SELECT 1", {}, orig)) is expected


def test_a_lost_connection_is_unavailable_storage() -> None:
    exc = DBAPIError("SELECT 1", {}, psycopg.errors.UndefinedColumn("x"), connection_invalidated=True)
    assert unavailable(exc)


def test_an_unmigrated_database_answers_500_not_503(tmp_path: Path) -> None:
    """New code against a database without a column it reads: the grader's fault, never 'retry later'."""
    settings: Settings = make_settings(tmp_path / "data", workers=0)
    with TestClient(create_app(settings, grade=standin_grade), raise_server_exceptions=False) as client:
        store: Store = client.app.state.store  # type: ignore[attr-defined]
        tokens = Tokens(store)
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": "# x\n"},
                        headers=tokens.auth(tokens.submitter))
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        with store.session() as db:  # as if the column came with a migration this database never had
            db.execute(text("ALTER TABLE submissions DROP COLUMN published_at"))
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": "# y\n"},
                        headers=tokens.auth(tokens.submitter))
        assert r.status_code == 500 and "retry-after" not in r.headers, (r.status_code, r.text[:300])
        r = client.get(f"/v1/submissions/{sid}", headers=tokens.auth(tokens.submitter))
        assert r.status_code == 500 and "retry-after" not in r.headers, (r.status_code, r.text[:300])
