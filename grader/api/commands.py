"""The service's subcommands of `grader`: `serve`, `worker`, `migrate`, `verify-reports` and
`tokens create|list|revoke`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from grader import logs

if TYPE_CHECKING:
    from grader.config import Settings
    from grader.store.db import Store

EXIT_OK = 0
EXIT_UNAVAILABLE = 3  # a fault of the service around it (the broker is down), as the CLI's 3
BROKER_WAIT_S = 60.0  # a worker waits this long for its broker at start, then exits 3
SERVE_SWITCH_INTERVAL_S = 0.001
STOP_GRACE_S = 25.0  # a worker given SIGTERM lets current gradings finish this long (Docker waits 10 s by default)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings from the environment and the command line; a bad value is a usage error that names it."""
    from pydantic import ValidationError

    from grader.config import Settings
    from grader.errors import InvalidRequest

    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid settings: {reasons}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with its embedded workers on the settings' data directory."""
    import uvicorn

    from grader.api.app import create_app
    from grader.api.server_limits import uvicorn_options
    from grader.config import broker_display
    from grader.service.grading import prepare_sandbox, release_sandbox

    settings = _settings(args, **({"workers": args.workers} if args.workers is not None else {}))
    logs.configure(settings.log_format, args.verbose, service=True)
    grades_here = settings.queue == "embedded" and settings.workers > 0
    if grades_here:
        # The grading threads share this interpreter with the API: a shorter switch interval than CPython's
        # 5 ms lets a request's thread take the interpreter lock back sooner from a grading thread busy in
        # Python, so reads stay fast while the queue is full (benchmarks/load.py).
        sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it found: the default
    # one would end the process before anything is cleaned up (the Docker backend's containers stayed
    # behind after `docker stop`). This one ends it through SystemExit, so `finally` and atexit run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if grades_here:
            prepare_sandbox(settings)
        app = create_app(settings)
        if settings.queue == "celery":
            graders = f"queue celery on {broker_display(settings.broker_url)}: `grader worker`s grade"
        elif grades_here:
            graders = f"{settings.workers} workers, sandbox {settings.sandbox_backend}"
        else:
            graders = "no embedded workers: `grader worker`s grade"
        print(f"grader: serving on http://{args.host}:{args.port} ({_where(settings)}, {graders})", flush=True)
        # log_config=None: uvicorn's loggers reach the root handler `logs.configure` installed, in its format;
        # access_log=False: the app logs each request itself, with its duration and submission id.
        # The server's own bounds on hostile clients (head and body deadlines, head size, connections,
        # keep-alive): grader/api/server_limits.py.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                    log_config=None, access_log=False, timeout_graceful_shutdown=5, **uvicorn_options(settings))
    finally:
        release_sandbox()
    return EXIT_OK


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _where(settings: Settings) -> str:
    """The database, for a start-up line: SQLite's file, or the kind and host of another (never a password)."""
    if settings.database_url is None:
        return f"SQLite in {settings.data_dir.resolve()}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return "database: (unparsable URL)"
    host = url.host or url.query.get("host") or "local socket"
    return f"database {url.get_backend_name()} on {host}/{url.database or ''}"


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema up to date, then exit (upgrades: migrations first, then the processes)."""
    from grader.store.db import open_store

    settings = _settings(args)
    open_store(settings).close()
    print(f"grader: the schema is up to date ({_where(settings)})")
    return EXIT_OK


def cmd_verify_reports(args: argparse.Namespace) -> int:
    """Check every stored report against its checksum and every done submission's summary score against its
    report (see grader.store.db.check_reports); print the count checked and each failing submission with its
    reasons. Exit 0 when all pass, 1 when any fails, 3 when the database cannot be read. Changes nothing
    (the schema is not migrated either)."""
    from sqlalchemy.exc import SQLAlchemyError

    from grader.errors import StorageUnavailable
    from grader.store.db import check_reports, describe, open_store

    settings = _settings(args)
    where = _where(settings)
    if settings.database_url is None and not (settings.data_dir / "grader.db").is_file():
        print(f"grader verify-reports: cannot read the database: no {settings.data_dir / 'grader.db'}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        store = open_store(settings, migrate=False)
        try:
            result = check_reports(store)
        finally:
            store.close()
    except (SQLAlchemyError, StorageUnavailable) as exc:
        cause = exc.__cause__ if isinstance(exc, StorageUnavailable) and exc.__cause__ is not None else exc
        print(f"grader verify-reports: cannot read the database ({where}): {describe(cause)} "
              "(a schema older than this grader: run `grader migrate` first)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    for sid, reasons in sorted(result.failures.items()):
        print(f"{sid}: {'; '.join(reasons)}")
    print(f"grader: {result.checked} reports checked, {len(result.failures)} failing ({where})")
    return 1 if result.failures else EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """Grade submissions from the queue without the API: a Celery worker (queue=celery), or the embedded pool
    on the database queue (queue=embedded); SIGTERM finishes or gives back the current gradings, exit 0."""
    from grader.config import broker_display

    overrides: dict[str, object] = {}
    if args.concurrency is not None:
        overrides["worker_concurrency"] = args.concurrency
    settings = _settings(args, **overrides)
    if args.health:
        return _worker_health(settings)
    logs.configure(settings.log_format, args.verbose, service=True)  # each grading, named by submission id
    concurrency = settings.worker_concurrency
    broker = f" on {broker_display(settings.broker_url)}" if settings.queue == "celery" else ""
    line = (f"grader worker: queue {settings.queue}{broker}, {_where(settings)}, concurrency {concurrency}, "
            f"sandbox {settings.sandbox_backend}")
    if settings.queue == "celery":
        return _celery_worker(settings, concurrency, line)
    return _embedded_worker(settings, concurrency, line)


def _check_sandbox(settings: Settings) -> None:
    """Start the sandbox backend once so a missing one stops the worker with its reason, then release it:
    each grading process creates its own after the fork."""
    from grader.service.grading import release_sandbox

    try:
        settings.sandbox()
    finally:
        release_sandbox()


def _celery_worker(settings: Settings, concurrency: int, line: str) -> int:
    import time

    from grader.service.cluster import broker_status, run_celery_worker
    from grader.store.db import open_store

    deadline = time.monotonic() + BROKER_WAIT_S  # started beside its broker (compose): give it time to come up
    while (broker := broker_status(settings)) != "ok":
        if time.monotonic() >= deadline:
            print(f"grader worker: the broker does not answer ({broker})", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"grader worker: waiting for the broker ({broker})", file=sys.stderr, flush=True)
        time.sleep(2.0)
    open_store(settings).close()  # migrated (under a lock on PostgreSQL) before any grading
    _check_sandbox(settings)
    print(line, flush=True)
    return run_celery_worker(settings, concurrency=concurrency)


def _embedded_worker(settings: Settings, concurrency: int, line: str) -> int:
    import threading

    from grader.service.grading import build_pool, release_sandbox
    from grader.store.db import open_store

    store = open_store(settings)
    _check_sandbox(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    pool = build_pool(store, settings.model_copy(update={"workers": concurrency}))
    print(line, flush=True)
    try:
        pool.start()
        stop.wait()
    finally:
        # Current gradings get the grace period to finish; one still running after it is given back (queued
        # again, an attempt spent), and its late result is fenced off.
        pool.stop(timeout_s=STOP_GRACE_S)
        pool.give_back("the worker stopped while grading this submission")
        release_sandbox()
        store.close()
    return EXIT_OK


def _worker_health(settings: Settings) -> int:
    """Exit 0 when the broker and the database answer and a worker of this host has a live heartbeat."""
    if settings.queue == "celery":
        from grader.service.cluster import worker_health

        problems = worker_health(settings)
    else:
        from grader.store.db import database_problem

        problems = [p for p in [database_problem(settings)] if p]
    for problem in problems:
        print(f"grader worker: unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else EXIT_OK


def _store(args: argparse.Namespace) -> Store:
    from grader.store.db import open_store

    return open_store(_settings(args))


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """Create a token and print it once (only its hash is stored)."""
    from grader.service.auth import create_token

    store = _store(args)
    try:
        created = create_token(store, args.role, args.name or "")
    finally:
        store.close()
    print(created.token)
    print(f"id {created.id}, role {created.role}, name {created.name}: store it now, it cannot be shown again",
          file=sys.stderr)
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """List tokens (prefixes only)."""
    from grader.service.auth import SYSTEM, list_tokens

    store = _store(args)
    try:
        for t in list_tokens(store, SYSTEM):
            state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
            print(f"{t.id:>4}  {t.prefix}…  {t.role:<11} {state:<18} {t.name}")
    finally:
        store.close()
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by id."""
    from grader.errors import InvalidRequest, NotFound
    from grader.service.auth import SYSTEM, revoke_token

    store = _store(args)
    try:
        t = revoke_token(store, SYSTEM, args.id)
    except NotFound as exc:  # a wrong id on the command line is a usage error (exit 2), not a fault
        raise InvalidRequest(f"{exc.message}; see `grader tokens list`") from None
    finally:
        store.close()
    print(f"revoked token {t.id} ({t.name})")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `serve`, `worker`, `migrate`, `verify-reports` and `tokens` to the `grader` command."""
    data_dir_help = "data directory (default: GRADER_DATA_DIR, else ./data)"
    p = sub.add_parser("serve", help="run the HTTP API with embedded workers (SQLite, local sandbox by default)")
    p.add_argument("--host", default=os.environ.get("GRADER_HOST", "127.0.0.1"),
                   help="address to listen on (default: GRADER_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADER_PORT", "8000")),
                   help="port (default: GRADER_PORT, else 8000)")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.add_argument("--workers", type=int, default=None,
                   help="submissions graded at once by the embedded pool (default: GRADER_WORKERS, else the "
                        "number of cores); 0: the API alone, `grader worker`s grade (always so with "
                        "GRADER_QUEUE=celery)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="grade submissions from the queue without the API (a Celery worker with "
                                      "GRADER_QUEUE=celery, else the embedded pool on the database)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="submissions graded at once (default: GRADER_WORKER_CONCURRENCY, else the number of cores)")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.add_argument("--health", action="store_true",
                   help="check instead of running: exit 0 when the broker and the database answer and a worker "
                        "of this host has a live heartbeat, else 1 with the reason (container health checks)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="bring the database schema up to date and exit")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("verify-reports", help="check every stored report against its checksum and each done "
                                              "submission's score against its report; exit 0 when all pass, "
                                              "1 when any fails, 3 when the database cannot be read")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.set_defaults(func=cmd_verify_reports)

    tokens = sub.add_parser("tokens", help="manage API tokens")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    p = tsub.add_parser("create", help="create a token and print it once")
    p.add_argument("--role", required=True, choices=("admin", "interviewer", "submitter"))
    p.add_argument("--name", default="", help="who or what uses it (shown in the audit log)")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.set_defaults(func=cmd_tokens_create)
    p = tsub.add_parser("list", help="list tokens (never the secrets)")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.set_defaults(func=cmd_tokens_list)
    p = tsub.add_parser("revoke", help="revoke a token by id")
    p.add_argument("id", type=int)
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.set_defaults(func=cmd_tokens_revoke)
