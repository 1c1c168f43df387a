"""A test's outcome as data: what happened, and whose fault it is.

Every test ends in exactly one Verdict. The engine, the reports and the queue
decide by its fields, never by reading a message:

    kind     passed | failed | error | timeout | skipped
    fault    None when passed (or skipped for the submission's own budget)
             "candidate": the candidate's code is wrong, raised, hung, crashed or sent garbage;
                          the test's points are lost
             "grader":    the grader itself failed (a bug in a plan or a check); this must never
                          cost the candidate, so the report is marked incomplete and regraded

`CheckFailed` is how a plan hands a verdict up: raise it with the message (and
the kind, when the candidate's code raised rather than answered wrongly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["passed", "failed", "error", "timeout", "skipped"]
Fault = Literal["candidate", "grader"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    message: str = ""
    fault: Fault | None = None
    counterexample: str | None = None
    line: int | None = None
    # The name the submission lacks, when that is why the test failed: the message already names the cause.
    # The root-cause analysis leaves the test out when the name is one the exercise asks for (one the
    # reference defines); a typo's NameError stays in (grader/engine/grading.py).
    missing: str | None = None

    @property
    def earns_points(self) -> bool:
        return self.kind == "passed"

    def with_counterexample(self, counterexample: str | None, suffix: str = "") -> Verdict:
        return replace(self, counterexample=counterexample, message=self.message + suffix)


PASSED = Verdict("passed")


class CheckFailed(Exception):
    """A test's verdict against the candidate, raised by a plan. The message is shown as is.

    kind "failed": the answer is wrong, or a name the test needs is missing (wherever it is
    looked up); "error": the candidate's code raised (or sent a malformed reply);
    "timeout": it did not return in time.
    """

    def __init__(self, message: str, counterexample: str | None = None, line: int | None = None,
                 kind: Kind = "failed") -> None:
        super().__init__(message)
        self.verdict = Verdict(kind=kind, message=message, fault="candidate", counterexample=counterexample,
                               line=line)

    @classmethod
    def of(cls, verdict: Verdict) -> CheckFailed:
        raised = CheckFailed(verdict.message, verdict.counterexample, verdict.line, verdict.kind)
        raised.verdict = verdict  # every field kept, the missing name too
        return raised

    def amended(self, message: str | None = None, counterexample: str | None = None) -> CheckFailed:
        """The same verdict (kind and line kept) with a reworded message or a counterexample added."""
        v = self.verdict
        return CheckFailed.of(replace(v, message=v.message if message is None else message,
                                     counterexample=v.counterexample if counterexample is None else counterexample))

    @property
    def message(self) -> str:
        return self.verdict.message

    @property
    def counterexample(self) -> str | None:
        return self.verdict.counterexample

    @property
    def line(self) -> int | None:
        return self.verdict.line


@contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Put `prefix` before the verdict of the checks run inside (which case of several failed)."""
    try:
        yield
    except CheckFailed as exc:
        raise exc.amended(f"{prefix}: {exc.message}") from None
