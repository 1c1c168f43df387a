"""The interviewers' pages rendered from data: candidate text stays text, failing lines are marked, plots are PNGs."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.engine.report import Environment, Figure, Finding, Output, ProblemRef, Report
from grader.engine.report import TestResult as Result  # not collected by pytest as a test class
from grader.reports import html as pages
from grader.reports.csvsafe import safe_cell
from grader.reports.html import (
    Links,
    SubmissionRow,
    Viewer,
    build_code_files,
    content_security_policy,
    failure_location,
    highlight_lines,
    render_error_page,
    render_login_page,
    render_report_page,
    render_submissions_page,
)
from grader.reports.plots import figure_data_uri, render_png
from grader.service.schemas import OverrideOut
from grader.service.submissions import effective_points, overridden_score

XSS = "<script>alert(1)</script>"
ATTR_XSS = '"><img src=x onerror=alert(2)>'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
META = {"id": 1, "previous_points": 0.0, "created_at": "2026-11-23T20:05:00"}

SOLUTION = f'''import numpy as np
from helpers import shape_of


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """{XSS}"""
    print("{XSS}")
    h = np.tanh(x @ Wx + h_prev @ Wh + b)
    return h, (x, h_prev, Wx, Wh, h)


def rnn_step_backward(dh_next, cache):
    raise ValueError("bad {XSS}")
'''
HELPERS = f"# {XSS}\ndef shape_of(a):\n    return a.shape[5]\n"


class _Page(HTMLParser):
    """Collects what a browser would build: tags with their attributes, and the text shown."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def make_report() -> Report:
    tests = [
        Result(id="rnn_step_forward", name="rnn step forward", category="forward", points=2, earned=2,
                   status="passed"),
        Result(id="rnn_step_backward", name="rnn step backward", category="backward", points=3, earned=0,
                   status="error", message=f"rnn_step_backward raised ValueError: bad {XSS} (solution.py, line 13)",
                   counterexample=f"N=2, D=3, H=4\nx = {XSS}", details={"line": 13},
                   figures=[Figure(kind="line", title=f"gradient norm {XSS}", x_label="t", y_label="|dh|",
                                   series={"candidate": [[t, 0.5 ** t] for t in range(12)]})]),
        Result(id="shapes", name="shapes", category="conformance", points=1, earned=0, status="error",
                   message="rnn_step_forward raised IndexError: tuple index out of range (helpers.py, line 3)",
                   details={"line": 3}),
        Result(id="lstm_hidden", name="lstm hidden", category="backward", points=2, earned=0, status="failed",
                   hidden=True, message=f"dWx wrong {XSS}"),
    ]
    return Report(problem=ProblemRef(id="rnn", version="1"), status="graded", score=2, max_score=8, tests=tests,
                  findings=[Finding(kind="forbidden-import", severity="error", line=1,
                                    message=f"solution.py imports torch (line 1): {XSS}")],
                  output=Output(text=f"{XSS}\nhello\n", bytes_total=40),
                  environment=Environment(grader_version="0.1.0", seed=1, sandbox_backend="local"))


def render_sample(**overrides: object) -> str:
    kwargs: dict[str, object] = dict(
        submission=SubmissionRow(id="sub/1?x", problem="rnn", candidate=f"Ann {XSS}", status="done",
                                 created_at="2026-11-23T20:00:00+00:00", score=2, max_score=8),
        report=make_report(), files={"solution.py": SOLUTION, "helpers.py": HELPERS, f"{ATTR_XSS}.py": XSS},
        notes=[{"author": f"bob {XSS}", "text": f"note {XSS}", "created_at": "2026-11-23T20:05:00"}],
        audit=[{"actor": f"bob {XSS}", "action": "note.added", "detail": {"text": XSS}, "at": "2026-11-23T20:05"}],
        overrides=[{"test_id": "shapes", "points": 0.5, "reason": f"reason {XSS}", "author": "bob"}],
        viewer=Viewer(name=f"bob {ATTR_XSS}", role="interviewer", csrf_token=ATTR_XSS, can_annotate=True),
        flash=f"saved {XSS}")
    kwargs.update(overrides)
    return render_report_page(**kwargs)  # type: ignore[arg-type]


