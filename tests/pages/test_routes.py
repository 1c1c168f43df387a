"""The pages router in-process over a real SQLite store: sign-in, role gates, forms, CSRF and redirect checks.

Grading is not needed here (submissions stay queued); the graded report in a real
browser is tests/pages/test_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from grader.api import pages
from grader.api.deps import TOKEN_COOKIE
from grader.config import Settings
from grader.service import submissions as subs
from grader.service.auth import authenticate, create_token
from grader.service.schemas import SubmissionCreate
from grader.store.db import Store, open_store

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
