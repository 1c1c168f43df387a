"""The Store: one engine and its sessions, with the schema brought up to date by Alembic at start-up."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from grader.config import Settings
from grader.errors import StorageUnavailable
from grader.store.models import ReportRow, Submission, report_checksum

log = logging.getLogger(__name__)

STORE_DIR = Path(__file__).resolve().parent
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK_KEY = 0x67726164  # "grad": the advisory lock every migrating process takes on PostgreSQL


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, future=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                           future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a killed process
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail at once with "database is locked" instead of
        # waiting; taking the write lock up front makes concurrent writers queue on busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """Database access for the service: `with store.session() as db:` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends normally, rolled back when it raises.

        A database that cannot be reached or written right now (see `unavailable`) raises StorageUnavailable
        (503 with Retry-After at the API), chained to the driver's error; the unit of work left nothing behind.
        """
        with self._sessions() as db:
            try:
                yield db
                db.commit()
            except BaseException as exc:
                try:
                    db.rollback()
                except DBAPIError:  # the connection is gone too: nothing was committed, nothing to undo
                    log.debug("rollback on a lost connection failed", exc_info=True)
                if isinstance(exc, DBAPIError) and unavailable(exc):
                    raise StorageUnavailable(f"the database cannot be reached or written right now "
                                             f"({describe(exc)}); retry in a few seconds") from exc
                raise

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a no-op when it already is.

        Safe when several processes start at once (an API and its workers on one PostgreSQL): the
        migration runs under a transaction-scoped advisory lock, so the others wait and then find the
        schema current. SQLite's BEGIN IMMEDIATE (see _on_begin) serializes them the same way.
        """
        from alembic import command

        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()


# SQLite's primary result codes (the low byte of an extended code) of a database that cannot be written or
# reached right now: full, I/O error, cannot open, busy or locked past the timeout, read-only, file too large
# for the file system, a WAL lock protocol race. Anything else ("no such column", a syntax error, a
# constraint, a corrupt file) is a fault of the grader or of its data, not worth a retry.
SQLITE_UNAVAILABLE = frozenset({
    5,   # SQLITE_BUSY
    6,   # SQLITE_LOCKED
    8,   # SQLITE_READONLY (and its extended codes)
    10,  # SQLITE_IOERR (and its extended codes)
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    22,  # SQLITE_NOLFS
})
# PostgreSQL SQLSTATEs of the same kind: class 08 (connection exception), class 53 (insufficient resources:
# disk full 53100, out of memory, too many connections), 57P01..57P03 (admin shutdown, crash shutdown,
# cannot connect now), 58030 (I/O error).
PG_UNAVAILABLE_CLASSES = ("08", "53")
PG_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "58030"})


def unavailable(exc: DBAPIError) -> bool:
    """True for a database that cannot be written or reached right now (worth retrying), not a bug of ours.

    Classified by the driver's own code, never by the exception class alone (SQLite raises OperationalError
    for "no such column" too: a schema the code does not match must answer 500, not 503 forever):

    - a connection SQLAlchemy found lost (`connection_invalidated`);
    - SQLite: the primary result code is in SQLITE_UNAVAILABLE (full, I/O error, cannot open, busy or
      locked after the busy timeout, read-only, ...);
    - PostgreSQL (psycopg 3): a SQLSTATE of class 08 or 53 or in PG_UNAVAILABLE_STATES, or a libpq-side
      OperationalError without a SQLSTATE (connection refused or dropped before the server answered).
    """
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(orig, sqlite3.Error):
        return isinstance(code, int) and code & 0xFF in SQLITE_UNAVAILABLE
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3, psycopg2
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in PG_UNAVAILABLE_CLASSES or sqlstate in PG_UNAVAILABLE_STATES
    return _libpq_failure(orig)


def _libpq_failure(orig: BaseException | None) -> bool:
    """A psycopg OperationalError the server did not answer with a SQLSTATE: libpq's own connection failure."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(orig, psycopg.OperationalError) and getattr(orig, "sqlstate", None) is None


def describe(exc: BaseException) -> str:
    """The driver's own first line of a database error (SQLAlchemy's wrapper adds the SQL and a link)."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip()
    return (text_.splitlines() or [type(exc).__name__])[0][:200]


