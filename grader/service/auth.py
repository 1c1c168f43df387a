"""API tokens: created once and shown once, stored as SHA-256, each with a role.

Checking a token is not a timing oracle on the secret: the presented token is hashed (SHA-256) and the hash is
looked up through the database's unique index, so no secret is ever compared byte by byte with what a client
sent. At most a lookup's timing could hint how many leading characters of a guess's hash match a stored
hash, which brings no guess closer to a token (that would take SHA-256 preimages). Guessing itself is
bounded by the lockout of an address after repeated failures (grader/service/ratelimit.py, wired in
grader/api/deps.py), each lockout audited once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from sqlalchemy import select, update

from grader.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from grader.service.audit import record
from grader.service.schemas import Role, TokenCreated, TokenOut
from grader.store.db import Store
from grader.store.models import Token, utcnow

TOKEN_PREFIX = "grd_"
ROLE_RANK: dict[str, int] = {"submitter": 0, "interviewer": 1, "admin": 2}
ROLES: tuple[str, ...] = get_args(Role)
log = logging.getLogger(__name__)

LAST_USED_RESOLUTION_S = 60.0  # write last_used_at at most once a minute per token, not on every request


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: Role

    def can(self, role: Role) -> bool:
        """Whether this caller has `role` or a higher one (submitter < interviewer < admin)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def require(self, role: Role) -> None:
        """Raise Forbidden unless the caller has `role` or a higher one."""
        if not self.can(role):
            raise Forbidden(f"this needs the {role} role; your token ({self.name}) has the {self.role} role")


SYSTEM = Principal(token_id=0, name="system", role="admin")
# The actor of events caused by a client without a valid token (an address locked out after failed guesses).
ANONYMOUS = Principal(token_id=0, name="anonymous", role="submitter")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _out(row: Token) -> TokenOut:
    return TokenOut(id=row.id, name=row.name, role=row.role, prefix=row.prefix,
                    created_at=row.created_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at)


def create_token(store: Store, role: str, name: str = "", *, actor: Principal = SYSTEM) -> TokenCreated:
    """A new token with `role`; the returned `.token` is the only time the secret is visible."""
    actor.require("admin")
    if role not in ROLES:
        raise InvalidRequest(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    # Printable rules out NUL, control characters and unpaired surrogates (not UTF-8) at once.
    if len(name) > 100 or not name.isprintable():
        raise InvalidRequest("a token name is at most 100 printable characters")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.session() as db:
        row = Token(name=name or f"{role}-{raw[4:10]}", role=role, token_hash=hash_token(raw), prefix=raw[:8])
        db.add(row)
        db.flush()
        record(db, actor, "token.created", detail={"token_id": row.id, "name": row.name, "role": role})
        return TokenCreated(**_out(row).model_dump(), token=raw)


def authenticate(store: Store, raw: str | None) -> Principal:
    """The principal a raw token stands for; Unauthorized when it is missing, unknown or revoked."""
    if not raw:
        raise Unauthorized("no API token: send 'Authorization: Bearer <token>' (create one with "
                           "`grader tokens create --role submitter`)")
    with store.session() as db:
        row = db.scalar(select(Token).where(Token.token_hash == hash_token(raw.strip())))
        if row is None or row.revoked_at is not None:
            raise Unauthorized("the API token is unknown or revoked")
        principal = Principal(token_id=row.id, name=row.name, role=row.role)  # type: ignore[arg-type]
        last_used = row.last_used_at
    now = utcnow()
    if last_used is None or (now - last_used).total_seconds() > LAST_USED_RESOLUTION_S:
        _touch(store, principal.token_id, now)
    return principal


def _touch(store: Store, token_id: int, now: datetime) -> None:
    """Write a token's last_used_at, best effort: in its own unit of work, after the token was checked, and
    any failure (a full disk, a database that is read-only or away for a moment) is logged at DEBUG and
    swallowed. Otherwise a full disk would answer 503 to every request of a token, reads included."""
    try:
        with store.session() as db:
            db.execute(update(Token).where(Token.id == token_id).values(last_used_at=now))
    except Exception:
        log.debug("could not record that token %d was used (the request goes on)", token_id, exc_info=True)


def record_lockout(store: Store, address: str, failures: int, window_s: float) -> None:
    """Audit that `address` was locked out after `failures` failed authentications (once per lockout)."""
    with store.session() as db:
        record(db, ANONYMOUS, "auth.locked_out",
               detail={"address": address, "failures": failures, "window_s": window_s})


def list_tokens(store: Store, actor: Principal) -> list[TokenOut]:
    """Every token, newest first (no secrets: only their prefixes)."""
    actor.require("admin")
    with store.session() as db:
        return [_out(t) for t in db.scalars(select(Token).order_by(Token.id.desc()))]


def revoke_token(store: Store, actor: Principal, token_id: int) -> TokenOut:
    """Revoke a token; requests with it get 401 from now on."""
    actor.require("admin")
    with store.session() as db:
        row = db.get(Token, token_id)
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            record(db, actor, "token.revoked", detail={"token_id": row.id, "name": row.name})
        return _out(row)
