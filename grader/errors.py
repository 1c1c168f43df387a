"""Errors of the grader itself, drawn once.

A candidate's mistake is never one of these: a bad submission becomes a result
(a failed, errored or timed-out test with its message). These are for misuse of
the service and for faults of the grader, each with a message safe to show a
user and the HTTP status the API answers with.

    GraderError                  status 500: a fault of the grader
    ├── InvalidRequest           400: the request is malformed; the message says what to change
    │   └── UnknownProblem       404: no problem with that id
    ├── NotFound                 404
    ├── Unauthorized             401
    ├── Forbidden                403
    ├── Conflict                 409
    ├── PayloadTooLarge          413: the request body is over the service's limit (the message states it)
    ├── TooManyRequests          429: over a rate limit or locked out; `retry_after_s` becomes Retry-After
    ├── ProblemSpecError         500: a problem folder is inconsistent (caught by the catalog tests)
    ├── SandboxUnavailable       503: the chosen sandbox backend cannot start here
    └── StorageUnavailable       503: the database cannot be written now (disk full, outage); retry later
"""

from __future__ import annotations


class GraderError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GraderError):
    status_code = 400


class UnknownProblem(InvalidRequest):
    status_code = 404


class NotFound(GraderError):
    status_code = 404


class Unauthorized(GraderError):
    status_code = 401


class Forbidden(GraderError):
    status_code = 403


class Conflict(GraderError):
    status_code = 409


class PayloadTooLarge(GraderError):
    """The request body is larger than the service accepts; the message states the limit in bytes."""

    status_code = 413


class TooManyRequests(GraderError):
    """Over a rate limit, or a client locked out after repeated failures; answered with Retry-After."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProblemSpecError(GraderError):
    status_code = 500


class SandboxUnavailable(GraderError):
    status_code = 503


class StorageUnavailable(GraderError):
    """The store cannot take a write now (disk full, database unreachable); nothing was accepted, retry."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
