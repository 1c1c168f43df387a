"""The first code of a sandbox container: confine the process, then run the runner.

The Docker backend applies Docker's own seccomp profile when it starts the
container; this adds the local sandbox's refusals on top, as a second filter
(filters stack: a call must pass both). The host puts the filter's classic BPF
program in GRADER_SECCOMP (hex), built by grader/isolation/seccomp.py. It is
installed here, before numpy or torch are imported and while this is the only
thread, so every thread and process of the sandbox inherits it; the container
runs with no-new-privileges, which is what lets an unprivileged process install
a filter. If the filter cannot be installed the process exits before it says it
is ready: a sandbox never runs with fewer refusals than asked for.
"""

from __future__ import annotations

import ctypes
import os
import sys

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
    from sandbox.runner import main as run

    run()


if __name__ == "__main__":
    main()
