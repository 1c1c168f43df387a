"""The interviewers' pages in a real browser against a real server: sign in, read a report, add a note, override.

Everything is real: `grader serve` (uvicorn) on loopback with its SQLite data dir, the local
sandbox grading the submission, Debian's chromium driven by Playwright. The
submission prints a script tag and raises with an HTML payload; the test proves
the browser shows both as text and runs nothing, and leaves a screenshot in
artifacts/ for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 60.0
GRADING_S = 300.0
PAGE_TIMEOUT_MS = 30_000
PRINTED = "<script>window.__pwned=1</script>"
RAISED = "<img src=x onerror=window.__pwned=2>"
NOTED = "<script>window.__pwned=3</script> gate order looks right; ask about the backward pass"

if os.environ.get("CI"):
    # In CI the project's own scripts install the browser: a missing one is a failure, not a skip.
    assert CHROMIUM.exists(), "scripts/setup-browser.sh did not install /usr/bin/chromium"
    import playwright.sync_api as sync_api
elif not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium: run scripts/setup-browser.sh",
                allow_module_level=True)
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: run scripts/setup-browser.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _create_token(env: dict[str, str], role: str, name: str) -> str:
    """A new token from `grader tokens create`, as an admin would make one."""
    done = subprocess.run([sys.executable, "-m", "grader.cli", "tokens", "create", "--role", role, "--name", name],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    found = re.search(r"grd_[A-Za-z0-9_-]{20,}", done.stdout)
    assert done.returncode == 0 and found, f"`grader tokens create` failed: {done.stdout!r} {done.stderr!r}"
    return found.group(0)


def _submission_code() -> tuple[str, int]:
    """A correct rnn solution that prints a script tag and whose lstm_backward raises; and that raise's line."""
    code = f"print({PRINTED!r})\n" + (ROOT / "tests/solutions/rnn/correct_vectorized.py").read_text()
    code += f"\n\ndef lstm_backward(dh, cache):\n    raise ValueError({RAISED!r})\n"
    return code, code.count("\n")


