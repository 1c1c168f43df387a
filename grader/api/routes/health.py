"""GET /healthz and GET /metrics (no token: for load balancers and Prometheus on the private network)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from grader.api.deps import get_store
from grader.service.grading import QueueHealth, queue_depth
from grader.store.db import Store

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(request: Request, store: Store = Depends(get_store)) -> JSONResponse:
    """Liveness and readiness: the database answers, the queue's broker answers (queue=celery), and who grades."""
    try:
        with store.session() as db:
            db.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # report, don't raise: a health check must answer
        database = f"error: {type(exc).__name__}"
    pool = getattr(request.app.state, "pool", None)
    queue = _queue_health(request)
    try:
        depth: int | None = queue_depth(store)
    except Exception:
        depth = None
    healthy = database == "ok" and queue.broker == "ok"
    body = {"status": "ok" if healthy else "degraded", "database": database,
            "workers": pool.workers if pool else 0,
            "workers_running": pool is not None or (queue.backend == "celery" and queue.workers_alive > 0),
            "queue": {"backend": queue.backend, "depth": depth, "broker": queue.broker,
                      "workers_alive": queue.workers_alive}}
    return JSONResponse(body, status_code=200 if healthy else 503)


def _queue_health(request: Request) -> QueueHealth:
    queue = getattr(request.app.state, "queue", None)
    if queue is None:  # the app runs without its background work (tests): nothing grades here
        backend = request.app.state.settings.queue
        return QueueHealth(backend=backend, broker="ok", workers_alive=0)
    health: QueueHealth = queue.health()
    return health


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, store: Store = Depends(get_store)) -> PlainTextResponse:
    """Prometheus metrics: queue depth, live workers, grading time histogram, outcomes, webhook outcomes."""
    workers_alive = _queue_health(request).workers_alive
    return PlainTextResponse(request.app.state.metrics.render(store, workers_alive=workers_alive),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
