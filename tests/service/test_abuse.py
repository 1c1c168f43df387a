"""Abuse of the API: each attack answered with the right 4xx (or a closed connection) and no side effect.

The whole list, with where each is tested (tests elsewhere are referenced, not repeated):

- oversized bodies, 413 before the body is read: test_service_bad_input.py::test_request_body_limit;
  oversized code, 400 with the limit: ::test_oversized_code_states_the_limit
- slow clients (slowloris) against the real server: test_slowloris_does_not_starve_a_normal_client,
  test_idle_and_oversized_connections_are_closed, test_connections_beyond_the_limit_get_503,
  test_one_host_is_capped_while_another_is_served, test_the_head_deadline_holds_after_a_body_answered_early,
  test_a_slow_steady_upload_is_read_and_a_stalled_one_is_408
- malformed multipart: test_malformed_multipart_is_400_and_creates_nothing (and
  test_service_bad_input.py::test_bad_multipart, ::test_broken_multipart_boundary)
- thousands of tiny files: test_thousands_of_tiny_files_are_refused_at_the_limit (and
  test_service_bad_input.py::test_too_many_files at the limit + 1)
- invalid UTF-8 in JSON and in file contents: test_service_bad_input.py::test_malformed_and_non_utf8_json,
  ::test_bad_multipart; in file names: test_path_traversal_and_bad_file_names_are_400
- path traversal in file names, JSON and multipart: test_path_traversal_and_bad_file_names_are_400 (and
  test_service_bad_input.py::test_bad_json_bodies, ::test_file_names_are_matched_whole)
- token guessing: test_token_guessing_is_locked_out_and_audited_once, test_lockout_ends_after_the_window,
  test_a_flood_of_other_addresses_cannot_undo_a_lockout, test_an_ipv6_client_is_locked_out_by_its_slash_64,
  test_x_forwarded_for_does_not_move_a_client_out_of_its_lockout, test_a_stale_login_cookie_is_cleared_and_counts_once;
  no secret is compared byte by byte (tokens are looked up by SHA-256 hash: grader/service/auth.py), stored
  hashed: test_service_api.py::test_token_is_stored_hashed
- per-token rate limits: test_submission_burst_then_429_then_refill, test_request_rate_limit_per_token,
  test_default_limits_allow_a_burst_of_20; the limiter itself: test_token_bucket_*, test_auth_tracker_*
- cross-submission access (404, so ids do not leak): test_service_api.py::test_auth_401_403_404 (status,
  report, list), test_a_submitter_cannot_reach_another_submitters_submission (HTML, JUnit, CSV, notes,
  overrides); there is no cancel endpoint to abuse
- cross-role access (403): test_service_api.py::test_auth_401_403_404 (detail, token list),
  test_a_submitter_cannot_act_above_its_role (token create/revoke, audit, notes, overrides)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Tokens, make_settings
from fastapi.testclient import TestClient
from live_server import ROOT, free_port

from grader.api.app import create_app
from grader.config import Settings
from grader.service.ratelimit import AbuseLimits, AuthFailureTracker, TokenBucket

MLP = {"problem": "mlp", "code": "x = 1\n"}


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def app_client(tmp_path: Path, **overrides: object) -> tuple[TestClient, Tokens]:
    client = TestClient(create_app(make_settings(tmp_path / "data", **overrides), run_workers=False))
    client.__enter__()
    return client, Tokens(client.app.state.store)  # type: ignore[attr-defined]


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[TestClient]]:
    """Clients opened by a test, closed at teardown."""
    clients: list[TestClient] = []
    yield clients
    for c in clients:
        c.__exit__(None, None, None)


def total_submissions(client: TestClient, tokens: Tokens) -> int:
    """Counted through the API with an admin token from another address (never locked out or rate limited)."""
    admin = TestClient(client.app, client=("10.0.0.99", 1))  # type: ignore[arg-type]
    r = admin.get("/v1/submissions", headers=Tokens.auth(tokens.admin))
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def audit_actions(client: TestClient, tokens: Tokens, action: str) -> list[dict]:  # type: ignore[type-arg]
    admin = TestClient(client.app, client=("10.0.0.99", 1))  # type: ignore[arg-type]
    events = admin.get("/v1/audit", headers=Tokens.auth(tokens.admin)).json()
    return [e for e in events if e["action"] == action]


def metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the limiter on its own, with an injected clock ------------------------------------------------------------

def test_token_bucket_spends_its_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60.0, 3, clock=clock)  # one a second
    assert [bucket.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = bucket.take("a")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.0)
    assert bucket.take("b").allowed  # another key has its own bucket
    clock.advance(0.5)
    assert not bucket.take("a").allowed
    clock.advance(0.5)
    assert bucket.take("a").allowed and not bucket.take("a").allowed
    clock.advance(3600)
    assert [bucket.take("a").allowed for _ in range(4)] == [True, True, True, False]  # never above the burst


def test_token_bucket_memory_is_bounded_and_idle_keys_are_dropped() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60.0, 3, clock=clock, max_keys=1000)
    for i in range(50_000):  # a flood of distinct keys
        bucket.take(i)
    assert len(bucket) <= 1000
    clock.advance(3.0)  # every bucket has refilled: holding it would change nothing
    bucket.take("new")
    assert len(bucket) == 1


def test_auth_tracker_locks_out_once_per_window_and_forgets() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(3, 10.0, clock=clock)
    assert [tracker.failed("1.2.3.4") for _ in range(3)] == [None, None, 3]
    assert tracker.locked_for("1.2.3.4") == pytest.approx(10.0) and tracker.locked_for("5.6.7.8") == 0.0
    assert tracker.failed("1.2.3.4") is None  # still locked: not a second lockout to audit
    clock.advance(10.0)
    assert tracker.locked_for("1.2.3.4") == 0.0
    # Failures spread wider than the window never add up to a lockout.
    for _ in range(10):
        assert tracker.failed("9.9.9.9") is None
        clock.advance(5.0)
        assert tracker.failed("9.9.9.9") is None
        clock.advance(6.0)


def test_auth_tracker_memory_is_bounded() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(3, 10.0, clock=clock, max_keys=500)
    for i in range(20_000):
        tracker.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(tracker) <= 500
    clock.advance(10.0)
    tracker.failed("1.1.1.1")
    assert len(tracker) == 1


def test_a_limit_set_to_zero_is_off(tmp_path: Path) -> None:
    limits = AbuseLimits.from_settings(make_settings(tmp_path, rate_limit_requests_per_min=0,
                                                     rate_limit_submissions_per_min=0))
    assert limits.requests is None and limits.submissions is None


# -- token guessing --------------------------------------------------------------------------------------------

def test_token_guessing_is_locked_out_and_audited_once(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, auth_failure_limit=5, auth_failure_window_s=60.0)
    made.append(client)
    guesses = [client.get("/v1/problems", headers=Tokens.auth(f"grd_guess{i}")) for i in range(5)]
    assert [r.status_code for r in guesses] == [401] * 5
    r = client.get("/v1/problems", headers=Tokens.auth("grd_guess5"))
    assert r.status_code == 429 and "too many failed authentications" in r.json()["detail"], r.text
    assert 55 <= int(r.headers["retry-after"]) <= 60
    # A locked-out address is refused whatever it sends, so it cannot go on guessing: a valid token included,
    # and nothing it sends has an effect.
    r = client.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 429 and "retry-after" in r.headers
    for i in range(20):
        assert client.get("/v1/problems", headers=Tokens.auth(f"grd_more{i}")).status_code == 429
    # Another address with a valid token is served.
    elsewhere = TestClient(client.app, client=("10.1.2.3", 4000))  # type: ignore[arg-type]
    assert elsewhere.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens.submitter)).status_code == 202
    assert total_submissions(client, tokens) == 1
    events = audit_actions(client, tokens, "auth.locked_out")
    assert len(events) == 1 and events[0]["detail"] == {"address": "testclient", "failures": 5, "window_s": 60.0}
    assert metric(client, "grader_auth_failures_total") == 5  # 401s only: refused guesses are not looked up
    assert metric(client, 'grader_rate_limited_total{limit="auth_lockout"}') == 22


def test_a_missing_token_is_not_a_guess(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, auth_failure_limit=2)
    made.append(client)
    assert [client.get("/v1/problems").status_code for _ in range(5)] == [401] * 5
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 200


def with_clock(client: TestClient) -> FakeClock:
    """Give the client's app limits that run on a fake clock."""
    clock = FakeClock()
    client.app.state.abuse_limits = AbuseLimits.from_settings(client.app.state.settings,  # type: ignore[attr-defined]
                                                              clock=clock)
    return clock


