"""The FastAPI application: `create_app(settings)` wires the store, the queue (embedded pool or Celery), webhooks
and the routes."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import grader
from grader import logs
from grader.api.errors import install_error_handlers
from grader.api.routes import health, problems, submissions, tokens
from grader.config import Settings, get_settings
from grader.engine.catalog import list_problems
from grader.service.grading import ServiceGradeFn, engine_grade, open_dispatch
from grader.service.metrics import Metrics
from grader.service.submissions import SUBMISSION_ID
from grader.service.webhooks import WebhookDispatcher
from grader.store.db import open_store

log = logging.getLogger(__name__)
access_log = logging.getLogger("grader.api.access")

PAGES_MODULE = "grader.api.pages"
SWAGGER_ASSETS = "/docs/assets"  # Swagger UI's files, served from the swagger_ui_bundle package: /docs works offline


# A submission named by the path (/v1/submissions/<id>/report, the pages' /…/submissions/<id>): only a
# well-formed id is bound, so a client's made-up path never poses as a submission in the log.
SUBMISSION_IN_PATH = re.compile(rf"/submissions/({SUBMISSION_ID.pattern})(?=/|$)")
PROBES = frozenset({"/healthz", "/metrics"})  # polled every few seconds: logged at DEBUG unless they fail


class RequestLog:
    """One log event per HTTP request (the service's access log): method, path, status, duration_ms, client,
    and the submission when the path names one: bound as `path_id` while the request runs (so whatever the
    request logs names it too, without claiming the caller may see it), and logged as `submission_id` on the
    access line when the answer served it (status below 400), else as `path_id`. Each request starts from an
    empty log context. A new submission's id is read from the 202's Location header and logged as
    "submission.accepted" as soon as the answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        named = SUBMISSION_IN_PATH.search(path)
        creates = method == "POST" and path.rstrip("/") == "/v1/submissions"
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500}  # an exception that escapes the app is answered 500

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                if creates and message["status"] == 202:
                    answer.update(_created(message.get("headers", [])))
            await send(message)

        path_id = named.group(1) if named else None
        # bind_only: nothing of the context this request runs in is inherited (a pipelined request runs inside
        # the one before it); the path's id is a path_id while the request runs (it may not be authorized).
        with logs.bind_only(path_id=path_id):
            try:
                await self.app(scope, receive, send_logged)
            finally:
                status, duration_ms = answer["status"], round((time.perf_counter() - started) * 1000, 1)
                client = scope.get("client")
                # Only an answer that served the submission names it as submission_id: a 401, 403, 404 or
                # 429 was given to a client that may not see it, who must not tag lines with someone's id.
                if path_id is not None and status < 400 and "submission_id" not in answer:
                    answer["submission_id"], path_id = path_id, None
                fields = {"event": "http.request", "method": method, "path": path, "status": status,
                          "duration_ms": duration_ms, "client": client[0] if client else None,
                          "submission_id": answer.get("submission_id"), "path_id": path_id,
                          "replayed": answer.get("replayed")}
                level = logging.DEBUG if path in PROBES and status < 400 else logging.INFO
                with logs.bind_only():  # the access line names the id as decided above, not as bound
                    access_log.log(level, "%s %s %d %.1f ms", method, path, status, duration_ms,
                                   extra={k: v for k, v in fields.items() if v is not None})


def _created(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The submission a 202 to POST /v1/submissions names in its Location header, logged as accepted unless
    it is an idempotent replay of an earlier one."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
    found = SUBMISSION_IN_PATH.search(headers.get("location", ""))
    if found is None:
        return {}
    sid = found.group(1)
    if headers.get("idempotent-replayed") == "true":
        return {"submission_id": sid, "replayed": True}
    access_log.info("submission %s accepted", sid, extra={"event": "submission.accepted", "submission_id": sid})
    return {"submission_id": sid}


def _install_docs(app: FastAPI) -> None:
    """/docs from local assets (no CDN: a machine without internet still shows it). /redoc is off: no
    offline ReDoc bundle is installed, and a page that loads a CDN script would be blank offline."""
    app.mount(SWAGGER_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png")


def create_app(settings: Settings | None = None, *, grade: ServiceGradeFn = engine_grade,
               run_workers: bool = True) -> FastAPI:
    """The service: the schema is migrated here; workers and webhooks run while the app's lifespan does."""
    settings = settings or get_settings()
    store = open_store(settings)
    # Load the catalog now: the first submission should not pay for importing every test plan.
    list_problems()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = WebhookDispatcher(store, settings, metrics)
        queue = open_dispatch(store, settings, grade=grade, metrics=metrics, on_finished=dispatcher.wake)
        if run_workers:
            dispatcher.start()
            queue.start()
            app.state.queue = queue
            app.state.pool = getattr(queue, "pool", None)
            app.state.webhooks = dispatcher
        try:
            yield
        finally:
            app.state.pool = app.state.webhooks = app.state.queue = None
            if run_workers:
                queue.stop()
                dispatcher.stop()
            store.close()

    app = FastAPI(title="dl-grader", version=grader.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Grades deep-learning interview exercises in a sandbox against reference "
                              "implementations. Authenticate with `Authorization: Bearer <token>`.")
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.pool = None
    app.state.queue = None  # the Dispatch: how accepted submissions reach the graders (embedded pool, Celery)
    app.state.webhooks = None
    install_error_handlers(app)
    app.add_middleware(RequestLog)
    _install_docs(app)
    for module in (submissions, problems, tokens, health):
        app.include_router(module.router)
    app.include_router(importlib.import_module("grader.api.routes.exports").router)
    if importlib.util.find_spec(PAGES_MODULE) is not None:
        app.include_router(importlib.import_module(PAGES_MODULE).router)
    return app