def test_environment_escapes_by_default() -> None:
    env = pages.environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x=XSS) == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_report_page_shows_candidate_text_as_text_and_runs_nothing() -> None:
    html = render_sample()
    page = parse(html)
    assert XSS not in html
    assert not [tag for tag, _ in page.tags if tag in ("script", "iframe", "object", "embed")]
    assert not [tag for tag, attrs in page.tags for name in attrs if name.startswith("on")], "an event handler leaked"
    assert not [tag for tag, _ in page.tags if tag == "img" and _.get("src") == "x"]
    text = "".join(page.text)
    # Each place candidate or user text reaches: code, output, message, counterexample, finding, note, audit,
    # override reason, candidate name, file name, flash.
    for shown in (f'print("{XSS}")', f"{XSS}\nhello", f"bad {XSS} (solution.py, line 13)", f"x = {XSS}",
                  f"imports torch (line 1): {XSS}", f"note {XSS}", f"bob {XSS}", f"text={XSS}", f"reason {XSS}",
                  f"Ann {XSS}", f"{ATTR_XSS}.py", f"saved {XSS}"):
        assert shown in text, shown
    hidden_values = [attrs.get("value") for tag, attrs in page.tags if tag == "input" and attrs.get("type") == "hidden"]
    assert ATTR_XSS in hidden_values  # the CSRF field kept its value intact inside the attribute


def test_failing_lines_are_marked_in_the_file_they_belong_to() -> None:
    html = render_sample()
    anchor = dict((name, a) for a, name in re.findall(r'id="(file\d+)">\s*<h3 class="mono">([^<& ]+)', html))
    assert anchor["solution.py"] == "file0"  # the entry comes first
    marked = re.findall(r'<tr id="(file\d+-L\d+)" class="marked">', html)
    # the two errors and the finding, each in its own file
    helpers = anchor["helpers.py"]
    assert set(marked) == {"file0-L13", f"{helpers}-L3", "file0-L1"}
    assert 'href="#file0-L13"' in html and f'href="#{helpers}-L3"' in html
    assert html.count('class="marked"') == 3


def test_tests_failing_the_same_way_on_a_line_share_one_note() -> None:
    same = [Result(id=f"t{i}", name=f"test {i}", category="backward", points=1, earned=0, status="error",
                   message="f raised ValueError: x (solution.py, line 2)", details={"line": 2}) for i in range(3)]
    files, _ = build_code_files({"solution.py": "a = 1\nraise ValueError('x')\n"}, "solution.py", same, [])
    assert files[0].lines[1].mark_groups == [("f raised ValueError: x (solution.py, line 2)",
                                              ["test 0", "test 1", "test 2"])]
    html = render_report_page(submission=SubmissionRow(id="s", problem="rnn", candidate="c", status="done"),
                              report=make_report().model_copy(update={"tests": same, "findings": []}),
                              files={"solution.py": "a = 1\nraise ValueError('x')\n"})
    note = re.search(r'<tr class="mark-note">(.*?)</tr>', html, re.S)
    assert note is not None and note.group(1).count("f raised ValueError") == 1
    assert '<div class="tests">test 0; test 1; test 2</div>' in note.group(1)


def test_passed_tests_mark_nothing() -> None:
    report = make_report()
    passed = [t.model_copy(update={"status": "passed", "earned": t.points}) for t in report.tests]
    files, anchors = build_code_files({"solution.py": SOLUTION, "helpers.py": HELPERS}, "solution.py", passed, [])
    assert anchors == {}
    assert not any(f.marked for f in files)


