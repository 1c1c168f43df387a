"""Jupyter notebooks as submissions (grader/engine/notebook.py): conversion at intake, dropped IPython lines,
line references mapped back to cells, forged markers, refusals. Fast: grading here uses the in-process fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from fastapi.testclient import TestClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from grader.api.app import create_app
from grader.cli import main
from grader.config import Settings
from grader.engine import notebook
from grader.engine.files import ENTRY, check_submission
from grader.engine.report import Report
from grader.errors import InvalidRequest
from grader.submission_files import read_submission
from tests.conftest import ROOT
from tests.grading import grade_submission
from tests.service.conftest import Tokens, make_settings

CORRECT = (ROOT / "tests" / "solutions" / "mlp" / "correct_vectorized.py").read_text()


def check(files: dict[str, str]) -> dict[str, str]:
    return check_submission(files, ENTRY, max_files=16, max_code_bytes=256 * 1024)


def mlp_notebook(*, bug_in_cell_3: bool = False, extra_first_cell: str | None = None) -> str:
    """The correct mlp solution as a notebook: cell 1 markdown, then one code cell per top-level block
    (cell 2: docstring and import; cell 3: affine_forward; ...)."""
    cells = [new_markdown_cell("# A two-layer net\nMarkdown is not code: `%pip install x`")]
    for block in CORRECT.split("\n\n\n"):
        cells.append(new_code_cell(block))
    if extra_first_cell is not None:
        cells[1].source = extra_first_cell + "\n" + cells[1].source
    if bug_in_cell_3:
        assert "out = x2d @ w + b" in cells[2].source
        cells[2].source = cells[2].source.replace("out = x2d @ w + b", "out = x2d @ w + b + undefined_name")
    cells[2].outputs = [new_output("stream", name="stdout", text="OUTPUT-SECRET-1234")]
    cells[2].execution_count = 1
    return nbformat.writes(new_notebook(cells=cells))


def small_notebook(*sources: str, markdown_first: bool = True) -> str:
    cells = ([new_markdown_cell("intro")] if markdown_first else []) + [new_code_cell(s) for s in sources]
    return nbformat.writes(new_notebook(cells=cells))


def grade_inprocess(files: dict[str, str]) -> Report:
    return grade_submission("mlp", files, backend="inprocess")


# --- conversion -------------------------------------------------------------------------------------------

def test_code_cells_in_order_with_one_marker_each_and_no_outputs() -> None:
    nb = new_notebook(cells=[new_markdown_cell("# title"), new_code_cell("a = 1"), new_raw_cell("raw text"),
                             new_code_cell("b = a + 1\nc = b")])
    nb.cells[1].outputs = [new_output("execute_result", data={"text/plain": "OUTPUT-SECRET"}, execution_count=1)]
    script = check({"solution.ipynb": nbformat.writes(nb)})[ENTRY]
    assert script.splitlines() == [notebook.HEADER, "# %% [cell 2]", "a = 1", "# %% [cell 4]", "b = a + 1", "c = b"]
    assert "OUTPUT-SECRET" not in script and "raw text" not in script and "title" not in script


def test_a_converted_notebook_is_stored_as_solution_py_only() -> None:
    files = check({"analysis.ipynb": small_notebook("x = 1"), "helpers.py": "y = 2\n"})
    assert sorted(files) == ["helpers.py", "solution.py"]
    assert files["helpers.py"] == "y = 2\n"
    assert check(files) == files  # idempotent: the engine checks again what the CLI and the API already checked


def test_magics_and_shell_escapes_are_dropped_line_for_line() -> None:
    source = ("import numpy as np\n%matplotlib inline\nfiles = !ls\nfor i in range(2):\n    !echo hi\n"
              "text = '''\n%not a magic inside a string\n!nor a shell escape\n'''\nnp.zeros?\n"
              "y = (1 +\n     2)  % 2\n%time \\\n  slow()\nz = 1")
    script = check({"solution.ipynb": small_notebook(source, "%%bash\necho not python", "%%time\nw = 5 % 3")})[ENTRY]
    compile(script, ENTRY, "exec")  # still Python: an escape inside a block left the block valid
    lines = script.splitlines()
    cell = lines[lines.index("# %% [cell 2]") + 1:lines.index("# %% [cell 3]")]
    assert len(cell) == len(source.split("\n"))  # one line for one line: numbers stay the notebook's
    assert cell[1] == "pass  # grader dropped line magic: %matplotlib inline"
    assert cell[2] == "pass  # grader dropped shell escape: files = !ls"
    assert cell[4] == "    pass  # grader dropped shell escape: !echo hi"
    assert cell[6:8] == ["%not a magic inside a string", "!nor a shell escape"]
    assert cell[9] == "pass  # grader dropped help request: np.zeros?"
    assert cell[10:12] == ["y = (1 +", "     2)  % 2"]
    assert cell[12:14] == ["pass  # grader dropped line magic: %time \\",
                           "# grader dropped with the line above: slow()"]
    assert "pass  # grader dropped cell magic: %%bash" in lines
    assert "# grader dropped with its cell magic: echo not python" in lines
    assert lines[-2:] == ["pass  # grader dropped cell magic: %%time", "w = 5 % 3"]  # %%time's body is Python


def test_continuation_lines_of_a_dropped_line_do_not_copy_its_indentation() -> None:
    import tracemalloc

    # One line with a deep indentation and a backslash, then many continuation lines: each continuation line
    # once got the first line's indentation (lines x indentation bytes: 6 MB from a 25 KB notebook).
    source = "if True:\n" + " " * 2000 + "%x \\\n" + "\\\n" * 3000 + " " * 4 + "y = 1\n" + "z = 2"
    nb = small_notebook(source)
    tracemalloc.start()
    try:
        script = check({"solution.ipynb": nb})[ENTRY]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024 * 1024
    assert len(script) < 6 * len(nb)
    compile(script, ENTRY, "exec")
    lines = script.splitlines()
    cell = lines[lines.index("# %% [cell 2]") + 1:]
    assert len(cell) == len(source.split("\n"))  # still one line for one line
    assert cell[1] == " " * 2000 + "pass  # grader dropped line magic: %x \\"
    assert cell[2:3002] == ["# grader dropped with the line above: \\"] * 3000
    assert cell[3002:] == ["# grader dropped with the line above: y = 1", "z = 2"]  # the last one continued
    mapped = notebook.LineMap.of(script)
    assert mapped is not None and [(n, what) for n, what, _ in mapped.dropped] == [(4, "line magic")]
    assert mapped.where(2 + 3003) == "notebook cell 2, line 3003"


def test_a_script_longer_than_the_limit_is_refused_early() -> None:
    import tracemalloc

    nb = small_notebook("%x \\\n" + "\\\n" * 100_000 + "y = 1")  # 600 KB of JSON, 4 MB of script
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest, match="converts to a script of more than"):
            notebook.convert(nb, "solution.ipynb", 256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(nb)
    with pytest.raises(InvalidRequest, match="converts to a script of more than"):
        check({"solution.ipynb": nb})


def test_notebook_lines_that_read_like_markers_are_escaped() -> None:
    source = ("a = 1\n# %% [cell 9]\nb = 2\nif True:\n    pass  # grader dropped line magic: %who\n"
              "s = '''\n# %% [cell 8]\n'''\nc = undefined_name")
    script = check({"solution.ipynb": small_notebook(source)})[ENTRY]
    compile(script, ENTRY, "exec")
    lines = script.splitlines()
    assert lines[2:] == ["a = 1", "# (a line of the notebook) %% [cell 9]", "b = 2", "if True:",
                         "    pass  # (a line of the notebook) grader dropped line magic: %who", "s = '''",
                         "# %% [cell 8]", "'''", "c = undefined_name"]  # inside a string: left as it is
    mapped = notebook.LineMap.of(script)
    assert mapped is not None and mapped.dropped == []
    assert mapped.where(5) == "notebook cell 2, line 3"
    assert mapped.where(7) == "notebook cell 2, line 5"


def test_only_a_line_that_starts_a_statement_can_be_ipython() -> None:
    source = ("y = 5 \\\n% 3\n"  # a backslash continuation: '% 3' is Python
              "# don't\n%who\n"  # a quote in a comment opens no string
              "s = 'it\\'s' # (\n!ls\n"  # an escaped quote, a bracket in a comment
              "t = ('a',\n!b)\n"  # inside brackets
              "u = r\"\"\"\\\"\"\"\n%x\n\"\"\"\n%y")  # a raw triple-quoted string with an escaped quote
    cell = check({"solution.ipynb": small_notebook(source)})[ENTRY].splitlines()[2:]
    assert cell == ["y = 5 \\", "% 3", "# don't", "pass  # grader dropped line magic: %who",
                    "s = 'it\\'s' # (", "pass  # grader dropped shell escape: !ls", "t = ('a',", "!b)",
                    'u = r"""\\"""', "%x", '"""', "pass  # grader dropped line magic: %y"]


