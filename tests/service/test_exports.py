"""What leaves the system agrees with what interviewers decided: overrides in every interviewer's export."""

from __future__ import annotations

from conftest import Tokens, wait_for_status
from fastapi.testclient import TestClient

from grader.service import submissions as subs
from grader.service.auth import authenticate

MLP_ALL = "# affine_forward affine_backward affine_gradcheck relu_forward relu_backward softmax\n"


def _submit(client: TestClient, token: str, code: str = MLP_ALL, **extra: object) -> str:
    r = client.post("/v1/submissions", json={"problem": "mlp", "code": code, **extra}, headers=Tokens.auth(token))
    assert r.status_code == 202, r.text
    sid: str = r.json()["id"]
    wait_for_status(client, sid, token)
    return sid


def _failed_test(client: TestClient, tokens: Tokens, sid: str) -> dict:  # type: ignore[type-arg]
    report = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.interviewer)).json()
    return next(t for t in report["tests"] if t["status"] == "failed")  # type: ignore[no-any-return]


def _override(client: TestClient, tokens: Tokens, sid: str, test_id: str, points: float, reason: str) -> None:
    r = client.post(f"/v1/submissions/{sid}/overrides", headers=Tokens.auth(tokens.interviewer),
                    json={"test_id": test_id, "points": points, "reason": reason})
    assert r.status_code == 201, r.text


def test_report_view_carries_overrides_for_interviewers_only(client: TestClient, tokens: Tokens) -> None:
    sid = _submit(client, tokens.submitter)
    failed = _failed_test(client, tokens, sid)
    store = client.app.state.store  # type: ignore[attr-defined]
    ivy, ada = authenticate(store, tokens.interviewer), authenticate(store, tokens.submitter)
    before = subs.get_report(store, ivy, sid)
    assert before.overrides == [] and before.final_score == before.graded_score == before.report.score
    _override(client, tokens, sid, failed["id"], failed["points"] / 2, "half: the tie convention was ambiguous")
    _override(client, tokens, sid, failed["id"], failed["points"], "full: the statement allowed it")
    view = subs.get_report(store, ivy, sid)
    assert [(o.test_id, o.points) for o in view.overrides] == [(failed["id"], failed["points"] / 2),
                                                                (failed["id"], failed["points"])]
    assert view.graded_score == view.report.score == before.graded_score
    assert view.final_score == view.graded_score + failed["points"]
    mine = subs.get_report(store, ada, sid)
    assert mine.overrides == [] and mine.final_score is None and mine.graded_score == view.graded_score
