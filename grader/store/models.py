"""The tables: submissions (which are also the queue's jobs), reports, tokens, notes, overrides, audit, webhooks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def report_checksum(report_json: str) -> str:
    """SHA-256 (hex) of a report's stored JSON, as UTF-8 bytes: what `reports.checksum` holds."""
    return hashlib.sha256(report_json.encode("utf-8")).hexdigest()


def _default_checksum(context: Any) -> str | None:
    report_json = context.get_current_parameters().get("report_json")
    return None if report_json is None else report_checksum(report_json)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough and lookups stay O(1).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Submission(Base):
    """A submission and its grading job: the queue is this table's status column."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("token_id", "idempotency_key", name="uq_submissions_idempotency"),
        Index("ix_submissions_status_created", "status", "created_at"),
        Index("ix_submissions_created", "created_at"),
        Index("ix_submissions_problem_created", "problem_id", "created_at"),  # a problem's earlier submissions
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    problem_id: Mapped[str] = mapped_column(String(64), index=True)
    problem_version: Mapped[str] = mapped_column(String(32))
    candidate: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    callback_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), nullable=True, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    entry: Mapped[str] = mapped_column(String(100), default="solution.py")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Kept beside the report so lists and filters never parse report JSON.
    final_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    passed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    test_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Queue bookkeeping: `attempts` is also the fencing token that makes a stale worker's result void.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When a "grade this" message was last handed to a broker (queue=celery); None: never, or taken back.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    files: Mapped[list[SubmissionFile]] = relationship(back_populates="submission", order_by="SubmissionFile.name",
                                                       cascade="all, delete-orphan")


class SubmissionFile(Base):
    __tablename__ = "submission_files"

    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str] = mapped_column(Text)

    submission: Mapped[Submission] = relationship(back_populates="files")


class ReportRow(Base):
    """At most one report per submission: the unique key is what makes grading count once.

    `checksum` is the SHA-256 of `report_json` (see `report_checksum`), written in the same transaction, so a
    report changed on disk afterwards is detected when read instead of served as graded. Migration 0003
    backfilled it for every older row; None afterwards only on a row written by a grader older than 0003
    still running after the migration: reads serve such a report (nothing to check it against), and
    `grader verify-reports` lists it as failing, since nothing vouches for it.
    """

    __tablename__ = "reports"

    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    report_json: Mapped[str] = mapped_column(Text)
    # An insert that does not give it gets it computed from report_json (every writer through the ORM).
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True, default=_default_checksum)
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def checksum_fails(self) -> bool:
        """True when the stored JSON no longer hashes to the stored checksum; a row without one cannot fail
        here (it is served), `verify_reports` lists it."""
        return self.checksum is not None and report_checksum(self.report_json) != self.checksum


class SubmissionFingerprint(Base):
    """The similarity fingerprint of a submission's entry file (grader.engine.similarity), at most one.

    Written with the submission when it is accepted; migration 0004 backfilled older submissions. No row: the
    entry file does not parse (nothing to compare). `hashes` is the JSON array of the winnowed hashes (sorted),
    comparable only with rows of the same `version`, `k` and `w`. `template_distance` is the share of them not
    in the problem's starter template (None when the problem is no longer in the catalog). `nearest` is the
    JSON of the top earlier submissions of the problem, `[[submission_id, score], ...]`, best first, with
    `best_score` and `compared` (how many earlier submissions were compared) beside it: None until compared.
    `too_large`: the fingerprint had more hashes than the service compares (grader.service.similarity.MAX_HASHES);
    then `hashes` is an empty array and the submission is never compared, nor compared with.
    """

    __tablename__ = "fingerprints"

    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    hashes: Mapped[str] = mapped_column(Text)
    template_distance: Mapped[float | None] = mapped_column(Float, nullable=True)
    nearest: Mapped[str | None] = mapped_column(Text, nullable=True)
    best_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    compared: Mapped[int | None] = mapped_column(Integer, nullable=True)
    too_large: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(100))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Override(Base):
    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    test_id: Mapped[str] = mapped_column(String(100))
    points: Mapped[float] = mapped_column(Float)
    previous_points: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(100))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(50))
    submission_id: Mapped[str | None] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"),
                                                      nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    """The outbox: written in the same transaction as the report, delivered by the dispatcher."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
