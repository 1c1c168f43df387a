"""An in-process fake sandbox for fast unit tests of the grader's own logic.

It runs the real runner in a thread of this process, over real pipes and the
real wire format, but isolates nothing and cannot stop a hang: use it only with
trusted code (reference and known solutions). Reports say `inprocess`.
"""

from __future__ import annotations

import os
import tempfile
import threading

from grader.isolation.base import Isolation, OutputCapture, PipeSession, SandboxSpec
from sandbox.runner import Runner


class InProcessBackend:
    name = "inprocess"

    def start(self, spec: SandboxSpec) -> InProcessSession:
        return InProcessSession(spec)


class InProcessSession(PipeSession):
    def __init__(self, spec: SandboxSpec) -> None:
        self.isolation = Isolation(backend="inprocess", enforced=(),
                                   weaker=("in-process fake: no isolation (for the grader's own unit tests)",))
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        self._tmp = tempfile.TemporaryDirectory(prefix="grader-fake-")
        runner = Runner(os.fdopen(to_r, "rb", buffering=0), os.fdopen(from_w, "wb"), torch_allowed=spec.torch,
                        submission_dir=self._tmp.name)
        self._thread = threading.Thread(target=runner.serve, daemon=True)
        self._thread.start()
        super().__init__(to_w, from_r, OutputCapture(None, spec.limits.output_bytes), spec.limits.wire_limits())
        self._handshake(spec.limits.start_timeout_s)

    def _terminate(self) -> None:
        for fd in (self._to, self._from):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to = self._from = -1