@pytest.mark.parametrize(("message", "details", "expected"), [
    ("f raised ValueError: boom (solution.py, line 7)", {"line": 7}, ("solution.py", 7)),
    ("f raised IndexError: out of range (helpers.py, line 3)", {"line": 3}, ("helpers.py", 3)),
    ("dx wrong: relative error 0.3", {"line": 9}, ("solution.py", 9)),
    ("f raised NameError (other.py, line 2)", {}, None),  # not one of the submission's files
    ("helpers.py does not compile: invalid syntax (line 4)", {}, ("helpers.py", 4)),
    ("dx wrong", {}, None),
    ("dx wrong", {"line": True}, None),  # a bool is not a line number
])
def test_failure_location(message: str, details: dict[str, object], expected: tuple[str, int] | None) -> None:
    assert failure_location(message, details, {"solution.py": "", "helpers.py": ""}, "solution.py") == expected


def test_line_outside_the_file_marks_nothing() -> None:
    test = Result(id="t", name="t", category="forward", points=1, earned=0, status="failed", message="x",
                      details={"line": 999})
    files, anchors = build_code_files({"solution.py": "a = 1\n"}, "solution.py", [test], [])
    assert anchors == {} and not files[0].marked


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\r\ufeff"), max_size=200))
def test_highlighting_keeps_every_character_and_python_line_numbers(code: str) -> None:
    lines = highlight_lines(code)
    rebuilt = "\n".join("".join(text for _, text in spans) for spans in lines)
    assert rebuilt == (code[:-1] if code.endswith("\n") and code.count("\n") >= 1 else code)
    assert len(lines) == max(1, len(code.split("\n")) - (1 if code.endswith("\n") else 0))


def test_highlighting_classes_python_tokens() -> None:
    lines = highlight_lines("def f(x):\n    return 'a'  # why\n")
    assert ("k", "def") in lines[0] and ("nf", "f") in lines[0]
    assert ("s1", "'a'") in lines[1] and ("c1", "# why") in lines[1]


def test_overrides_change_the_score_and_the_latest_wins() -> None:
    report = make_report()
    overrides = [{"test_id": "shapes", "points": 1.0, "reason": "a", "author": "x"},
                 {"test_id": "shapes", "points": 0.5, "reason": "b", "author": "y"},
                 {"test_id": "no-such-test", "points": 5.0, "reason": "c", "author": "z"}]
    points = effective_points(report, [OverrideOut.model_validate(o | META) for o in overrides])
    score = overridden_score(report, [OverrideOut.model_validate(o | META) for o in overrides])
    assert points["shapes"] == 0.5 and score == 2.5
    html = render_sample(overrides=overrides, points=points, score=score)
    assert '<div class="big">2.5<span class="of"> / 8</span>' in html
    assert '<span class="final">final 2.5</span> <span class="graded">graded 2</span>' in html
    assert "adjusted by 3 overrides" in html
    assert "<del>0</del> 0.5 / 1" in html


def test_the_page_and_the_junit_view_apply_overrides_as_the_service_does() -> None:
    from grader.reports.junit import render_junit

    report = make_report()
    overrides = [{"test_id": "shapes", "points": 1.0, "reason": "a", "author": "x"},
                 {"test_id": "shapes", "points": 0.5, "reason": "b", "author": "y"},
                 {"test_id": "no-such-test", "points": 5.0, "reason": "c", "author": "z"}]
    decisions = [OverrideOut.model_validate(o | META) for o in overrides]
    assert overridden_score(report, decisions) == 2.5
    html = render_sample(overrides=overrides)  # no points and no score from the service: the page applies them
    assert '<div class="big">2.5<span class="of"> / 8</span>' in html
    assert '<span class="final">final 2.5</span> <span class="graded">graded 2</span>' in html
    assert '<property name="final_score" value="2.5" />' in render_junit(report, decisions)


def test_forms_only_for_viewers_who_may_annotate() -> None:
    reader = Viewer(name="r", role="submitter", can_annotate=False)
    html = render_sample(viewer=reader)
    assert 'name="reason"' not in html and 'name="text"' not in html
    html = render_sample()
    assert html.count('name="reason"') == 4 and html.count('name="text"') == 1
    assert 'action="/submissions/sub%2F1%3Fx/notes"' in html  # ids are quoted into paths


