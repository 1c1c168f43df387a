"""A short plain-text view of a report, for the command line."""

from __future__ import annotations

from grader.engine.report import Report

MARKS = {"passed": "PASS", "failed": "FAIL", "error": "ERR ", "timeout": "TIME", "skipped": "SKIP"}


def render_text(report: Report) -> str:
    lines = [f"{report.problem.id} v{report.problem.version}: {report.score:g}/{report.max_score:g} points, "
             f"{report.passed}/{len(report.tests)} tests passed ({report.duration_s:.1f} s, "
             f"sandbox {report.environment.sandbox_backend})"]
    if report.status == "error":
        lines.append(f"GRADER ERROR: {report.error}")
    for f in report.findings:
        lines.append(f"  [{f.severity}] {f.message}")
    for cause in report.root_causes:
        lines.append(f"  ROOT {cause.test} ({', '.join(cause.functions)}): {cause.points_lost:g} points lost with "
                     f"{len(cause.followers)} failure(s) that follow from it: {', '.join(cause.followers)}")
    for t in report.tests:
        follows = f"  follows from {', '.join(t.caused_by)}" if t.caused_by else ""
        lines.append(f"  {MARKS[t.status]} {t.earned:g}/{t.points:g}  {t.id}  ({t.category}){follows}")
        if t.status != "passed" and t.message:
            lines.append(f"         {t.message}")
        if t.counterexample:
            lines.append(f"         smallest failing case: {t.counterexample}")
    if report.output.bytes_total:
        more = (
            f" (first {len(report.output.text)} of {report.output.bytes_total} bytes)"
            if report.output.truncated
            else ""
        )
        lines.append(f"  candidate output{more}:")
        lines.extend("    | " + line for line in report.output.text.splitlines()[:20])
    return "\n".join(lines)
