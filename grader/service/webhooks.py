"""Webhooks: a signed summary POSTed to the submission's callback_url, retried with backoff, outcome stored.

The delivery row is written in the same transaction as the report (an outbox), so
a crash between grading and delivery loses nothing. Delivery is at least once:
receivers deduplicate by the `X-Grader-Delivery` header. The signature header is
`X-Grader-Signature: sha256=<hex>`, HMAC-SHA256 with the service's webhook
secret over the exact bytes of the body.

Events (`X-Grader-Event` and the body's `event`): `submission.graded`,
`submission.failed`, and `submission.overridden` when an interviewer's override
changes the final score (written in the override's transaction, through the
same outbox, signing and retries). The overridden event carries the final score,
which submitters never see: it goes only to a submission created by an
interviewer's or an admin's token (the hiring team's own pipeline); for one
created by a submitter token it is not sent at all, and the override's audit
event says so and why. A submission has one outbox row holding its
latest event: an override re-arms it with the new event (the previous outcome
stays in the audit log). The overridden body is the graded summary (so a
receiver that missed the graded event still has it) plus `graded_score`,
`final_score` and `override_id`; its `X-Grader-Delivery` is `<row id>:<override id>`,
so each override is a new delivery to deduplicate on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.engine.report import Report
from grader.service import netguard
from grader.service.audit import record
from grader.service.auth import SYSTEM
from grader.service.metrics import Metrics
from grader.store.db import Store
from grader.store.models import Submission, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Grader-Signature"
DELIVERY_HEADER = "X-Grader-Delivery"
EVENT_HEADER = "X-Grader-Event"
POLL_INTERVAL_S = 0.5
MAX_ERROR_CHARS = 500


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for `body`: 'sha256=' + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """Whether `signature` is the right one for `body` (constant-time; what a receiver does)."""
    return hmac.compare_digest(sign(body, secret), signature)


def build_body(row: Submission, report: Report | None) -> str:
    """The JSON a receiver gets: the candidate-safe summary of the outcome, never hidden-test details."""
    tests: list[dict[str, Any]] = []
    if report is not None:
        tests = [{"id": t.id, "name": t.name, "category": t.category, "status": t.status, "earned": t.earned,
                  "points": t.points} for t in report.candidate_view().tests]
    body = {
        "event": "submission.graded" if row.status == "done" else "submission.failed",
        "submission_id": row.id, "problem": row.problem_id, "problem_version": row.problem_version,
        "candidate": row.candidate, "status": row.status, "score": row.score, "max_score": row.max_score,
        "passed": row.passed, "test_count": row.test_count, "tests": tests, "error": row.error,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "links": {"self": f"/v1/submissions/{row.id}", "report": f"/v1/submissions/{row.id}/report"},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def build_overridden_body(row: Submission, report: Report, override_id: int) -> str:
    """The `submission.overridden` event: the graded summary, the grader's and the final score, which override."""
    body = json.loads(build_body(row, report))
    body.update(event="submission.overridden", graded_score=row.score, final_score=row.final_score,
                override_id=override_id)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def enqueue(db: Session, row: Submission, body: str) -> None:
    """Put an event in the submission's outbox row (created if it has none), due now with fresh attempts.

    Called inside the caller's transaction, so the event is stored together with what caused it.
    """
    if not row.callback_url:
        return
    hook = db.scalar(select(WebhookDelivery).where(WebhookDelivery.submission_id == row.id))
    if hook is None:
        db.add(WebhookDelivery(submission_id=row.id, url=row.callback_url, body=body, status="pending", attempts=0,
                               next_attempt_at=utcnow()))
        return
    hook.url, hook.body, hook.status, hook.attempts = row.callback_url, body, "pending", 0
    hook.next_attempt_at, hook.last_status_code, hook.last_error, hook.delivered_at = utcnow(), None, None, None


def delivery_id(row_id: int, body: dict[str, Any]) -> str:
    """The X-Grader-Delivery value: the row's id, and for an override event the override's id too."""
    return f"{row_id}:{body['override_id']}" if body.get("event") == "submission.overridden" else str(row_id)


def backoff_s(attempt: int, base_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2 base, 4 base, ..."""
    return base_s * 2.0 ** (attempt - 1)


class WebhookDispatcher:
    """A thread that delivers due webhooks; `wake()` makes it look at once instead of at the next poll."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics,
                 client: httpx.Client | None = None) -> None:
        self.store, self.settings, self.metrics = store, settings, metrics
        self.client = client or httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.deliver_due() and not self._stop.is_set():
                    pass
            except Exception:  # the dispatcher outlives a database hiccup; the next poll tries again
                log.exception("webhook dispatcher pass failed")
            self._wake.wait(POLL_INTERVAL_S)
            self._wake.clear()

    def deliver_due(self, limit: int = 10) -> int:
        """Try every delivery that is due now; returns how many were tried."""
        with self.store.session() as db:
            due = list(db.execute(select(WebhookDelivery.id, WebhookDelivery.url, WebhookDelivery.body)
                                  .where(WebhookDelivery.status == "pending",
                                         WebhookDelivery.next_attempt_at <= utcnow())
                                  .order_by(WebhookDelivery.next_attempt_at).limit(limit)))
        for delivery_id, url, body in due:
            self._attempt(delivery_id, url, body.encode("utf-8"))
        return len(due)

    def _attempt(self, row_id: int, url: str, body: bytes) -> None:
        event = json.loads(body)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.settings.webhook_secret),
                   DELIVERY_HEADER: delivery_id(row_id, event), EVENT_HEADER: event["event"],
                   "User-Agent": "dl-grader-webhook"}
        status_code: int | None = None
        error: str | None = None
        try:
            target, host_header, server_name = netguard.resolve_for_delivery(
                url, netguard.parse_networks(self.settings.webhook_allowed_networks))
            headers["Host"] = host_header
            response = self.client.post(target, content=body, headers=headers,
                                        extensions={"sni_hostname": server_name})
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        except netguard.Refused as exc:
            error = f"refused: {exc}"[:MAX_ERROR_CHARS]
        with self.store.session() as db:
            row = db.get(WebhookDelivery, row_id)
            if row is None or row.status != "pending" or row.body.encode("utf-8") != body:
                return  # gone, settled, or re-armed with a newer event while this one was in flight
            row.attempts += 1
            row.last_status_code, row.last_error = status_code, error
            if error is None:
                row.status, row.delivered_at = "delivered", utcnow()
            elif row.attempts >= self.settings.webhook_attempts:
                row.status = "failed"
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff_s(row.attempts,
                                                                               self.settings.webhook_backoff_s))
            if row.status != "pending":
                record(db, SYSTEM, f"webhook.{row.status}", submission_id=row.submission_id,
                       detail={"url": row.url, "event": event["event"], "attempts": row.attempts,
                               "status_code": status_code, "error": error})
                self.metrics.count("grader_webhooks_total", {"outcome": row.status})
        log.info("webhook %s to %s: %s", row_id, url, error or status_code)