def test_lockout_ends_after_the_window(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, auth_failure_limit=3, auth_failure_window_s=60.0)
    made.append(client)
    clock = with_clock(client)
    assert [client.get("/v1/problems", headers=Tokens.auth("grd_x")).status_code for _ in range(4)] == \
        [401, 401, 401, 429]
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 429
    clock.advance(59.9)
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 429
    clock.advance(0.1)
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 200
    # A fresh window: the next guesses are 401 again until the limit, and the second lockout is audited too.
    assert [client.get("/v1/problems", headers=Tokens.auth("grd_x")).status_code for _ in range(4)] == \
        [401, 401, 401, 429]
    assert len(audit_actions(client, tokens, "auth.locked_out")) == 2


def test_guesses_through_the_login_form_count_and_are_locked_out(tmp_path: Path, made: list[TestClient]) -> None:
    """The pages' sign-in form checks tokens too: guessing there is the same guessing, with the same lockout."""
    client, tokens = app_client(tmp_path, auth_failure_limit=3, auth_failure_window_s=60.0)
    made.append(client)
    answers = [client.post("/ui/login", data={"token": f"grd_guess{i}"}, follow_redirects=False).status_code
               for i in range(3)]
    assert answers == [401, 401, 401]
    r = client.post("/ui/login", data={"token": tokens.interviewer}, follow_redirects=False)
    assert r.status_code == 429 and "too many failed authentications" in r.text
    assert 55 <= int(r.headers["retry-after"]) <= 60
    assert "set-cookie" not in r.headers  # the valid token was not accepted from a locked-out address
    # The API is locked for that address as well, and the lockout was audited once.
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 429
    assert len(audit_actions(client, tokens, "auth.locked_out")) == 1