def alembic_config(url: str) -> Any:
    """The Alembic configuration shipped inside the package (grader/store/alembic.ini)."""
    from alembic.config import Config

    cfg = Config(str(STORE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(STORE_DIR / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def newest_migration() -> str:
    """The revision `migrate` brings a database to (the head of grader/store/migrations)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return str(head)


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """The store the settings point at, its data directory created and its schema migrated."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.sqlalchemy_url)
    if migrate:
        store.migrate()
    return store


def database_problem(settings: Settings) -> str | None:
    """Why the database the settings point at does not answer a query (None when it does); for health checks."""
    try:
        store = open_store(settings, migrate=False)
        try:
            with store.session() as db:
                db.execute(text("SELECT 1"))
        finally:
            store.close()
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, StorageUnavailable) and exc.__cause__ is not None else exc
        return f"database: {type(cause).__name__}: {str(cause)[:200]}"
    return None


@dataclass
class ReportCheck:
    """What `check_reports` found: how many reports it read, and each failing submission with its reasons."""

    checked: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, submission_id: str, reason: str) -> None:
        self.failures.setdefault(submission_id, []).append(reason)


def _same(stored: float | None, reported: Any) -> bool:
    if stored is None or not isinstance(reported, int | float) or isinstance(reported, bool):
        return stored is None and reported is None
    return math.isclose(stored, float(reported), rel_tol=1e-9, abs_tol=1e-9)


def check_reports(store: Store, *, batch: int = 200) -> ReportCheck:
    """Every stored report against its checksum, and every done submission's summary against its report.

    A submission fails when
    - its report no longer hashes to the checksum stored beside it (changed after it was written);
    - its report has no checksum: after migration 0003 backfilled every older row, only a writer that did
      not set one (a grader older than 0003 still running after the migration) leaves NULL, so nothing
      vouches for that report. Policy: reads still serve such a report (refusing them would make an
      old worker's every grading unreadable during an upgrade), but it is listed here until an
      administrator restores or regrades it;
    - it is done and its summary's score or max_score (what the list, the CSV export, the webhooks and the
      compare page read) differs from its report's;
    - it is done and has no report at all.
    Read in batches keyed on the submission id, one short transaction each (SQLite's write lock is taken
    by every transaction here, so a long scan never holds writers back for long).
    """
    result = ReportCheck()
    last = ""
    while True:
        with store.session() as db:
            rows = db.execute(select(Submission.id, Submission.status, Submission.score, Submission.max_score,
                                     ReportRow.report_json, ReportRow.checksum)
                              .outerjoin(ReportRow, ReportRow.submission_id == Submission.id)
                              .where(Submission.id > last,
                                     (Submission.status == "done") | ReportRow.submission_id.is_not(None))
                              .order_by(Submission.id).limit(batch)).all()
        if not rows:
            break
        for sid, status, score, max_score, report_json, checksum in rows:
            if report_json is None:
                result.fail(sid, "done without a report")
                continue
            result.checked += 1
            if checksum is None:
                result.fail(sid, "the report has no checksum (written by a grader that did not set one)")
            elif report_checksum(report_json) != checksum:
                result.fail(sid, "the report fails its checksum")
                continue  # what it says cannot be trusted: nothing to compare the summary with
            if status != "done":
                continue
            try:
                report = json.loads(report_json)
            except ValueError:
                result.fail(sid, "the report is not JSON")
                continue
            for name, stored in (("score", score), ("max_score", max_score)):
                if not _same(stored, report.get(name) if isinstance(report, dict) else None):
                    result.fail(sid, f"the summary's {name} {stored} differs from its report's "
                                     f"{report.get(name) if isinstance(report, dict) else None}")
        last = rows[-1][0]
    for sid, reasons in result.failures.items():
        log.error("stored report of submission %s fails verification: %s", sid, "; ".join(reasons))
    return result


def verify_reports(store: Store, *, batch: int = 200) -> list[str]:
    """The ids of submissions that fail `check_reports` (sorted): a report that fails its checksum or has
    none, a done submission whose summary score differs from its report's, or that has no report."""
    return sorted(check_reports(store, batch=batch).failures)
