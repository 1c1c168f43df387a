"""Prometheus metrics in the text exposition format: counters and a histogram kept here, gauges read from the store."""

from __future__ import annotations

import threading
from collections import defaultdict

from sqlalchemy import func, select

from grader.store.db import Store
from grader.store.models import Submission

GRADING_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STATUSES = ("queued", "running", "done", "failed")

HELP = {
    "grader_submissions_accepted_total": ("counter", "Submissions accepted with 202 by this process."),
    "grader_gradings_total": ("counter", "Gradings finished by this process, by outcome "
                                         "(graded, failed, requeued, stale, lost)."),
    "grader_webhooks_total": ("counter", "Webhook deliveries that reached a final state, by outcome."),
    "grader_rate_limited_total": ("counter", "Requests answered 429 by this process, by limit (requests and "
                                             "submissions per token, auth_lockout per client address)."),
    "grader_auth_failures_total": ("counter", "Requests refused 401 for an unknown or revoked API token."),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """This process's counters and grading-time histogram; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._bucket_counts = [0] * len(GRADING_BUCKETS_S)
        self._sum_s = 0.0
        self._count = 0

    def count(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def observe_grading(self, duration_s: float) -> None:
        with self._lock:
            self._sum_s += duration_s
            self._count += 1
            for i, upper in enumerate(GRADING_BUCKETS_S):
                if duration_s <= upper:
                    self._bucket_counts[i] += 1

    def render(self, store: Store, *, workers_alive: int | None = None) -> str:
        """The /metrics page: queue depth from the database, live workers as the queue counts them (heartbeats
        in the broker, or the embedded pool's threads), the rest from this process."""
        with store.session() as db:
            by_status = dict(db.execute(select(Submission.status, func.count()).group_by(Submission.status)).all())
        lines = ["# HELP grader_queue_depth Submissions by status in the database (queued = waiting).",
                 "# TYPE grader_queue_depth gauge"]
        lines += [f'grader_queue_depth{{status="{s}"}} {by_status.get(s, 0)}' for s in STATUSES]
        if workers_alive is not None:
            lines += ["# HELP grader_workers_alive Workers grading for this service (worker processes with a live "
                      "heartbeat with queue=celery; the embedded pool's threads otherwise).",
                      "# TYPE grader_workers_alive gauge", f"grader_workers_alive {workers_alive}"]
        with self._lock:
            lines += ["# HELP grader_grading_duration_seconds Wall time of one grading.",
                      "# TYPE grader_grading_duration_seconds histogram"]
            lines += [f'grader_grading_duration_seconds_bucket{{le="{upper:g}"}} {n}'
                      for upper, n in zip(GRADING_BUCKETS_S, self._bucket_counts)]
            lines += [f'grader_grading_duration_seconds_bucket{{le="+Inf"}} {self._count}',
                      f"grader_grading_duration_seconds_sum {self._sum_s:.6f}",
                      f"grader_grading_duration_seconds_count {self._count}"]
            for name, (kind, text) in HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(dict(key))} {value:g}")
        return "\n".join(lines) + "\n"
