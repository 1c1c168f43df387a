"""Admin: API tokens and the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from grader.api.deps import get_store, require_role
from grader.api.errors import ERROR_RESPONSES
from grader.service import audit, auth
from grader.service.auth import Principal
from grader.service.schemas import AuditEventOut, TokenCreated, TokenIn, TokenOut
from grader.store.db import Store

router = APIRouter(prefix="/v1", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(store: Store = Depends(get_store), me: Principal = Depends(require_role("admin"))) -> list[TokenOut]:
    """Every token (prefix, name, role, last use); never the secrets."""
    return auth.list_tokens(store, me)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenIn, store: Store = Depends(get_store),
                 me: Principal = Depends(require_role("admin"))) -> TokenCreated:
    """Create a token; the secret is in this answer only."""
    return auth.create_token(store, body.role, body.name, actor=me)


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: int, store: Store = Depends(get_store),
                 me: Principal = Depends(require_role("admin"))) -> TokenOut:
    """Revoke a token: requests carrying it get 401 from now on."""
    return auth.revoke_token(store, me, token_id)


@router.get("/audit", response_model=list[AuditEventOut])
def audit_log(limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9),
              store: Store = Depends(get_store),
              me: Principal = Depends(require_role("admin"))) -> list[AuditEventOut]:
    """The audit log, newest first."""
    return audit.list_events(store, me, limit=limit, offset=offset)
