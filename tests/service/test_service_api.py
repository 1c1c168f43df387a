"""The HTTP API in process (TestClient, real SQLite file, real migrations, real worker pool, stand-in grader)."""

from __future__ import annotations

import json
import threading

from conftest import Tokens, standin_grade, wait_for_status
from fastapi.testclient import TestClient

from grader.api.app import create_app
from grader.config import Settings
from grader.engine.report import Report

MLP_ALL = "# affine_forward affine_backward affine_gradcheck relu_forward relu_backward softmax\n"


def submit(client: TestClient, token: str, **body: object) -> dict:  # type: ignore[type-arg]
    payload = {"problem": "mlp", "code": "x = 1\n", **body}
    r = client.post("/v1/submissions", json=payload, headers=Tokens.auth(token))
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def test_submit_answers_202_with_links_then_grades(client: TestClient, tokens: Tokens) -> None:
    created = submit(client, tokens.submitter, code="affine_forward = 1\n", candidate="ada")
    assert created["status"] in ("queued", "running", "done")
    assert created["links"]["report"] == f"/v1/submissions/{created['id']}/report"
    done = wait_for_status(client, created["id"], tokens.submitter)
    assert done["status"] == "done"
    assert done["score"] == 8.0 and done["final_score"] is None  # submitters never see overrides
    assert done["tests"] >= 2 and done["passed"] == 1


def test_report_views_by_role(client: TestClient, tokens: Tokens) -> None:
    sid = submit(client, tokens.submitter)["id"]
    wait_for_status(client, sid, tokens.submitter)
    full = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.interviewer)).json()
    mine = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.submitter)).json()
    hidden_full = [t for t in full["tests"] if t["hidden"]]
    hidden_mine = [t for t in mine["tests"] if t["hidden"]]
    assert hidden_full and hidden_full[0]["details"] == {"secret": "hidden input"}
    assert hidden_mine[0]["message"] == "hidden test" and hidden_mine[0]["details"] == {}
    assert hidden_mine[0]["counterexample"] is None and hidden_mine[0]["status"] == hidden_full[0]["status"]


def test_auth_401_403_404(client: TestClient, tokens: Tokens) -> None:
    sid = submit(client, tokens.submitter)["id"]
    r = client.get(f"/v1/submissions/{sid}")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/v1/submissions/{sid}", headers=Tokens.auth("grd_nope")).status_code == 401
    r = client.get(f"/v1/submissions/{sid}/detail", headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 403 and "interviewer" in r.json()["detail"]
    assert client.get("/v1/tokens", headers=Tokens.auth(tokens.interviewer)).status_code == 403
    r = client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(tokens.other_submitter))
    assert r.status_code == 404
    assert client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.other_submitter)).status_code == 404
    listed = client.get("/v1/submissions", headers=Tokens.auth(tokens.other_submitter)).json()
    assert listed["total"] == 0
    assert client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(tokens.interviewer)).status_code == 200


def test_revoked_token_gets_401(client: TestClient, tokens: Tokens) -> None:
    made = client.post("/v1/tokens", json={"role": "submitter", "name": "temp"}, headers=Tokens.auth(tokens.admin))
    assert made.status_code == 201
    raw, tid = made.json()["token"], made.json()["id"]
    assert client.get("/v1/problems", headers=Tokens.auth(raw)).status_code == 200
    listed = client.get("/v1/tokens", headers=Tokens.auth(tokens.admin)).json()
    assert all("token" not in t for t in listed) and any(t["id"] == tid for t in listed)
    assert client.delete(f"/v1/tokens/{tid}", headers=Tokens.auth(tokens.admin)).status_code == 200
    assert client.get("/v1/problems", headers=Tokens.auth(raw)).status_code == 401


def test_token_is_stored_hashed(client: TestClient, tokens: Tokens) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    raw_db = store.url.removeprefix("sqlite:///")
    data = open(raw_db, "rb").read() + b"".join(open(raw_db + s, "rb").read() for s in ("-wal",)
                                                  if __import__("os").path.exists(raw_db + s))
    assert tokens.admin.encode() not in data and tokens.submitter.encode() not in data


