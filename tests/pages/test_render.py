"""The interviewers' pages rendered from data: candidate text stays text, failing lines are marked, plots are PNGs."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.engine.report import Environment, Figure, Finding, Output, ProblemRef, Report
from grader.engine.report import TestResult as Result  # not collected by pytest as a test class
from grader.reports import html as pages
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
    assert "graded 2, adjusted by 3 overrides" in html
    assert "<del>0</del> 0.5 / 1" in html


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