def test_queued_submission_refreshes_and_failed_one_says_why() -> None:
    row = SubmissionRow(id="s1", problem="rnn", candidate="c", status="queued")
    html = render_report_page(submission=row, report=None, files={"solution.py": "x = 1\n"})
    assert '<meta http-equiv="refresh" content="5">' in html and "queued" in html
    failed = SubmissionRow(id="s1", problem="rnn", candidate="c", status="failed", error=f"worker lost {XSS}")
    html = render_report_page(submission=failed, report=None, files={})
    assert 'http-equiv="refresh"' not in html and "worker lost &lt;script&gt;" in html


def test_figures_are_embedded_as_png_data_uris() -> None:
    html = render_sample()
    uris = re.findall(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 1
    assert base64.b64decode(uris[0].split(",", 1)[1]).startswith(PNG_MAGIC)


def test_submissions_page_keeps_filters_and_escapes_rows() -> None:
    rows = [SubmissionRow(id="a b", problem="rnn", candidate=XSS, status="done", score=1.5, max_score=8,
                          created_at="2026-11-23T20:00:00")]
    html = render_submissions_page(rows=rows, filters={"candidate": ATTR_XSS, "status": "done"},
                                   problems=["mlp", "rnn"], links=Links(prefix="/ui"))
    page = parse(html)
    assert XSS not in html and not [t for t, _ in page.tags if t == "script"]
    inputs = {attrs.get("name"): attrs.get("value") for tag, attrs in page.tags if tag == "input"}
    assert inputs["candidate"] == ATTR_XSS
    selected = [attrs.get("value") for tag, attrs in page.tags if tag == "option" and "selected" in attrs]
    assert selected == ["done"]
    assert 'href="/ui/submissions/a%20b"' in html and "1.5 / 8" in html
    empty = render_submissions_page(rows=[], filters={}, problems=[])
    assert "No submission matches" in empty


def test_login_and_error_pages() -> None:
    html = render_login_page(links=Links(prefix="/ui"), error=f"bad token {XSS}", next_url=ATTR_XSS)
    page = parse(html)
    assert XSS not in html
    fields = {attrs.get("name"): attrs for tag, attrs in page.tags if tag == "input"}
    assert fields["token"]["type"] == "password" and fields["next"]["value"] == ATTR_XSS
    forms = [attrs for tag, attrs in page.tags if tag == "form"]
    assert [(f["method"], f["action"]) for f in forms] == [("post", "/ui/login")]
    html = render_error_page(status_code=404, message=f"no submission {XSS}")
    assert "no submission &lt;script&gt;" in html


def test_csp_hash_matches_the_inline_stylesheet() -> None:
    html = render_login_page()
    css = re.search(r"<style>(.*?)</style>", html, re.S)
    assert css is not None
    digest = base64.b64encode(hashlib.sha256(css.group(1).encode()).digest()).decode()
    policy = content_security_policy()
    assert f"'sha256-{digest}'" in policy and "script-src 'none'" in policy


def test_nothing_is_marked_safe_in_the_pages() -> None:
    folder = Path(pages.__file__).parent
    for template in (folder / "templates").glob("*.j2"):
        source = template.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", source), template.name
    assert not re.search(r"\bMarkup\b|\|safe", Path(pages.__file__).read_text())


@pytest.mark.parametrize("kind", ["line", "scatter", "bar"])
def test_plots_are_png_bytes_of_the_stated_size(kind: str) -> None:
    figure = Figure(kind=kind, title="loss $x$ <b>", x_label="step", y_label="loss",  # type: ignore[arg-type]
                    series={"train": [[i, 1.0 / (i + 1)] for i in range(50)], "_val": [[i, 2.0] for i in range(5)]})
    png = render_png(figure)
    assert png.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 340)
    assert render_png(figure) == png  # deterministic: cacheable and reproducible


