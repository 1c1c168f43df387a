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
            time.sleep(0.3)  # the worker logs its last event after storing the status
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
