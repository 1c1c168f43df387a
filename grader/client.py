"""A client of the grading service over HTTP: submit once, follow a submission, fetch its reports.

Used by `grader submit` (one submission) and by batch submission (`grader.batch`).
It speaks only HTTP (httpx) and knows nothing of the service's internals.

Failures are `ClientError`s carrying the exit code the CLI answers with:

    UsageError (2)    the service refused the request (any 4xx): the server's own message;
                      401/403 say that the token is wrong
    ServiceFault (3)  the service kept failing (5xx, 429) or could not grade the submission
    Unreachable (4)   no answer at all (connection refused, timeouts) after the retries

Retries are bounded and safe: network errors, 500/502/503/504 and 429 (honouring
Retry-After) are retried with exponential backoff and jitter, and the POST
always carries an `Idempotency-Key` derived from the content, so a retried POST
returns the submission the first one created instead of grading twice (and so
does a second run with the same content, whatever became of the first: a
`failed` one stays failed). `resubmit=True` (`grader submit --resubmit`) mixes a
random nonce into the key: the same content is graded again, on purpose. While
following a submission, the retries are bounded by the wait's deadline instead of
a count, so a service restarting meanwhile is waited for.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

EXIT_USAGE, EXIT_FAULT, EXIT_UNREACHABLE = 2, 3, 4
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FINAL_STATUSES = ("done", "failed")
MAX_RETRY_AFTER_S = 120.0
RESUBMIT_HINT = "to grade the same content again, run grader submit again with --resubmit"


class ClientError(Exception):
    """A failure the user can act on; `exit_code` is the CLI's exit status for it."""

    exit_code = EXIT_FAULT

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code  # the HTTP status that caused it, when the service answered


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class ServiceFault(ClientError):
    exit_code = EXIT_FAULT


class Unreachable(ClientError):
    exit_code = EXIT_UNREACHABLE


def idempotency_key(problem: str, files: Mapping[str, str], candidate: str | None, nonce: str | None = None) -> str:
    """The same content always gets the same key: sha256 of problem, files (sorted by name) and candidate.

    A `nonce` (a resubmission) is mixed in too: a new nonce is a new key, so the same content is graded again.
    """
    content: dict[str, Any] = {"problem": problem, "files": dict(sorted(files.items())), "candidate": candidate}
    if nonce is not None:
        content["nonce"] = nonce
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "grader-submit-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_server_url(url: str) -> str:
    """The service's base URL without a trailing slash; a usage error when it is not an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"the server URL must look like https://grader.example.com (got {url!r})")
    return url.strip().rstrip("/")


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():  # not isdigit(): '²' is a digit that float() refuses
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries; the n-th wait is uniform in [d/2, d] with d = min(max_delay_s, base_delay_s * 2**n).

    The random half spreads clients that failed together (a restart) so that they do not all come back at once.
    """

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 30)))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Submitted:
    """A submission as the service answered: its id, status and absolute links."""

    id: str
    status: str
    replayed: bool
    links: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    def failed_hint(self) -> str:
        """What to add when the service could not grade it: for a replayed one, how to grade it again."""
        if not self.replayed:
            return ""
        return (" (this content was already submitted and that submission failed; the same content always gets "
                f"that submission back: {RESUBMIT_HINT})")

    def grading_failed(self, error: object) -> ServiceFault:
        """The fault to raise when the service could not grade it."""
        return ServiceFault(f"the service could not grade submission {self.id}: {error}{self.failed_hint()}")


