"""The pages router in-process over a real SQLite store: sign-in, role gates, forms, CSRF and redirect checks.

Grading is not needed here (submissions stay queued); the graded report in a real
browser is tests/pages/test_browser.py.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from grader.api import pages
from grader.api.app import create_app
from grader.api.deps import TOKEN_COOKIE
from grader.config import Settings
from grader.engine.report import Environment, ProblemRef, Report
from grader.engine.report import TestResult as Result  # not collected by pytest as a test class
from grader.reports.html import render_report_export
from grader.service import submissions as subs
from grader.service.auth import authenticate, create_token
from grader.service.metrics import Metrics
from grader.service.schemas import SubmissionCreate
from grader.store.db import Store, open_store
from grader.store.models import ReportRow, Submission

XSS = "<script>alert(1)</script>"


@dataclass
class Site:
    client: TestClient
    store: Store
    interviewer: str
    submitter: str
    submission_id: str


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    app = FastAPI()
    app.state.store, app.state.settings = store, settings
    app.state.metrics = Metrics()  # what create_app provides: the sign-in counts refused guesses there
    app.include_router(pages.router)
    interviewer = create_token(store, "interviewer", "alice").token
    submitter = create_token(store, "submitter", "ci").token
    summary, _ = subs.create_submission(store, settings, authenticate(store, submitter),
                                        SubmissionCreate(problem="rnn", code=f"print({XSS!r})\n", candidate=XSS))
    # base_url on loopback: the Host header the same-origin check compares the Origin with.
    with TestClient(app, base_url="http://127.0.0.1:8000", follow_redirects=False) as client:
        yield Site(client, store, interviewer, submitter, summary.id)
    store.close()


def sign_in(site: Site, token: str, next_url: str = "") -> None:
    response = site.client.post("/ui/login", data={"token": token, "next": next_url})
    assert response.status_code == 303, response.text


def test_anonymous_visitors_are_sent_to_sign_in_and_back(site: Site) -> None:
    response = site.client.get(f"/ui/submissions/{site.submission_id}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next=%2Fui%2Fsubmissions%2F{site.submission_id}"
    response = site.client.post("/ui/login", data={"token": site.interviewer,
                                                   "next": f"/ui/submissions/{site.submission_id}"})
    assert response.status_code == 303 and response.headers["location"] == f"/ui/submissions/{site.submission_id}"
    cookie = response.headers["set-cookie"]
    assert f"{TOKEN_COOKIE}={site.interviewer}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def test_a_form_posted_after_the_session_ended_returns_to_the_report(site: Site) -> None:
    response = site.client.post(f"/ui/submissions/{site.submission_id}/notes", data={"text": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next=%2Fui%2Fsubmissions%2F{site.submission_id}"


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/ui/x", "/ui\\..\\x", "/v1/tokens"])
def test_sign_in_never_redirects_off_the_pages(site: Site, next_url: str) -> None:
    response = site.client.post("/ui/login", data={"token": site.interviewer, "next": next_url})
    assert response.headers["location"] == "/ui/submissions"


def test_bad_and_low_role_tokens_are_refused_with_a_page(site: Site) -> None:
    response = site.client.post("/ui/login", data={"token": "grd_nope"})
    assert response.status_code == 401 and "unknown or revoked" in response.text
    assert "set-cookie" not in response.headers
    response = site.client.post("/ui/login", data={"token": site.submitter})
    assert response.status_code == 403 and "submitter role" in response.text
    # A submitter's cookie set some other way still opens nothing.
    site.client.cookies.set(TOKEN_COOKIE, site.submitter)
    response = site.client.get("/ui/submissions")
    assert response.status_code == 403 and "interviewer role" in response.text


def test_list_and_report_pages_escape_candidate_text_and_send_a_strict_csp(site: Site) -> None:
    sign_in(site, site.interviewer)
    for path in ("/ui/submissions", f"/ui/submissions/{site.submission_id}"):
        response = site.client.get(path)
        assert response.status_code == 200, response.text
        assert XSS not in response.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
        assert "script-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    assert "queued" in response.text and 'http-equiv="refresh"' in response.text


def test_list_filters(site: Site) -> None:
    sign_in(site, site.interviewer)
    assert site.submission_id in site.client.get("/ui/submissions", params={"problem": "rnn"}).text
    assert site.submission_id not in site.client.get("/ui/submissions", params={"problem": "mlp"}).text
    assert site.submission_id not in site.client.get("/ui/submissions", params={"status": "done"}).text
    assert site.submission_id in site.client.get("/ui/submissions", params={"created_after": "2000-01-01"}).text
    assert site.submission_id not in site.client.get("/ui/submissions",
                                                     params={"created_before": "2000-01-01"}).text
    for page in ("0", "x", "-1", "9" * 30):
        assert site.client.get("/ui/submissions", params={"page": page}).status_code == 200
    assert site.submission_id not in site.client.get("/ui/submissions", params={"page": "2"}).text
    response = site.client.get("/ui/submissions", params={"created_after": "yesterday"})
    assert response.status_code == 400 and "must be a date like" in response.text


def test_paging_links_keep_the_filters(site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    second, _ = subs.create_submission(site.store, settings, authenticate(site.store, site.submitter),
                                       SubmissionCreate(problem="rnn", code="x = 2\n", candidate="b"))
    monkeypatch.setattr(pages, "PAGE_SIZE", 1)
    sign_in(site, site.interviewer)
    first_page = site.client.get("/ui/submissions", params={"problem": "rnn"}).text
    assert second.id in first_page and site.submission_id not in first_page  # newest first
    assert 'href="/ui/submissions?problem=rnn&amp;page=2"' in first_page and "Newer" not in first_page
    second_page = site.client.get("/ui/submissions", params={"problem": "rnn", "page": "2"}).text
    assert site.submission_id in second_page and "Older" not in second_page
    assert 'href="/ui/submissions?problem=rnn&amp;page=1"' in second_page


def test_a_note_is_kept_logged_and_shown_as_text(site: Site) -> None:
    sign_in(site, site.interviewer)
    response = site.client.post(f"/ui/submissions/{site.submission_id}/notes", data={"text": f"hm {XSS}"},
                                headers={"Origin": "http://127.0.0.1:8000"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/submissions/{site.submission_id}?saved=note#notes"
    page = site.client.get(response.headers["location"]).text
    assert "Note added." in page and "hm &lt;script&gt;" in page and "note.added" in page
    response = site.client.post(f"/ui/submissions/{site.submission_id}/notes", data={"text": "   "})
    assert response.status_code == 400 and "the note is empty" in response.text


def test_forms_posted_from_another_site_are_refused(site: Site) -> None:
    sign_in(site, site.interviewer)
    response = site.client.post(f"/ui/submissions/{site.submission_id}/notes", data={"text": "x"},
                                headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    response = site.client.post("/ui/login", data={"token": site.interviewer}, headers={"Origin": "null"})
    assert response.status_code == 403


def test_override_of_an_ungraded_submission_says_why(site: Site) -> None:
    sign_in(site, site.interviewer)
    response = site.client.post(f"/ui/submissions/{site.submission_id}/overrides",
                                data={"test_id": "rnn_step_forward", "points": "1", "reason": "r"})
    assert response.status_code == 409 and "has no report" in response.text
    response = site.client.post(f"/ui/submissions/{site.submission_id}/overrides",
                                data={"test_id": "rnn_step_forward", "points": "lots", "reason": "r"})
    assert response.status_code == 400 and "points must be a number" in response.text


def test_unknown_submission_is_a_404_page(site: Site) -> None:
    sign_in(site, site.interviewer)
    response = site.client.get("/ui/submissions/nope")
    assert response.status_code == 404 and "no submission with id" in response.text


def test_sign_out_forgets_the_token(site: Site) -> None:
    sign_in(site, site.interviewer)
    response = site.client.post("/ui/logout")
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert f'{TOKEN_COOKIE}=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]


# ---------------------------------------------------------------------------------------------------------------
# Graded submissions: the report's order and highlight, the comparison, the CSV exports (pages and API)

WRONG_VALUE_CODE = '''import numpy as np


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    h = np.tanh(x @ Wx + h_prev @ Wh)
    return h, (x, h_prev, Wx, Wh, h)
'''


def _report(problem: str, earned: dict[str, float]) -> Report:
    """A graded report: each test id earns its points when listed (passed), else it failed on a wrong value."""
    tests = [Result(id=test_id, name=f"{test_id} matches the reference", category=category, points=points,
                    earned=points if test_id in earned else 0.0, status="passed" if test_id in earned else "failed",
                    message="" if test_id in earned else "h_next wrong: relative error 0.4 (b left out?)")
             for test_id, category, points in (("rnn_step_forward", "forward", 6.0),
                                               ("rnn_step_backward", "backward", 8.0),
                                               ("rnn_step_gradcheck", "gradient check", 4.0))]
    score = sum(t.earned for t in tests)
    return Report(problem=ProblemRef(id=problem, version="1.0.0"), status="graded", score=score,
                  max_score=sum(t.points for t in tests), tests=tests,
                  environment=Environment(grader_version="0", seed=1, sandbox_backend="fake"))


def submit_graded(store: Store, tmp_path: Path, token: str, *, problem: str = "rnn", candidate: str = "c",
                  code: str = WRONG_VALUE_CODE, passed: tuple[str, ...] = ("rnn_step_backward",)) -> str:
    """A submission stored as a worker would leave it: done, with its report."""
    summary, _ = subs.create_submission(store, Settings(data_dir=tmp_path), authenticate(store, token),
                                        SubmissionCreate(problem=problem, code=code, candidate=candidate))
    report = _report(problem, {t: 1 for t in passed})
    with store.session() as db:
        row = db.get(Submission, summary.id)
        assert row is not None
        row.status, row.score, row.final_score, row.max_score = "done", report.score, report.score, report.max_score
        row.passed, row.test_count = report.passed, len(report.tests)
        db.add(ReportRow(submission_id=summary.id, report_json=report.model_dump_json(), attempt=1))
    return summary.id


def test_report_page_lists_failures_first_folds_passed_ones_and_highlights_the_function(
        site: Site, tmp_path: Path) -> None:
    sid = submit_graded(site.store, tmp_path, site.submitter)
    sign_in(site, site.interviewer)
    html = site.client.get(f"/ui/submissions/{sid}").text
    order = re.findall(r'<span class="muted mono tid">([^<]+)</span>', html)
    assert order == ["rnn_step_forward", "rnn_step_gradcheck", "rnn_step_backward"]
    folded = html.index('<details class="passed-tests">')
    assert html.index(">rnn_step_gradcheck<") < folded < html.index(">rnn_step_backward<")
    # A wrong value, no exception: rnn_step_forward (lines 4-6) is highlighted and linked.
    assert re.findall(r'<tr id="file0-L(\d+)" class="in-fn">', html) == ["4", "5", "6"]
    assert '<tr class="fn-note" id="file0-fn4">' in html and 'href="#file0-fn4"' in html


def test_compare_page_shows_candidates_of_one_problem_side_by_side(site: Site, tmp_path: Path) -> None:
    ann = submit_graded(site.store, tmp_path, site.submitter, candidate="Ann")
    bob = submit_graded(site.store, tmp_path, site.submitter, candidate=f"Bob {XSS}",
                        passed=("rnn_step_forward", "rnn_step_backward"))
    subs.override_test(site.store, authenticate(site.store, site.interviewer), ann, "rnn_step_gradcheck", 2,
                       "finite differences were too coarse")
    sign_in(site, site.interviewer)
    for query in (f"problem=rnn&ids={ann},{bob}", f"ids={ann}&ids={bob}"):
        response = site.client.get(f"/ui/compare?{query}")
        assert response.status_code == 200, response.text
        html = response.text
        assert "script-src 'none'" in response.headers["content-security-policy"]
        assert XSS not in html and "Bob &lt;script&gt;" in html and ">Ann</a>" in html
        assert html.index(">Ann</a>") < html.index("Bob &lt;script&gt;")  # in the order asked
        final = re.search(r'<th scope="row">final score</th>(.*?)</tr>', html, re.S)
        graded = re.search(r'<th scope="row">graded score</th>(.*?)</tr>', html, re.S)
        assert final is not None and graded is not None
        assert re.findall(r">([\d.]+ / 18)", final.group(1)) == ["10 / 18", "14 / 18"]
        assert re.findall(r">([\d.]+ / 18)", graded.group(1)) == ["8 / 18", "14 / 18"]
        assert '<th scope="row">gradient check</th>' in html
    # A submission not graded yet takes its place with its status and no scores.
    html = site.client.get(f"/ui/compare?ids={ann},{site.submission_id}").text
    passed_row = re.search(r'<th scope="row">tests passed</th>(.*?)</tr>', html, re.S)
    assert passed_row is not None and 'badge s-queued">queued</span>' in passed_row.group(1)


def test_compare_page_refuses_to_mix_problems(site: Site, tmp_path: Path) -> None:
    rnn = submit_graded(site.store, tmp_path, site.submitter)
    mlp = submit_graded(site.store, tmp_path, site.submitter, problem="mlp", code="x = 1\n")
    sign_in(site, site.interviewer)
    response = site.client.get(f"/ui/compare?ids={rnn},{mlp}")
    assert response.status_code == 400
    assert (f"only submissions of one problem can be compared; these are of 2 problems (rnn: {rnn}; mlp: {mlp})"
            in response.text)
    response = site.client.get(f"/ui/compare?problem=rnn&ids={rnn},{mlp}")
    assert response.status_code == 400
    assert f"this comparison is of rnn, but {mlp} is of mlp" in response.text
    response = site.client.get(f"/ui/compare?problem=mlp&ids={rnn}")
    assert response.status_code == 400 and f"{rnn} is of rnn" in response.text
    response = site.client.get(f"/ui/compare?ids={rnn},{'0' * 32}")
    assert response.status_code == 404 and "no submission with id" in response.text
    response = site.client.get("/ui/compare")
    assert response.status_code == 200 and "Pick two or more submissions" in response.text


def test_compare_page_is_for_interviewers(site: Site) -> None:
    response = site.client.get(f"/ui/compare?ids={site.submission_id}")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=")
    site.client.cookies.set(TOKEN_COOKIE, site.submitter)
    assert site.client.get(f"/ui/compare?ids={site.submission_id}").status_code == 403


def _csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("id,problem,candidate,status,created_at,graded_score,final_score,overridden,max_score,"
                           "passed,tests\r\n")
    return list(csv.DictReader(io.StringIO(text)))


def test_list_page_csv_keeps_the_filters_marks_overrides_and_defuses_formulas(site: Site, tmp_path: Path) -> None:
    evil = submit_graded(site.store, tmp_path, site.submitter, candidate='=HYPERLINK("http://evil.example","x")')
    plain = submit_graded(site.store, tmp_path, site.submitter, candidate="@risky, \"quoted\"\nname")
    other = submit_graded(site.store, tmp_path, site.submitter, problem="mlp", code="x = 1\n", candidate="-1+1")
    subs.override_test(site.store, authenticate(site.store, site.interviewer), evil, "rnn_step_forward", 3, "ok")
    sign_in(site, site.interviewer)
    page = site.client.get("/ui/submissions", params={"problem": "rnn", "status": "done"}).text
    assert 'href="/ui/submissions.csv?problem=rnn&amp;status=done" download>Download CSV</a>' in page
    assert page.count('<tr class="overridden">') == 1 and "graded 8" in page  # evil: final 11, graded 8
    response = site.client.get("/ui/submissions.csv", params={"problem": "rnn", "status": "done"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="submissions.csv"'
    rows = {r["id"]: r for r in _csv(response.text)}
    assert set(rows) == {evil, plain}  # the queued one and the mlp one are filtered out
    assert rows[evil] | {"created_at": ""} == {
        "id": evil, "problem": "rnn", "candidate": '\'=HYPERLINK("http://evil.example","x")', "status": "done",
        "created_at": "", "graded_score": "8", "final_score": "11", "overridden": "yes", "max_score": "18",
        "passed": "1", "tests": "3"}
    assert rows[plain]["candidate"] == "'@risky, \"quoted\"\nname" and rows[plain]["overridden"] == "no"
    assert rows[plain]["final_score"] == "8"
    everything = {r["id"]: r for r in _csv(site.client.get("/ui/submissions.csv").text)}
    assert set(everything) == {evil, plain, other, site.submission_id}
    assert everything[other]["candidate"] == "'-1+1" and everything[site.submission_id]["status"] == "queued"
    response = site.client.get("/ui/submissions.csv", params={"created_after": "soon"})
    assert response.status_code == 400 and "must be a date like" in response.text


def test_list_page_csv_needs_an_interviewer(site: Site) -> None:
    response = site.client.get("/ui/submissions.csv", params={"problem": "rnn"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fsubmissions.csv%3Fproblem%3Drnn"
    site.client.cookies.set(TOKEN_COOKIE, site.submitter)
    response = site.client.get("/ui/submissions.csv")
    assert response.status_code == 403 and "id,problem" not in response.text


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """The whole app as `grader serve` builds it (no workers): the API's routes in the order app.py includes them."""
    with TestClient(create_app(Settings(data_dir=tmp_path / "api"), run_workers=False)) as client:
        yield client


