"""The service's subcommands of `grader`: `serve` and `tokens create|list|revoke`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.config import Settings
    from grader.store.db import Store

EXIT_OK = 0


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
    from grader.service.grading import prepare_sandbox, release_sandbox

    settings = _settings(args, **({"workers": args.workers} if args.workers is not None else {}))
    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it found: the default
    # one would end the process before anything is cleaned up (the Docker backend's containers stayed
    # behind after `docker stop`). This one ends it through SystemExit, so `finally` and atexit run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        prepare_sandbox(settings)
        app = create_app(settings)
        print(f"grader: serving on http://{args.host}:{args.port} (data in {settings.data_dir.resolve()}, "
              f"{settings.workers} workers, sandbox {settings.sandbox_backend})", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                    timeout_graceful_shutdown=5)
    finally:
        release_sandbox()
    return EXIT_OK


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


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
    """Add `serve` and `tokens` to the `grader` command."""
    data_dir_help = "data directory (default: GRADER_DATA_DIR, else ./data)"
    p = sub.add_parser("serve", help="run the HTTP API with embedded workers (SQLite, local sandbox by default)")
    p.add_argument("--host", default=os.environ.get("GRADER_HOST", "127.0.0.1"),
                   help="address to listen on (default: GRADER_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADER_PORT", "8000")),
                   help="port (default: GRADER_PORT, else 8000)")
    p.add_argument("--data-dir", default=None, help=data_dir_help)
    p.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: GRADER_WORKERS, "
                                                             "else the number of cores)")
    p.set_defaults(func=cmd_serve)

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
