"""The report as JUnit XML for CI: one testsuite per problem, one testcase per test, categories as class names.

The shape (checked by tests/schemas/junit.xsd, what Jenkins and GitLab read):

- suite properties: problem_version, score (the grader's, for every reader, as in the JSON), max_score, status,
  grader_version, seed; for a reader who may see the interviewers' decisions (overrides passed, even none)
  also graded_score and final_score;
- testcase properties: points, earned (the grader's points), and for such a reader final_earned (after
  overrides); an overridden test also has overridden=true and override_reason. The grader's verdict is never
  rewritten: a failed test stays a <failure> (CI shows what the grader found), its message then says it was
  overridden and to what.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Protocol

from grader.engine.report import Report, TestResult, points_after_overrides, total_points

# XML 1.0 forbids most control characters; candidate output may contain any of them.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_IDENTIFIER_CHAR = re.compile(r"\w")


class Decision(Protocol):
    """What the XML needs of an interviewer's override (the service's OverrideOut fits)."""

    @property
    def test_id(self) -> str: ...

    @property
    def points(self) -> float: ...

    @property
    def reason(self) -> str: ...


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def case_name(test: TestResult) -> str:
    """The testcase name: the test's name, led by its id once (many names already start with it)."""
    name, tid = test.name, test.id
    if name == tid or (name.startswith(tid) and not _IDENTIFIER_CHAR.match(name[len(tid)])):
        return name
    return f"{tid}: {name}" if name else tid


def render_junit(report: Report, overrides: Sequence[Decision] | None = None) -> str:
    """JUnit XML: failed tests are <failure>, errors and time-outs <error>, skipped <skipped>; points in properties.

    `overrides` (oldest first, the latest of a test wins) only for readers who may see the interviewers'
    decisions; None (a submitter) leaves the report as graded, with no final_score.
    """
    latest = {o.test_id: o for o in overrides or () if any(t.id == o.test_id for t in report.tests)}
    earned = points_after_overrides(report, ((o.test_id, o.points) for o in overrides or ()))
    final_score = total_points(earned) if latest else report.score
    counts = {s: sum(t.status == s for t in report.tests) for s in ("failed", "error", "timeout", "skipped")}
    suite = ET.Element("testsuite", {
        "name": _clean(report.problem.id), "tests": str(len(report.tests)), "failures": str(counts["failed"]),
        "errors": str(counts["error"] + counts["timeout"]), "skipped": str(counts["skipped"]),
        "time": f"{report.duration_s:.3f}"})
    props = ET.SubElement(suite, "properties")
    suite_props = [("problem_version", report.problem.version), ("score", f"{report.score:g}"),
                   ("max_score", f"{report.max_score:g}"), ("status", report.status),
                   ("grader_version", report.environment.grader_version), ("seed", str(report.environment.seed))]
    if overrides is not None:
        suite_props += [("graded_score", f"{report.score:g}"), ("final_score", f"{final_score:g}")]
    for name, value in suite_props:
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for test in report.tests:
        case = ET.SubElement(suite, "testcase", {
            "classname": _clean(f"{report.problem.id}.{test.category.replace(' ', '_')}"),
            "name": _clean(case_name(test)), "time": f"{test.duration_s:.3f}"})
        case_props = ET.SubElement(case, "properties")
        decision = latest.get(test.id)
        case_values = [("points", f"{test.points:g}"), ("earned", f"{test.earned:g}")]
        if overrides is not None:
            case_values.append(("final_earned", f"{earned[test.id]:g}"))
        for name, value in case_values:
            ET.SubElement(case_props, "property", {"name": name, "value": value})
        overridden = ""
        if decision is not None:
            ET.SubElement(case_props, "property", {"name": "overridden", "value": "true"})
            ET.SubElement(case_props, "property", {"name": "override_reason", "value": _clean(decision.reason)})
            overridden = (f"overridden by an interviewer: {earned[test.id]:g} of {test.points:g} points "
                          f"(graded {test.earned:g}): {decision.reason}")
        if test.caused_by:
            ET.SubElement(case_props, "property", {"name": "caused_by", "value": _clean(",".join(test.caused_by))})
        first_line = test.message.splitlines()[0] if test.message else ""
        body = test.message + (f"\n\nsmallest failing input:\n{test.counterexample}" if test.counterexample else "")
        if test.caused_by:
            body = (f"follows from the failure of {', '.join(test.caused_by)}: with the reference standing in for the "
                    f"functions it found wrong, this test passes\n\n{body}")
        if overridden:
            body = f"{overridden}\n\n{body}" if body else overridden
        if test.status == "failed":
            message = f"[{overridden}] {first_line or 'failed'}" if overridden else first_line or "failed"
            ET.SubElement(case, "failure", {"message": _clean(message), "type": "failed"}).text = _clean(body)
        elif test.status in ("error", "timeout"):
            message = f"[{overridden}] {first_line or test.status}" if overridden else first_line or test.status
            ET.SubElement(case, "error", {"message": _clean(message), "type": test.status}).text = _clean(body)
        elif test.status == "skipped":
            message = f"[{overridden}] {test.message}" if overridden else test.message
            ET.SubElement(case, "skipped", {"message": _clean(message)})
    # In the order the schema has them: system-out, then system-err.
    if report.output.text:
        ET.SubElement(suite, "system-out").text = _clean(report.output.text)
    if report.findings:
        ET.SubElement(suite, "system-err").text = _clean("\n".join(
            f"{f.severity}: {f.kind}: {f.message}" + (f" (line {f.line})" if f.line else "") for f in report.findings))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
