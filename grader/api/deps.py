"""FastAPI dependencies: the app's store and settings, who is calling (Bearer header or login cookie), and the
abuse limits every authenticated request goes through.

Limits (grader/service/ratelimit.py), in the order a request meets them:
1. an address locked out after `auth_failure_limit` failed authentications within `auth_failure_window_s` is
   answered 429 for any token it presents, valid or not, until the window has passed (the token is not even
   looked up); every presented token that is unknown or revoked counts as a failure, a missing token does not,
   and a login cookie that fails counts once per window (a browser resends a stale cookie with every page; the
   pages clear it);
2. every authenticated request spends one from its token's `rate_limit_requests_per_min` bucket;
3. POST /v1/submissions also spends one from its token's submissions bucket (`rate_limit_submissions_burst`
   at once, `rate_limit_submissions_per_min` after that), before its body is read.
Each refusal is a 429 whose message names the limit, with Retry-After; counted in grader_rate_limited_total.
The limits live on app.state (one set per app, made from its settings on first use) and are per process.

Lockout scope: the lockout is per client address as this process sees it (`client_address`: an IPv4 address, or
an IPv6 /64), so every client behind one NAT or proxy address shares it: their failures add up, and a lockout
refuses all of them. The address is the TCP peer's unless the peer is a trusted proxy: uvicorn replaces it with
the X-Forwarded-For client only for the addresses in FORWARDED_ALLOW_IPS (127.0.0.1 and ::1 by default), so behind a
reverse proxy set FORWARDED_ALLOW_IPS to the proxy's address, or every client shares the proxy's lockout; and a
header from any other peer is ignored, so a client cannot pick the address it is locked out by.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grader.config import Settings
from grader.errors import InvalidRequest, TooManyRequests, Unauthorized
from grader.service.auth import Principal, authenticate, hash_token, record_lockout
from grader.service.ratelimit import AbuseLimits
from grader.service.schemas import Role, Status, SubmissionFilter
from grader.store.db import Store

log = logging.getLogger(__name__)

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


def _raw_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> tuple[str | None, bool]:
    """The presented token, and whether it came from the login cookie (rather than the Authorization header)."""
    if credentials is not None and credentials.credentials:
        return credentials.credentials, False
    if request.headers.get("authorization"):
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    cookie = request.cookies.get(TOKEN_COOKIE) or None
    return cookie, cookie is not None


_limits_lock = threading.Lock()


def abuse_limits(request: Request) -> AbuseLimits:
    """The app's limits (app.state.abuse_limits), made from its settings on first use."""
    limits: AbuseLimits | None = getattr(request.app.state, "abuse_limits", None)
    if limits is None:
        with _limits_lock:
            limits = getattr(request.app.state, "abuse_limits", None)
            if limits is None:
                limits = AbuseLimits.from_settings(request.app.state.settings)
                request.app.state.abuse_limits = limits
    return limits


def client_address(request: Request) -> str:
    """The key of the caller's address for the lockout: the peer's address as the server saw it (uvicorn's
    proxy_headers rewrite it from X-Forwarded-For only for the proxies in FORWARDED_ALLOW_IPS), and for IPv6 its
    /64 network, since one host usually holds a whole /64 and could otherwise step to a new address per guess.
    An IPv4 address mapped into IPv6 (::ffff:a.b.c.d) is the IPv4 address."""
    host = request.client.host if request.client is not None else "unknown"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an address (a test client's name, a Unix socket): the key as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _count_refusal(request: Request, limit: str) -> None:
    request.app.state.metrics.count("grader_rate_limited_total", {"limit": limit})


def authenticate_request(request: Request, store: Store, raw: str | None, *, from_cookie: bool = False) -> Principal:
    """`authenticate` behind the abuse limits: 429 for a locked-out address or a token over its request rate.

    For every route that checks a token, pages' login form included. A token `from_cookie` that fails counts
    as one failure per window however many pages the browser asks for (it sends the same stale or revoked
    cookie with each), and marks the request (request.state.stale_login_cookie) so that the pages clear it.
    """
    limits = abuse_limits(request)
    address = client_address(request)
    if raw:
        locked_s = limits.auth_failures.locked_for(address)
        if locked_s > 0:
            _count_refusal(request, "auth_lockout")
            raise TooManyRequests(f"too many failed authentications from {address}: locked out, whatever the "
                                  f"token, for another {math.ceil(locked_s)} s", locked_s)
    try:
        principal = authenticate(store, raw)
    except Unauthorized:
        if raw:  # a token was presented and is wrong: a guess (a missing token is not)
            request.app.state.metrics.count("grader_auth_failures_total")
            if from_cookie:
                request.state.stale_login_cookie = True
            once = hash_token(raw) if from_cookie else None
            failures = limits.auth_failures.failed(address, once=once)
            if failures is not None:
                log.warning("address %s locked out after %d failed authentications", address, failures)
                try:
                    record_lockout(store, address, failures, limits.auth_failures.window_s)
                except Exception:  # the 401 must still answer; the log line above keeps the event
                    log.exception("could not audit the lockout of %s", address)
        raise
    if limits.requests is not None:
        decision = limits.requests.take(principal.token_id)
        if not decision.allowed:
            _count_refusal(request, "requests")
            per_min = request.app.state.settings.rate_limit_requests_per_min
            raise TooManyRequests(f"too many requests: this token may make {per_min:g} requests per minute; "
                                  f"retry in {math.ceil(decision.retry_after_s)} s", decision.retry_after_s)
    return principal


def current_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                      store: Store = Depends(get_store)) -> Principal:
    """The caller; 401 without a valid token, 429 over a limit."""
    raw, from_cookie = _raw_token(request, credentials)
    return authenticate_request(request, store, raw, from_cookie=from_cookie)


def optional_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                       store: Store = Depends(get_store)) -> Principal | None:
    """The caller, or None when there is no valid token (pages redirect to their login form); 429 over a limit."""
    try:
        raw, from_cookie = _raw_token(request, credentials)
        return authenticate_request(request, store, raw, from_cookie=from_cookie)
    except Unauthorized:
        return None


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that lets in callers with `role` or higher: 401 without a token, 403 with too low a role."""
    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        principal.require(role)
        return principal

    return dependency


def submission_quota(request: Request, me: Principal = Depends(require_role("submitter"))) -> Principal:
    """A submitter whose token may submit now: spends one from its submissions bucket, 429 when it is empty."""
    bucket = abuse_limits(request).submissions
    if bucket is not None:
        decision = bucket.take(me.token_id)
        if not decision.allowed:
            _count_refusal(request, "submissions")
            settings = request.app.state.settings
            raise TooManyRequests(f"too many submissions: this token may send {settings.rate_limit_submissions_burst} "
                                  f"at once and {settings.rate_limit_submissions_per_min:g} per minute; retry in "
                                  f"{math.ceil(decision.retry_after_s)} s", decision.retry_after_s)
    return me


def set_login_cookie(response: Response, token: str, *, secure: bool) -> None:
    """Carry the token in an HttpOnly, SameSite=Strict cookie (the pages' CSRF defence)."""
    response.set_cookie(TOKEN_COOKIE, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=secure, path="/")


def stale_login_cookie(request: Request) -> bool:
    """Whether this request's login cookie failed to authenticate (unknown, revoked): the page should clear it."""
    return bool(getattr(request.state, "stale_login_cookie", False))


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
