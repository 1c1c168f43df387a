"""The client's retry, idempotency and error rules on scripted answers, and the CLI's exit codes 2, 3 and 4.

No grading service here: httpx's MockTransport scripts the answers, a tiny http.server always fails with 500,
and a port where nothing listens stands for a service that is down.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from grader.cli import main
from grader.client import GraderClient, RetryPolicy, ServiceFault, Unreachable, UsageError, idempotency_key
from tests.service.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CORRECT = ROOT / "tests" / "solutions" / "mlp" / "correct_vectorized.py"
SUMMARY = {"id": "a" * 32, "status": "queued", "links": {"self": "/v1/submissions/" + "a" * 32,
                                                          "report_html": f"/v1/submissions/{'a' * 32}/report.html"}}


class Script:
    """A MockTransport answering with the queued responses in order, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(script: Script, attempts: int = 4) -> tuple[GraderClient, list[float]]:
    slept: list[float] = []
    client = GraderClient("http://grader.test/", "tok", retry=RetryPolicy(attempts=attempts, base_delay_s=0.1),
                          transport=httpx.MockTransport(script), sleep=slept.append, rng=random.Random(0))
    return client, slept


def test_the_key_depends_on_the_content_only() -> None:
    a = idempotency_key("mlp", {"solution.py": "x = 1", "helpers.py": "y = 2"}, "ada")
    assert a == idempotency_key("mlp", {"helpers.py": "y = 2", "solution.py": "x = 1"}, "ada")
    assert a != idempotency_key("mlp", {"helpers.py": "y = 2", "solution.py": "x = 2"}, "ada")
    assert a != idempotency_key("mlp", {"helpers.py": "y = 2", "solution.py": "x = 1"}, "bob")
    assert a != idempotency_key("cnn", {"helpers.py": "y = 2", "solution.py": "x = 1"}, "ada")
    assert len(a) <= 200 and a.isascii() and a.isprintable()


def test_a_post_is_retried_with_the_same_key_after_503_and_a_network_error() -> None:
    script = Script(httpx.Response(503, json={"detail": "starting"}), httpx.ConnectError("refused"),
                    httpx.Response(202, json=SUMMARY, headers={"Idempotent-Replayed": "true"}))
    client, slept = make_client(script)
    submitted = client.submit("mlp", {"solution.py": "x = 1"}, "ada")
    assert submitted.id == "a" * 32 and submitted.replayed
    assert submitted.links["report_html"] == f"http://grader.test/v1/submissions/{'a' * 32}/report.html"
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 3 and keys == {idempotency_key("mlp", {"solution.py": "x = 1"}, "ada")}
    assert json.loads(script.requests[0].content) == {"problem": "mlp", "files": {"solution.py": "x = 1"},
                                                      "candidate": "ada"}
    assert script.requests[0].headers["Authorization"] == "Bearer tok"
    assert len(slept) == 2 and 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2  # exponential, jittered


def test_429_waits_as_long_as_retry_after_says() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow down"}),
                    httpx.Response(202, json=SUMMARY))
    client, slept = make_client(script)
    client.submit("mlp", {"solution.py": "x = 1"})
    assert slept == [7.0]
    assert "candidate" not in json.loads(script.requests[0].content)


def test_retries_are_bounded_and_say_what_failed() -> None:
    client, slept = make_client(Script(*[httpx.Response(500, json={"detail": "boom"})] * 4), attempts=4)
    with pytest.raises(ServiceFault, match=r"500: boom"):
        client.submit("mlp", {"solution.py": "x = 1"})
    assert len(slept) == 3
    client, slept = make_client(Script(*[httpx.ConnectError("refused")] * 3), attempts=3)
    with pytest.raises(Unreachable, match="could not reach the service at http://grader.test"):
        client.status("a" * 32)
    assert len(slept) == 2


@pytest.mark.parametrize(("status", "message"), [
    (401, "the token was refused"), (403, "the token may not do this"), (404, "unknown problem 'nope'"),
    (400, "solution.py: line 1")])
def test_a_4xx_is_not_retried_and_carries_the_servers_message(status: int, message: str) -> None:
    detail = {404: "unknown problem 'nope'", 400: "solution.py: line 1 has a NUL"}.get(status, "bad token")
    script = Script(httpx.Response(status, json={"detail": detail, "error": "X"}))
    client, slept = make_client(script)
    with pytest.raises(UsageError, match=message):
        client.submit("nope", {"solution.py": "x = 1"})
    assert len(script.requests) == 1 and slept == []


