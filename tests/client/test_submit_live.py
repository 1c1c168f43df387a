"""`grader submit` against a real service on loopback: waiting, report files, exit codes, idempotency, batches."""

from __future__ import annotations

import csv
import re
import shutil
import threading
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import nbformat
import pytest

from grader.engine.report import Report
from tests.client.conftest import CORRECT, CORRECT_LOOPS, WRONG, WRONG_FAILS, Service, run_cli, submit_slow_then_kill

pytestmark = pytest.mark.slow

SID = re.compile(r"^[0-9a-f]{32}$")


def unique_copy(src: Path, dest: Path) -> Path:
    """`src` with a comment of its own: content no other test submits, so no idempotent replay between tests."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(src.read_text() + f"\n# {uuid.uuid4().hex}\n")
    return dest


def test_submit_and_wait_prints_the_summary_and_writes_every_report(service: Service, tmp_path: Path) -> None:
    solution = unique_copy(CORRECT, tmp_path / "solution" / "solution.py")
    done = run_cli("submit", "mlp", str(solution.parent), "--candidate", "ada", "--wait", "--json", "r.json",
                   "--junit", "r.xml", "--html", "r.html", env=service.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mlp v1.0.0: 100/100 points, 14/14 tests passed"), done.stdout
    assert "  PASS 8/8  affine_forward  (forward)" in done.stdout
    assert re.search(r"submission [0-9a-f]{32} done: 100/100 points", done.stderr), done.stderr
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert report.status == "graded" and report.score == 100.0 and len(report.tests) == 14
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert len(list(suite.iter("testcase"))) == 14
    assert not list(suite.iter("failure"))
    html = (tmp_path / "r.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "affine_forward" in html
    sid = re.search(r"report: .*/v1/submissions/([0-9a-f]{32})/report.html", done.stdout)
    assert sid, done.stdout
    assert service.rows("SELECT candidate, status FROM submissions WHERE id = ?", sid[1]) == [("ada", "done")]


def test_a_score_under_min_score_exits_1_and_still_writes_the_junit(service: Service, tmp_path: Path) -> None:
    wrong = unique_copy(WRONG, tmp_path / "wrong.py")
    done = run_cli("submit", "mlp", str(wrong), "--min-score", "80", "--junit", "r.xml", env=service.env(),
                   cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "score 71 is under --min-score 80" in done.stderr
    cases = ET.parse(tmp_path / "r.xml").getroot().iter("testcase")
    # A testcase's name starts with the test's id.
    failed = sorted({re.findall(r"\w+", c.get("name", ""))[0] for c in cases if c.find("failure") is not None})
    assert failed == sorted(WRONG_FAILS)
    again = run_cli("submit", "mlp", str(wrong), "--min-score", "70", env=service.env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_what_the_service_refuses_exits_2_with_its_message(service: Service, tmp_path: Path) -> None:
    unknown = run_cli("submit", "nope", str(CORRECT), "--wait", env=service.env(), cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unknown problem 'nope'" in unknown.stderr and "mlp" in unknown.stderr
    bad_token = run_cli("submit", "mlp", str(CORRECT), env=service.env(GRADER_TOKEN="not-a-token"), cwd=tmp_path)
    assert bad_token.returncode == 2
    assert "the token was refused (401" in bad_token.stderr and "GRADER_TOKEN" in bad_token.stderr
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-from-a-file\n")
    from_file = run_cli("submit", "mlp", str(CORRECT), "--token-file", str(token_file), env=service.env(),
                        cwd=tmp_path)
    assert from_file.returncode == 2 and "the token was refused (401" in from_file.stderr
    missing = run_cli("submit", "mlp", str(tmp_path / "absent.py"), env=service.env(), cwd=tmp_path)
    assert missing.returncode == 2 and "absent.py: no such file or folder" in missing.stderr
    # Read fine here, refused there: a file name the service's rules do not accept.
    folder = tmp_path / "bad-names"
    unique_copy(CORRECT, folder / "solution.py")
    (folder / "my-helpers.py").write_text("x = 1\n")
    refused = run_cli("submit", "mlp", str(folder), env=service.env(), cwd=tmp_path)
    assert refused.returncode == 2
    assert "the service refused the request (400)" in refused.stderr and "my-helpers.py" in refused.stderr
    for done in (unknown, bad_token, from_file, missing, refused):
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_same_content_submitted_twice_is_one_submission_graded_once(service: Service, tmp_path: Path) -> None:
    solution = unique_copy(CORRECT, tmp_path / "solution.py")
    first = run_cli("submit", "mlp", str(solution), "--candidate", "ida", env=service.env(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sid = first.stdout.splitlines()[0]
    assert SID.match(sid) and f"/v1/submissions/{sid}/report.html" in first.stdout
    assert "already submitted" not in first.stderr
    second = run_cli("submit", "mlp", str(solution), "--candidate", "ida", "--wait", env=service.env(),
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"submitted {sid} (already submitted with this content" in second.stderr
    assert service.rows("SELECT count(*) FROM submissions WHERE candidate = 'ida'") == [(1,)]
    assert service.rows("SELECT count(*) FROM reports WHERE submission_id = ?", sid) == [(1,)]
    other = run_cli("submit", "mlp", str(solution), "--candidate", "jo", env=service.env(), cwd=tmp_path)
    assert other.returncode == 0 and other.stdout.splitlines()[0] != sid  # another candidate: a new submission


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_batch_through_the_service(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    unique_copy(CORRECT, folder / "alice" / "solution.py")
    unique_copy(WRONG, folder / "bob.py")
    unique_copy(CORRECT_LOOPS, folder / "carol.py")
    (folder / "dave").mkdir()
    (folder / "dave" / "notes.py").write_text("x = 1\n")  # no solution.py: a row, not an abort
    (folder / "README.md").write_text("not a candidate\n")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# My MLP"),
        nbformat.v4.new_code_cell(CORRECT.read_text() + f"\n# {uuid.uuid4().hex}\n")])
    (folder / "erin.ipynb").write_text(nbformat.writes(notebook))
    done = run_cli("submit", "mlp", "--batch", str(folder), "--jobs", "3", env=service.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    rows = read_csv(tmp_path / "cohort-results.csv")
    assert [r["candidate"] for r in rows] == ["alice", "bob", "carol", "dave", "erin"]
    alice, bob, carol, dave, erin = rows
    for row, entry in ((alice, "alice"), (bob, "bob.py"), (carol, "carol.py"), (erin, "erin.ipynb")):
        assert row["entry"] == entry and row["status"] == "graded" and row["error"] == "", row
        assert row["max_score"] == "100" and row["tests"] == "14"
        assert SID.match(row["submission_id"])
        assert row["report_link"] == f"{service.url}/v1/submissions/{row['submission_id']}/report.html"
    assert (alice["score"], alice["passed"], alice["failed_tests"]) == ("100", "14", "")
    assert (carol["score"], carol["passed"], carol["failed_tests"]) == ("100", "14", "")
    assert (erin["score"], erin["passed"], erin["failed_tests"]) == ("100", "14", "")
    assert (bob["score"], bob["passed"]) == ("71", "10")
    assert sorted(bob["failed_tests"].split(" ")) == sorted(WRONG_FAILS)
    assert dave["status"] == "invalid" and "has no solution.py" in dave["error"]
    assert dave["submission_id"] == dave["score"] == dave["report_link"] == ""
    for row in (alice, bob, carol, erin):
        assert service.rows("SELECT candidate, score FROM submissions WHERE id = ?", row["submission_id"]) == [
            (row["candidate"], float(row["score"]))]
    page = httpx.get(bob["report_link"], headers={"Authorization": f"Bearer {service.token}"}, timeout=30)
    assert page.status_code == 200 and "affine_backward" in page.text
    # The summary table names everyone; progress went to stderr, a line each (stderr is not a terminal).
    for name in ("alice", "bob", "carol", "dave", "erin", bob["report_link"]):
        assert name in done.stdout
    assert len(re.findall(r"^\[\d/5\] ", done.stderr, re.M)) == 5
    # Again with a passing score: nothing graded twice, bob (71) and dave (invalid) are under it.
    again = run_cli("submit", "mlp", "--batch", str(folder), "--min-score", "80", "--csv", "again.csv",
                    env=service.env(), cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert [r["submission_id"] for r in read_csv(tmp_path / "again.csv")] == [r["submission_id"] for r in rows]
    graded = "('alice', 'bob', 'carol', 'erin')"
    assert service.rows(f"SELECT count(*) FROM submissions WHERE candidate IN {graded}") == [(4,)]


def test_a_batch_with_a_wrong_token_stops_before_submitting(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    unique_copy(CORRECT, folder / "zed.py")
    done = run_cli("submit", "mlp", "--batch", str(folder), env=service.env(GRADER_TOKEN="nope"), cwd=tmp_path)
    assert done.returncode == 2 and "the token was refused" in done.stderr
    assert not (tmp_path / "cohort-results.csv").exists()
    assert service.rows("SELECT count(*) FROM submissions WHERE candidate = 'zed'") == [(0,)]


def test_report_links_are_printed_without_wait(service: Service, tmp_path: Path) -> None:
    solution = unique_copy(CORRECT, tmp_path / "s.py")
    done = run_cli("submit", "mlp", str(solution), env=service.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sid = done.stdout.splitlines()[0]
    for suffix in ("", "/report", "/report.html", "/report.junit.xml"):
        assert f"{service.url}/v1/submissions/{sid}{suffix}\n" in done.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)


class LosesFirstAnswer(BaseHTTPRequestHandler):
    """A proxy to the service that forwards the first POST but drops its answer, as a network failure would."""

    upstream = ""
    posts = 0

    def _relay(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = httpx.request(method, type(self).upstream + self.path, content=body, headers=headers, timeout=30)
        if method == "POST":
            type(self).posts += 1
            if type(self).posts == 1:
                self.close_connection = True  # the service has the submission; the client never hears of it
                return
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def log_message(self, *args: object) -> None:
        pass


def test_a_post_whose_answer_was_lost_is_retried_without_grading_twice(service: Service, tmp_path: Path) -> None:
    LosesFirstAnswer.upstream, LosesFirstAnswer.posts = service.url, 0
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), LosesFirstAnswer)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    solution = unique_copy(CORRECT, tmp_path / "solution.py")
    try:
        done = run_cli("submit", "mlp", str(solution), "--candidate", "lost-answer", "--wait", "--retry-delay", "0.1",
                       env=service.env(GRADER_SERVER=f"http://127.0.0.1:{proxy.server_address[1]}"), cwd=tmp_path)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert done.returncode == 0, done.stderr
    assert LosesFirstAnswer.posts == 2
    assert "retrying in" in done.stderr and "(already submitted with this content" in done.stderr
    assert "100/100 points" in done.stdout
    (sid, status), = service.rows("SELECT id, status FROM submissions WHERE candidate = 'lost-answer'")
    assert status == "done" and sid in done.stderr
    assert service.rows("SELECT count(*) FROM reports WHERE submission_id = ?", sid) == [(1,)]


def buggy_notebook() -> str:
    """The correct mlp solution as a notebook (cell 1 markdown, then a code cell per top-level block: cell 2 the
    docstring and imports, cell 3 affine_forward) with a NameError on line 3 of cell 3."""
    cells = [nbformat.v4.new_markdown_cell("# A two-layer net")]
    cells += [nbformat.v4.new_code_cell(block) for block in CORRECT.read_text().split("\n\n\n")]
    assert cells[2].source.splitlines()[2].strip() == "out = x2d @ w + b", cells[2].source
    cells[2].source = cells[2].source.replace("out = x2d @ w + b", "out = x2d @ w + b + undefined_name")
    cells[-1].source += f"\n# {uuid.uuid4().hex}"  # last cell, last line: no earlier line moves
    return nbformat.writes(nbformat.v4.new_notebook(cells=cells))


def test_a_notebook_s_failing_line_is_named_by_cell_and_line_in_the_summary_and_the_junit(
        service: Service, tmp_path: Path) -> None:
    (tmp_path / "analysis.ipynb").write_text(buggy_notebook())
    done = run_cli("submit", "mlp", "analysis.ipynb", "--wait", "--junit", "r.xml", env=service.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # a low score without --min-score is not a failure of the command
    where = "notebook cell 3, line 3"
    # The summary: affine_forward fails, and the line under it says where.
    lines = done.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if re.match(r"^  \S+ 0/\d+  affine_forward  \(forward\)$", line))
    assert "does not define `undefined_name`, which affine_forward calls" in lines[head + 1], lines[head:head + 2]
    assert f"(solution.py, line 9; {where})" in lines[head + 1], lines[head:head + 2]
    # The JUnit: affine_forward's failure (or error) names the cell and line in its message and its text.
    suite = ET.parse(tmp_path / "r.xml").getroot()
    case = next(c for c in suite.iter("testcase") if re.findall(r"\w+", c.get("name", ""))[0] == "affine_forward")
    verdict = case.find("failure") if case.find("failure") is not None else case.find("error")
    assert verdict is not None, ET.tostring(case)
    assert where in verdict.get("message", "") and where in (verdict.text or ""), ET.tostring(case)
    assert "undefined_name" in (verdict.text or "")
    # Every visible test that lost points for this line says the same place; a hidden one says nothing more.
    lost = [c for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    hidden = [c for c in lost if (c.find("failure") if c.find("failure") is not None else c.find("error"))
              .get("message") == "hidden test"]  # type: ignore[union-attr]
    visible = [c for c in lost if c not in hidden]
    assert visible and all(where in ET.tostring(c, encoding="unicode") for c in visible)
    assert all("notebook cell" not in ET.tostring(c, encoding="unicode") for c in hidden)
    places = re.findall(r"notebook cell (\d+), line (\d+)", done.stdout)
    failed = re.findall(r"^  FAIL 0/\d+  (\w+)  ", done.stdout, re.M)
    assert failed == ["affine_forward", "affine_backward", "affine_gradcheck", "net_scores", "net_loss", "net_grads",
                      "net_gradcheck", "train_mlp"], done.stdout  # train_mlp is hidden: its verdict only
    assert places == [("3", "3")] * 7, done.stdout  # each visible failure once, always the same line
    assert "solution.py was converted from a Jupyter notebook" in done.stdout


def test_a_grading_the_service_could_not_finish_exits_3_with_its_reason(tmp_path: Path) -> None:
    """A real service that fails a grading: with GRADER_JOB_MAX_ATTEMPTS=1, a grading interrupted once (the
    service killed mid-grading, then started again) is failed, never retried. The waiting client hears it as a
    fault of the service (3), with the service's reason; a second submit of the same content gets that failed
    submission back and says how to grade it again, and --resubmit does."""
    import time

    from tests.service.live_server import LiveServer

    live = LiveServer(tmp_path / "data", env={"GRADER_JOB_MAX_ATTEMPTS": "1", "GRADER_ROOT_CAUSES": "false"})
    service = Service(live, live.token("submitter", "ci"))
    live.start()
    client, port = submit_slow_then_kill(live, service, tmp_path)
    try:
        time.sleep(3.0)  # the client meets a closed port for a while (it polls at most 3 s apart)
        assert client.poll() is None, "the client gave up while the service was down"
        live.start(port=port)
        out, err = client.communicate(timeout=240)

        (sid, status, attempts, error), = service.rows("SELECT id, status, attempts, error FROM submissions")
        reason = ("grading was interrupted once (the service stopped while grading this submission); it is "
                  "not retried again")
        assert (status, attempts, error) == ("failed", 1, reason)
        assert client.returncode == 3, err
        assert f"grader: the service could not grade submission {sid}: {reason}" in err, err
        assert "could not reach the service" in err and "Traceback" not in err
        assert out == "" and not (tmp_path / "r.xml").exists()  # no report, so no score and no JUnit

        again = run_cli("submit", "mlp", "slow.py", "--wait", env=service.env(), cwd=tmp_path)
        assert again.returncode == 3, again.stderr
        assert f"the service could not grade submission {sid}: {reason}" in again.stderr
        assert "--resubmit" in again.stderr and "already submitted" in again.stderr
        fresh = run_cli("submit", "mlp", "slow.py", "--wait", "--resubmit", env=service.env(), cwd=tmp_path)
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.startswith("mlp v1.0.0: 100/100 points, 14/14 tests passed"), fresh.stdout
        assert service.rows("SELECT status, count(*) FROM submissions GROUP BY status ORDER BY status") == \
            [("done", 1), ("failed", 1)]
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        live.stop()
