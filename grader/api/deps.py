"""FastAPI dependencies: the app's store and settings, and who is calling (Bearer header or login cookie)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grader.config import Settings
from grader.errors import Unauthorized
from grader.service.auth import Principal, authenticate
from grader.service.schemas import Role
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
