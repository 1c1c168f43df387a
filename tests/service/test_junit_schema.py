"""The JUnit XML is valid against tests/schemas/junit.xsd (what Jenkins and GitLab read), and says what was decided."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import xmlschema
from conftest import make_settings, standin_grade

from grader.engine.report import Finding, Output, Report, TestResult
from grader.reports.junit import case_name, render_junit

SCHEMA = xmlschema.XMLSchema(Path(__file__).resolve().parents[1] / "schemas" / "junit.xsd")


@dataclass(frozen=True)
class Decision:
    test_id: str
    points: float
    reason: str


def _report(tmp_path: Path, code: str = "affine_forward relu_forward") -> Report:
    return standin_grade("mlp", {"solution.py": code}, make_settings(tmp_path), "solution.py")


def _with_status(report: Report, index: int, status: str, message: str) -> Report:
    tests = list(report.tests)
    tests[index] = tests[index].model_copy(update={"status": status, "message": message, "earned": 0.0})
    return report.model_copy(update={"tests": tests, "score": sum(t.earned for t in tests)})


def _props(element: ET.Element) -> dict[str, str | None]:
    found = element.find("properties")
    assert found is not None
    return {p.get("name") or "": p.get("value") for p in found}


def _reports(tmp_path: Path) -> dict[str, tuple[Report, list[Decision] | None]]:
    every = "affine_forward affine_backward affine_gradcheck relu_forward relu_backward softmax sgd_step train_mlp"
    base = _report(tmp_path)
    mixed = _with_status(_with_status(_with_status(base, 0, "error", "ZeroDivisionError"), 1, "timeout",
                                      "over 10 s of CPU"), 2, "skipped", "the submission's CPU budget ran out")
    failed = next(t for t in base.tests if t.status == "failed")
    controls = base.model_copy(update={
        "output": Output(text="\x00\x07\x1b[31mred\x1b[0m ]]> <b>&amp;\ud800", bytes_total=40),
        "findings": [Finding(kind="note", severity="info", message="bell \x07 here")],
        "tests": [base.tests[0].model_copy(update={"name": "na\x0bme", "message": "\x01bad\x02"}), *base.tests[1:]]})
    return {
        "all passed": (_report(tmp_path, every), None),
        "failed": (base, None),
        "error, timeout, skipped": (mixed, None),
        "overrides": (base, [Decision(failed.id, failed.points / 2, "half"),
                             Decision(failed.id, failed.points, "the statement allowed \x1b ties"),
                             Decision(base.tests[0].id, 0.0, "copied")]),
        "interviewer without overrides": (base, []),
        "control characters": (controls, None),
    }


@pytest.mark.parametrize("which", ["all passed", "failed", "error, timeout, skipped", "overrides",
                                   "interviewer without overrides", "control characters"])
def test_rendered_junit_is_valid(tmp_path: Path, which: str) -> None:
    report, overrides = _reports(tmp_path)[which]
    xml = render_junit(report, overrides=overrides)
    SCHEMA.validate(xml)
    suite = ET.fromstring(xml.encode())
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests") or -1) == len(report.tests)
    assert int(suite.get("failures") or -1) == sum(c.find("failure") is not None for c in cases)
    assert int(suite.get("errors") or -1) == sum(c.find("error") is not None for c in cases)
    assert int(suite.get("skipped") or -1) == sum(c.find("skipped") is not None for c in cases)


def test_the_schema_refuses_what_ci_would_not_read() -> None:
    valid = ('<testsuite name="s" tests="1"><testcase name="t" time="0.1"><failure message="m">x</failure>'
             '</testcase><system-out>o</system-out><system-err>e</system-err></testsuite>')
    SCHEMA.validate(valid)
    for broken in (valid.replace(' name="t"', ""),  # a case needs a name
                   valid.replace(' tests="1"', ""),  # a suite needs its count
                   valid.replace('time="0.1"', 'time="fast"'),
                   valid.replace("<system-out>o</system-out><system-err>e</system-err>",
                                 "<system-err>e</system-err><system-out>o</system-out>"),
                   valid.replace("<failure", "<skipped/><failure"),  # skipped and failed at once
                   valid.replace("<testcase", "<properties/><properties/><testcase")):
        assert not SCHEMA.is_valid(broken), broken


def test_overrides_are_in_the_junit_of_interviewers(tmp_path: Path) -> None:
    report, overrides = _reports(tmp_path)["overrides"]
    assert overrides is not None
    failed_id, copied_id = overrides[1].test_id, overrides[2].test_id
    suite = ET.fromstring(render_junit(report, overrides=overrides).encode())
    failed = next(t for t in report.tests if t.id == failed_id)
    copied = next(t for t in report.tests if t.id == copied_id)
    final = report.score + failed.points - copied.earned
    props = _props(suite)
    assert props["graded_score"] == f"{report.score:g}" and props["final_score"] == f"{final:g}"
    assert props["score"] == f"{report.score:g}"  # `score` is the grader's in every export, as in the JSON
    cases = dict(zip((t.id for t in report.tests), suite.findall("testcase")))
    case = cases[failed_id]
    assert _props(case) == {"points": f"{failed.points:g}", "earned": "0", "final_earned": f"{failed.points:g}",
                            "overridden": "true", "override_reason": "the statement allowed \ufffd ties"}
    failure = case.find("failure")  # the grader's verdict stays, and says it was overridden
    assert failure is not None and "overridden by an interviewer" in (failure.get("message") or "")
    assert f"{failed.points:g} of {failed.points:g} points" in (failure.text or "")
    assert _props(cases[copied_id])["final_earned"] == "0" and _props(cases[copied_id])["overridden"] == "true"
    assert _props(cases[copied_id])["earned"] == f"{copied.earned:g}" != "0"
    untouched = next(t for t in report.tests if t.id not in (failed_id, copied_id))
    assert "overridden" not in _props(cases[untouched.id])
    assert _props(cases[untouched.id])["earned"] == _props(cases[untouched.id])["final_earned"]


def test_a_submitters_junit_has_no_decisions(tmp_path: Path) -> None:
    report = _report(tmp_path)
    suite = ET.fromstring(render_junit(report).encode())
    props = _props(suite)
    assert "final_score" not in props and "graded_score" not in props and props["score"] == f"{report.score:g}"
    interviewer = _props(ET.fromstring(render_junit(report, overrides=[]).encode()))
    assert interviewer["final_score"] == interviewer["graded_score"] == interviewer["score"] == f"{report.score:g}"


@pytest.mark.parametrize(("test_id", "name", "expected"), [
    ("train_mlp", "train_mlp: accuracy on held-out data", "train_mlp: accuracy on held-out data"),
    ("relu_forward", "relu_forward matches the reference", "relu_forward matches the reference"),
    ("softmax", "softmax", "softmax"),
    ("conv_forward", "conv2d_forward matches PyTorch", "conv_forward: conv2d_forward matches PyTorch"),
    ("relu", "relu_forward matches", "relu: relu_forward matches"),  # a prefix of a longer word is not the id
])
def test_the_case_name_shows_the_id_once(test_id: str, name: str, expected: str) -> None:
    test = TestResult(id=test_id, name=name, category="forward", points=1, earned=1, status="passed")
    assert case_name(test) == expected


def test_no_catalog_test_repeats_its_id_in_junit(tmp_path: Path) -> None:
    suite = ET.fromstring(render_junit(_report(tmp_path)).encode())
    for case in suite.findall("testcase"):
        name = case.get("name") or ""
        head = name.split(":")[0].split()[0]
        assert not name.startswith(f"{head}: {head}"), name