def test_plots_survive_non_finite_and_empty_data() -> None:
    nan = float("nan")
    for series in ({"a": [[0, nan], [1, float("inf")]]}, {}, {"a": [[0, 1.0], [1, nan], [2, 3.0]]}):
        assert render_png(Figure(kind="line", title="t", series=series)).startswith(PNG_MAGIC)


def test_plot_data_uri_decodes_to_the_rendered_png() -> None:
    figure = Figure(kind="scatter", title="samples", series={"fake": [[0.1, 0.2], [0.3, -0.4]]})
    uri = figure_data_uri(figure)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == render_png(figure)


# ---------------------------------------------------------------------------------------------------------------
# Failures first, passed tests folded, the function under test highlighted


WRONG_VALUE = '''import numpy as np


def helper(x):
    return x


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    h = np.tanh(x @ Wx + h_prev @ Wh)
    return h, None


def rnn_step_backward(dh_next, cache):
    return dh_next
'''


def ordering_report() -> Report:
    """Plan order: passed, failed (wrong value), skipped, error, passed, timeout."""
    def result(test_id: str, status: str, **extra: object) -> Result:
        return Result(id=test_id, name=f"{test_id} checks something", category="forward", points=1,
                      earned=1 if status == "passed" else 0, status=status, **extra)

    tests = [result("p1", "passed"),
             result("rnn_step_forward", "failed", message="h_next wrong: relative error 0.31 (b is missing?)"),
             result("s1", "skipped", message="not run: the budget was used up"),
             result("e1", "error", message="rnn_step_backward raised ValueError: no (solution.py, line 14)",
                    details={"line": 14}),
             result("p2", "passed"),
             result("t1", "timeout", message="the candidate's code did not return")]
    return make_report().model_copy(update={"tests": tests, "findings": [], "score": 2, "max_score": 6})


def _article_ids(html: str) -> list[str]:
    return re.findall(r'<span class="muted mono tid">([^<]+)</span>', html)


def test_failures_come_first_then_skipped_then_passed_folded_each_in_plan_order() -> None:
    html = render_sample(report=ordering_report(), files={"solution.py": WRONG_VALUE}, overrides=[])
    assert _article_ids(html) == ["rnn_step_forward", "e1", "t1", "s1", "p1", "p2"]
    # The passed tests, and only they, sit in one closed <details>: folded without any script.
    folded = re.search(r'<details class="passed-tests">\s*<summary>(.*?)</summary>(.*?)</details>\s*</section>',
                       html, re.S)
    assert folded is not None, "the passed tests are not folded in a <details>"
    assert folded.group(1) == "2 passed tests (2 points)"
    assert _article_ids(folded.group(2)) == ["p1", "p2"]
    before = html[:folded.start()]
    assert _article_ids(before)[-4:] == ["rnn_step_forward", "e1", "t1", "s1"]
    assert not re.search(r'<details class="passed-tests"[^>]*\bopen\b', html)
    assert not [t for t, _ in parse(html).tags if t == "script"]
    # Anchors stay those of plan order whatever the grouping.
    assert 'id="test-2"' in before and 'id="test-1"' in folded.group(2)


def test_a_page_without_passed_tests_has_nothing_to_fold() -> None:
    report = ordering_report()
    failing = report.model_copy(update={"tests": [t for t in report.tests if t.status != "passed"]})
    html = render_sample(report=failing, files={"solution.py": WRONG_VALUE}, overrides=[])
    assert '<details class="passed-tests">' not in html and len(_article_ids(html)) == 4


def _line_classes(html: str) -> dict[int, str]:
    return {int(n): c for n, c in re.findall(r'<tr id="file0-L(\d+)"(?: class="([^"]*)")?>', html)}