@dataclass
class Server:
    base_url: str
    data_dir: Path
    interviewer_token: str
    submission_id: str
    raise_line: int
    wrong_id: str  # rnn with tanh's derivative taken as 1 - tanh: wrong values, no exception


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("grader-data")
    port = _free_port()
    env = {**os.environ, "GRADER_DATA_DIR": str(data_dir), "GRADER_WORKERS": "1"}
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "grader.cli", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert process.poll() is None, f"the server exited: {log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {SERVER_START_S} s: {log_path.read_text()[-3000:]}"
            time.sleep(0.3)
        interviewer = _create_token(env, "interviewer", "alice")
        submitter = _create_token(env, "submitter", "ci")
        code, raise_line = _submission_code()
        wrong = (ROOT / "tests/solutions/rnn/wrong_tanh_derivative.py").read_text()
        ids = []
        # Ada's last: the list shows the newest first.
        for text, candidate in ((wrong, "Grace Brewster Murray Hopper"), (code, "Ada <b>Lovelace</b>")):
            body = json.dumps({"problem": "rnn", "code": text, "candidate": candidate}).encode()
            request = urllib.request.Request(f"{base_url}/v1/submissions", data=body, method="POST",
                                             headers={"Authorization": f"Bearer {submitter}",
                                                      "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 202
                ids.append(str(json.loads(response.read())["id"]))
        deadline = time.monotonic() + GRADING_S
        for submission_id in ids:
            while True:
                status = _get_json(f"{base_url}/v1/submissions/{submission_id}", submitter)["status"]
                if status in ("done", "failed"):
                    break
                assert time.monotonic() < deadline, f"not graded within {GRADING_S} s (status {status})"
                time.sleep(0.5)
            assert status == "done", _get_json(f"{base_url}/v1/submissions/{submission_id}", submitter)
        yield Server(base_url, data_dir, interviewer, ids[1], raise_line, ids[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_interviewer_signs_in_reads_the_report_adds_a_note_and_no_candidate_script_runs(
        server: Server, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    console_errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            # Unsigned, the report sends the browser to the sign-in form, which brings it back afterwards.
            page.goto(f"{server.base_url}/ui/submissions/{server.submission_id}")
            assert "/ui/login" in page.url
            page.fill("#token", "grd_not-a-real-token")
            page.click("button[type=submit]")
            assert page.locator(".flash.error").is_visible()
            # The refused sign-in answers 401, which Chromium logs as a failed load; nothing else may be logged.
            assert all("status of 401" in e for e in console_errors), console_errors
            console_errors.clear()
            page.fill("#token", server.interviewer_token)
            page.click("button[type=submit]")
            page.wait_for_url(f"**/ui/submissions/{server.submission_id}")

            cookies = {c["name"]: c for c in context.cookies()}
            session = next(c for c in cookies.values() if c["value"] == server.interviewer_token)
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            assert server.interviewer_token not in page.evaluate("document.cookie")

            # The candidate's output and exception are on the page as text; nothing of theirs ran.
            assert page.locator("pre.output").inner_text().strip() == PRINTED
            assert RAISED in page.locator("article.test.st-error pre.message").first.inner_text()
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.evaluate("document.querySelectorAll('script, img[src=x]').length") == 0
            assert "Ada <b>Lovelace</b>" in page.locator("h1").inner_text()

            # The raise is marked in the code, and the failing test links to it.
            marked = page.locator("tr.marked")
            assert marked.count() == 1
            assert marked.locator("td.ln").inner_text() == str(server.raise_line)
            assert RAISED in marked.inner_text()
            anchor = page.locator("p.goto a").first.get_attribute("href")
            assert anchor == f"#{marked.get_attribute('id')}"

            # Add a note carrying a script: it is kept, shown as text, and logged.
            page.fill("#note-text", NOTED)
            page.click("#notes button[type=submit]")
            page.wait_for_url("**saved=note**")
            assert page.locator(".flash.ok").inner_text() == "Note added."
            assert page.locator("#notes .note .wrap").last.inner_text() == NOTED
            assert "note.added" in page.locator("#audit").inner_text()
            assert page.evaluate("typeof window.__pwned") == "undefined"

            # Override the errored test's points with a reason: the score follows, the audit log says so.
            before = page.locator(".score .big").inner_text()
            test = page.locator("article.test.st-error").first
            test.locator("details.override summary").click()
            test.locator("input[name=points]").fill("3")
            test.locator("input[name=reason]").fill("raised only because the stub was left in; discussed live")
            test.locator("button[type=submit]").click()
            page.wait_for_url("**saved=override**")
            after = page.locator(".score .big").inner_text()
            assert float(after.split("/")[0]) == float(before.split("/")[0]) + 3
            assert "override.set" in page.locator("#audit").inner_text()
            assert "discussed live" in page.locator(".override-note").first.inner_text()

            # The list shows the submission with its adjusted score and filters by problem.
            page.goto(f"{server.base_url}/ui/submissions?problem=rnn")
            row = page.locator("table.list tbody tr").first
            assert "Ada <b>Lovelace</b>" in row.inner_text() and "done" in row.inner_text()
            page.screenshot(path=str(ARTIFACTS / "pages-list.png"), full_page=True)

            page.goto(f"{server.base_url}/ui/submissions/{server.submission_id}")
            page.screenshot(path=str(ARTIFACTS / "pages-report.png"), full_page=True)
            assert page.evaluate("typeof window.__pwned") == "undefined"
        finally:
            context.close()
    # A CSP violation (say, a stylesheet whose hash no longer matches) shows up here.
    assert console_errors == []


def _no_horizontal_overflow(page: sync_api.Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width[0]} px of content in {width[1]} px"


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_report_and_compare_pages_fit_desktop_and_phone(server: Server, tmp_path: Path, viewport: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    console_errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": VIEWPORTS[viewport]["width"], "height": VIEWPORTS[viewport]["height"]})
        try:
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            context.add_cookies([{"name": "grader_token", "value": server.interviewer_token,
                                  "url": server.base_url, "httpOnly": True, "sameSite": "Strict"}])
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            # The wrong-value report: failures first, passed tests folded, the function under test highlighted.
            page.goto(f"{server.base_url}/ui/submissions/{server.wrong_id}")
            _no_horizontal_overflow(page)
            statuses = page.locator("#tests article.test .badge").evaluate_all("els => els.map(e => e.textContent)")
            failing = [s for s in statuses if s in ("failed", "error", "timeout")]
            assert failing and statuses[:len(failing)] == failing and "passed" in statuses
            folded = page.locator("details.passed-tests")
            assert folded.count() == 1 and folded.get_attribute("open") is None
            first_passed = folded.locator("article.test").first
            assert not first_passed.is_visible()
            function_rows = page.locator("tr.in-fn")
            assert function_rows.count() >= 3
            assert page.locator("tr.fn-note").first.inner_text().count("rnn_step_backward") >= 1
            assert page.locator("tr.marked").count() == 0  # nothing raised: the function is the only pointer
            # The code scrolls inside its own box, not the page.
            code = page.locator(".codefile").first
            assert code.evaluate("e => e.getBoundingClientRect().right") <= VIEWPORTS[viewport]["width"]
            page.screenshot(path=str(SCREENSHOTS / f"report-{viewport}.png"), full_page=True)
            folded.locator(":scope > summary").click()  # opens without any script
            assert first_passed.is_visible()
            _no_horizontal_overflow(page)

            # Both candidates side by side.
            page.goto(f"{server.base_url}/ui/compare?problem=rnn&ids={server.submission_id},{server.wrong_id}")
            _no_horizontal_overflow(page)
            heads = page.locator("table.compare th.cand").all_inner_texts()
            assert len(heads) == 2 and "Ada <b>Lovelace</b>" in heads[0] and "Grace" in heads[1]
            assert page.locator("table.compare tr.final td").count() == 2
            page.screenshot(path=str(SCREENSHOTS / f"compare-{viewport}.png"), full_page=True)

            # The list, with its CSV link and compare checkboxes.
            page.goto(f"{server.base_url}/ui/submissions?problem=rnn")
            _no_horizontal_overflow(page)
            assert page.locator("a.csv").get_attribute("href") == "/ui/submissions.csv?problem=rnn"
            page.screenshot(path=str(SCREENSHOTS / f"list-{viewport}.png"), full_page=True)
            assert page.evaluate("typeof window.__pwned") == "undefined"
        finally:
            context.close()
    assert console_errors == []
