"""The first process of a sandbox container: confine it, then run the runner under a minimal init.

The Docker backend applies Docker's own seccomp profile when it starts the
container; this adds the local sandbox's refusals on top, as a second filter
(filters stack: a call must pass both). The host puts the filter's classic BPF
program in GRADER_SECCOMP (hex), built by grader/isolation/seccomp.py. It is
installed here, first, while this is the only thread of the only process, so
every thread and process of the container has it, pid 1 included (an init
started before it, such as Docker's, would run without it, and the candidate
has its uid). The container runs with no-new-privileges, which is what lets an
unprivileged process install a filter. If the filter cannot be installed the
process exits before the runner says it is ready: a sandbox never runs with
fewer refusals than asked for.

As pid 1 it then forks the runner and only reaps: orphans the candidate leaves
are collected, and when the runner ends the container ends with its status
(128 + the signal, if a signal ended it). Pid 1 is not dumpable, so the
candidate, with the same uid, cannot open its memory through /proc.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
EXIT_CONFINEMENT_FAILED = 126


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(program: bytes) -> None:
    """Load a seccomp filter (struct sock_filter array) for this thread and everything it starts."""
    if not program or len(program) % 8:
        raise ValueError(f"a seccomp program is a whole number of 8-byte instructions, got {len(program)} bytes")
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main() -> None:
    program = os.environ.pop("GRADER_SECCOMP", None)
    if program is None:
        sys.stderr.write("sandbox: no seccomp filter given (GRADER_SECCOMP); refusing to start\n")
        sys.exit(EXIT_CONFINEMENT_FAILED)
    try:
        install_filter(bytes.fromhex(program))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"sandbox: could not install the seccomp filter: {exc}\n")
        sys.exit(EXIT_CONFINEMENT_FAILED)
    if os.getpid() != 1:  # started by hand, not as a container's first process: no init to be
        _run_runner()
        return
    runner = os.fork()
    if runner == 0:
        _run_runner()
        os._exit(0)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _reap_until(runner)


def _run_runner() -> None:
    from sandbox.runner import main as run

    run()


def _reap_until(runner: int) -> None:
    """Collect every child that ends; exit with the runner's status once it has."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == runner:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
