"""What leaves the system agrees with what interviewers decided: overrides in every interviewer's export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Tokens, make_settings, standin_grade, wait_for_status
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


def test_an_override_reaches_the_json_report_the_junit_and_the_list(client: TestClient, tokens: Tokens) -> None:
    import xml.etree.ElementTree as ET

    sid = _submit(client, tokens.submitter)
    other = _submit(client, tokens.submitter, code="# affine_forward\n")
    failed = _failed_test(client, tokens, sid)
    h = Tokens.auth(tokens.interviewer)
    graded = client.get(f"/v1/submissions/{sid}/report", headers=h).json()
    assert graded["overrides"] == [] and graded["final_score"] == graded["graded_score"] == graded["score"]
    assert all(t["earned"] == t["final_earned"] and not t["overridden"] for t in graded["tests"])
    _override(client, tokens, sid, failed["id"], failed["points"], "the statement allowed this tie convention")

    report = client.get(f"/v1/submissions/{sid}/report", headers=h).json()
    final = graded["score"] + failed["points"]
    # `score` and `earned` are the grader's in every export; the decision stands beside them
    assert report["graded_score"] == report["score"] == graded["score"] and report["final_score"] == final
    assert [(o["test_id"], o["points"], o["reason"]) for o in report["overrides"]] == \
        [(failed["id"], failed["points"], "the statement allowed this tie convention")]
    test = next(t for t in report["tests"] if t["id"] == failed["id"])
    assert (test["earned"], test["final_earned"], test["overridden"]) == (0, failed["points"], True)
    assert test["status"] == "failed"  # the grader's verdict is kept beside the decision
    assert sum(t["earned"] for t in report["tests"]) == report["score"]
    assert sum(t["final_earned"] for t in report["tests"]) == report["final_score"]
    others = [t for t in report["tests"] if t["id"] != failed["id"]]
    assert all(t["earned"] == t["final_earned"] and not t["overridden"] for t in others)

    junit = client.get(f"/v1/submissions/{sid}/report.junit.xml", headers=h)
    assert junit.status_code == 200
    suite = ET.fromstring(junit.content)
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}  # type: ignore[union-attr]
    assert (props["score"], props["graded_score"], props["final_score"]) == \
        (f"{graded['score']:g}", f"{graded['score']:g}", f"{final:g}")
    case = next(c for c in suite.findall("testcase") if (c.get("name") or "").startswith(failed["id"]))
    case_props = {p.get("name"): p.get("value") for p in case.find("properties")}  # type: ignore[union-attr]
    assert case_props["final_earned"] == f"{failed['points']:g}" and case_props["earned"] == "0"
    assert case_props["overridden"] == "true"

    listed = {s["id"]: s for s in client.get("/v1/submissions", headers=h).json()["items"]}
    assert listed[sid]["overridden"] is True and listed[sid]["final_score"] == final
    assert listed[sid]["graded_score"] == listed[sid]["score"] == graded["score"]
    assert listed[other]["overridden"] is False and listed[other]["final_score"] == listed[other]["score"]
    one = client.get(f"/v1/submissions/{sid}", headers=h).json()
    assert one["overridden"] is True and one["final_score"] == final


def test_a_submitter_sees_no_overrides_anywhere(client: TestClient, tokens: Tokens) -> None:
    import xml.etree.ElementTree as ET

    sid = _submit(client, tokens.submitter)
    failed = _failed_test(client, tokens, sid)
    _override(client, tokens, sid, failed["id"], failed["points"], "internal: we liked it")
    me = Tokens.auth(tokens.submitter)
    report = client.get(f"/v1/submissions/{sid}/report", headers=me).json()
    assert report["overrides"] == [] and report["final_score"] is None
    assert report["score"] == report["graded_score"]
    assert all(t["final_earned"] is None and not t["overridden"] for t in report["tests"])
    assert "internal: we liked it" not in client.get(f"/v1/submissions/{sid}/report", headers=me).text
    junit = client.get(f"/v1/submissions/{sid}/report.junit.xml", headers=me)
    assert "we liked it" not in junit.text and "overridden" not in junit.text
    props = {p.get("name"): p.get("value") for p in ET.fromstring(junit.content).find("properties")}  # type: ignore[union-attr]
    assert "final_score" not in props and props["score"] == f"{report['graded_score']:g}"
    for item in (client.get(f"/v1/submissions/{sid}", headers=me).json(),
                 client.get("/v1/submissions", headers=me).json()["items"][0]):
        assert item["final_score"] is None and item["overridden"] is None
        assert item["graded_score"] == item["score"] == report["graded_score"]


def test_a_submitter_sees_the_visible_tests_of_a_problem(client: TestClient, tokens: Tokens) -> None:
    from grader.engine.catalog import get_problem

    problem = get_problem("mlp")
    visible = [{"id": t.id, "name": t.name, "category": t.category, "points": t.points, "hidden": False}
               for t in problem.tests if not t.hidden]
    hidden = [t.id for t in problem.tests if t.hidden]
    assert visible and hidden  # the catalog's mlp has both kinds, so both rules are exercised
    mine = client.get("/v1/problems/mlp", headers=Tokens.auth(tokens.submitter)).json()
    assert mine["test_count"] == len(problem.tests) and mine["tests"] == visible
    assert not set(hidden) & {t["id"] for t in mine["tests"]}
    theirs = client.get("/v1/problems/mlp", headers=Tokens.auth(tokens.interviewer)).json()
    assert [t["id"] for t in theirs["tests"]] == [t.id for t in problem.tests]
    assert [t["id"] for t in theirs["tests"] if t["hidden"]] == hidden


def test_an_oversized_body_answers_413_with_the_limit(tmp_path: Path) -> None:
    from collections.abc import Iterator

    from grader.api.app import create_app

    settings = make_settings(tmp_path, max_request_bytes=1000)
    body = json.dumps({"problem": "mlp", "code": "#" * 2000}).encode()
    with TestClient(create_app(settings, run_workers=False)) as client:
        h = {**Tokens.auth(Tokens(client.app.state.store).submitter),  # type: ignore[attr-defined]
             "Content-Type": "application/json"}
        declared = client.post("/v1/submissions", content=body, headers=h)
        assert declared.status_code == 413, declared.text
        assert declared.json() == {"detail": f"the request is {len(body)} bytes; the limit is 1000 bytes",
                                   "error": "PayloadTooLarge"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it streams in
            for i in range(0, len(body), 100):
                yield body[i:i + 100]

        streamed = client.post("/v1/submissions", content=chunks(), headers=h)
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["detail"] == "the request is larger than the limit of 1000 bytes"
        small = client.post("/v1/submissions", json={"problem": "mlp", "code": "x = 1\n"}, headers=h)
        assert small.status_code == 202, small.text
        spec = client.get("/openapi.json").json()
        assert "413" in spec["paths"]["/v1/submissions"]["post"]["responses"]


def test_docs_work_offline(client: TestClient) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "https://" not in page.text and "http://" not in page.text  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    kinds = {"js": ("text/javascript", "application/javascript"), "css": ("text/css",), "png": ("image/png",)}
    assert {a.rsplit(".", 1)[-1] for a in assets} == set(kinds), assets
    for asset in assets:
        assert asset.startswith("/"), asset
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert r.headers["content-type"].split(";")[0] in kinds[asset.rsplit(".", 1)[-1]], (asset, r.headers)
        assert len(r.content) > 500, asset  # the file itself, not an error page
    assert "SwaggerUIBundle" in client.get(next(a for a in assets if a.endswith("bundle.js"))).text
    assert "/openapi.json" in page.text and client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404  # no offline ReDoc bundle: off rather than blank


def test_an_override_that_changes_the_final_score_is_a_signed_webhook(client: TestClient, tokens: Tokens) -> None:
    """A submission the hiring team's pipeline created (an interviewer's token) hears about the final score."""
    import time

    from test_service_webhooks import Receiver, detail_when

    from grader.service.webhooks import SIGNATURE_HEADER, verify

    receiver = Receiver([])
    try:
        r = client.post("/v1/submissions", headers=Tokens.auth(tokens.interviewer),
                        json={"problem": "mlp", "code": MLP_ALL, "candidate": "ada", "callback_url": receiver.url})
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_for_status(client, sid, tokens.interviewer)
        detail_when(client, tokens, sid, "delivered")
        assert [json.loads(b)["event"] for _, _, b in receiver.calls] == ["submission.graded"]
        failed = _failed_test(client, tokens, sid)
        graded = json.loads(receiver.calls[0][2])["score"]

        _override(client, tokens, sid, failed["id"], 0.0, "no change: the test earned nothing")  # final unchanged
        _override(client, tokens, sid, failed["id"], failed["points"], "the statement allowed this tie convention")
        deadline = time.monotonic() + 10
        while len(receiver.calls) < 2:
            assert time.monotonic() < deadline, receiver.calls
            time.sleep(0.05)
        detail = detail_when(client, tokens, sid, "delivered")
        time.sleep(0.3)  # an unchanged final score must not have sent anything more
        assert len(receiver.calls) == 2, [json.loads(b)["event"] for _, _, b in receiver.calls]
        _, headers, body = receiver.calls[1]
        secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]
        assert verify(body, secret, headers[SIGNATURE_HEADER])
        event = json.loads(body)
        assert headers["X-Grader-Event"] == event["event"] == "submission.overridden"
        assert event["submission_id"] == sid and event["graded_score"] == event["score"] == graded
        assert event["final_score"] == graded + failed["points"] == detail["submission"]["final_score"]
        override_id = detail["overrides"][-1]["id"]
        assert event["override_id"] == override_id
        assert headers["X-Grader-Delivery"] != receiver.calls[0][1]["X-Grader-Delivery"]  # a new delivery
        assert headers["X-Grader-Delivery"].endswith(f":{override_id}")
        assert "tie convention" not in body.decode() and "hidden input" not in body.decode()
        assert [e["detail"].get("event") for e in detail["audit"] if e["action"] == "webhook.delivered"] == \
            ["submission.graded", "submission.overridden"]
    finally:
        receiver.close()


@pytest.mark.parametrize("creator", ["submitter", "admin"])
def test_the_final_score_never_reaches_a_callback_url_a_submitter_chose(client: TestClient, tokens: Tokens,
                                                                         creator: str) -> None:
    """Any submitter token may set callback_url: its submissions get no overridden event, so no final score."""
    import time

    from test_service_webhooks import Receiver, detail_when

    from grader.store.models import WebhookDelivery

    receiver = Receiver([])
    try:
        token = getattr(tokens, creator)
        r = client.post("/v1/submissions", headers=Tokens.auth(token),
                        json={"problem": "mlp", "code": MLP_ALL, "candidate": "ada", "callback_url": receiver.url})
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_for_status(client, sid, token)
        detail_when(client, tokens, sid, "delivered")
        failed = _failed_test(client, tokens, sid)
        _override(client, tokens, sid, failed["id"], failed["points"], "the statement allowed this tie convention")
        deadline = time.monotonic() + (0.5 if creator == "submitter" else 10)
        while len(receiver.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        events = [json.loads(b)["event"] for _, _, b in receiver.calls]
        detail = detail_when(client, tokens, sid, "delivered")
        audit = next(e for e in detail["audit"] if e["action"] == "override.set")
        store = client.app.state.store  # type: ignore[attr-defined]
        with store.session() as db:
            outbox = json.loads(db.query(WebhookDelivery).filter_by(submission_id=sid).one().body)
        if creator == "admin":  # the hiring team's own pipeline: told, as an interviewer's would be
            assert events == ["submission.graded", "submission.overridden"]
            assert audit["detail"]["webhook"] == {"event": "submission.overridden", "sent": True}
            return
        assert events == ["submission.graded"]
        assert all("final_score" not in json.loads(b) and "graded_score" not in json.loads(b)
                   for _, _, b in receiver.calls)
        assert outbox["event"] == "submission.graded" and "final_score" not in outbox
        assert audit["detail"]["webhook"]["sent"] is False
        assert "submitter token" in audit["detail"]["webhook"]["why"]
    finally:
        receiver.close()


def test_an_override_while_the_graded_event_is_in_flight_is_not_lost(tmp_path: Path) -> None:
    """The dispatcher marks a row delivered only if it still holds the event it sent."""
    from test_service_webhooks import Receiver

    from grader.api.app import create_app
    from grader.service.grading import build_pool
    from grader.service.metrics import Metrics
    from grader.service.webhooks import WebhookDispatcher
    from grader.store.models import WebhookDelivery

    settings = make_settings(tmp_path)
    receiver = Receiver([])
    try:
        with TestClient(create_app(settings, run_workers=False)) as client:
            store = client.app.state.store  # type: ignore[attr-defined]
            tokens = Tokens(store)
            r = client.post("/v1/submissions", headers=Tokens.auth(tokens.interviewer),
                            json={"problem": "mlp", "code": MLP_ALL, "callback_url": receiver.url})
            sid = r.json()["id"]
            pool = build_pool(store, settings, grade=standin_grade, metrics=Metrics())
            pool.start()
            try:
                wait_for_status(client, sid, tokens.interviewer)
            finally:
                pool.stop()
            dispatcher = WebhookDispatcher(store, settings, Metrics())
            real_post = dispatcher.client.post

            def post_then_override(*args: object, **kwargs: object) -> object:
                answer = real_post(*args, **kwargs)  # type: ignore[arg-type]
                if len(receiver.calls) == 1:  # the graded event reached the receiver: now an override lands
                    failed = _failed_test(client, tokens, sid)
                    _override(client, tokens, sid, failed["id"], failed["points"], "allowed")
                return answer

            dispatcher.client.post = post_then_override  # type: ignore[method-assign]
            try:
                assert dispatcher.deliver_due() == 1
                with store.session() as db:
                    hook = db.query(WebhookDelivery).filter_by(submission_id=sid).one()
                    assert (hook.status, json.loads(hook.body)["event"]) == ("pending", "submission.overridden")
                assert dispatcher.deliver_due() == 1
            finally:
                dispatcher.stop()
            assert [json.loads(b)["event"] for _, _, b in receiver.calls] == \
                ["submission.graded", "submission.overridden"]
    finally:
        receiver.close()


@pytest.mark.slow
def test_exports_on_a_real_server(tmp_path: Path) -> None:
    """`grader serve` with the real engine: an override in the JSON report, the JUnit XML (valid against the
    schema) and the list; the submitter sees none of it, nor does its callback_url (the graded webhook only);
    413 and /docs over real HTTP."""
    import time
    import xml.etree.ElementTree as ET

    import httpx
    import xmlschema
    from live_server import ROOT, LiveServer
    from test_service_webhooks import Receiver

    from grader.service.webhooks import SIGNATURE_HEADER, verify

    schema = xmlschema.XMLSchema(ROOT / "tests" / "schemas" / "junit.xsd")
    wrong = (ROOT / "tests" / "solutions" / "mlp" / "wrong_db_mean.py").read_text()
    server = LiveServer(tmp_path / "data", env={"GRADER_WEBHOOK_SECRET": "e2e-secret",
                                                "GRADER_WEBHOOK_ALLOWED_NETWORKS": "[\"127.0.0.0/8\"]",
                                                "GRADER_MAX_REQUEST_BYTES": "200000"})
    submitter, interviewer = server.token("submitter", "ci"), server.token("interviewer", "ivy")
    receiver = Receiver([])
    try:
        server.start()
        me, ivy = Tokens.auth(submitter), Tokens.auth(interviewer)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/v1/submissions", headers=me,
                            json={"problem": "mlp", "code": wrong, "candidate": "eve", "callback_url": receiver.url})
            assert r.status_code == 202, r.text
            sid = r.json()["id"]
            deadline = time.monotonic() + 300
            while client.get(f"/v1/submissions/{sid}", headers=me).json()["status"] not in ("done", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            graded = client.get(f"/v1/submissions/{sid}/report", headers=ivy).json()
            lost = next(t for t in graded["tests"] if t["id"] == "affine_backward")
            assert lost["status"] == "failed" and lost["earned"] == 0
            r = client.post(f"/v1/submissions/{sid}/overrides", headers=ivy,
                            json={"test_id": "affine_backward", "points": lost["points"], "reason": "db convention"})
            assert r.status_code == 201, r.text
            final = graded["score"] + lost["points"]

            report = client.get(f"/v1/submissions/{sid}/report", headers=ivy).json()
            assert (report["score"], report["graded_score"], report["final_score"]) == \
                (graded["score"], graded["score"], final)
            test = next(t for t in report["tests"] if t["id"] == "affine_backward")
            assert (test["earned"], test["final_earned"], test["overridden"]) == (0, lost["points"], True)
            junit = client.get(f"/v1/submissions/{sid}/report.junit.xml", headers=ivy).text
            schema.validate(junit)
            suite = ET.fromstring(junit.encode())
            props = {p.get("name"): p.get("value") for p in suite.find("properties")}  # type: ignore[union-attr]
            assert props["final_score"] == f"{final:g}"
            assert props["graded_score"] == props["score"] == f"{graded['score']:g}"
            listed = client.get("/v1/submissions", headers=ivy).json()["items"]
            assert [(i["id"], i["overridden"], i["final_score"]) for i in listed] == [(sid, True, final)]

            mine = client.get(f"/v1/submissions/{sid}/report", headers=me).json()
            assert mine["overrides"] == [] and mine["final_score"] is None and mine["score"] == graded["score"]
            schema.validate(client.get(f"/v1/submissions/{sid}/report.junit.xml", headers=me).text)
            assert client.get("/v1/submissions", headers=me).json()["items"][0]["overridden"] is None

            deadline = time.monotonic() + 20
            while not receiver.calls:
                assert time.monotonic() < deadline, receiver.calls
                time.sleep(0.1)
            time.sleep(2)  # the override's wake-up has long passed: a submitter's callback hears nothing more
            events = [json.loads(b) for _, _, b in receiver.calls]
            assert [e["event"] for e in events] == ["submission.graded"]
            assert "final_score" not in events[0] and events[0]["score"] == graded["score"]
            assert verify(receiver.calls[0][2], "e2e-secret", receiver.calls[0][1][SIGNATURE_HEADER])

            big = client.post("/v1/submissions", headers={**me, "Content-Type": "application/json"},
                              content=json.dumps({"problem": "mlp", "code": "#" * 300_000}))
            assert big.status_code == 413 and "the limit is 200000 bytes" in big.json()["detail"]
            docs = client.get("/docs")
            assert docs.status_code == 200 and "https://" not in docs.text
            assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    finally:
        receiver.close()
        server.stop()


def test_an_override_reaches_the_html_export_of_interviewers_only(client: TestClient, tokens: Tokens) -> None:
    sid = _submit(client, tokens.submitter)
    failed = _failed_test(client, tokens, sid)
    graded_report = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.interviewer)).json()
    graded, max_score = graded_report["score"], graded_report["max_score"]
    before = client.get(f"/v1/submissions/{sid}/report.html", headers=Tokens.auth(tokens.interviewer)).text
    _override(client, tokens, sid, failed["id"], failed["points"], "the statement allowed this tie convention")
    final = graded + failed["points"]

    html = client.get(f"/v1/submissions/{sid}/report.html", headers=Tokens.auth(tokens.interviewer)).text
    assert "the statement allowed this tie convention" in html and "the statement allowed" not in before
    assert f"final {final:g}" in html and f"graded {graded:g}" in html
    assert f"final {final:g}" not in before

    mine = client.get(f"/v1/submissions/{sid}/report.html", headers=Tokens.auth(tokens.submitter)).text
    assert "the statement allowed" not in mine and f"final {final:g}" not in mine
    # The big score itself: the graded one for the submitter (a bare number would be found almost anywhere).
    assert f'<div class="big">{graded:g}<span class="of"> / {max_score:g}</span>' in mine
    assert f'<div class="big">{final:g}<span class="of"> / {max_score:g}</span>' in html


def test_the_csv_export_writes_each_submission_once_while_submissions_arrive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from grader.service import exports
    from grader.service.auth import create_token
    from grader.service.schemas import SubmissionCreate
    from grader.store.db import open_store
    from grader.store.models import Submission

    settings = make_settings(tmp_path)
    store = open_store(settings)
    try:
        ivy = authenticate(store, create_token(store, "interviewer", "ivy").token)
        ci = authenticate(store, create_token(store, "submitter", "ci").token)

        def submit(n: int) -> str:
            summary, _ = subs.create_submission(store, settings, ci, SubmissionCreate(
                problem="mlp", code=f"x = {n}\n", candidate=f"c{n}"))
            return summary.id

        ids = [submit(n) for n in range(7)]
        with store.session() as db:  # four of them created in one instant: a page boundary falls among them
            for sid in ids[1:5]:
                row = db.get(Submission, sid)
                assert row is not None
                row.created_at = datetime(2020, 1, 1, tzinfo=UTC)
        before = [s.id for s in subs.list_submissions(store, ivy, limit=50).items]
        assert sorted(before) == sorted(ids)
        monkeypatch.setattr(subs, "MAX_PAGE", 2)  # pages of two rows
        export = exports.matching_submissions(store, ivy)
        written = [next(export).id for _ in range(3)]
        arrived = [submit(n) for n in range(7, 10)]  # newer than every row: with pages by offset, rows repeated
        written += [s.id for s in export]
        assert written == before
        assert not set(arrived) & set(written)
        csv_ids = [line.split(",")[0] for line in exports.submissions_csv(store, ivy).splitlines()[1:]]
        assert sorted(csv_ids) == sorted(ids + arrived) and len(csv_ids) == len(set(csv_ids))
    finally:
        store.close()


def _one(pattern: str, text: str) -> tuple[str, ...]:
    """The groups of the one match of `pattern` in `text` (an element located, not a number found anywhere)."""
    import re

    found = re.findall(pattern, text, re.S)
    assert len(found) == 1, (pattern, found)
    return found[0] if isinstance(found[0], tuple) else (found[0],)


@pytest.mark.slow
def test_html_csv_and_overridden_webhook_on_a_real_server(tmp_path: Path) -> None:
    """`grader serve` with the real engine, a submission the hiring team's pipeline sent (an interviewer's token
    with a callback_url): after an override the interviewer's report.html and the CSV export show the final score
    with the graded one beside it, and the callback hears a signed `submission.overridden`."""
    import csv
    import io
    import time
    from collections.abc import Callable

    import httpx
    from live_server import ROOT, LiveServer
    from test_service_webhooks import Receiver

    from grader.reports.html import format_points
    from grader.service.webhooks import SIGNATURE_HEADER, verify

    wrong = (ROOT / "tests" / "solutions" / "mlp" / "wrong_db_mean.py").read_text()
    server = LiveServer(tmp_path / "data", env={"GRADER_WEBHOOK_SECRET": "e2e-secret",
                                                "GRADER_WEBHOOK_ALLOWED_NETWORKS": "[\"127.0.0.0/8\"]",
                                                "GRADER_ROOT_CAUSES": "false"})  # no points change with it
    submitter, interviewer = server.token("submitter", "ci"), server.token("interviewer", "ivy")
    receiver = Receiver([])

    def events() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(b) for _, _, b in receiver.calls]

    def wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"{what}: {events()}"
            time.sleep(0.1)

    try:
        server.start()
        me, ivy = Tokens.auth(submitter), Tokens.auth(interviewer)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/v1/submissions", headers=ivy,
                            json={"problem": "mlp", "code": wrong, "candidate": "eve", "callback_url": receiver.url})
            assert r.status_code == 202, r.text
            sid = r.json()["id"]
            wait_for("graded", lambda: client.get(f"/v1/submissions/{sid}", headers=ivy).json()["status"]
                     in ("done", "failed"), 300)
            graded = client.get(f"/v1/submissions/{sid}/report", headers=ivy).json()
            assert graded["status"] == "graded" and graded["score"] < graded["max_score"]
            wait_for("the graded webhook", lambda: len(receiver.calls) >= 1, 20)
            assert [e["event"] for e in events()] == ["submission.graded"]
            lost = next(t for t in graded["tests"] if t["id"] == "affine_backward")
            assert lost["status"] == "failed" and lost["earned"] == 0 and lost["points"] > 0
            r = client.post(f"/v1/submissions/{sid}/overrides", headers=ivy,
                            json={"test_id": "affine_backward", "points": lost["points"], "reason": "db convention"})
            assert r.status_code == 201, r.text
            override_id = r.json()["id"]
            final, score, max_score = graded["score"] + lost["points"], graded["score"], graded["max_score"]
            pts = format_points

            # report.html (the interviewer's): the big score is the final one, the graded one beside it
            page = client.get(f"/v1/submissions/{sid}/report.html", headers=ivy)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            html = page.text
            assert _one(r'<div class="big">([^<]*)<span class="of"> / ([^<]*)</span></div>', html) == \
                (pts(final), pts(max_score))
            assert _one(r'<span class="final">final ([^<]*)</span> <span class="graded">graded ([^<]*)</span>',
                        html) == (pts(final), pts(score))
            article = _one(r'(<article class="test st-failed" id="test-\d+">(?:(?!</article>).)*?'
                           r'<span class="muted mono tid">affine_backward</span>.*?</article>)', html)[0]
            assert _one(r'<span class="pts">\s*<del>([^<]*)</del> ([^<]*) / ([^<\s]*)\s*</span>', article) == \
                ("0", pts(lost["points"]), pts(lost["points"]))
            assert _one(r'<p class="override-note">Graded ([^;]*); points set to ([^ ]*) by ([^:]*): '
                        r'<span class="wrap">([^<]*)</span></p>', article) == \
                ("0", pts(lost["points"]), "ivy", "db convention")
            overrides_table = _one(r'(<table class="list reflow overrides">.*?</table>)', html)[0]
            assert _one(r'<td class="num" data-label="Graded">([^<]*)</td>\s*'
                        r'<td class="num" data-label="Override">([^<]*)</td>', overrides_table) == \
                (f"0 / {pts(lost['points'])}", f"{pts(lost['points'])} / {pts(lost['points'])}")
            # the submitter cannot read this report's page at all
            mine = client.get(f"/v1/submissions/{sid}/report.html", headers=me)
            assert mine.status_code == 404  # not its submission: an interviewer's token created it

            # the CSV export: the final score in its column, the graded one in its own
            export = client.get("/v1/submissions.csv", headers=ivy)
            assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
            assert export.text.startswith("id,problem,candidate,status,created_at,graded_score,final_score,"
                                          "overridden,max_score,passed,tests\r\n")
            (row,) = list(csv.DictReader(io.StringIO(export.text)))
            assert (row["id"], row["candidate"], row["status"]) == (sid, "eve", "done")
            assert (row["graded_score"], row["final_score"], row["overridden"], row["max_score"]) == \
                (f"{score:g}", f"{final:g}", "yes", f"{max_score:g}")
            assert (int(row["passed"]), int(row["tests"])) == \
                (sum(t["status"] == "passed" for t in graded["tests"]), len(graded["tests"]))
            theirs = client.get("/v1/submissions.csv", headers=me)  # a submitter's export: its own rows only
            assert theirs.status_code == 200 and list(csv.DictReader(io.StringIO(theirs.text))) == []

            # the callback the pipeline chose hears the final score, signed
            wait_for("the overridden webhook", lambda: len(receiver.calls) >= 2, 20)
            time.sleep(1)
            assert [e["event"] for e in events()] == ["submission.graded", "submission.overridden"]
            _, headers, body = receiver.calls[1]
            assert verify(body, "e2e-secret", headers[SIGNATURE_HEADER])
            assert not verify(body, "dev-webhook-secret", headers[SIGNATURE_HEADER])
            event = json.loads(body)
            assert headers["X-Grader-Event"] == event["event"] == "submission.overridden"
            assert (event["submission_id"], event["override_id"]) == (sid, override_id)
            assert event["graded_score"] == event["score"] == score and event["final_score"] == final
            assert headers["X-Grader-Delivery"].endswith(f":{override_id}")
            assert headers["X-Grader-Delivery"] != receiver.calls[0][1]["X-Grader-Delivery"]
            assert "db convention" not in body.decode()  # the reason stays with the interviewers
    finally:
        receiver.close()
        server.stop()