def test_conversion_is_linear_in_a_long_literal() -> None:
    import time

    source = "x = [\n" + "%d,\n" * 40_000 + "]\n%who"  # every line of the literal could be taken for a magic
    started = time.monotonic()
    script = check({"solution.ipynb": small_notebook(source)})[ENTRY]
    assert time.monotonic() - started < 5.0
    assert script.count("grader dropped") == 1 and script.endswith("pass  # grader dropped line magic: %who\n")


def test_dropped_lines_are_findings_naming_cell_and_line_and_the_score_is_the_py_score() -> None:
    nb = mlp_notebook(extra_first_cell="%matplotlib inline\n!pip install numpy")
    report = grade_inprocess({"solution.ipynb": nb})
    assert report.score == report.max_score == grade_inprocess({"solution.py": CORRECT}).score
    dropped = [f for f in report.findings if f.kind == "notebook" and f.severity == "warning"]
    assert [(f.line, f.message.split(":")[0]) for f in dropped] == [
        (3, "notebook cell 2, line 1"), (4, "notebook cell 2, line 2")]
    assert "'%matplotlib inline'" in dropped[0].message and "line magic" in dropped[0].message
    assert "'!pip install numpy'" in dropped[1].message and "shell escape" in dropped[1].message
    assert "(solution.py, line 3)" in dropped[0].message
    assert any(f.kind == "notebook" and f.severity == "info" for f in report.findings)


