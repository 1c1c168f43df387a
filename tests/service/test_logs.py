"""Structured logs: one JSON object per line, each naming its submission, from the API through the queue to the
engine, so an operator can follow one submission (grep its id) across the processes of the service."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Tokens, wait_for_status
from fastapi.testclient import TestClient
from live_server import LiveServer

from grader import logs
from grader.engine.report import Report

HOSTILE = 'ends here\n{"ts": "2026-01-01T00:00:00Z", "level": "CRITICAL", "message": "forged"}\r\x1b[2J\u2028\x00'
SYNTAX_ERROR = "def affine_forward(x, w, b:\n    return x\n"  # graded at once, without starting a sandbox


def _record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), level: int = logging.INFO,
            exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("grader.test", level, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def _line(record: logging.LogRecord) -> dict[str, Any]:
    logs.ContextFilter().filter(record)
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text and "\r" not in text and text.isascii()
    parsed: dict[str, Any] = json.loads(text)
    return parsed


# The formatter ---------------------------------------------------------------------------------------------
def test_a_record_is_one_json_object_with_the_core_fields() -> None:
    line = _line(_record(event="grading.finished", score=7.5, outcome="graded"))
    assert line["message"] == "hello world" and line["level"] == "INFO" and line["logger"] == "grader.test"
    assert line["ts"].endswith("Z") and line["ts"][10] == "T"  # ISO 8601, UTC
    assert line["pid"] > 0 and line["thread"]
    assert (line["event"], line["score"], line["outcome"]) == ("grading.finished", 7.5, "graded")
    assert "color_message" not in _line(_record(color_message="\x1b[36mhello\x1b[0m"))  # uvicorn's, for terminals
    assert "submission_id" not in line  # nothing bound: no field, rather than a null


def test_an_exception_is_one_field_on_the_same_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        line = _line(_record("grading crashed", (), logging.ERROR, exc_info=sys.exc_info()))
    assert line["exc_type"] == "ValueError"
    assert line["exception"].startswith("Traceback") and "ValueError: bad\nvalue" in line["exception"]


def test_a_hostile_message_cannot_split_or_forge_a_line() -> None:
    line = _line(_record("candidate printed %s", (HOSTILE,), candidate=HOSTILE))
    assert line["message"] == f"candidate printed {HOSTILE}" and line["candidate"] == HOSTILE
    assert line["level"] == "INFO"


def test_odd_values_and_a_broken_call_still_give_a_line() -> None:
    assert _line(_record(score=float("nan"), when=object()))["score"] == "nan"
    assert "hello" in _line(_record("hello %s %s", ("only one",)))["message"]  # wrong arguments: kept, not lost


def test_bind_stamps_every_record_and_nests() -> None:
    with logs.bind(submission_id="a" * 32, attempt=1):
        with logs.bind(problem="mlp"):
            inner = _line(_record())
        outer = _line(_record())
    assert (inner["submission_id"], inner["attempt"], inner["problem"]) == ("a" * 32, 1, "mlp")
    assert "problem" not in outer and outer["submission_id"] == "a" * 32
    assert "submission_id" not in _line(_record())
    with pytest.raises(TypeError, match="submission_id"):
        with logs.bind(submision_id="typo"):
            pass


def test_a_bound_id_reaches_threads_started_with_a_copied_context_only() -> None:
    import contextvars

    seen: dict[str, Any] = {}
    with logs.bind(submission_id="b" * 32):
        copied = threading.Thread(target=contextvars.copy_context().run,
                                  args=(lambda: seen.update(copied=logs.bound()),))
        plain = threading.Thread(target=lambda: seen.update(plain=logs.bound()))
        for t in (copied, plain):
            t.start()
            t.join()
    assert seen == {"copied": {"submission_id": "b" * 32}, "plain": {}}


def test_the_handler_keeps_the_stderr_it_was_installed_on(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A Celery worker swaps sys.stderr for a proxy that logs what is written to it: a handler writing to the
    new one would feed its own records back into logging, where they are dropped (no grading was logged)."""
    try:
        logs.configure("json", service=True)
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        logging.getLogger("grader.queue.pool").info("graded")
        assert sys.stderr.getvalue() == ""  # type: ignore[attr-defined]
    finally:
        logs.reset()
    assert json.loads(capsys.readouterr().err)["message"] == "graded"


