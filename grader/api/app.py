"""The FastAPI application: `create_app(settings)` wires the store, the queue (embedded pool or Celery), webhooks
and the routes."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import grader
from grader.api.errors import install_error_handlers
from grader.api.routes import health, problems, submissions, tokens
from grader.config import Settings, get_settings
from grader.engine.catalog import list_problems
from grader.service.grading import ServiceGradeFn, engine_grade, open_dispatch
from grader.service.metrics import Metrics
from grader.service.webhooks import WebhookDispatcher
from grader.store.db import open_store

log = logging.getLogger(__name__)

PAGES_MODULE = "grader.api.pages"
SWAGGER_ASSETS = "/docs/assets"  # Swagger UI's files, served from the swagger_ui_bundle package: /docs works offline


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
    _install_docs(app)
    for module in (submissions, problems, tokens, health):
        app.include_router(module.router)
    app.include_router(importlib.import_module("grader.api.routes.exports").router)
    if importlib.util.find_spec(PAGES_MODULE) is not None:
        app.include_router(importlib.import_module(PAGES_MODULE).router)
    return app
