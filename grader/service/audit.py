"""The audit log: every change made through the service leaves an event, written in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.service.schemas import AuditEventOut
from grader.store.models import AuditEvent

if TYPE_CHECKING:
    from grader.service.auth import Principal
    from grader.store.db import Store


def record(db: Session, actor: Principal, action: str, *, submission_id: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Add an event to the caller's open transaction, so the change and its record commit together."""
    db.add(AuditEvent(actor=actor.name, token_id=actor.token_id or None, action=action,
                      submission_id=submission_id, detail=detail or {}))


def event_out(row: AuditEvent) -> AuditEventOut:
    return AuditEventOut(id=row.id, at=row.at, actor=row.actor, action=row.action,
                         submission_id=row.submission_id, detail=row.detail or {})


def list_events(store: Store, actor: Principal, *, submission_id: str | None = None, limit: int = 100,
                offset: int = 0) -> list[AuditEventOut]:
    """Audit events, newest first; the whole log needs admin, one submission's needs interviewer."""
    actor.require("interviewer" if submission_id else "admin")
    with store.session() as db:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
        if submission_id is not None:
            query = query.where(AuditEvent.submission_id == submission_id)
        return [event_out(e) for e in db.scalars(query)]