def test_a_flood_of_other_addresses_cannot_undo_a_lockout() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(3, 60.0, clock=clock, max_keys=100)
    assert [tracker.failed("6.6.6.6") for _ in range(3)] == [None, None, 3]
    for i in range(5_000):  # one failure from each of many addresses, the locked one the oldest entry
        tracker.failed(f"10.0.{i // 256}.{i % 256}")
        clock.advance(0.001)
    assert tracker.locked_for("6.6.6.6") == pytest.approx(55.0)
    assert len(tracker) <= 101
    clock.advance(55.1)
    assert tracker.locked_for("6.6.6.6") == 0.0


def test_when_every_entry_is_locked_new_addresses_share_one_lockout() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(2, 60.0, clock=clock, max_keys=4)
    for n in range(4):
        for _ in range(2):
            tracker.failed(f"6.6.6.{n}")
    assert all(tracker.locked_for(f"6.6.6.{n}") > 0 for n in range(4))
    assert tracker.failed("7.7.7.1") is None and tracker.locked_for("7.7.7.1") == 0.0  # counted, not locked yet
    assert tracker.failed("7.7.7.2") == 2  # the second failure beyond the table locks the overflow
    assert tracker.locked_for("7.7.7.3") == pytest.approx(60.0)  # every address without an entry of its own
    assert all(tracker.locked_for(f"6.6.6.{n}") > 0 for n in range(4)) and len(tracker) <= 5
    clock.advance(60.0)
    assert tracker.locked_for("7.7.7.3") == 0.0 and tracker.failed("8.8.8.8") is None


def test_an_ipv6_client_is_locked_out_by_its_slash_64(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, auth_failure_limit=3, auth_failure_window_s=60.0)
    made.append(client)
    for n in range(1, 4):  # one guess from each of three addresses of one /64
        guesser = TestClient(client.app, client=(f"2001:db8:0:7::{n}", 1))  # type: ignore[arg-type]
        assert guesser.get("/v1/problems", headers=Tokens.auth(f"grd_g{n}")).status_code == 401
    same = TestClient(client.app, client=("2001:db8:0:7:ffff::9", 1))  # type: ignore[arg-type]
    assert same.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 429
    other = TestClient(client.app, client=("2001:db8:0:8::1", 1))  # type: ignore[arg-type]
    assert other.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 200
    events = audit_actions(client, tokens, "auth.locked_out")
    assert [e["detail"]["address"] for e in events] == ["2001:db8:0:7::/64"]
    mapped = TestClient(client.app, client=("::ffff:192.0.2.1", 1))  # type: ignore[arg-type]
    plain = TestClient(client.app, client=("192.0.2.1", 1))  # type: ignore[arg-type]
    for c in (mapped, plain, mapped):
        c.get("/v1/problems", headers=Tokens.auth("grd_v4"))
    assert plain.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 429


def test_x_forwarded_for_does_not_move_a_client_out_of_its_lockout(tmp_path: Path, made: list[TestClient]) -> None:
    """In the app the address is the peer's (uvicorn rewrites it only for trusted proxies): a header does not
    give a guesser a new address per guess. The real server's side: test_x_forwarded_for_from_an_untrusted_peer."""
    client, tokens = app_client(tmp_path, auth_failure_limit=3, auth_failure_window_s=60.0)
    made.append(client)
    answers = [client.get("/v1/problems", headers={**Tokens.auth(f"grd_g{n}"), "X-Forwarded-For": f"198.51.100.{n}",
                                                   "Forwarded": f"for=198.51.100.{n}"}).status_code
               for n in range(4)]
    assert answers == [401, 401, 401, 429]


def test_a_stale_login_cookie_is_cleared_and_counts_once(tmp_path: Path, made: list[TestClient]) -> None:
    """A browser sends its cookie with every page: a revoked token in it must not lock its own user (and every
    one behind the same address) out after a few pages; it is cleared, and counted once per window."""
    client, tokens = app_client(tmp_path, auth_failure_limit=3, auth_failure_window_s=60.0)
    made.append(client)
    stale = client.post("/v1/tokens", json={"role": "interviewer", "name": "old"},
                        headers=Tokens.auth(tokens.admin)).json()
    client.delete(f"/v1/tokens/{stale['id']}", headers=Tokens.auth(tokens.admin))
    cookie = {"Cookie": f"grader_token={stale['token']}"}
    for path in ["/ui/submissions", "/ui/login", "/ui/compare"] * 4:
        r = client.get(path, headers=cookie, follow_redirects=False)
        assert r.status_code in (200, 303), (path, r.status_code)
        set_cookie = r.headers.get("set-cookie", "")
        assert set_cookie.startswith('grader_token=""') and "Max-Age=0" in set_cookie, (path, set_cookie)
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 200
    r = client.post("/ui/login", data={"token": tokens.interviewer}, headers=cookie, follow_redirects=False)
    assert r.status_code == 303 and tokens.interviewer in r.headers["set-cookie"]
    # A cookie that changes every time is guessing, and counts every time.
    answers = [client.get("/v1/problems", headers={"Cookie": f"grader_token=grd_guess{n}"}).status_code
               for n in range(3)]
    assert answers == [401, 401, 429]  # the stale cookie's one failure, then two guesses
    assert len(audit_actions(client, tokens, "auth.locked_out")) == 1