def test_many_dropped_lines_are_capped_with_a_count() -> None:
    script = check({"solution.ipynb": small_notebook("x = 1\n" + "!echo\n" * 30)})[ENTRY]
    lines = notebook.LineMap.of(script)
    assert lines is not None and len(lines.dropped) == 30
    report = notebook.annotate(Report.model_validate(EMPTY_REPORT), {ENTRY: script}, ENTRY)
    warnings = [f for f in report.findings if f.severity == "warning"]
    assert len(warnings) == notebook.MAX_DROPPED_FINDINGS + 1
    assert warnings[-1].message.startswith("10 more IPython line(s)")


EMPTY_REPORT = {"problem": {"id": "mlp", "version": "1"}, "status": "graded", "score": 0, "max_score": 1,
                "tests": [], "environment": {"grader_version": "t", "seed": 1, "sandbox_backend": "inprocess"}}


# --- line mapping ------------------------------------------------------------------------------------------

def test_a_failing_line_names_its_notebook_cell_and_line() -> None:
    report = grade_inprocess({"solution.ipynb": mlp_notebook(bug_in_cell_3=True)})
    failing = [t for t in report.tests if t.status != "passed"]
    assert failing and report.score < report.max_score
    for t in failing:
        # header (1), cell 2's marker and 3 lines, cell 3's marker (6), def (7), x2d (8), the bug (9)
        assert "(solution.py, line 9; notebook cell 3, line 3)" in t.message, t.message
        assert (t.details["line"], t.details["notebook_cell"], t.details["notebook_line"]) == (9, 3, 3)
    text = report.model_dump_json()
    assert "OUTPUT-SECRET-1234" not in text  # outputs never reach a sandbox nor a report


def test_a_syntax_error_in_a_cell_names_the_cell_in_findings_and_tests() -> None:
    report = grade_inprocess({"solution.ipynb": small_notebook("import numpy as np", "def f(:\n    pass")})
    syntax = next(f for f in report.findings if f.kind == "syntax")
    assert syntax.line == 5
    assert "(line 5; notebook cell 3, line 1)" in syntax.message, syntax.message
    assert report.score == 0
    assert all("notebook cell 3, line 1" in t.message for t in report.tests), report.tests[0].message