def test_a_wrong_value_failure_highlights_the_function_under_test() -> None:
    html = render_sample(report=ordering_report(), files={"solution.py": WRONG_VALUE}, overrides=[])
    classes = _line_classes(html)
    # rnn_step_forward is lines 8-10: no exception, no line number, and still shown (13-14: the raise's function).
    assert [n for n, c in classes.items() if c == "in-fn"] == [8, 9, 10, 13]
    assert classes[4] == classes[5] == ""  # helper is not under test
    note = re.search(r'<tr class="fn-note" id="(file0-fn8)">(.*?)</tr>', html, re.S)
    assert note is not None
    assert 'Function under test: <span class="mono">rnn_step_forward</span>' in note.group(2)
    assert "rnn_step_forward checks something" in note.group(2)
    assert html.count('class="fn-note"') == 2  # rnn_step_forward and rnn_step_backward (the raise)
    # The test links to it; the raise keeps its own marked line and links to both.
    assert 'href="#file0-fn8">Show <span class="mono">rnn_step_forward</span>' in html
    assert classes[14] == "marked" and classes[13] == "in-fn"
    assert 'href="#file0-L14"' in html and 'href="#file0-fn13"' in html


def test_passed_and_skipped_tests_highlight_no_function() -> None:
    report = ordering_report()
    calm = report.model_copy(update={"tests": [t for t in report.tests if t.status in ("passed", "skipped")]})
    html = render_sample(report=calm, files={"solution.py": WRONG_VALUE}, overrides=[])
    assert 'class="in-fn"' not in html and 'class="fn-note"' not in html


def _failing(name: str, *, test_id: str = "t", message: str = "wrong", details: dict[str, object] | None = None
             ) -> Result:
    return Result(id=test_id, name=name, category="forward", points=1, earned=0, status="failed", message=message,
                  details=details or {})


CLASSY = '''class TwoLayerNet:
    def __init__(self):
        pass

    @staticmethod
    def loss(X):
        return 0


def conv2d_forward(x):
    return x


def conv2d_forward(x):
    return x + 1
'''


@pytest.mark.parametrize(("test", "expected"), [
    (_failing("conv2d_forward's speed next to the reference's"), "conv2d_forward"),
    (_failing("TwoLayerNet.loss: data loss plus reg"), "TwoLayerNet.loss"),
    (_failing("TwoLayerNet: parameter shapes and scores"), "TwoLayerNet"),
    (_failing("Both losses return a tensor", message="conv2d_forward returned float32"), "conv2d_forward"),
    (_failing("The gradient through time", test_id="conv2d_forward"), "conv2d_forward"),
    (_failing("anything", details={"function": "TwoLayerNet.loss"}), "TwoLayerNet.loss"),
    (_failing("No gradient reaches G", message="dx wrong"), None),
])
def test_function_under_test(test: Result, expected: str | None) -> None:
    defined = pages.defined_functions({"solution.py": CLASSY}, "solution.py")
    assert pages.function_under_test(test, defined) == expected


def test_defined_functions_follow_python_and_the_entry_file() -> None:
    defined = pages.defined_functions({"solution.py": CLASSY, "helpers.py": "def conv2d_forward(x):\n    pass\n"
                                       "def only_here():\n    pass\n", "broken.py": "def f(:\n"}, "solution.py")
    # The later definition replaces the earlier one, and the entry file's wins over a helper's.
    assert defined["conv2d_forward"] == pages.FunctionSpan("solution.py", 14, 15)
    assert defined["only_here"] == pages.FunctionSpan("helpers.py", 3, 4)
    assert defined["TwoLayerNet.loss"] == pages.FunctionSpan("solution.py", 5, 7)  # the decorator included
    assert "f" not in defined  # a file that does not parse defines nothing


# ---------------------------------------------------------------------------------------------------------------
# Overrides: graded beside final, per test who and why (the page and the stand-alone export)


class _Summary:
    id, problem, candidate, status, max_score, error = "s1", "rnn", f"Ann {XSS}", "done", 8.0, None
    created_at = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


@dataclass
class _View:
    report: Report
    overrides: list[OverrideOut]
    graded_score: float
    final_score: float | None
    submission: _Summary = field(default_factory=_Summary)
    files: dict[str, str] = field(default_factory=lambda: {"solution.py": SOLUTION})
    entry: str = "solution.py"