def test_idempotency_key_returns_the_same_submission(client: TestClient, tokens: Tokens) -> None:
    headers = {**Tokens.auth(tokens.submitter), "Idempotency-Key": "ci-run-42"}
    body = {"problem": "mlp", "code": "x = 1\n"}
    first = client.post("/v1/submissions", json=body, headers=headers)
    again = client.post("/v1/submissions", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/submissions", json={**body, "code": "y = 2\n"}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    # Keys are per token: another submitter's same key is a different submission.
    theirs = client.post("/v1/submissions", json=body,
                         headers={**Tokens.auth(tokens.other_submitter), "Idempotency-Key": "ci-run-42"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    total = client.get("/v1/submissions", headers=Tokens.auth(tokens.interviewer)).json()["total"]
    assert total == 2


def test_list_filters_and_pagination(client: TestClient, tokens: Tokens) -> None:
    ids = [submit(client, tokens.submitter, candidate=c)["id"] for c in ("ada", "bob", "ada")]
    for sid in ids:
        wait_for_status(client, sid, tokens.submitter)
    h = Tokens.auth(tokens.interviewer)
    page = client.get("/v1/submissions", params={"candidate": "ada"}, headers=h).json()
    assert page["total"] == 2 and [i["id"] for i in page["items"]] == [ids[2], ids[0]]  # newest first
    assert client.get("/v1/submissions", params={"status": "queued"}, headers=h).json()["total"] == 0
    assert client.get("/v1/submissions", params={"problem": "rnn"}, headers=h).json()["total"] == 0
    first = client.get("/v1/submissions", params={"limit": 2}, headers=h).json()
    rest = client.get("/v1/submissions", params={"limit": 2, "offset": 2}, headers=h).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == ids[::-1]
    created = first["items"][0]["created_at"]
    after = client.get("/v1/submissions", params={"created_after": created}, headers=h).json()
    assert after["total"] == 1
    before = client.get("/v1/submissions", params={"created_before": "2000-01-01T00:00:00Z"}, headers=h).json()
    assert before["total"] == 0
    r = client.get("/v1/submissions", params={"status": "bogus"}, headers=h)
    assert r.status_code == 422 and "status" in r.json()["detail"]


def test_problems(client: TestClient, tokens: Tokens) -> None:
    listed = client.get("/v1/problems", headers=Tokens.auth(tokens.submitter)).json()
    assert any(p["id"] == "mlp" for p in listed)
    mine = client.get("/v1/problems/mlp", headers=Tokens.auth(tokens.submitter)).json()
    assert "def affine_forward" in mine["template"] and mine["statement"]
    theirs = client.get("/v1/problems/mlp", headers=Tokens.auth(tokens.interviewer)).json()
    assert len(theirs["tests"]) == theirs["test_count"] == mine["test_count"]
    # A submitter sees exactly the tests that are not hidden, in the same order, with their points.
    assert mine["tests"] == [t for t in theirs["tests"] if not t["hidden"]]
    assert 0 < len(mine["tests"]) < mine["test_count"]
    r = client.get("/v1/problems/nope", headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 404 and "mlp" in r.json()["detail"]


def test_notes_overrides_and_audit(client: TestClient, tokens: Tokens) -> None:
    sid = submit(client, tokens.submitter, code=MLP_ALL)["id"]
    done = wait_for_status(client, sid, tokens.submitter)
    h = Tokens.auth(tokens.interviewer)
    report = client.get(f"/v1/submissions/{sid}/report", headers=h).json()
    failed = next(t for t in report["tests"] if t["status"] == "failed")
    assert client.post(f"/v1/submissions/{sid}/notes", json={"text": "good structure"}, headers=h).status_code == 201
    r = client.post(f"/v1/submissions/{sid}/overrides", headers=h,
                    json={"test_id": failed["id"], "points": failed["points"], "reason": "tie convention"})
    assert r.status_code == 201 and r.json()["previous_points"] == 0
    bad = client.post(f"/v1/submissions/{sid}/overrides", headers=h,
                      json={"test_id": failed["id"], "points": failed["points"] + 1, "reason": "x"})
    assert bad.status_code == 400 and "between 0 and" in bad.json()["detail"]
    nope = client.post(f"/v1/submissions/{sid}/overrides", headers=h,
                       json={"test_id": "nope", "points": 0, "reason": "x"})
    assert nope.status_code == 400 and "its tests are" in nope.json()["detail"]
    empty = client.post(f"/v1/submissions/{sid}/overrides", headers=h,
                        json={"test_id": failed["id"], "points": 0, "reason": "  "})
    assert empty.status_code == 400 and "reason" in empty.json()["detail"]
    detail = client.get(f"/v1/submissions/{sid}/detail", headers=h).json()
    assert detail["submission"]["final_score"] == done["score"] + failed["points"]
    assert detail["report"]["score"] == done["score"]  # the grader's verdict is kept as graded
    assert detail["effective_points"][failed["id"]] == failed["points"]
    assert [n["text"] for n in detail["notes"]] == ["good structure"]
    actions = [e["action"] for e in detail["audit"]]
    assert actions == ["submission.created", "submission.graded", "note.added", "override.set"]
    assert detail["files"] == {"solution.py": MLP_ALL}
    assert client.post(f"/v1/submissions/{sid}/notes", json={"text": "x"},
                       headers=Tokens.auth(tokens.submitter)).status_code == 403
    log = client.get("/v1/audit", headers=Tokens.auth(tokens.admin)).json()
    assert log[0]["action"] == "override.set"


def test_report_html_and_junit(client: TestClient, tokens: Tokens) -> None:
    sid = submit(client, tokens.submitter, code="print('<script>alert(1)</script>')\n")["id"]
    wait_for_status(client, sid, tokens.submitter)
    h = Tokens.auth(tokens.submitter)
    html = client.get(f"/v1/submissions/{sid}/report.html", headers=h)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)</script>" not in html.text and "&lt;script&gt;" in html.text
    assert "script-src" in html.headers["content-security-policy"] or \
        "default-src" in html.headers["content-security-policy"]
    junit = client.get(f"/v1/submissions/{sid}/report.junit.xml", headers=h)
    assert junit.status_code == 200 and junit.headers["content-type"].startswith("application/xml")
    assert junit.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="mlp"')


def test_report_before_grading_is_409(settings: Settings, gate: threading.Event) -> None:
    def blocking_grade(*args: object) -> Report:
        gate.wait(20)
        return standin_grade(*args)  # type: ignore[arg-type]

    with TestClient(create_app(settings, grade=blocking_grade)) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        sid = submit(client, tokens.submitter)["id"]
        wait_for_status(client, sid, tokens.submitter, ("running",))
        r = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.submitter))
        assert r.status_code == 409 and "status running" in r.json()["detail"]
        gate.set()
        assert wait_for_status(client, sid, tokens.submitter)["status"] == "done"
        assert client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.submitter)).status_code == 200