def test_rewriting_names_only_the_entry_and_mapped_lines() -> None:
    script = check({"solution.ipynb": small_notebook("a = 1\nb = 2")})[ENTRY]
    lines = notebook.LineMap.of(script)
    assert lines is not None
    assert notebook._rewrite("boom (solution.py, line 4)", ENTRY, lines) == \
        "boom (solution.py, line 4; notebook cell 2, line 2)"
    assert notebook._rewrite('File "solution.py", line 3, in f', ENTRY, lines) == \
        'File "solution.py", line 3 (notebook cell 2, line 1), in f'
    assert notebook._rewrite("boom (helpers.py, line 4)", ENTRY, lines) == "boom (helpers.py, line 4)"
    assert notebook._rewrite("boom (xsolution.py, line 4)", ENTRY, lines) == "boom (xsolution.py, line 4)"
    assert notebook._rewrite("boom (solution.py, line 1)", ENTRY, lines) == "boom (solution.py, line 1)"  # header


def test_forged_markers_in_a_py_file_change_only_annotations() -> None:
    forged = (notebook.HEADER + "\n# %% [cell 7]\npass  # grader dropped shell escape: !rm -rf /\n"
              + CORRECT.replace("out = x2d @ w + b", "out = x2d @ w + b + undefined_name"))
    plain = "\n\n\n" + CORRECT.replace("out = x2d @ w + b", "out = x2d @ w + b + undefined_name")
    assert check({ENTRY: forged}) == {ENTRY: forged}  # a .py file is never converted, whatever it says
    forged_report, plain_report = grade_inprocess({ENTRY: forged}), grade_inprocess({ENTRY: plain})
    assert plain_report.score < plain_report.max_score
    assert forged_report.score == plain_report.score
    assert [(t.id, t.status, t.earned) for t in forged_report.tests] == \
        [(t.id, t.status, t.earned) for t in plain_report.tests]
    # What changed is annotation only: the forger's cell numbers beside their own lines, and findings of kind notebook.
    for f, p in zip(forged_report.tests, plain_report.tests, strict=True):
        assert f.message.replace("; notebook cell 7, line", "").split(" (solution.py")[0] == \
            p.message.split(" (solution.py")[0]
    assert [f for f in forged_report.findings if f.kind != "notebook"] == plain_report.findings


# --- refusals ----------------------------------------------------------------------------------------------

def refusal(files: dict[str, str]) -> str:
    with pytest.raises(InvalidRequest) as info:
        check(files)
    return info.value.message


def test_invalid_notebooks_are_refused_with_what_to_fix() -> None:
    assert "not JSON" in refusal({"solution.ipynb": "import numpy\n"})
    assert "nests too deeply" in refusal({"solution.ipynb": "[" * 100_000 + "]" * 100_000})
    v3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [], "cells": []})
    assert "nbformat version 3" in refusal({"solution.ipynb": v3})
    assert "JSON object with 'nbformat' and 'cells'" in refusal({"solution.ipynb": json.dumps({"a": 1})})
    bad = json.loads(small_notebook("x = 1"))
    del bad["cells"][1]["source"]
    assert "not a valid nbformat 4 notebook" in refusal({"solution.ipynb": json.dumps(bad)})
    assert "no code cells" in refusal({"solution.ipynb": nbformat.writes(new_notebook(
        cells=[new_markdown_cell("only words")]))})
    assert "no code" in refusal({"solution.ipynb": small_notebook("", "  \n", "%pip install numpy")})
    big = new_notebook(cells=[new_code_cell("x = 1")])
    big.cells[0].outputs = [new_output("stream", name="stdout", text="x" * (notebook.MAX_NOTEBOOK_BYTES + 1))]
    message = refusal({"solution.ipynb": nbformat.writes(big)})
    assert f"at most {notebook.MAX_NOTEBOOK_BYTES} bytes" in message and "outputs" in message
    many = small_notebook(*["x = 1"] * (notebook.MAX_CELLS + 1))
    assert f"at most {notebook.MAX_CELLS}" in refusal({"solution.ipynb": many})
    assert "NUL" in refusal({"solution.ipynb": small_notebook("x = '\x00'")})


def test_one_notebook_and_not_beside_solution_py() -> None:
    assert "one notebook at most" in refusal({"a.ipynb": small_notebook("x = 1"), "b.ipynb": small_notebook("y")})
    assert "not both" in refusal({"solution.py": "x = 1", "solution.ipynb": small_notebook("x = 1")})
    assert "not allowed" in refusal({"my notebook.ipynb": small_notebook("x = 1")})