def test_api_csv_has_the_list_filters_and_bearer_auth(api: TestClient, tmp_path: Path) -> None:
    store: Store = api.app.state.store  # type: ignore[attr-defined]
    interviewer = create_token(store, "interviewer", "ivy").token
    ada, bea = create_token(store, "submitter", "ada").token, create_token(store, "submitter", "bea").token
    mine = submit_graded(store, tmp_path, ada, candidate="+SUM(A1:A9)")
    theirs = submit_graded(store, tmp_path, bea, candidate="bea")
    subs.override_test(store, authenticate(store, interviewer), mine, "rnn_step_forward", 6, "fine")

    def get(token: str | None, **params: str) -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response: Response = api.get("/v1/submissions.csv", params=params, headers=headers)
        return response

    response = get(interviewer)
    assert response.status_code == 200, response.text  # not taken for a submission id
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = {r["id"]: r for r in _csv(response.text)}
    assert set(rows) == {mine, theirs}
    assert (rows[mine]["candidate"], rows[mine]["final_score"], rows[mine]["overridden"]) == ("'+SUM(A1:A9)", "14",
                                                                                              "yes")
    assert {r["id"] for r in _csv(get(interviewer, candidate="bea").text)} == {theirs}
    assert _csv(get(interviewer, created_before="2000-01-01").text) == []
    # A submitter gets its own submissions, without the interviewers' decisions.
    own = _csv(get(ada).text)
    assert [r["id"] for r in own] == [mine]
    assert (own[0]["graded_score"], own[0]["final_score"], own[0]["overridden"]) == ("8", "", "")
    assert get(None).status_code == 401
    assert get("grd_not-a-token").status_code == 401
    bad = get(interviewer, created_after="yesterday")
    assert bad.status_code == 400 and "created_after must be an ISO 8601" in bad.json()["detail"]
    assert get(interviewer, status="lost").status_code == 422
    # The route beside it is untouched: a submission's own address still answers.
    assert api.get(f"/v1/submissions/{mine}", headers={"Authorization": f"Bearer {ada}"}).status_code == 200


