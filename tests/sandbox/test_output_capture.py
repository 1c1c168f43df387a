"""Each test's output is what the candidate printed during that test, on every run.

What the candidate prints before its reply is in the pipe by the time the reply is read; the
capture's drain thread could still be on its way to it, so a warning printed in one test showed up in
the next one on some runs (two gradings of one submission gave two reports). The capture now reads
what the pipe holds when a test's output is cut. It also closes its pipe when the pipe ends: a
long-running worker leaked one file descriptor per sandbox before.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from grader.isolation.base import OutputCapture
from tests.conftest import SOLUTIONS
from tests.grading import grade_submission


def test_output_in_the_pipe_belongs_to_the_cut_even_when_the_drain_is_late(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    capture = OutputCapture(r, 1 << 16)
    drain_feed = capture.feed

    def late_feed(chunk: bytes) -> None:  # the drain thread takes its time with what it read
        if threading.current_thread() is capture._thread:
            time.sleep(0.3)
        drain_feed(chunk)

    monkeypatch.setattr(capture, "feed", late_feed)
    try:
        for n in range(3):
            os.write(w, f"line {n}\n".encode())
            time.sleep(0.02)  # the drain thread has the bytes (or not yet): either way they are this cut's
            assert capture.take() == (f"line {n}\n".encode(), len(f"line {n}\n"))
    finally:
        os.close(w)
        capture.join(5)


def test_the_capture_closes_its_pipe_at_its_end() -> None:
    r, w = os.pipe()
    capture = OutputCapture(r, 4)
    os.write(w, b"0123456789")
    os.close(w)
    capture.join(5)
    assert capture.take() == (b"0123", 10)
    with pytest.raises(OSError):
        os.fstat(r)
    assert capture.take() == (b"", 0)  # a cut after the end reads nothing (the number may be reused)


def test_a_flood_never_holds_a_cut() -> None:
    """A writer that keeps the pipe full: each cut reads a bounded amount and returns."""
    r, w = os.pipe()
    capture = OutputCapture(r, 1 << 10)
    stop = threading.Event()

    def flood() -> None:
        block = b"x" * (1 << 16)
        while not stop.is_set():
            os.write(w, block)

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    try:
        for _ in range(20):
            started = time.monotonic()
            kept, printed = capture.take()
            assert time.monotonic() - started < 5
        assert capture.total > 0 and len(capture.kept) == 1 << 10
    finally:
        stop.set()
        capture.take()  # the writer may be blocked on a full pipe: make room
        writer.join(5)
        os.close(w)
        capture.join(5)


@pytest.mark.slow
def test_a_warning_stays_in_the_test_that_printed_it() -> None:
    # Adam's bias correction divides by zero at the first step: numpy warns once, in adam_trajectory
    # (the first test to call step), and the later tests print nothing.
    files = {"solution.py": (SOLUTIONS / "optim" / "wrong_adam_bias_correction_zero_based.py").read_text()}
    for _ in range(4):
        report = grade_submission("optim", files, backend="local")
        printed = {t.id: t.output.text for t in report.tests if t.output.text}
        assert list(printed) == ["adam_trajectory"], printed
        assert "divide by zero" in printed["adam_trajectory"]


@pytest.mark.slow
def test_gradings_leave_no_open_descriptor() -> None:
    files = {"solution.py": "x = 1\n"}
    grade_submission("mlp", files, backend="local")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        grade_submission("mlp", files, backend="local")
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= before