def test_a_notebook_sent_as_solution_py_is_converted_and_as_a_helper_refused() -> None:
    nb = small_notebook("x = 1")
    assert check({ENTRY: nb})[ENTRY] == check({"solution.ipynb": nb})[ENTRY]
    assert "is a Jupyter notebook, not Python" in refusal({ENTRY: "x = 1", "helpers.py": nb})
    v3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [], "cells": []})
    assert "solution.py (a Jupyter notebook) uses nbformat version 3" in refusal({ENTRY: v3})


def test_python_that_starts_with_a_brace_is_still_python() -> None:
    code = '{"cells": 1}\nx = 2\n'
    assert check({ENTRY: code}) == {ENTRY: code}


# --- the ways in: reader, CLI, API -------------------------------------------------------------------------

def test_read_submission_sends_a_notebook_as_solution_ipynb(tmp_path: Path) -> None:
    nb = small_notebook("x = 1")
    (tmp_path / "Untitled-1.ipynb").write_text(nb)
    assert read_submission(tmp_path / "Untitled-1.ipynb") == {"solution.ipynb": nb}
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "Analysis v2.ipynb").write_text(nb)
    (folder / "helpers.py").write_text("y = 1\n")
    assert read_submission(folder) == {"solution.ipynb": nb, "helpers.py": "y = 1\n"}
    assert sorted(check(read_submission(folder))) == ["helpers.py", "solution.py"]
    (folder / "solution.py").write_text("z = 1\n")  # beside solution.py a notebook is ignored, as before
    assert read_submission(folder) == {"solution.py": "z = 1\n", "helpers.py": "y = 1\n"}
    (folder / "solution.py").unlink()
    (folder / "other.ipynb").write_text(nb)
    with pytest.raises(InvalidRequest, match="2 notebooks"):
        read_submission(folder)
    big = tmp_path / "big.ipynb"
    big.write_text(" " * (notebook.MAX_NOTEBOOK_BYTES + 1))
    with pytest.raises(InvalidRequest, match=f"over {notebook.MAX_NOTEBOOK_BYTES} bytes.*outputs"):
        read_submission(big)
    fits = tmp_path / "fits.ipynb"  # larger than the .py limit, within the notebook's
    fits.write_text(" " * 300_000 + nb)
    assert sorted(check(read_submission(fits))) == ["solution.py"]


def test_cli_refuses_an_invalid_notebook_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "nb.ipynb"
    bad.write_text(json.dumps({"nbformat": 3, "cells": []}))
    assert main(["grade", "mlp", str(bad)]) == 2
    assert "nbformat version 3" in capsys.readouterr().err
    as_py = tmp_path / "solution.py"
    as_py.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": "x"}))
    assert main(["grade", "mlp", str(as_py)]) == 2
    assert "solution.py (a Jupyter notebook) is not a valid nbformat 4 notebook" in capsys.readouterr().err


def engine_in_process(problem_id: str, files: dict[str, str], settings: Settings, entry: str) -> Report:
    return grade_submission(problem_id, files, settings=settings, backend="inprocess", entry=entry)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Tokens]]:
    app = create_app(make_settings(tmp_path / "data"), grade=engine_in_process)
    with TestClient(app) as client:
        yield client, Tokens(client.app.state.store)  # type: ignore[attr-defined]


def stored_and_report(client: TestClient, tokens: Tokens, response_json: dict) -> tuple[dict, Report]:  # type: ignore[type-arg]
    from tests.service.conftest import wait_for_status

    sid = response_json["id"]
    assert wait_for_status(client, sid, tokens.submitter)["status"] == "done"
    detail = client.get(f"/v1/submissions/{sid}/detail", headers=Tokens.auth(tokens.interviewer)).json()
    return detail["files"], Report.model_validate(detail["report"])