def test_the_export_renders_the_service_report_view_with_overrides_for_interviewers_only(
        site: Site, tmp_path: Path) -> None:
    """What GET /v1/submissions/{id}/report.html renders through render_report_export(ReportView)."""
    sid = submit_graded(site.store, tmp_path, site.submitter)
    ivy = authenticate(site.store, site.interviewer)
    subs.override_test(site.store, ivy, sid, "rnn_step_forward", 4, f"b was only misnamed {XSS}")
    html = render_report_export(subs.get_report(site.store, ivy, sid))
    assert '<div class="big">12<span class="of"> / 18</span>' in html
    assert '<span class="final">final 12</span> <span class="graded">graded 8</span>' in html
    row = re.search(r'<section id="overrides" class="card">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert row is not None
    assert re.findall(r'data-label="(?:Graded|Override)">([^<]+)<', row.group(1)) == ["0 / 6", "4 / 6"]
    assert ">alice <span" in row.group(1) and "b was only misnamed &lt;script&gt;" in row.group(1)
    assert 'class="override-note"' in html
    # A submitter's export through the service's own role filtering (get_report with the submitter's principal).
    theirs = render_report_export(subs.get_report(site.store, authenticate(site.store, site.submitter), sid))
    assert '<div class="big">8<span class="of"> / 18</span>' in theirs
    assert 'id="overrides"' not in theirs and "misnamed" not in theirs and "graded 8" not in theirs
    assert 'class="override-note"' not in theirs


@pytest.mark.parametrize("code", ["x = " + "-" * 100_000 + "1\n",  # ast.parse: MemoryError
                                  "x = " + "1+" * 100_000 + "1\n"])  # ast.parse: RecursionError
def test_the_report_page_and_export_render_code_the_parser_cannot_take(site: Site, tmp_path: Path, code: str) -> None:
    sid = submit_graded(site.store, tmp_path, site.submitter, code=code)
    sign_in(site, site.interviewer)
    response = site.client.get(f"/ui/submissions/{sid}")
    assert response.status_code == 200
    assert '<div class="big">8<span class="of"> / 18</span>' in response.text
    html = render_report_export(subs.get_report(site.store, authenticate(site.store, site.interviewer), sid))
    assert '<div class="big">8<span class="of"> / 18</span>' in html
