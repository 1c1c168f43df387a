"""The report as JUnit XML for CI: one testsuite per problem, one testcase per test, categories as class names."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from grader.engine.report import Report

# XML 1.0 forbids most control characters; candidate output may contain any of them.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def render_junit(report: Report) -> str:
    """JUnit XML: failed tests are <failure>, errors and time-outs <error>, skipped <skipped>; points in properties."""
    counts = {s: sum(t.status == s for t in report.tests) for s in ("failed", "error", "timeout", "skipped")}
    suite = ET.Element("testsuite", {
        "name": _clean(report.problem.id), "tests": str(len(report.tests)), "failures": str(counts["failed"]),
        "errors": str(counts["error"] + counts["timeout"]), "skipped": str(counts["skipped"]),
        "time": f"{report.duration_s:.3f}"})
    props = ET.SubElement(suite, "properties")
    for name, value in (("problem_version", report.problem.version), ("score", f"{report.score:g}"),
                        ("max_score", f"{report.max_score:g}"), ("status", report.status),
                        ("grader_version", report.environment.grader_version),
                        ("seed", str(report.environment.seed))):
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for test in report.tests:
        case = ET.SubElement(suite, "testcase", {
            "classname": _clean(f"{report.problem.id}.{test.category.replace(' ', '_')}"),
            "name": _clean(f"{test.id}: {test.name}" if test.name != test.id else test.id),
            "time": f"{test.duration_s:.3f}"})
        case_props = ET.SubElement(case, "properties")
        ET.SubElement(case_props, "property", {"name": "points", "value": f"{test.points:g}"})
        ET.SubElement(case_props, "property", {"name": "earned", "value": f"{test.earned:g}"})
        body = test.message + (f"\n\nsmallest failing input:\n{test.counterexample}" if test.counterexample else "")
        if test.status == "failed":
            ET.SubElement(case, "failure", {"message": _clean(test.message.splitlines()[0] if test.message else
                                                              "failed"), "type": "failed"}).text = _clean(body)
        elif test.status in ("error", "timeout"):
            ET.SubElement(case, "error", {"message": _clean(test.message.splitlines()[0] if test.message else
                                                            test.status), "type": test.status}).text = _clean(body)
        elif test.status == "skipped":
            ET.SubElement(case, "skipped", {"message": _clean(test.message)})
    if report.findings:
        ET.SubElement(suite, "system-err").text = _clean("\n".join(
            f"{f.severity}: {f.kind}: {f.message}" + (f" (line {f.line})" if f.line else "") for f in report.findings))
    if report.output.text:
        ET.SubElement(suite, "system-out").text = _clean(report.output.text)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
