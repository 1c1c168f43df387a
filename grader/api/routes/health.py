"""GET /healthz and GET /metrics (no token: for load balancers and Prometheus on the private network)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from grader.api.deps import get_store
from grader.store.db import Store

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(request: Request, store: Store = Depends(get_store)) -> JSONResponse:
    """Liveness and readiness: the database answers and the worker pool runs."""
    try:
        with store.session() as db:
            db.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # report, don't raise: a health check must answer
        database = f"error: {type(exc).__name__}"
    pool = getattr(request.app.state, "pool", None)
    body = {"status": "ok" if database == "ok" else "degraded", "database": database,
            "workers": pool.workers if pool else 0, "workers_running": pool is not None}
    return JSONResponse(body, status_code=200 if database == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, store: Store = Depends(get_store)) -> PlainTextResponse:
    """Prometheus metrics: queue depth, grading time histogram, outcomes, webhook outcomes."""
    return PlainTextResponse(request.app.state.metrics.render(store),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