def test_a_full_disk_does_not_stop_reads(tmp_path: Path, made: list[TestClient]) -> None:
    """Writing a token's last_used_at is best effort: when the database cannot be written, the request goes on."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    client, tokens = app_client(tmp_path)
    made.append(client)
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    refused: list[str] = []

    def disk_full(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE TOKENS"):
            refused.append(statement)
            raise OperationalError(statement, None, sqlite3.OperationalError("database or disk is full"))

    event.listen(engine, "before_cursor_execute", disk_full)
    try:
        r = client.get("/v1/submissions", headers=Tokens.auth(tokens.submitter))  # never used: last_used_at due
        assert r.status_code == 200, r.text
        assert client.get("/v1/problems", headers=Tokens.auth(tokens.interviewer)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", disk_full)
    assert len(refused) == 2  # the write was tried, and failed, for each token
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).status_code == 200
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=Tokens.auth(tokens.admin)).json()}
    assert listed["ci-a"]["last_used_at"] is not None  # written once the disk has room again


# -- per-token rate limits -------------------------------------------------------------------------------------

def test_submission_burst_then_429_then_refill(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, rate_limit_submissions_burst=3, rate_limit_submissions_per_min=6)
    made.append(client)
    clock = FakeClock()
    client.app.state.abuse_limits = AbuseLimits.from_settings(client.app.state.settings,  # type: ignore[attr-defined]
                                                              clock=clock)
    mine = Tokens.auth(tokens.submitter)
    assert [client.post("/v1/submissions", json=MLP, headers=mine).status_code for _ in range(3)] == [202] * 3
    r = client.post("/v1/submissions", json=MLP, headers=mine)
    assert r.status_code == 429 and r.headers["retry-after"] == "10", r.text
    assert r.json() == {"error": "TooManyRequests", "detail": "too many submissions: this token may send 3 at once "
                                                              "and 6 per minute; retry in 10 s"}
    # Refused before the body is read: even a body that would be 413 or 400 is a 429, and nothing is created.
    assert client.post("/v1/submissions", content=b"{", headers=mine).status_code == 429
    assert total_submissions(client, tokens) == 3
    # Reads with the same token are not submissions, and another token has its own bucket.
    assert client.get("/v1/submissions", headers=mine).status_code == 200
    assert client.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens.other_submitter)).status_code == 202
    clock.advance(10.0)
    assert client.post("/v1/submissions", json=MLP, headers=mine).status_code == 202
    assert client.post("/v1/submissions", json=MLP, headers=mine).status_code == 429
    assert total_submissions(client, tokens) == 5
    assert metric(client, 'grader_rate_limited_total{limit="submissions"}') == 3


def test_request_rate_limit_per_token(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path, rate_limit_requests_per_min=5)
    made.append(client)
    clock = FakeClock()
    client.app.state.abuse_limits = AbuseLimits.from_settings(client.app.state.settings,  # type: ignore[attr-defined]
                                                              clock=clock)
    mine = Tokens.auth(tokens.submitter)
    assert [client.get("/v1/problems", headers=mine).status_code for _ in range(5)] == [200] * 5
    r = client.get("/v1/problems", headers=mine)
    assert r.status_code == 429 and r.headers["retry-after"] == "12"
    assert "5 requests per minute" in r.json()["detail"]
    r = client.post("/v1/submissions", json=MLP, headers=mine)  # every route counts, and no effect
    assert r.status_code == 429
    assert client.get("/v1/problems", headers=Tokens.auth(tokens.other_submitter)).status_code == 200
    clock.advance(12.0)
    assert client.get("/v1/problems", headers=mine).status_code == 200
    assert metric(client, 'grader_rate_limited_total{limit="requests"}') == 2


def test_default_limits_allow_a_burst_of_20(tmp_path: Path, made: list[TestClient]) -> None:
    client, tokens = app_client(tmp_path)
    made.append(client)
    mine = Tokens.auth(tokens.submitter)
    assert [client.post("/v1/submissions", json=MLP, headers=mine).status_code for _ in range(20)] == [202] * 20
    r = client.post("/v1/submissions", json=MLP, headers=mine)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2


def test_each_app_has_its_own_limits(tmp_path: Path, made: list[TestClient]) -> None:
    one, tokens_one = app_client(tmp_path / "one", rate_limit_submissions_burst=1)
    two, tokens_two = app_client(tmp_path / "two", rate_limit_submissions_burst=1)
    made += [one, two]
    assert one.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens_one.submitter)).status_code == 202
    assert two.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens_two.submitter)).status_code == 202
    assert one.app.state.abuse_limits is not two.app.state.abuse_limits  # type: ignore[attr-defined]


# -- bodies: multipart, many files, names ----------------------------------------------------------------------

def multipart(*parts: tuple[bytes, bytes, bytes | None], boundary: bytes = b"b0undary") -> bytes:
    out = b""
    for name, data, filename in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def post_multipart(client: TestClient, token: str, body: bytes,
                   content_type: str = "multipart/form-data; boundary=b0undary") -> httpx.Response:
    return client.post("/v1/submissions", content=body,
                       headers={**Tokens.auth(token), "Content-Type": content_type})


@pytest.mark.parametrize("body, content_type, words", [
    (b"abc", "multipart/form-data", "Missing boundary"),
    (b"garbage garbage", None, "malformed multipart body"),
    (b"--b0undary\r\nX-Other: y\r\n\r\nmlp\r\n--b0undary--\r\n", None, '"name" must be provided'),
    # Cut off before its closing boundary: the unfinished part is dropped, so the problem is missing.
    (b"--b0undary\r\nContent-Disposition: form-data; name=\"problem\"\r\n\r\nmlp", None, "problem: Field required"),
    (multipart((b"\xff", b"mlp", None)), None, "unknown form fields"),
    (multipart((b"problem", b"mlp", None), (b"files", b"x = 1", b"")), None, "file name '' is not allowed"),
])
def test_malformed_multipart_is_400_and_creates_nothing(client: TestClient, tokens: Tokens, body: bytes,
                                                        content_type: str | None, words: str) -> None:
    r = post_multipart(client, tokens.submitter, body, *([content_type] if content_type else []))
    assert r.status_code == 400 and words in r.json()["detail"], r.text
    assert total_submissions(client, tokens) == 0


def test_thousands_of_tiny_files_are_refused_at_the_limit(client: TestClient, tokens: Tokens) -> None:
    limit = client.app.state.settings.max_files  # type: ignore[attr-defined]
    files = [(b"files", b"", b"m%d.py" % i) for i in range(5000)]
    body = multipart((b"problem", b"mlp", None), (b"files", b"x = 1", b"solution.py"), *files)
    started = time.perf_counter()
    r = post_multipart(client, tokens.submitter, body)
    # The parser stops at the limit + 1 (form(max_files=...)): the 4983 files after it are never made.
    assert r.status_code == 400 and f"Maximum number of files is {limit + 1}" in r.json()["detail"], r.text
    r = client.post("/v1/submissions", headers=Tokens.auth(tokens.submitter),
                    json={"problem": "mlp", "files": {"solution.py": "x"} | {f"m{i}.py": "" for i in range(5000)}})
    assert r.status_code == 400 and r.json()["detail"] == f"too many files: 5001; the limit is {limit}"
    assert time.perf_counter() - started < 5.0
    assert total_submissions(client, tokens) == 0


TRAVERSALS = ["../x.py", "/etc/passwd", "a/../../b.py", "x\x00.py", "..\\x.py", "C:\\x.py", "sub\\x.py",
              "./helpers.py", "..", "/", "helpers.py/", "\\\\server\\share\\x.py", "h\u00e9lpers.py"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_path_traversal_and_bad_file_names_are_400(client: TestClient, tokens: Tokens, name: str) -> None:
    r = client.post("/v1/submissions", headers=Tokens.auth(tokens.submitter),
                    json={"problem": "mlp", "files": {"solution.py": "x = 1", name: "y = 2"}})
    assert r.status_code == 400 and "is not allowed" in r.json()["detail"], r.text
    raw_name = name.encode("utf-8").replace(b"\\", b"\\\\")  # a quoted-string escapes its backslashes
    for raw in (raw_name, name.encode("utf-8")):
        body = multipart((b"problem", b"mlp", None), (b"files", b"x = 1", b"solution.py"),
                         (b"files", b"y = 2", raw))
        r = post_multipart(client, tokens.submitter, body)
        assert r.status_code == 400 and "not allowed" in r.json()["detail"], (raw, r.text)
    assert total_submissions(client, tokens) == 0


@pytest.mark.parametrize("raw_name", [b"\xff\xfe.py", b"sol\xc3.py", b"ok.py\xed\xa0\x80"])
def test_file_names_that_are_not_utf8_are_400(client: TestClient, tokens: Tokens, raw_name: bytes) -> None:
    body = multipart((b"problem", b"mlp", None), (b"files", b"x = 1", b"solution.py"), (b"files", b"y", raw_name))
    r = post_multipart(client, tokens.submitter, body)
    assert r.status_code == 400 and "is not allowed" in r.json()["detail"], r.text
    r = client.post("/v1/submissions", headers={**Tokens.auth(tokens.submitter), "Content-Type": "application/json"},
                    content=b'{"problem": "mlp", "files": {"solution.py": "x", "\xff.py": "y"}}')
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"], r.text
    assert total_submissions(client, tokens) == 0


# -- cross-submission and cross-role ---------------------------------------------------------------------------

def test_a_submitter_cannot_reach_another_submitters_submission(client: TestClient, tokens: Tokens) -> None:
    sid = client.post("/v1/submissions", json=MLP, headers=Tokens.auth(tokens.submitter)).json()["id"]
    theirs = Tokens.auth(tokens.other_submitter)
    for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/report", f"/v1/submissions/{sid}/report.html",
                 f"/v1/submissions/{sid}/report.junit.xml"):
        r = client.get(path, headers=theirs)
        assert r.status_code == 404, (path, r.text)
        fake = "0" * len(sid)  # the same answer as an id that does not exist: ids do not leak
        unknown = client.get(path.replace(sid, fake), headers=theirs)
        assert unknown.status_code == 404 and unknown.json()["detail"].replace(fake, sid) == r.json()["detail"]
    assert sid not in client.get("/v1/submissions.csv", headers=theirs).text
    assert client.get("/v1/submissions", headers=theirs).json()["total"] == 0
    # Notes and overrides need the interviewer role: 403 whoever owns the submission, no event recorded.
    r = client.post(f"/v1/submissions/{sid}/notes", json={"text": "mine now"}, headers=theirs)
    assert r.status_code == 403
    r = client.post(f"/v1/submissions/{sid}/overrides", headers=theirs,
                    json={"test_id": "affine_forward", "points": 99, "reason": "x"})
    assert r.status_code == 403
    detail = client.get(f"/v1/submissions/{sid}/detail", headers=Tokens.auth(tokens.interviewer)).json()
    assert detail["notes"] == [] and detail["overrides"] == []


def test_a_submitter_cannot_act_above_its_role(client: TestClient, tokens: Tokens) -> None:
    mine = Tokens.auth(tokens.submitter)
    before = client.get("/v1/tokens", headers=Tokens.auth(tokens.admin)).json()
    for role in ("submitter", "admin"):
        r = client.post("/v1/tokens", json={"role": role, "name": "escalate"}, headers=mine)
        assert r.status_code == 403 and "admin role" in r.json()["detail"]
    assert client.post("/v1/tokens", json={"role": "admin"}, headers=Tokens.auth(tokens.interviewer)).status_code == 403
    assert client.delete(f"/v1/tokens/{before[0]['id']}", headers=mine).status_code == 403
    assert client.get("/v1/tokens", headers=mine).status_code == 403
    assert client.get("/v1/audit", headers=mine).status_code == 403
    after = client.get("/v1/tokens", headers=Tokens.auth(tokens.admin)).json()
    assert [(t["id"], t["revoked_at"]) for t in after] == [(t["id"], t["revoked_at"]) for t in before]
    assert audit_actions(client, tokens, "token.created") and \
        all(e["detail"]["name"] != "escalate" for e in audit_actions(client, tokens, "token.created"))


# -- slow clients against a real server ------------------------------------------------------------------------

SERVER = """
import sys, uvicorn
from grader.api.app import create_app
from grader.api.server_limits import uvicorn_options
from grader.config import Settings
from grader.service.auth import create_token
port, token_file, head_s, body_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
body_min_bytes = int(sys.argv[5])
settings = Settings()
app = create_app(settings, run_workers=False)
with open(token_file, "w") as f:
    f.write(create_token(app.state.store, "submitter", "normal").token)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
            **uvicorn_options(settings, head_timeout_s=head_s, body_timeout_s=body_s, body_min_bytes=body_min_bytes))