def test_waiting_outlasts_a_service_that_is_down_for_a_while() -> None:
    running = {**SUMMARY, "status": "running"}
    done = {**SUMMARY, "status": "done", "score": 100.0}
    down = [httpx.ConnectError("refused")] * 10  # more than the attempts of one request: the deadline counts
    script = Script(httpx.Response(200, json=running), *down, httpx.Response(502), httpx.Response(200, json=done))
    client, slept = make_client(script, attempts=2)
    seen: list[str] = []
    final = client.wait("a" * 32, timeout_s=60, on_status=lambda body: seen.append(body["status"]))
    assert final["status"] == "done" and seen == ["running", "done"]
    assert len(script.requests) == 13 and script.answers == []


def test_waiting_gives_up_at_the_deadline() -> None:
    client = GraderClient("http://grader.test", "tok", retry=RetryPolicy(base_delay_s=0.01),
                          transport=httpx.MockTransport(Script(*[httpx.ConnectError("refused")] * 1000)))
    with pytest.raises(Unreachable):
        client.wait("a" * 32, timeout_s=0.3)


def test_a_submission_never_finished_is_a_fault_at_the_deadline() -> None:
    queued = [httpx.Response(200, json={**SUMMARY, "status": "queued"}) for _ in range(1000)]
    client = GraderClient("http://grader.test", "tok", transport=httpx.MockTransport(Script(*queued)))
    with pytest.raises(ServiceFault, match=r"submission a{32} is still queued after 0.3 s \(--timeout\)"):
        client.wait("a" * 32, timeout_s=0.3, poll_s=0.05)


def test_retry_after_takes_seconds_or_a_date_and_is_capped() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from grader.client import retry_after_s

    assert retry_after_s("3") == 3.0 and retry_after_s("86400") == 120.0
    in_ten = retry_after_s(format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True))
    assert in_ten is not None and 8.0 <= in_ten <= 10.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


class AlwaysFails(BaseHTTPRequestHandler):
    def _fail(self) -> None:
        type(self).hits += 1  # counted before answering: the client may be done once it has the answer
        body = b'{"detail": "database is locked", "error": "GraderError"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail
    hits = 0

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AlwaysFails)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    AlwaysFails.hits = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def submit(*args: str) -> list[str]:
    return ["submit", *args, "--retry-delay", "0.01"]


