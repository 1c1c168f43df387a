"""FastAPI dependencies: the app's store and settings, and who is calling (Bearer header or login cookie)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grader.config import Settings
from grader.errors import InvalidRequest, Unauthorized
from grader.service.auth import Principal, authenticate
from grader.service.schemas import Role, Status, SubmissionFilter
from grader.store.db import Store

TOKEN_COOKIE = "grader_token"
COOKIE_MAX_AGE_S = 12 * 3600

# auto_error=False: a missing header is answered by our own 401 with a message that says what to send.
bearer = HTTPBearer(auto_error=False, description="an API token: `grader tokens create --role ROLE`")


def get_store(request: Request) -> Store:
    """The app's Store (request.app.state.store)."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings  # type: ignore[no-any-return]


def _raw_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    if request.headers.get("authorization"):
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return request.cookies.get(TOKEN_COOKIE) or None


def current_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                      store: Store = Depends(get_store)) -> Principal:
    """The caller; 401 without a valid token."""
    return authenticate(store, _raw_token(request, credentials))


def optional_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                       store: Store = Depends(get_store)) -> Principal | None:
    """The caller, or None when there is no valid token (pages redirect to their login form)."""
    try:
        return authenticate(store, _raw_token(request, credentials))
    except Unauthorized:
        return None


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that lets in callers with `role` or higher: 401 without a token, 403 with too low a role."""
    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        principal.require(role)
        return principal

    return dependency


def set_login_cookie(response: Response, token: str, *, secure: bool) -> None:
    """Carry the token in an HttpOnly, SameSite=Strict cookie (the pages' CSRF defence)."""
    response.set_cookie(TOKEN_COOKIE, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=secure, path="/")


def clear_login_cookie(response: Response) -> None:
    """Forget the login cookie."""
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")


def _iso_datetime(value: str | None, name: str) -> datetime | None:
    # Parsed by hand: pydantic would also take a bare number as a Unix time, which the schema does not promise.
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 date or date-time, like 2026-01-31 or "
                             f"2026-01-31T12:00:00Z (got {value[:40]!r})") from None


def submission_filter(problem: str | None = Query(None, max_length=64),
                      candidate: str | None = Query(None, max_length=200),
                      status: Status | None = None,
                      created_after: str | None = Query(None, description="ISO 8601; inclusive",
                                                        json_schema_extra={"format": "date-time"}),
                      created_before: str | None = Query(None, description="ISO 8601; exclusive",
                                                         json_schema_extra={"format": "date-time"})
                      ) -> SubmissionFilter:
    """The list's filters from the query (GET /v1/submissions and its CSV export take the same ones)."""
    return SubmissionFilter(problem=problem, candidate=candidate, status=status,
                            created_after=_iso_datetime(created_after, "created_after"),
                            created_before=_iso_datetime(created_before, "created_before"))