def _detail(response: httpx.Response) -> str:
    """The service's error message ({"detail": ...}), or the start of whatever it answered."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase


def _describe_network_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return type(exc).__name__


class GraderClient:
    """One service and one token; thread-safe (one httpx connection pool shared by every call)."""

    def __init__(self, server: str, token: str, *, retry: RetryPolicy = RetryPolicy(),
                 request_timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.server = check_server_url(server)
        self.retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = log or (lambda message: None)
        self._http = httpx.Client(base_url=self.server, transport=transport,
                                  timeout=httpx.Timeout(request_timeout_s, connect=min(10.0, request_timeout_s)),
                                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                                           "User-Agent": "grader-submit"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GraderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def absolute(self, path: str) -> str:
        return path if "://" in path else self.server + path

    # -- one request, retried -------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None, headers: Mapping[str, str] | None = None,
                deadline: float | None = None) -> httpx.Response:
        """A 2xx answer, after retrying what may pass; raises the ClientError that says what went wrong.

        Without `deadline` at most `retry.attempts` tries; with one, tries until the deadline (monotonic).
        """
        attempt = 0
        while True:
            wait_s: float | None = None
            try:
                response = self._http.request(method, path, json=json_body, headers=headers)
            except httpx.HTTPError as exc:
                failure: ClientError = Unreachable(f"could not reach the service at {self.server} "
                                                   f"({_describe_network_error(exc)})")
            else:
                if response.is_success:
                    return response
                failure = self._refusal(response)
                if response.status_code not in RETRY_STATUSES:
                    raise failure
                wait_s = retry_after_s(response.headers.get("retry-after"))
            attempt += 1
            delay = self.retry.delay(attempt - 1, self._rng)
            if wait_s is not None:
                delay = max(delay, wait_s)
            now = time.monotonic()
            if deadline is None and attempt >= self.retry.attempts:
                raise failure
            if deadline is not None and now + delay > deadline:
                if now >= deadline:
                    raise failure
                delay = deadline - now
            self._log(f"{failure.message}; retrying in {delay:.1f} s")
            self._sleep(delay)

    def _refusal(self, response: httpx.Response) -> ClientError:
        status, detail = response.status_code, _detail(response)
        if status == 401:
            return UsageError(f"the token was refused (401: {detail}): check GRADER_TOKEN or --token-file", status)
        if status == 403:
            return UsageError(f"the token may not do this (403: {detail}): a submitter token is needed", status)
        if status == 429:
            return ServiceFault(f"the service is busy (429: {detail})", status)
        if status >= 500:
            return ServiceFault(f"the service failed ({status}: {detail})", status)
        return UsageError(f"the service refused the request ({status}): {detail}", status)

    # -- the service's operations ---------------------------------------------------------------------------

    def check_problem(self, problem: str) -> None:
        """Fails early, with the service's message, on a wrong token or an unknown problem."""
        self.request("GET", f"/v1/problems/{problem}")

    def submit(self, problem: str, files: Mapping[str, str], candidate: str | None = None, *,
               resubmit: bool = False) -> Submitted:
        """POST /v1/submissions with a content-derived Idempotency-Key: retries never grade twice.

        `resubmit`: a random nonce in the key, so this content is graded again (its retries keep that key).
        """
        body: dict[str, Any] = {"problem": problem, "files": dict(files)}
        if candidate:
            body["candidate"] = candidate
        key = idempotency_key(problem, files, candidate or None, secrets.token_hex(16) if resubmit else None)
        try:
            response = self.request("POST", "/v1/submissions", json_body=body, headers={"Idempotency-Key": key})
        except UsageError as exc:
            if exc.status_code != 409:
                raise
            raise UsageError(f"{exc.message} (this content's key was already used for another request: "
                             f"{RESUBMIT_HINT})", 409) from None
        data = self._json(response)
        links = {name: self.absolute(str(url)) for name, url in dict(data.get("links") or {}).items()}
        return Submitted(id=str(data["id"]), status=str(data.get("status")), links=links, body=data,
                         replayed=response.headers.get("idempotent-replayed", "").lower() == "true")

    def _accepted(self, submission_id: str, path: str, deadline: float | None) -> httpx.Response:
        """GET of a submission the service accepted: a 404 or 409 now is the service's fault, not the user's."""
        try:
            return self.request("GET", path, deadline=deadline)
        except UsageError as exc:
            if exc.status_code not in (404, 409):
                raise
            raise ServiceFault(f"{exc.message} (the service had accepted submission {submission_id})",
                               exc.status_code) from None

    def status(self, submission_id: str, deadline: float | None = None) -> dict[str, Any]:
        return self._json(self._accepted(submission_id, f"/v1/submissions/{submission_id}", deadline))

    def wait(self, submission_id: str, timeout_s: float, on_status: Callable[[dict[str, Any]], None] | None = None,
             poll_s: float = 0.5, max_poll_s: float = 3.0) -> dict[str, Any]:
        """Poll until the submission is done or failed; a service that goes away meanwhile is waited for.

        Raises Unreachable when the service never answered again before the deadline, ServiceFault when
        the submission was still not graded.
        """
        deadline = time.monotonic() + timeout_s
        last_status = None
        interval = poll_s
        while True:
            body = self.status(submission_id, deadline=deadline)
            if body.get("status") != last_status:
                last_status = body.get("status")
                interval = poll_s
                if on_status is not None:
                    on_status(body)
            if body.get("status") in FINAL_STATUSES:
                return body
            now = time.monotonic()
            if now >= deadline:
                raise ServiceFault(f"submission {submission_id} is still {last_status} after {timeout_s:g} s "
                                   "(--timeout); it stays queued on the service")
            self._sleep(min(interval, deadline - now))
            interval = min(max_poll_s, interval * 1.5)

    def report_json(self, submission_id: str, deadline: float | None = None) -> dict[str, Any]:
        return self._json(self._accepted(submission_id, f"/v1/submissions/{submission_id}/report", deadline))

    def report_text(self, submission_id: str, suffix: str, deadline: float | None = None) -> str:
        """`suffix` is ".html" or ".junit.xml": the report as the service renders it."""
        return self._accepted(submission_id, f"/v1/submissions/{submission_id}/report{suffix}", deadline).text

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise ServiceFault(f"the service answered {response.request.url.path} with something that is not "
                               "JSON") from None
        if not isinstance(data, dict):
            raise ServiceFault(f"the service answered {response.request.url.path} with unexpected JSON")
        return data