def test_configure_is_idempotent_and_reset_restores(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("grader").level)
    try:
        logs.configure("json", service=True)
        logs.configure("json", service=True)
        assert sum(isinstance(h, logs.StderrHandler) for h in root.handlers) == 1
        with logs.bind(submission_id="c" * 32):
            logging.getLogger("grader.queue.pool").info("graded")
            logging.getLogger("grader_neighbour").info("a third party's INFO: left out")
        logging.getLogger("grader_neighbour").warning("a third party's warning")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(line["message"], line.get("submission_id")) for line in lines] == [
            ("graded", "c" * 32), ("a third party's warning", None)]
        logs.configure("text")
        with logs.bind(submission_id="c" * 32):
            logging.getLogger("grader.x").warning("plain")
        assert capsys.readouterr().err.rstrip().endswith(f"grader.x: plain [submission {'c' * 32}]")
    finally:
        logs.reset()
    assert (list(root.handlers), root.level, logging.getLogger("grader").level) == before


# In process: the API's middleware and the embedded pool ----------------------------------------------------
@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of the grader at INFO and up, as the service's JSON handler would write it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    grader = logging.getLogger("grader")
    level = grader.level
    grader.addHandler(handler)
    grader.setLevel(logging.INFO)
    yield out
    grader.removeHandler(handler)
    grader.setLevel(level)


def _events(out: io.StringIO, until_event: str | None = None, sid: str | None = None) -> list[dict[str, Any]]:
    """The events so far; with `until_event`, once that event of `sid` is in (the pool logs a grading's end
    just after storing the status a client waits for)."""
    deadline = time.monotonic() + 10
    while True:
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        if until_event is None or any(e.get("event") == until_event and e.get("submission_id") == sid
                                      for e in events):
            return events
        assert time.monotonic() < deadline, f"no {until_event} event of {sid}: {events}"
        time.sleep(0.05)


def test_one_submission_is_followed_by_its_id_through_api_and_queue(client: TestClient, tokens: Tokens,
                                                                    captured: io.StringIO) -> None:
    r = client.post("/v1/submissions", json={"problem": "mlp", "code": "# affine_forward"},
                    headers=tokens.auth(tokens.submitter))
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    wait_for_status(client, sid, tokens.submitter)
    client.get(f"/v1/submissions/{sid}/report", headers=tokens.auth(tokens.submitter))
    client.get("/v1/submissions/not-an-id%0Aforged", headers=tokens.auth(tokens.submitter))
    events = _events(captured, "grading.finished", sid)
    mine = [e for e in events if e.get("submission_id") == sid]
    kinds = [e.get("event") for e in mine]
    assert {"submission.accepted", "grading.started", "grading.finished", "http.request"} <= set(kinds), kinds
    assert kinds.index("grading.started") < kinds.index("grading.finished")
    post = next(e for e in mine if e.get("event") == "http.request" and e["method"] == "POST")
    assert post["status"] == 202 and post["path"] == "/v1/submissions" and post["duration_ms"] >= 0
    assert any(e.get("path") == f"/v1/submissions/{sid}/report" and e["status"] == 200 for e in mine)
    finished = next(e for e in mine if e.get("event") == "grading.finished")
    assert finished["outcome"] == "graded" and finished["score"] > 0 and finished["attempt"] == 1
    assert finished["problem"] == "mlp" and finished["thread"].startswith("grader-worker")
    # A made-up id in a path is logged as the path it was, never bound as a submission.
    odd = next(e for e in events if e.get("path") == "/v1/submissions/not-an-id\nforged")
    assert odd["status"] in (404, 422) and "submission_id" not in odd


@pytest.fixture
def crashing_grade() -> Callable[..., Report]:
    def grade(problem_id: str, files: dict[str, str], settings: Any, entry: str) -> Report:
        logging.getLogger("grader.engine.grading").warning("about to fail\nwith a second line")
        raise RuntimeError("a bug in the grader")
    return grade