def test_healthz_and_metrics(client: TestClient, tokens: Tokens) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    sid = submit(client, tokens.submitter)["id"]
    wait_for_status(client, sid, tokens.submitter)
    text = client.get("/metrics").text
    assert 'grader_queue_depth{status="done"} 1' in text
    assert "grader_grading_duration_seconds_count 1" in text
    assert 'grader_gradings_total{outcome="graded"} 1' in text
    assert "grader_submissions_accepted_total 1" in text


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/submissions"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert json.dumps(spec)  # serializable, no stray objects


def test_the_page_and_the_api_show_one_overridden_score(client: TestClient, tokens: Tokens) -> None:
    """The score after overrides is computed once (grader.service.submissions.overridden_score)."""
    from grader.reports.html import format_points

    sid = submit(client, tokens.submitter, code="# affine_forward relu_forward\n")["id"]
    wait_for_status(client, sid, tokens.submitter)
    h = Tokens.auth(tokens.interviewer)
    failed = [t for t in client.get(f"/v1/submissions/{sid}/report", headers=h).json()["tests"]
              if t["status"] == "failed"]
    for test, points in zip(failed, (0.1, 0.2, 0.7)):  # float sums that are not exact
        r = client.post(f"/v1/submissions/{sid}/overrides", headers=h,
                        json={"test_id": test["id"], "points": min(points, test["points"]), "reason": "partial"})
        assert r.status_code == 201
    detail = client.get(f"/v1/submissions/{sid}/detail", headers=h).json()
    final = detail["submission"]["final_score"]
    assert final == round(detail["report"]["score"] + sum(detail["effective_points"][t["id"]] for t in failed), 6)
    assert client.post("/ui/login", data={"token": tokens.interviewer}, follow_redirects=False).status_code == 303
    page = client.get(f"/ui/submissions/{sid}")
    assert page.status_code == 200
    assert f'<div class="big">{format_points(final)}<span' in page.text
    listing = client.get("/ui/submissions").text
    assert (f'<td class="num" data-label="Score">{format_points(final)} / '
            f'{format_points(detail["report"]["max_score"])} <span class="badge overridden"') in listing
