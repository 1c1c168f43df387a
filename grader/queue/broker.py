"""The broker-agnostic half of a queue across machines: which submissions to publish, and the sweeper.

The database stays the source of truth (a submission row is its job, claimed with
`DatabaseQueue.claim_submission`); a broker only carries "grade submission <id>"
messages. Messages may be lost (a broker restarted without its data) or duplicated
(a redelivery, a republish): both are harmless. A lost one is published again by the
sweeper once the row has waited `redeliver_after_s` without being taken; a duplicate
finds the row claimed or finished and is dropped, because the claim is a
compare-and-set on the row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from grader import logs
from grader.queue.database import DatabaseQueue
from grader.store.db import Store
from grader.store.models import Submission, utcnow

log = logging.getLogger(__name__)

Publish = Callable[[str], None]
"""Hands "grade submission <id>" to the broker; raises when the broker cannot take it."""

SWEEP_INTERVAL_S = 5.0
FRESH_GRACE_S = 2.0  # a submission just committed is being published by its request; leave it that long
REPUBLISH_BATCH = 500


def due_for_publish(store: Store, redeliver_after_s: float, *, limit: int = REPUBLISH_BATCH) -> list[str]:
    """Queued submissions whose message may be lost: never published (and older than a moment: its request
    publishes it), or last published more than `redeliver_after_s` ago; oldest first."""
    now = utcnow()
    with store.session() as db:
        return list(db.scalars(
            select(Submission.id).where(
                Submission.status == "queued",
                or_(and_(Submission.published_at.is_(None),
                         Submission.created_at < now - timedelta(seconds=FRESH_GRACE_S)),
                    Submission.published_at < now - timedelta(seconds=redeliver_after_s)))
            .order_by(Submission.created_at, Submission.id).limit(limit)))


def mark_published(store: Store, submission_ids: Collection[str]) -> None:
    """Remember that these submissions' messages were just handed to the broker."""
    if not submission_ids:
        return
    with store.session() as db:
        db.execute(update(Submission).where(Submission.id.in_(sorted(submission_ids)))
                   .values(published_at=utcnow()).execution_options(synchronize_session=False))


def publish_and_mark(store: Store, publish: Publish, submission_id: str) -> bool:
    """Publish one submission and record it; False (logged) when the broker did not take it: the
    submission stays in the database and the sweeper publishes it later."""
    with logs.bind(submission_id=submission_id):
        try:
            publish(submission_id)
        except Exception as exc:
            log.warning("could not publish submission %s (%s: %s); the sweeper will publish it again",
                        submission_id, type(exc).__name__, exc)
            return False
        mark_published(store, [submission_id])
        return True


def sweep(store: Store, queue: DatabaseQueue, publish: Publish, redeliver_after_s: float) -> tuple[int, int]:
    """One round: take back running jobs whose lease expired (or whose process here died), then
    republish the queued ones whose message may be lost. Returns (taken back or failed, republished).

    Several sweepers (the API's, each worker's) may run at once: their duplicates are harmless.
    """
    requeued, failed = queue.recover()
    published = 0
    for sid in due_for_publish(store, redeliver_after_s):
        if not publish_and_mark(store, publish, sid):
            break  # the broker is down: the next round tries again
        log.info("republished submission %s", sid, extra={"submission_id": sid})
        published += 1
    return requeued + failed, published


class Sweeper:
    """`sweep` every `interval_s` from a daemon thread, until stopped; errors are logged, never fatal."""

    def __init__(self, store: Store, queue: DatabaseQueue, publish: Publish, *, redeliver_after_s: float,
                 interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.store, self.queue, self.publish = store, queue, publish
        self.redeliver_after_s, self.interval_s = redeliver_after_s, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="grader-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                sweep(self.store, self.queue, self.publish, self.redeliver_after_s)
            except Exception:
                log.exception("sweeping the queue failed")