@pytest.mark.parametrize("how", ["json-files", "json-code", "multipart-files", "multipart-code"])
def test_the_api_accepts_a_notebook_every_way(api: tuple[TestClient, Tokens], how: str) -> None:
    client, tokens = api
    nb = mlp_notebook(bug_in_cell_3=True)
    headers = Tokens.auth(tokens.submitter)
    if how == "json-files":
        r = client.post("/v1/submissions", json={"problem": "mlp", "files": {"solution.ipynb": nb}}, headers=headers)
    elif how == "json-code":
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": nb}, headers=headers)
    elif how == "multipart-files":
        r = client.post("/v1/submissions", data={"problem": "mlp"}, headers=headers,
                        files=[("files", ("solution.ipynb", nb.encode()))])
    else:
        r = client.post("/v1/submissions", data={"problem": "mlp"}, headers=headers,
                        files=[("code", ("Untitled-1.ipynb", nb.encode()))])
    assert r.status_code == 202, r.text
    files, report = stored_and_report(client, tokens, r.json())
    assert list(files) == ["solution.py"] and files["solution.py"].startswith(notebook.HEADER + "\n")
    assert "OUTPUT-SECRET-1234" not in json.dumps(files)
    failing = [t for t in report.tests if t.status != "passed"]
    assert failing and all("notebook cell 3, line 3" in t.message for t in failing)


def test_the_api_refuses_an_invalid_notebook_with_a_400(api: tuple[TestClient, Tokens]) -> None:
    client, tokens = api
    r = client.post("/v1/submissions", json={"problem": "mlp", "files": {"solution.ipynb": "{"}},
                    headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 400 and "solution.ipynb is not a Jupyter notebook: it is not JSON" in r.json()["detail"]


def test_annotations_name_the_cell_only_for_the_entrys_mapped_lines() -> None:
    from grader.engine.report import Finding, TestResult

    script = check({"solution.ipynb": small_notebook("import numpy as np\nx = np.zeros(1)")})[ENTRY]
    findings = [
        Finding(kind="forbidden-import", severity="error", line=3, message="solution.py imports torch (line 3): no"),
        Finding(kind="forbidden-import", severity="error", line=3, message="helpers.py imports torch (line 3): no"),
        Finding(kind="import-error", severity="error", line=4, message="importing solution.py failed: NameError"),
        Finding(kind="sandbox", severity="warning", message="weaker sandbox"),
    ]
    base = dict(name="t", category="forward", points=1.0, earned=0.0, status="failed")
    tests = [TestResult(id="a", message="wrong values", details={"line": 4}, **base),
             TestResult(id="b", message="boom (helpers.py, line 4)", details={"line": 4}, **base),
             TestResult(id="c", message="boom", details={"line": 1}, **base)]
    report = Report.model_validate({**EMPTY_REPORT, "tests": [t.model_dump() for t in tests],
                                    "findings": [f.model_dump() for f in findings]})
    annotated = notebook.annotate(report, {ENTRY: script}, ENTRY)
    assert [f.message for f in annotated.findings[:4]] == [
        "solution.py imports torch (line 3; notebook cell 2, line 1): no",
        "helpers.py imports torch (line 3): no",
        "importing solution.py failed: NameError (notebook cell 2, line 2)",
        "weaker sandbox"]
    a, b, c = annotated.tests
    assert a.message == "wrong values (solution.py, line 4; notebook cell 2, line 2)"
    assert (a.details["notebook_cell"], a.details["notebook_line"]) == (2, 2)
    assert b == tests[1] and c == tests[2]  # another file's line; the header line maps to no cell
    assert notebook.annotate(report, {ENTRY: "x = 1\n"}, ENTRY) is report  # a plain .py: nothing changes


def test_every_view_of_the_report_names_the_cell() -> None:
    from datetime import UTC, datetime

    from grader.reports.html import SubmissionRow, render_report_page
    from grader.reports.junit import render_junit
    from grader.reports.text import render_text

    files = {"solution.ipynb": mlp_notebook(bug_in_cell_3=True, extra_first_cell="%matplotlib inline")}
    report = grade_inprocess(files)
    row = SubmissionRow(id="0" * 32, problem="mlp", candidate="", status="done", created_at=datetime.now(UTC),
                        score=report.score, max_score=report.max_score, error=None)
    views = {"json": report.model_dump_json(), "text": render_text(report), "junit": render_junit(report),
             "html": render_report_page(submission=row, report=report, files=check(files), entry=ENTRY)}
    for name, view in views.items():
        assert "notebook cell 3, line 3" in view, name  # the failing line
        assert "notebook cell 2, line 1" in view, name  # the dropped magic
        assert "OUTPUT-SECRET-1234" not in view, name