def _override(test_id: str, points: float, reason: str, author: str, previous: float = 0.0) -> OverrideOut:
    return OverrideOut(id=1, test_id=test_id, points=points, previous_points=previous, reason=reason, author=author,
                       created_at=datetime(2026, 11, 23, 21, 0, tzinfo=UTC))


def test_export_shows_the_graded_score_beside_the_final_one_and_each_override() -> None:
    report = make_report()
    overrides = [_override("shapes", 1.0, "first try", "carol"),
                 _override("lstm_hidden", 1.5, f"partly right {XSS}", "dave"),
                 _override("shapes", 0.5, "half: the helper was given", "erin", previous=1.0)]
    final = overridden_score(report, overrides)
    html = pages.render_report_export(_View(report=report, overrides=overrides, graded_score=report.score,
                                            final_score=final))
    assert final == 4.0 and XSS not in html
    assert '<div class="big">4<span class="of"> / 8</span>' in html
    assert '<span class="final">final 4</span> <span class="graded">graded 2</span>' in html
    table = re.search(r'<section id="overrides" class="card">(.*?)</section>', html, re.S)
    assert table is not None
    text = " ".join("".join(parse(table.group(1)).text).split())
    # One row per overridden test, in plan order, with the latest override: graded points, override, who, why.
    assert "rnn step backward" not in text
    shapes = text.index("shapes")
    lstm = text.index("lstm hidden")
    assert shapes < lstm
    assert "shapes 0 / 1 0.5 / 1 erin 2026-11-23 21:00:00 UTC half: the helper was given" in text
    assert f"lstm hidden 0 / 2 1.5 / 2 dave 2026-11-23 21:00:00 UTC partly right {XSS}" in text
    assert "carol" not in text
    assert "<del>0</del> 0.5 / 1" in html and "<del>0</del> 1.5 / 2" in html
    assert "Graded 0; points set to 0.5 by erin" in html
    # The export is a document of its own: no forms, no refresh, no script.
    assert "<form" not in html.split("</header>", 1)[1] and 'http-equiv="refresh"' not in html


def test_the_export_links_nowhere_but_into_itself() -> None:
    report = make_report()
    html = pages.render_report_export(_View(report=report, overrides=[_override("shapes", 1.0, "ok", "erin")],
                                            graded_score=report.score, final_score=3.0))
    links = re.findall(r'\b(?:href|action|src)="([^"]*)"', html)
    assert links and all(link.startswith(("#", "data:")) for link in links), links
    assert "<form" not in html and "/submissions" not in html and "Sign out" not in html
    assert '<span class="brand">DL grader</span>' in html
    page = render_sample()  # the page itself keeps its links
    assert '<a class="brand" href="/submissions">DL grader</a>' in page and "<form" in page


# ---------------------------------------------------------------------------------------------------------------
# The comparison page