"""


class Server:
    def __init__(self, tmp_path: Path, *, head_s: float, body_s: float | None = None, body_min_bytes: int = 1024,
                 **env: str) -> None:
        self.port = free_port()
        token_file = tmp_path / "token"
        environment = {**os.environ, "GRADER_DATA_DIR": str(tmp_path / "data"), "GRADER_WORKERS": "0", **env}
        environment.pop("GRADER_DATABASE_URL", None)
        self.log = open(tmp_path / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port), str(token_file), str(head_s),
                                      str(head_s if body_s is None else body_s), str(body_min_bytes)],
                                     cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        self.token = token_file.read_text()

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A connection from `source`, a loopback address (127.0.0.0/8): 127.0.0.1 is a trusted proxy for uvicorn
        (FORWARDED_ALLOW_IPS' default), so not capped per peer; the others are ordinary clients."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(source, 0))

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10,
                            transport=httpx.HTTPTransport(local_address=source))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


def closed_within(sock: socket.socket, timeout_s: float) -> float | None:
    """Seconds until the server closed `sock` (whatever it sent first), or None if still open after timeout_s."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


SLOW_CONNECTIONS = 100
HEAD_TIMEOUT_S = 3.0
SLOW_HOST = "127.0.0.2"  # one host, not a trusted proxy: capped at per_peer_limit(100) = 10 connections


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """One HTTP response (head and a Content-Length body) from `sock`."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed within a response body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slowloris_does_not_starve_a_normal_client(tmp_path: Path, server_factory: list[Server]) -> None:
    """As many slow connections from one host as the server accepts in all (max_connections): without the
    per-peer cap every other client would be answered 503 until the head deadline closed them, and without the
    deadline, for good."""
    server = Server(tmp_path, head_s=HEAD_TIMEOUT_S, GRADER_MAX_CONNECTIONS=str(SLOW_CONNECTIONS))
    server_factory.append(server)
    head = b"GET /v1/problems HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    slow = [server.connect(SLOW_HOST) for _ in range(SLOW_CONNECTIONS)]
    opened = time.monotonic()
    stop = threading.Event()
    closed_at: dict[int, float] = {}

    def drip() -> None:  # one byte per connection every 0.1 s: each would take 23 s to send its head
        for i in range(len(head)):
            for n, s in enumerate(slow):
                if n in closed_at:
                    continue
                try:
                    s.send(head[i:i + 1])
                except OSError:
                    closed_at[n] = time.monotonic() - opened
            if stop.wait(0.1):
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    latencies_s = []
    with server.client("127.0.0.3") as normal:
        for _ in range(40):
            started = time.perf_counter()
            r = normal.get("/v1/problems", headers=Tokens.auth(server.token))
            latencies_s.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            time.sleep(0.05)
    # Every slow connection is closed: beyond the per-peer cap at once, the others by the head deadline,
    # although they kept sending.
    for n, s in enumerate(slow):
        if n not in closed_at:
            left = HEAD_TIMEOUT_S + 5.0 - (time.monotonic() - opened)
            waited = closed_within(s, max(0.1, left))
            assert waited is not None, f"slow connection {n} still open {HEAD_TIMEOUT_S + 5} s after it opened"
            closed_at[n] = time.monotonic() - opened
        s.close()
    stop.set()
    dripper.join(5)
    held = [t for t in closed_at.values() if t >= HEAD_TIMEOUT_S - 0.5]
    refused = [t for t in closed_at.values() if t < HEAD_TIMEOUT_S - 0.5]
    p95_s = sorted(latencies_s)[int(0.95 * len(latencies_s)) - 1]
    print(f"\nslowloris: {SLOW_CONNECTIONS} connections from one host dripping headers; normal GET /v1/problems "
          f"x{len(latencies_s)}: median {statistics.median(latencies_s) * 1000:.1f} ms, p95 {p95_s * 1000:.1f} ms, "
          f"max {max(latencies_s) * 1000:.1f} ms; {len(refused)} refused over the per-peer cap, {len(held)} closed "
          f"after {min(held):.2f}..{max(held):.2f} s (head deadline {HEAD_TIMEOUT_S} s)")
    assert p95_s < 1.0 and max(latencies_s) < 3.0
    assert 1 <= len(held) <= SLOW_CONNECTIONS // 10 and len(refused) >= SLOW_CONNECTIONS - SLOW_CONNECTIONS // 10
    assert max(held) <= HEAD_TIMEOUT_S + 5.0


def test_one_host_is_capped_while_another_is_served(tmp_path: Path, server_factory: list[Server]) -> None:
    server = Server(tmp_path, head_s=30.0, GRADER_MAX_CONNECTIONS="40")  # per_peer_limit(40) = 8
    server_factory.append(server)
    held = [server.connect("127.0.0.2") for _ in range(8)]
    extra = server.connect("127.0.0.2")
    answer = read_response(extra, 5.0)
    assert answer.startswith(b"HTTP/1.1 503") and b"too many connections from 127.0.0.2" in answer, answer
    assert closed_within(extra, 5.0) is not None
    with server.client("127.0.0.3") as other:
        assert other.get("/healthz").status_code == 200
    with server.client("127.0.0.1") as proxy:  # a trusted proxy carries many clients: not capped
        assert proxy.get("/healthz").status_code == 200
    for s in held:
        s.close()
    deadline = time.monotonic() + 10  # the server counts the closed ones down as it notices them
    while True:
        try:
            with server.client("127.0.0.2") as again:
                if again.get("/healthz").status_code == 200:
                    break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the host's connections were not counted down after they closed"
        time.sleep(0.05)


def test_the_head_deadline_holds_after_a_body_answered_early(tmp_path: Path, server_factory: list[Server]) -> None:
    """A POST answered 401 before its body is read; the client then sends the body (h11 goes back to IDLE
    unseen) and drips the next head: that head is held to the head deadline, not to the body's."""
    server = Server(tmp_path, head_s=1.5, body_s=30.0, GRADER_HTTP_KEEPALIVE_S="30")
    server_factory.append(server)
    sock = server.connect("127.0.0.2")
    sock.sendall(b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 10\r\n\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 401")
    sock.sendall(b'{"a": 12}\n')
    started = time.monotonic()
    closed = None
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        try:
            sock.send(bytes([byte]))
        except OSError:
            closed = time.monotonic() - started
            break
        if closed_within(sock, 0.2) is not None:
            closed = time.monotonic() - started
            break
    assert closed is not None and closed < 1.5 + 2.0, f"the dripped head was not closed at the head deadline: {closed}"
    # And an idle connection after such a body is closed as well (uvicorn's keep-alive timer was disarmed by it).
    idle = server.connect("127.0.0.2")
    idle.sendall(b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert read_response(idle).startswith(b"HTTP/1.1 401")
    idle.sendall(b"0123456789")
    started = time.monotonic()
    assert closed_within(idle, 10.0) is not None and time.monotonic() - started < 1.5 + 2.0
    sock.close()
    idle.close()


def test_x_forwarded_for_from_an_untrusted_peer(tmp_path: Path, server_factory: list[Server]) -> None:
    """uvicorn takes X-Forwarded-For only from FORWARDED_ALLOW_IPS (127.0.0.1 here): a client elsewhere cannot
    dodge its lockout by naming a new address in each guess, while a trusted proxy's clients are told apart."""
    server = Server(tmp_path, head_s=HEAD_TIMEOUT_S, GRADER_AUTH_FAILURE_LIMIT="3")
    server_factory.append(server)
    with server.client("127.0.0.2") as guesser:
        answers = [guesser.get("/v1/problems", headers={**Tokens.auth(f"grd_g{n}"),
                                                        "X-Forwarded-For": f"198.51.100.{n}"}).status_code
                   for n in range(4)]
        assert answers == [401, 401, 401, 429]
        assert guesser.get("/v1/problems", headers={**Tokens.auth(server.token),
                                                    "X-Forwarded-For": "198.51.100.77"}).status_code == 429
    with server.client("127.0.0.1") as proxy:
        r = proxy.get("/v1/problems", headers={**Tokens.auth(server.token), "X-Forwarded-For": "127.0.0.2"})
        assert r.status_code == 429  # the proxy says the client is the locked-out one: believed
        r = proxy.get("/v1/problems", headers={**Tokens.auth(server.token), "X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 200


def test_a_slow_steady_upload_is_read_and_a_stalled_one_is_408(tmp_path: Path, server_factory: list[Server]) -> None:
    """The body must move at a minimum rate (here 200 bytes a second), not finish by a fixed deadline."""
    server = Server(tmp_path, head_s=HEAD_TIMEOUT_S, body_s=1.0, body_min_bytes=200)
    server_factory.append(server)
    body = json.dumps({"problem": "mlp", "code": "x = 1\n" + "#" * 4000 + "\n"}).encode()
    head = (b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + server.token.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    steady = server.connect("127.0.0.2")
    steady.sendall(head)
    started = time.monotonic()
    for i in range(0, len(body), 200):  # 800 bytes a second, for about 5 s: many times the 1 s window
        steady.sendall(body[i:i + 200])
        time.sleep(0.25)
    assert time.monotonic() - started > 4.0
    answer = read_response(steady)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    stalled = server.connect("127.0.0.2")
    stalled.sendall(head + body[:300])  # a fair start, then nothing
    started = time.monotonic()
    answer = read_response(stalled, 10.0)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert 1.0 <= time.monotonic() - started <= 1.0 * 2 + 2.0
    assert closed_within(stalled, 5.0) is not None
    listed = httpx.get(f"http://127.0.0.1:{server.port}/v1/submissions", headers=Tokens.auth(server.token))
    assert listed.json()["total"] == 1  # the steady upload only
    steady.close()
    stalled.close()


def test_idle_and_oversized_connections_are_closed(tmp_path: Path, server_factory: list[Server]) -> None:
    server = Server(tmp_path, head_s=HEAD_TIMEOUT_S, GRADER_HTTP_KEEPALIVE_S="1")
    server_factory.append(server)
    silent = server.connect()  # connects and never sends a byte
    kept = server.connect()  # one request, then idle on its keep-alive connection
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    kept.settimeout(10)
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    waited = closed_within(kept, 10.0)
    assert waited is not None and time.monotonic() - started < 1.0 + 2.0, "idle keep-alive not closed"
    waited = closed_within(silent, 10.0)
    assert waited is not None and HEAD_TIMEOUT_S - 2.0 <= time.monotonic() - started <= HEAD_TIMEOUT_S + 3.0
    # A head over the size cap is answered 431 and closed at once, not buffered, in one write or dripped.
    big = server.connect()
    big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
    big.settimeout(10)
    answer = big.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert closed_within(big, 5.0) is not None
    dripped = server.connect()
    dripped.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _ in range(20):
        dripped.sendall(b"X-Big: " + b"a" * 1000 + b"\r\n")
    dripped.settimeout(10)
    assert dripped.recv(65536).startswith(b"HTTP/1.1 431")
    # Just under the cap is served.
    fits = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: "
    fits += b"a" * (16 * 1024 - len(fits) - 4) + b"\r\n\r\n"
    ok = server.connect()
    ok.sendall(fits)
    ok.settimeout(10)
    assert ok.recv(65536).startswith(b"HTTP/1.1 200")
    # A body that stops half way is closed at the body deadline; nothing is created.
    body = b'{"problem": "mlp", "code": "x = 1"}'
    half = server.connect()
    half.sendall(b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + server.token.encode() + b"\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    started = time.monotonic()
    assert closed_within(half, HEAD_TIMEOUT_S + 5.0) is not None
    assert time.monotonic() - started >= HEAD_TIMEOUT_S - 0.5
    listed = httpx.get(f"http://127.0.0.1:{server.port}/v1/submissions", headers=Tokens.auth(server.token))
    assert listed.json()["total"] == 0
    for s in (silent, kept, big, dripped, ok, half):
        s.close()


def test_connections_beyond_the_limit_get_503(tmp_path: Path, server_factory: list[Server]) -> None:
    server = Server(tmp_path, head_s=HEAD_TIMEOUT_S, GRADER_MAX_CONNECTIONS="20")
    server_factory.append(server)
    held = [server.connect() for _ in range(20)]  # from a trusted proxy's address: not capped per peer
    url = f"http://127.0.0.1:{server.port}/healthz"
    deadline = time.monotonic() + 10  # until the server has taken every held connection in
    while (status := httpx.get(url, timeout=5).status_code) != 503:
        assert time.monotonic() < deadline, f"answered {status} with 20 connections held"
        time.sleep(0.05)
    for s in held:
        s.close()
    deadline = time.monotonic() + 10  # until it has noticed they closed
    while (status := httpx.get(url, timeout=5).status_code) != 200:
        assert status == 503 and time.monotonic() < deadline, status
        time.sleep(0.05)


def test_settings_reach_the_server_options(tmp_path: Path) -> None:
    from grader.api.server_limits import GuardedH11Protocol, uvicorn_options

    settings = Settings(data_dir=tmp_path, max_connections=7, http_keepalive_s=3.0)
    options = uvicorn_options(settings)
    assert options["limit_concurrency"] == 7 and options["timeout_keep_alive"] == 3.0
    assert issubclass(options["http"], GuardedH11Protocol) and options["h11_max_incomplete_event_size"] == 16 * 1024
    assert options["http"].per_peer_connections == 8  # per_peer_limit: a tenth of max_connections, at least 8
    assert uvicorn_options(settings.model_copy(update={"max_connections": 1000}))["http"].per_peer_connections == 100
    short = uvicorn_options(settings, head_timeout_s=1.0)["http"]
    assert issubclass(short, GuardedH11Protocol) and short.head_timeout_s == 1.0