def test_exit_3_when_the_service_keeps_failing(failing_server: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    code = main(submit("mlp", str(CORRECT), "--server", failing_server, "--wait", "--retries", "3"))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "the service failed (500: database is locked)" in err and "Traceback" not in err
    assert AlwaysFails.hits == 3


def test_exit_4_when_nothing_listens(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    monkeypatch.setenv("GRADER_SERVER", f"http://127.0.0.1:{free_port()}")
    code = main(submit("mlp", str(CORRECT), "--retries", "3"))
    err = capsys.readouterr().err
    assert code == 4, err
    assert "could not reach the service" in err and err.count("retrying in") == 2 and "Traceback" not in err


@pytest.mark.parametrize(("args", "env", "message"), [
    (["mlp", str(CORRECT)], {"GRADER_TOKEN": "tok"}, "no server: pass --server URL or set GRADER_SERVER"),
    (["mlp", str(CORRECT)], {"GRADER_SERVER": "http://127.0.0.1:9"}, "no API token: set GRADER_TOKEN"),
    (["mlp", str(CORRECT), "--token-file", "/nonexistent/token"], {"GRADER_SERVER": "http://127.0.0.1:9"},
     "--token-file /nonexistent/token cannot be read"),
    (["mlp", str(CORRECT)], {"GRADER_SERVER": "http://127.0.0.1:9", "GRADER_TOKEN": "grd_abc déjà"},
     "GRADER_TOKEN does not hold a token"),
    (["mlp", str(CORRECT), "--server", "grader.example.com"], {"GRADER_TOKEN": "tok"},
     "the server URL must look like https://"),
    (["mlp", "/nonexistent/solution.py"], {"GRADER_TOKEN": "tok", "GRADER_SERVER": "http://127.0.0.1:9"},
     "/nonexistent/solution.py: no such file or folder"),
    (["mlp"], {"GRADER_TOKEN": "tok", "GRADER_SERVER": "http://127.0.0.1:9"}, "give either the solution"),
])
def test_usage_errors_exit_2_before_any_request(args: list[str], env: dict[str, str], message: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GRADER_TOKEN", raising=False)
    monkeypatch.delenv("GRADER_SERVER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(submit(*args)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class FakeService(BaseHTTPRequestHandler):
    """Accepts any submission, reports it finished with `final` and serves `report` (a scripted service)."""

    final: dict[str, object] = {}
    report = ""

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(202, json.dumps(SUMMARY))

    def do_GET(self) -> None:
        if self.path.endswith("/report"):
            self._send(200, type(self).report)
        else:
            self._send(200, json.dumps({**SUMMARY, **type(self).final}))

    def log_message(self, *args: object) -> None:
        pass


def scripted_report(status: str, error: str | None) -> str:
    from grader.engine.report import Environment, ProblemRef, Report

    return Report(problem=ProblemRef(id="mlp", version="1.0.0"), status=status,  # type: ignore[arg-type]
                  score=0.0, max_score=100.0, tests=[], error=error,
                  environment=Environment(grader_version="t", seed=0, sandbox_backend="none")).model_dump_json()


@pytest.mark.parametrize(("final", "report", "message"), [
    ({"status": "failed", "error": "graded 3 times, the sandbox crashed each time"}, "",
     f"the service could not grade submission {'a' * 32}: graded 3 times, the sandbox crashed each time"),
    ({"status": "done", "score": 0.0, "max_score": 100.0}, scripted_report("incomplete", "sandbox withdrawn"),
     "the report is incomplete: sandbox withdrawn"),
])
def test_exit_3_when_the_grading_failed_or_the_report_is_incomplete(
        final: dict[str, object], report: str, message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    FakeService.final, FakeService.report = final, report
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    try:
        code = main(submit("mlp", str(CORRECT), "--server", f"http://127.0.0.1:{httpd.server_address[1]}",
                           "--wait"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capsys.readouterr().err
    assert code == 3, err
    assert message in err and "Traceback" not in err


# -- the content-derived key and --resubmit ---------------------------------------------------------------------


def test_resubmit_mixes_a_new_nonce_into_the_key_and_keeps_it_across_retries() -> None:
    content = idempotency_key("mlp", {"solution.py": "x = 1"}, "ada")
    assert idempotency_key("mlp", {"solution.py": "x = 1"}, "ada", "n1") not in (
        content, idempotency_key("mlp", {"solution.py": "x = 1"}, "ada", "n2"))
    script = Script(httpx.Response(503, json={"detail": "starting"}), httpx.Response(202, json=SUMMARY),
                    httpx.Response(202, json=SUMMARY), httpx.Response(202, json=SUMMARY))
    client, _ = make_client(script)
    client.submit("mlp", {"solution.py": "x = 1"}, "ada", resubmit=True)  # a 503, then accepted: one key
    client.submit("mlp", {"solution.py": "x = 1"}, "ada", resubmit=True)
    client.submit("mlp", {"solution.py": "x = 1"}, "ada")
    keys = [r.headers["Idempotency-Key"] for r in script.requests]
    assert keys[0] == keys[1] and len({keys[1], keys[2], keys[3]}) == 3 and keys[3] == content
    assert all(len(k) <= 200 and k.isascii() and k.isprintable() for k in keys)


def test_a_409_for_a_reused_key_tells_about_resubmit() -> None:
    detail = "Idempotency-Key 'grader-submit-ab' was already used for a different submission (x); use a new key"
    script = Script(httpx.Response(409, json={"detail": detail, "error": "Conflict"}))
    client, slept = make_client(script)
    with pytest.raises(UsageError, match="--resubmit") as raised:
        client.submit("mlp", {"solution.py": "x = 1"})
    assert detail in raised.value.message and raised.value.exit_code == 2
    assert len(script.requests) == 1 and slept == []


def test_a_409_elsewhere_says_nothing_of_resubmit() -> None:
    script = Script(httpx.Response(409, json={"detail": "submission x has no report (status queued)"}))
    client, _ = make_client(script)
    with pytest.raises(ServiceFault) as raised:
        client.report_json("a" * 32)
    assert "--resubmit" not in raised.value.message


@pytest.mark.parametrize("answer", [httpx.Response(404, json={"detail": "no submission"}),
                                    httpx.Response(409, json={"detail": "submission x has no report"})])
def test_a_refusal_after_acceptance_is_the_services_fault(answer: httpx.Response) -> None:
    """The service accepted the submission: losing it or its report is exit 3, not a usage error (2)."""
    for call in ("status", "report_json"):
        client, _ = make_client(Script(answer))
        with pytest.raises(ServiceFault) as raised:
            getattr(client, call)("a" * 32)
        assert raised.value.exit_code == 3 and "had accepted submission" in raised.value.message


class KeyedService(FakeService):
    """FakeService that records each POST's Idempotency-Key and says whether it replayed."""

    keys: list[str] = []
    replayed = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).keys.append(self.headers["Idempotency-Key"])
        data = json.dumps({**SUMMARY, **type(self).final}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if type(self).replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def keyed_service() -> Iterator[type[KeyedService]]:
    KeyedService.final = {"status": "failed", "error": "the sandbox crashed each time"}
    KeyedService.report, KeyedService.keys, KeyedService.replayed = "", [], True
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeyedService)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    KeyedService.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield KeyedService
    httpd.shutdown()
    httpd.server_close()


def test_a_replayed_failed_submission_says_to_resubmit_and_resubmit_sends_a_new_key(
        keyed_service: type[KeyedService], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    url = keyed_service.url  # type: ignore[attr-defined]
    assert main(submit("mlp", str(CORRECT), "--server", url, "--wait")) == 3
    err = capsys.readouterr().err
    assert f"the service could not grade submission {'a' * 32}: the sandbox crashed each time" in err
    assert "already submitted" in err and "--resubmit" in err and "Traceback" not in err
    assert main(submit("mlp", str(CORRECT), "--server", url)) == 0  # without --wait: said too
    assert "--resubmit" in capsys.readouterr().err
    keyed_service.replayed = False
    assert main(submit("mlp", str(CORRECT), "--server", url, "--wait", "--resubmit")) == 3
    err = capsys.readouterr().err
    assert "could not grade submission" in err and "--resubmit" not in err  # a fresh failure: nothing replayed
    content = keyed_service.keys[0]
    assert keyed_service.keys[1] == content and keyed_service.keys[2] != content


def test_a_batch_resubmits_with_new_keys_and_a_replayed_failure_says_to_resubmit(
        keyed_service: type[KeyedService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from grader import batch

    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "ada.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    url = keyed_service.url  # type: ignore[attr-defined]
    client = GraderClient(url, "tok")
    entry = batch.Entry("ada", tmp_path / "cohort" / "ada.py")
    replayed = batch.submit_one(client, "mlp", entry, 10)
    assert replayed.status == "failed" and "--resubmit" in replayed.error
    assert main(["submit", "mlp", "--batch", "cohort", "--server", url, "--resubmit", "--csv", "r.csv"]) == 3
    capsys.readouterr()
    assert len(keyed_service.keys) == 2 and keyed_service.keys[1] != keyed_service.keys[0]


# -- exit codes: the reports' own budget, refusals after the submission, an odd Retry-After ---------------------


def test_a_retry_after_that_is_not_ascii_digits_is_ignored() -> None:
    from grader.client import retry_after_s

    for odd in ("²", "3²", "٣", "1.5", "-1"):
        assert retry_after_s(odd) is None, odd
    script = Script(httpx.Response(503, headers=[(b"Retry-After", "²".encode())], json={"detail": "busy"}),
                    httpx.Response(202, json=SUMMARY))
    client, slept = make_client(script)
    assert client.submit("mlp", {"solution.py": "x = 1"}).id == "a" * 32
    assert len(slept) == 1 and slept[0] <= 0.1  # the policy's own delay


class LateService(FakeService):
    """Answers the status poll only after `delay_s` (so it is done past --timeout), then one 503 on /report."""

    delay_s = 0.0
    report_503s = 0

    def do_GET(self) -> None:
        if self.path.endswith("/report") and type(self).report_503s > 0:
            type(self).report_503s -= 1
            self._send(503, json.dumps({"detail": "restarting"}))
        elif not self.path.endswith("/report"):
            time.sleep(type(self).delay_s)
            super().do_GET()
        else:
            super().do_GET()


def test_the_report_fetch_outlasts_a_503_when_the_grading_ends_at_the_timeout(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    LateService.final = {"status": "done", "score": 100.0, "max_score": 100.0}
    LateService.report = scripted_report("graded", None)
    LateService.delay_s, LateService.report_503s = 0.6, 1
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LateService)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("GRADER_TOKEN", "tok")
    try:
        code = main(submit("mlp", str(CORRECT), "--server", f"http://127.0.0.1:{httpd.server_address[1]}",
                           "--wait", "--timeout", "0.5"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "restarting" in err and LateService.report_503s == 0  # the 503 happened, and was retried


@pytest.mark.parametrize(("answers", "status", "message"), [
    ([httpx.Response(400, json={"detail": "solution.py: line 1 has a NUL"})], "invalid", "line 1 has a NUL"),
    ([httpx.Response(202, json=SUMMARY), httpx.Response(404, json={"detail": "no submission"})], "failed",
     "no submission"),
    ([httpx.Response(202, json=SUMMARY), httpx.Response(200, json={**SUMMARY, "status": "done"}),
      httpx.Response(409, json={"detail": "submission has no report (status queued)"})], "failed", "no report"),
])
def test_a_refusal_after_the_submission_was_accepted_is_a_failed_row(
        answers: list[httpx.Response], status: str, message: str, tmp_path: Path) -> None:
    from grader import batch

    (tmp_path / "ada.py").write_text("x = 1\n")
    client, _ = make_client(Script(*answers))
    row = batch.submit_one(client, "mlp", batch.Entry("ada", tmp_path / "ada.py"), 10)
    assert (row.status, message in (row.error or "")) == (status, True), row
    assert batch.exit_code([row], None) == (3 if status == "failed" else 0)