def test_compare_page_puts_candidates_side_by_side_per_category() -> None:
    report = make_report()
    better = report.model_copy(update={"score": 5, "tests": [
        t.model_copy(update={"status": "passed", "earned": t.points}) if t.id == "rnn_step_backward" else t
        for t in report.tests]})
    ann = pages.compare_column(SubmissionRow(id="a" * 32, problem="rnn", candidate=f"Ann {XSS}", status="done"),
                               report, {"shapes": 0.5}, overrides=1)
    bob = pages.compare_column(SubmissionRow(id="b" * 32, problem="rnn", candidate="Bob", status="done"), better)
    queued = pages.compare_column(SubmissionRow(id="c" * 32, problem="rnn", candidate="Cy", status="queued"), None)
    assert ann.categories["backward"] == pages.CategoryScore(earned=0, graded=0, points=5, passed=0, tests=2)
    assert ann.categories["conformance"] == pages.CategoryScore(earned=0.5, graded=0, points=1, passed=0, tests=1)
    assert (ann.graded_score, ann.final_score, bob.final_score) == (2, 2.5, 5)
    html = pages.render_compare_page(problem="rnn", columns=[ann, bob, queued], links=Links(prefix="/ui"))
    assert XSS not in html and f"Ann {XSS}" in "".join(parse(html).text)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<th scope="row">([^<]+)</th>(.*?)</tr>', html, re.S)}
    assert list(rows) == ["forward", "backward", "conformance", "tests passed", "graded score", "final score"]

    def cells(row: str) -> list[str]:
        return [" ".join(" ".join(parse(c).text).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]

    assert cells(rows["forward"]) == ["2 / 2 1 of 1 passed", "2 / 2 1 of 1 passed", "–"]
    assert cells(rows["backward"]) == ["0 / 5 0 of 2 passed", "3 / 5 1 of 2 passed", "–"]
    assert cells(rows["conformance"]) == ["0.5 / 1 graded 0 0 of 1 passed", "0 / 1 0 of 1 passed", "–"]
    assert cells(rows["tests passed"]) == ["1 of 4", "2 of 4", "queued"]
    assert cells(rows["graded score"]) == ["2 / 8", "5 / 8", "–"]
    assert cells(rows["final score"]) == ["2.5 / 8 1 override", "5 / 8", "–"]
    assert re.search(r'<td class="num best">5 / 8', html)  # the best final score stands out
    assert 'href="/ui/submissions/' + "a" * 32 + '"' in html


def test_compare_page_without_submissions_says_how_to_pick_them() -> None:
    html = pages.render_compare_page(problem="", columns=[], links=Links(prefix="/ui"))
    assert "Pick two or more submissions of one problem" in html and 'href="/ui/submissions"' in html


def test_submissions_page_marks_overrides_and_offers_csv_and_compare() -> None:
    rows = [SubmissionRow(id="a1", problem="rnn", candidate="Ann", status="done", score=4, max_score=8,
                          graded_score=2, overridden=True),
            SubmissionRow(id="b2", problem="rnn", candidate="Bob", status="done", score=3, max_score=8,
                          graded_score=3)]
    html = render_submissions_page(rows=rows, filters={"problem": "rnn", "candidate": "A&B", "status": ""},
                                   problems=["rnn"], links=Links(prefix="/ui"))
    assert 'href="/ui/submissions.csv?problem=rnn&amp;candidate=A%26B" download>Download CSV</a>' in html
    ann = re.search(r'<tr class="overridden">(.*?)</tr>', html, re.S)
    assert ann is not None and "4 / 8" in ann.group(1) and "graded 2" in ann.group(1)
    assert html.count('class="overridden"') == 1 and "graded 3" not in html
    page = parse(html)
    forms = [attrs for tag, attrs in page.tags if tag == "form"]
    assert {"method": "get", "action": "/ui/compare", "class": "compare-form"} in forms
    boxes = [attrs.get("value") for tag, attrs in page.tags if tag == "input" and attrs.get("name") == "ids"]
    assert boxes == ["a1", "b2"]
    hidden = [attrs for tag, attrs in page.tags if tag == "input" and attrs.get("type") == "hidden"]
    assert {"type": "hidden", "name": "problem", "value": "rnn"} in hidden


def test_tables_reflow_and_code_scrolls_inside_itself_at_phone_width() -> None:
    css = (Path(pages.__file__).parent / "templates" / "pages.css").read_text()
    phone = css[css.index("@media (max-width:700px)"):]
    assert "table.reflow thead{display:none}" in phone and "content:attr(data-label)" in phone
    assert ".codefile{overflow-x:auto}" in css and "overflow-x:auto" in css[css.index("pre{"):]
    html = render_sample()
    assert '<table class="list audit reflow">' in html and 'data-label="Action"' in html


# ---------------------------------------------------------------------------------------------------------------
# CSV


@pytest.mark.parametrize(("value", "cell"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("Ann", "Ann"), ("a=b", "a=b"), ("", ""), (None, ""), (2.5, "2.5"),
    (" =1", " =1"),
])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(value: object, cell: str) -> None:
    assert safe_cell(value) == cell
