"""Logs an operator can follow: one JSON object per line, each naming the submission it is about.

`bind(submission_id=...)` marks everything logged in its block (in this thread or asyncio task, and in
threads started through `contextvars.copy_context`); `configure(fmt, verbose)` installs one handler on the
root logger, so the grader's loggers, uvicorn's and Celery's all come out in the same format:

    {"ts": "2026-12-03T10:26:06.123Z", "level": "INFO", "logger": "grader.queue.pool",
     "message": "submission 3f… (attempt 1): graded in 2.1 s", "event": "grading.finished",
     "submission_id": "3f…", "pid": 4242, "thread": "grader-worker-0", "score": 7.5, ...}

A line is always one line: json.dumps escapes newlines and control characters (a candidate's output or
file name inside a message cannot forge a second event), and a traceback is the "exception" field.
This module imports nothing of the grader, so every layer may use it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

LogFormat = Literal["json", "text"]

CONTEXT_FIELDS = ("submission_id", "problem", "attempt", "worker", "path_id")
"""What `bind` accepts: the fields stamped on every record logged while they are bound. `path_id` is an id a
request's path names before the request is known to be authorized (grader/api/app.py): a client without a
token can put anyone's id in a path, so it never poses as `submission_id`."""

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("grader_log_context",
                                                                            default=MappingProxyType({}))

# Everything a LogRecord carries by itself; any other attribute came from `extra=` (or from `bind`).
# uvicorn's color_message is its message again, with terminal colour codes: left out.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName",
                                                                      "color_message"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Stamp these fields (submission_id, problem, attempt, worker) on every record logged in the block;
    None values are left out, and a nested bind adds to (or overrides) the outer one."""
    _check(fields)
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


@contextmanager
def bind_only(**fields: Any) -> Iterator[None]:
    """Like `bind`, but the block sees these fields and nothing bound outside it. For a unit of work that must
    not inherit its caller's fields: an HTTP request (uvicorn runs a pipelined request inside the context of
    the one before it, whose submission id would otherwise tag the next request's lines)."""
    _check(fields)
    token = _context.set(MappingProxyType({k: v for k, v in fields.items() if v is not None}))
    try:
        yield
    finally:
        _context.reset(token)


def _check(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"bind() takes {', '.join(CONTEXT_FIELDS)}, not {', '.join(sorted(unknown))}")


def bound() -> dict[str, Any]:
    """The fields bound here right now."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Stamps the bound fields on each record, in the thread that logs it (a handler's filter: it sees the
    records of every logger, including those propagated from uvicorn's and Celery's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):  # an explicit extra= wins
                setattr(record, key, value)
        return True


def _ts(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ts (ISO 8601, UTC), level, logger, message, event (when
    given as extra), the bound fields, pid, thread, every other `extra=` field, and the traceback of an
    exception as one string ("exception"). Never raises: a record that cannot be rendered says so."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # the log must never be what breaks a request or a grading
            return json.dumps({"ts": _ts(record.created), "level": record.levelname, "logger": record.name,
                               "message": f"unloggable record ({type(exc).__name__}): {record.msg!r:.500}",
                               "pid": record.process})

    def _format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a call with the wrong arguments: keep what it said rather than lose the event
            message = f"{record.msg!s} {record.args!r}"
        out: dict[str, Any] = {"ts": _ts(record.created), "level": record.levelname, "logger": record.name,
                               "message": message}
        for key in ("event", *CONTEXT_FIELDS):
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        out["pid"], out["thread"] = record.process, record.threadName
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                out["exc_type"] = type(exc).__name__
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: every control character, line separator and lone surrogate is escaped, so the line
        # stays one line whatever the candidate's text, and the stream's encoding cannot fail on it.
        try:
            return json.dumps(out, ensure_ascii=True, allow_nan=False, default=str)
        except ValueError:  # a NaN or infinity (not JSON), or a cycle, somewhere in an extra field
            return json.dumps({k: v if _plain(v) else str(v) for k, v in out.items()}, ensure_ascii=True)


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value))


def escape_controls(text: str) -> str:
    """`text` with every control character, line or paragraph separator escaped (\\n, \\x1b, \\u2028...),
    and the backslash itself, so an escaped sequence in the input cannot pass for one we wrote."""
    return text.translate(_ESCAPES)


def _escape(code: int) -> str:
    char = chr(code)
    if char in "\n\r\t":
        return repr(char)[1:-1]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPES: dict[int, str] = {code: _escape(code) for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}
_ESCAPES[ord("\\")] = "\\\\"


class TextFormatter(logging.Formatter):
    """For a person at a terminal: `time LEVEL logger: message [submission <id>]`, tracebacks as usual.

    The message is one line as in the JSON format: its control characters are escaped (`escape_controls`),
    so a percent-decoded path with %0A in it cannot forge a line; only a traceback spans lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        sid = record.__dict__.get("submission_id")
        if sid is None:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [submission {escape_controls(str(sid))}]{newline}{rest}"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (on the stderr of that moment, as basicConfig's: a Celery worker
    later replaces sys.stderr with a proxy into logging itself, where records would vanish)."""


_saved: dict[str, Any] = {}


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """A thread that dies of an exception: one event in the log rather than a traceback on raw stderr."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("grader").critical("thread %s died", name, exc_info=(args.exc_type, exc, args.exc_traceback))


def make_handler(fmt: LogFormat) -> logging.Handler:
    handler = StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure(fmt: LogFormat, verbose: bool = False, *, service: bool = False) -> None:
    """Log to stderr in `fmt` through one handler on the root logger (calling it again replaces it).

    Third parties' records from WARNING, or INFO with `verbose`; the grader's own from INFO in a `service`
    process (serve, worker: its events are how one follows a submission), else like the third parties'.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', not {fmt!r}")
    root, grader = logging.getLogger(), logging.getLogger("grader")
    if not _saved:
        _saved.update(root=root.level, grader=grader.level, excepthook=threading.excepthook)
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    root.addHandler(make_handler(fmt))
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    grader.setLevel(logging.INFO if service or verbose else logging.NOTSET)
    # What would otherwise reach stderr around the handler, and break the one-line rule: warnings, and the
    # traceback of a thread that dies.
    logging.captureWarnings(fmt == "json")
    threading.excepthook = _log_thread_exception if fmt == "json" else _saved["excepthook"]


def reset() -> None:
    """Undo `configure` (for a caller that runs the command line inside its own process, such as a test)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    if _saved:
        root.setLevel(_saved["root"])
        logging.getLogger("grader").setLevel(_saved["grader"])
        threading.excepthook = _saved["excepthook"]
        logging.captureWarnings(False)
        _saved.clear()
