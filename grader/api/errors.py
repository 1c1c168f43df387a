"""The one place where errors become HTTP answers: {"detail": message, "error": kind} with the error's status.

Each GraderError answers with its own status (grader/errors.py): InvalidRequest 400, NotFound 404,
PayloadTooLarge 413 (an oversized request body), Conflict 409, TooManyRequests 429 and
StorageUnavailable 503 (both with Retry-After), and so on.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from grader.errors import GraderError, InvalidRequest

MAX_REASONS = 5


class ErrorBody(BaseModel):
    detail: str
    error: str


def _answer(exc: GraderError, status_code: int | None = None) -> JSONResponse:
    status = status_code or exc.status_code
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))  # delta-seconds: a whole number
    return JSONResponse(ErrorBody(detail=exc.message, error=type(exc).__name__).model_dump(), status_code=status,
                        headers=headers or None)


def _validation(exc: RequestValidationError) -> tuple[GraderError, int]:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e.get("ctx", {}) for e in errors if e.get("type") == "json_invalid")
        return InvalidRequest(f"malformed JSON: {ctx.get('error', 'cannot be parsed')}"), 400
    parts = []
    for err in errors[:MAX_REASONS]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return InvalidRequest("invalid request: " + "; ".join(parts)), 422


def install_error_handlers(app: FastAPI) -> None:
    """Map GraderError (and FastAPI's own request validation) to one JSON error shape."""

    @app.exception_handler(GraderError)
    async def grader_error(_request: Request, exc: GraderError) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error, status = _validation(exc)
        return _answer(error, status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # The framework's own answers (unknown path, wrong method, unparsable body) in the same shape.
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(ErrorBody(detail=str(exc.detail), error="HTTPError").model_dump(),
                            status_code=exc.status_code, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (GET and POST on one path are two routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match in (Match.FULL, Match.PARTIAL):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "the request is malformed; the message says what to change"},
    401: {"model": ErrorBody, "description": "no valid API token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    404: {"model": ErrorBody, "description": "not found (or not yours)"},
    413: {"model": ErrorBody, "description": "the request body is over the limit; the message states it in bytes"},
    422: {"model": ErrorBody, "description": "a parameter has the wrong type or range"},
    429: {"model": ErrorBody, "description": "over the token's rate limit, or too many failed authentications from "
                                             "this address; wait for Retry-After seconds"},
}
