"""Webhooks against a real HTTP receiver on loopback: signature over the exact body, retries with backoff, outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Tokens, wait_for_status
from fastapi.testclient import TestClient

from grader.service.webhooks import SIGNATURE_HEADER, backoff_s, sign, verify


class Receiver:
    """Records each POST (time, headers, body) and answers with the next planned status (then 200)."""

    def __init__(self, plan: list[int]) -> None:
        self.plan = list(plan)
        self.calls: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((time.monotonic(), dict(self.headers), body))
                status = receiver.plan.pop(0) if receiver.plan else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(getattr(request, "param", []))
    yield r
    r.close()


def detail_when(client: TestClient, tokens: Tokens, sid: str, status: str, timeout_s: float = 10.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while True:
        d = client.get(f"/v1/submissions/{sid}/detail", headers=Tokens.auth(tokens.interviewer)).json()
        if d["webhook"] and d["webhook"]["status"] == status:
            return d  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, d["webhook"]
        time.sleep(0.05)


def submit(client: TestClient, tokens: Tokens, url: str) -> str:
    r = client.post("/v1/submissions", headers=Tokens.auth(tokens.submitter),
                    json={"problem": "mlp", "code": "affine_forward\n", "candidate": "ada", "callback_url": url})
    assert r.status_code == 202
    return r.json()["id"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("receiver", [[500, 503]], indirect=True)
def test_signed_summary_retried_with_backoff_until_delivered(client: TestClient, tokens: Tokens,
                                                             receiver: Receiver) -> None:
    sid = submit(client, tokens, receiver.url)
    wait_for_status(client, sid, tokens.submitter)
    detail = detail_when(client, tokens, sid, "delivered")
    hook = detail["webhook"]
    assert hook["attempts"] == 3 and hook["last_status_code"] == 200 and hook["last_error"] is None
    assert len(receiver.calls) == 3
    secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]
    base_s = client.app.state.settings.webhook_backoff_s  # type: ignore[attr-defined]
    bodies = {body for _, _, body in receiver.calls}
    assert len(bodies) == 1  # every retry carries the same bytes, so the same signature
    body = bodies.pop()
    for _, headers, _ in receiver.calls:
        assert verify(body, secret, headers[SIGNATURE_HEADER])
        assert not verify(body + b" ", secret, headers[SIGNATURE_HEADER])
        assert headers["X-Grader-Delivery"] and headers["X-Grader-Event"] == "submission.graded"
    gaps = [b[0] - a[0] for a, b in zip(receiver.calls, receiver.calls[1:])]
    assert gaps[0] >= backoff_s(1, base_s) * 0.9 and gaps[1] >= backoff_s(2, base_s) * 0.9
    summary = json.loads(body)
    assert summary["submission_id"] == sid and summary["score"] == 8.0 and summary["status"] == "done"
    hidden = [t for t in detail["report"]["tests"] if t["hidden"]]
    assert "message" not in json.dumps(summary["tests"]) and "hidden input" not in body.decode()
    assert {t["id"] for t in summary["tests"]} == {t["id"] for t in detail["report"]["tests"]} and hidden
    assert [e["action"] for e in detail["audit"]][-1] == "webhook.delivered"


@pytest.mark.parametrize("receiver", [[500] * 10], indirect=True)
def test_gives_up_after_the_configured_attempts_and_says_so(client: TestClient, tokens: Tokens,
                                                           receiver: Receiver) -> None:
    sid = submit(client, tokens, receiver.url)
    hook = detail_when(client, tokens, sid, "failed", timeout_s=20)["webhook"]
    attempts = client.app.state.settings.webhook_attempts  # type: ignore[attr-defined]
    assert hook["attempts"] == attempts == len(receiver.calls) and hook["last_status_code"] == 500
    assert hook["last_error"] == "HTTP 500"
    metrics = client.get("/metrics").text
    assert 'grader_webhooks_total{outcome="failed"} 1' in metrics


def test_unreachable_receiver_is_recorded(client: TestClient, tokens: Tokens) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    sid = submit(client, tokens, f"http://127.0.0.1:{port}/hook")
    hook = detail_when(client, tokens, sid, "failed", timeout_s=20)["webhook"]
    assert hook["last_status_code"] is None and "ConnectError" in hook["last_error"]


def test_signature_is_hmac_sha256_over_the_exact_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    assert sign(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify(body, "k", sign(body, "k")) and not verify(body, "other", sign(body, "k"))