def test_a_crash_in_grading_is_logged_on_one_line_with_its_submission(
        settings: Any, crashing_grade: Callable[..., Report], captured: io.StringIO) -> None:
    from grader.api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"job_max_attempts": 1}), grade=crashing_grade)) as c:
        tokens = Tokens(c.app.state.store)  # type: ignore[attr-defined]
        sid = c.post("/v1/submissions", json={"problem": "mlp", "code": "x = 1"},
                     headers=tokens.auth(tokens.submitter)).json()["id"]
        wait_for_status(c, sid, tokens.submitter, ("failed",))
        events = _events(captured, "grading.finished", sid)
    mine = [e for e in events if e.get("submission_id") == sid]
    warned = next(e for e in mine if e["logger"] == "grader.engine.grading")
    assert warned["message"] == "about to fail\nwith a second line"
    crashed = next(e for e in mine if e.get("exc_type") == "RuntimeError")
    assert "a bug in the grader" in crashed["exception"] and crashed["level"] == "ERROR"


# End to end: a real `grader serve` and its log file --------------------------------------------------------
@pytest.mark.slow
def test_the_servers_log_is_json_lines_that_follow_one_submission(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", workers=1, env={"GRADER_LOG_FORMAT": "json"})
    submitter = server.token("submitter", "ci")
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {submitter}"}
            r = client.post("/v1/submissions", json={"problem": "mlp", "code": SYNTAX_ERROR}, headers=auth)
            assert r.status_code == 202, r.text
            sid = r.json()["id"]
            deadline = time.monotonic() + 60
            while (status := client.get(f"/v1/submissions/{sid}", headers=auth).json()["status"]) != "done":
                assert status in ("queued", "running") and time.monotonic() < deadline, status
                time.sleep(0.1)
            assert client.get(f"/v1/submissions/{sid}/report", headers=auth).status_code == 200
            client.get("/v1/submissions/%0A%7B%22level%22%3A%22forged%22%7D", headers=auth)
            # The worker logs its last event just after storing the status: wait for it, with a deadline.
            deadline = time.monotonic() + 30
            while f'"event": "grading.finished", "submission_id": "{sid}"' not in server.log_path.read_text():
                assert time.monotonic() < deadline, "no grading.finished event in the server's log"
                time.sleep(0.05)
    finally:
        server.stop()
    lines = server.log_path.read_text().splitlines()
    # stdout and stderr share the file: the start-up line on stdout is the only one that is not a log event
    startup = [line for line in lines if line.startswith("grader: serving on http://127.0.0.1:")]
    assert len(startup) == 1, lines[:5]
    events = []
    for line in lines:
        if line == startup[0]:
            continue
        event = json.loads(line)  # every other line is one JSON object
        assert event["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") and event["ts"], line
        events.append(event)
    assert not any(e["level"] == "CRITICAL" and "forged" in str(e.get("message")) for e in events)
    mine = [e for e in events if e.get("submission_id") == sid]
    kinds = [e.get("event") for e in mine]
    for kind in ("submission.accepted", "grading.started", "grading.finished", "http.request"):
        assert kind in kinds, (kind, kinds)
    assert kinds.index("grading.started") < kinds.index("grading.finished")
    requests = {(e["method"], e["path"], e["status"]) for e in mine if e.get("event") == "http.request"}
    assert ("POST", "/v1/submissions", 202) in requests and ("GET", f"/v1/submissions/{sid}", 200) in requests
    assert ("GET", f"/v1/submissions/{sid}/report", 200) in requests
    finished = next(e for e in mine if e.get("event") == "grading.finished")
    assert finished["outcome"] == "graded" and finished["score"] == 0 and finished["pid"] == mine[0]["pid"]
    assert any(e["logger"] == "grader.engine.grading" for e in mine)  # the engine's own line names it too


# The text format, the log context of each request, and what never reaches a log --------------------------
def test_the_text_format_escapes_control_characters_so_a_path_cannot_forge_a_line() -> None:
    formatter = logs.TextFormatter()
    record = _record("GET %s 404", ("/v1/submissions/x\n2026-01-01 00:00:00,000 CRITICAL grader: forged\x1b[2J",),
                     submission_id="d" * 32)
    text = formatter.format(record)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\u2028" not in text
    assert text.endswith(f"forged\\x1b[2J 404 [submission {'d' * 32}]") and "x\\n2026" in text
    assert formatter.format(_record("a\\nb", ())).endswith("a\\\\nb")  # a backslash cannot pose as an escape
    assert "\u2028" not in formatter.format(_record("%s", (HOSTILE,)))
    try:
        raise ValueError("bad")
    except ValueError:
        with_tb = formatter.format(_record("crashed\nhere", (), logging.ERROR, exc_info=sys.exc_info()))
    first, _, rest = with_tb.partition("\n")
    assert first.endswith("crashed\\nhere") and rest.startswith("Traceback")  # only a traceback spans lines


def test_bind_only_hides_what_was_bound_outside() -> None:
    with logs.bind(submission_id="e" * 32, worker="w1"):
        with logs.bind_only(path_id="f" * 32):
            assert logs.bound() == {"path_id": "f" * 32}
        assert logs.bound() == {"submission_id": "e" * 32, "worker": "w1"}


def test_each_request_starts_from_an_empty_log_context(captured: io.StringIO) -> None:
    """uvicorn runs a pipelined request inside the context of the one before it: the middleware must not let
    that request's submission id tag the next one's lines."""
    import asyncio

    from grader.api.app import RequestLog

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        logging.getLogger("grader.api.test").info("inside %s", scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    def scope(path: str) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": path, "client": ("127.0.0.1", 1)}

    middleware = RequestLog(inner)
    with logs.bind(submission_id="a" * 32):  # as if a previous request's id were still bound
        asyncio.run(middleware(scope("/healthz"), receive, send))
    events = _events(captured)
    inside = next(e for e in events if e.get("message") == "inside /healthz")
    assert "submission_id" not in inside and "path_id" not in inside, inside


def test_an_unauthorized_request_names_its_paths_id_only_as_path_id(client: TestClient, tokens: Tokens,
                                                                      captured: io.StringIO) -> None:
    someone = "0123456789abcdef0123456789abcdef"
    assert client.get(f"/v1/submissions/{someone}").status_code == 401
    assert client.get(f"/v1/submissions/{someone}", headers=tokens.auth(tokens.submitter)).status_code == 404
    lines = [e for e in _events(captured) if e.get("event") == "http.request" and e.get("path", "").endswith(someone)]
    assert [e["status"] for e in lines] == [401, 404]
    assert all(e.get("path_id") == someone and "submission_id" not in e for e in lines), lines


def test_no_secret_reaches_any_log_line(client: TestClient, tokens: Tokens, captured: io.StringIO) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logs.JsonFormatter())
    root.addHandler(handler)  # every logger's records, not only the grader's
    try:
        created = client.post("/v1/tokens", json={"role": "interviewer", "name": "new"},
                              headers=tokens.auth(tokens.admin)).json()["token"]
        guess = "grd_" + "x" * 43
        client.get("/v1/submissions", headers=tokens.auth(guess))
        client.get("/v1/submissions", headers={"Authorization": "Basic c2VjcmV0LWJhc2ljOnB3"})
        client.post("/ui/login", data={"token": guess + "-form", "next": "/ui/submissions"})
        assert client.post("/ui/login", data={"token": created}, follow_redirects=False).status_code == 303
        client.get("/ui/submissions")  # with the login cookie
        client.cookies.set("grader_token", guess + "-cookie")
        client.get("/ui/submissions")
        client.cookies.clear()
        client.get("/v1/submissions", headers=tokens.auth(tokens.submitter))
        client.get("/v1/tokens", headers=tokens.auth(tokens.admin))
    finally:
        root.removeHandler(handler)
    text = captured.getvalue()
    assert "http.request" in text
    for secret in (created, guess, guess[4:], "c2VjcmV0LWJhc2ljOnB3", tokens.admin, tokens.submitter,
                   tokens.admin[4:]):
        assert secret not in text, secret
