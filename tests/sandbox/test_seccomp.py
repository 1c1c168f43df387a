"""The seccomp filter of the local sandbox: its program read back here, then loaded by bubblewrap.

The fast tests decode the program and run it through a small classic-BPF
interpreter for both architectures. The slow ones run a probe under bwrap with
the filter and without it (the control), so a refusal is shown to come from the
filter and not from the rest of the sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from grader.errors import SandboxUnavailable
from grader.isolation.seccomp import (
    AUDIT_ARCH,
    CLONE_NAMESPACE_FLAGS,
    REFUSED,
    SYSCALL_NUMBERS,
    build_filter,
    filter_fd,
)

ARCHES = ("x86_64", "aarch64")
X86_ONLY = {"iopl", "ioperm"}

KILL = 0x80000000
ALLOW = 0x7FFF0000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS

# Written out again from the kernel's tables, apart from the module's, so that
# a wrong number there cannot hide behind the same wrong number in the probe.
PROBE_NUMBERS = {
    "x86_64": {"read": 0, "write": 1, "getpid": 39, "clone": 56, "personality": 135, "unshare": 272,
               "mount": 165, "ptrace": 101, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
               "userfaultfd": 323, "io_uring_setup": 425, "clone3": 435},
    "aarch64": {"read": 63, "write": 64, "getpid": 172, "clone": 220, "personality": 92, "unshare": 97,
                "mount": 40, "ptrace": 117, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
                "userfaultfd": 282, "io_uring_setup": 425, "clone3": 435},
}
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
THREAD_FLAGS = 0x3D0F00  # what glibc's pthread_create passes: CLONE_VM|CLONE_FS|...|CLONE_CHILD_CLEARTID


# --- the program, read back ------------------------------------------------------------

def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("<HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


def run_bpf(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """What the kernel would return for this call: a minimal interpreter of the opcodes the filter uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = decode(program)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x45:  # jset #k
            pc += 1 + (jt if acc & k else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")


@pytest.mark.parametrize("arch", ARCHES)
def test_program_is_whole_instructions_that_jump_forward_within_it(arch: str) -> None:
    program = build_filter(arch)
    assert program and len(program) % 8 == 0
    insns = decode(program)
    for pc, (code, jt, jf, _) in enumerate(insns):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert max(jt, jf) <= 255 and pc + 1 + max(jt, jf) < len(insns)
    assert insns[-1][0] == 0x06


def test_x86_64_program_checks_the_architecture_then_x32_first() -> None:
    insns = decode(build_filter("x86_64"))
    assert insns[:6] == [
        (0x20, 0, 0, 4),  # A = arch
        (0x15, 1, 0, 0xC000003E),  # if A == AUDIT_ARCH_X86_64 skip the kill
        (0x06, 0, 0, KILL),
        (0x20, 0, 0, 0),  # A = nr
        (0x45, 0, 1, 0x40000000),  # x32 bit set: kill
        (0x06, 0, 0, KILL),
    ]


def test_every_refused_name_has_a_number() -> None:
    assert set(REFUSED) <= set(SYSCALL_NUMBERS["x86_64"])
    assert set(REFUSED) - X86_ONLY <= set(SYSCALL_NUMBERS["aarch64"])
    assert not X86_ONLY & set(SYSCALL_NUMBERS["aarch64"])
    for numbers in SYSCALL_NUMBERS.values():
        assert len(set(numbers.values())) == len(numbers), "two names share a number"


@pytest.mark.parametrize("arch", ARCHES)
def test_numbers_agree_with_the_probe_table(arch: str) -> None:
    for name, nr in PROBE_NUMBERS[arch].items():
        if name in SYSCALL_NUMBERS[arch]:
            assert SYSCALL_NUMBERS[arch][name] == nr, name


def header_numbers(arch: str) -> dict[str, int]:
    """Numbers from this machine's kernel headers (linux-libc-dev); asm-generic is arm64's table."""
    if arch == "x86_64":
        candidates = [Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), Path("/usr/include/asm/unistd_64.h")]
        pattern = r"#define __NR_(\w+)\s+(\d+)"
    else:
        candidates = [Path("/usr/include/asm-generic/unistd.h")]
        pattern = r"#define __NR(?:3264)?_(\w+)\s+(\d+)"
    for path in candidates:
        if path.exists():
            return {m[1]: int(m[2]) for m in re.finditer(pattern, path.read_text())}
    pytest.skip(f"no kernel headers to compare with ({' or '.join(map(str, candidates))}): "
                "install linux-libc-dev")


@pytest.mark.parametrize("arch", ARCHES)
def test_numbers_agree_with_the_kernel_headers(arch: str) -> None:
    headers = header_numbers(arch)
    for name, nr in SYSCALL_NUMBERS[arch].items():
        assert headers.get(name) == nr, name
    for name in REFUSED:  # a name left out of an architecture's table really is missing there
        assert (name in headers) == (name in SYSCALL_NUMBERS[arch]), name


@pytest.mark.parametrize("arch", ARCHES)
def test_program_refuses_exactly_what_it_says(arch: str) -> None:
    program, audit, numbers = build_filter(arch), AUDIT_ARCH[arch], SYSCALL_NUMBERS[arch]
    for name, nr in numbers.items():
        if name in REFUSED:
            assert run_bpf(program, audit, nr) == EPERM, name
    assert run_bpf(program, audit, numbers["clone3"]) == ENOSYS
    for name in ("read", "write", "getpid", "personality"):
        assert run_bpf(program, audit, PROBE_NUMBERS[arch][name]) == ALLOW, name
    assert run_bpf(program, audit, 0xFFFF) == ALLOW  # unknown to the filter: allowed, the kernel answers
    assert run_bpf(program, 0x40000003, numbers["mount"]) == KILL  # AUDIT_ARCH_I386, for example


@pytest.mark.parametrize("arch", ARCHES)
def test_clone_is_refused_only_with_a_namespace_flag(arch: str) -> None:
    program, audit, clone = build_filter(arch), AUDIT_ARCH[arch], SYSCALL_NUMBERS[arch]["clone"]
    assert run_bpf(program, audit, clone, SIGCHLD) == ALLOW  # fork
    assert run_bpf(program, audit, clone, THREAD_FLAGS) == ALLOW  # a thread
    assert run_bpf(program, audit, clone, 0x4111) == ALLOW  # CLONE_VM|CLONE_VFORK|SIGCHLD: posix_spawn
    for bit in range(32):
        if CLONE_NAMESPACE_FLAGS & (1 << bit):
            assert run_bpf(program, audit, clone, SIGCHLD | (1 << bit)) == EPERM, hex(1 << bit)


def test_x32_calls_are_killed() -> None:
    program = build_filter("x86_64")
    assert run_bpf(program, AUDIT_ARCH["x86_64"], 0x40000000 | 39) == KILL


def test_other_architectures_are_refused_with_the_fix() -> None:
    with pytest.raises(SandboxUnavailable, match="riscv64.*syscall numbers"):
        build_filter("riscv64")


def test_filter_fd_holds_this_machines_filter_from_offset_0() -> None:
    fd = filter_fd()
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, 1 << 16) == build_filter()
        with pytest.raises(PermissionError):  # sealed
            os.pwrite(fd, b"\0" * 8, 0)
    finally:
        os.close(fd)


# --- the filter in bubblewrap ---------------------------------------------------------------

PROBE = r"""
import ctypes, json, os, subprocess, sys, threading

numbers = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def call(name, *args):
    "0 on success, else the errno."
    ctypes.set_errno(0)
    res = libc.syscall(ctypes.c_long(numbers[name]),
                       *[ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args])
    return 0 if res >= 0 else ctypes.get_errno()


def clone_newuser():
    "Raw clone with CLONE_NEWUSER: like fork when allowed, so the child leaves at once."
    ctypes.set_errno(0)
    res = libc.syscall(ctypes.c_long(numbers["clone"]), ctypes.c_long(0x10000000 | 17),
                       *[ctypes.c_long(0)] * 4)
    if res == 0:
        os._exit(0)
    if res > 0:
        os.waitpid(res, 0)
        return 0
    return ctypes.get_errno()


def in_child(name, *args):
    "The call in a child of its own, so that its effects (a new namespace, being traced) do not reach the next."
    pid = os.fork()
    if pid == 0:
        os._exit(clone_newuser() if name == "clone_newuser" else call(name, *args))
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def works(check):
    try:
        return bool(check())
    except Exception as exc:
        return repr(exc)


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


def thread():
    seen = []
    t = threading.Thread(target=seen.append, args=(1,))
    t.start()
    t.join()
    return seen == [1]


def numpy():
    import numpy as np
    return (np.ones((300, 300)) @ np.ones((300, 300)))[0, 0] == 300  # BLAS threads too


def tmp():
    with open("/tmp/probe.txt", "w") as f:
        f.write("x" * 10000)
    return os.path.getsize("/tmp/probe.txt") == 10000


os.makedirs("/tmp/mnt", exist_ok=True)
results = {
    "unshare": in_child("unshare", 0x10000000),
    "clone_newuser": in_child("clone_newuser"),
    "mount": in_child("mount", b"none", b"/tmp/mnt", b"tmpfs", 0, 0),
    "ptrace": in_child("ptrace", 0, 0, 0, 0),  # PTRACE_TRACEME
    "keyctl": in_child("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
    "bpf": in_child("bpf", 0, 0, 0),  # BPF_MAP_CREATE, no attributes
    "perf_event_open": in_child("perf_event_open", 0, 0, -1, -1, 0),
    "userfaultfd": in_child("userfaultfd", 0),
    "io_uring_setup": in_child("io_uring_setup", 1, 0),
    "clone3": in_child("clone3", 0, 0),
    "personality": call("personality", 0xFFFFFFFF),  # query only
    "fork": works(fork),
    "thread": works(thread),
    "subprocess": works(lambda: subprocess.run(["/bin/true"]).returncode == 0),
    "numpy": works(numpy),
    "tmp": works(tmp),
}
print(json.dumps(results))
"""

BWRAP_ARGS = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
              "--unshare-all", "--die-with-parent"]


def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        pytest.fail("bubblewrap (bwrap) is not installed, so the seccomp filter cannot be tested in it: "
                    "run scripts/setup.sh (it installs the 'bubblewrap' package)")
    return path


def in_bwrap(code: str, *args: str, seccomp: bool) -> subprocess.CompletedProcess[str]:
    command = [bwrap(), *BWRAP_ARGS]
    fds: tuple[int, ...] = ()
    if seccomp:
        fds = (filter_fd(),)
        command += ["--seccomp", str(fds[0])]
    command += ["--", sys.executable, "-c", code, *args]
    try:
        return subprocess.run(command, pass_fds=fds, capture_output=True, text=True, timeout=120)
    finally:
        for fd in fds:
            os.close(fd)


def probe(seccomp: bool) -> dict[str, object]:
    numbers = json.dumps(PROBE_NUMBERS[platform.machine()])
    done = in_bwrap(PROBE, numbers, seccomp=seccomp)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def filtered() -> dict[str, object]:
    return probe(seccomp=True)


@pytest.fixture(scope="module")
def control() -> dict[str, object]:
    return probe(seccomp=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unshare", "clone_newuser", "mount", "ptrace", "keyctl", "bpf",
                                  "perf_event_open", "userfaultfd", "io_uring_setup"])
def test_refused_with_eperm(filtered: dict[str, object], name: str) -> None:
    assert filtered[name] == errno.EPERM, errno.errorcode.get(filtered[name], filtered[name])  # type: ignore[arg-type]


@pytest.mark.slow
def test_clone3_says_enosys(filtered: dict[str, object]) -> None:
    assert filtered["clone3"] == errno.ENOSYS


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fork", "thread", "subprocess", "numpy", "tmp", "personality"])
def test_ordinary_work_goes_on(filtered: dict[str, object], name: str) -> None:
    assert filtered[name] in (True, 0), filtered[name]


@pytest.mark.slow
def test_without_the_filter_the_same_sandbox_allows_them(filtered: dict[str, object],
                                                         control: dict[str, object]) -> None:
    """The control: the refusals come from the filter, not from bwrap's own set-up."""
    assert control["unshare"] == 0, f"unshare(CLONE_NEWUSER) failed without the filter too: {control}"
    assert control["clone_newuser"] == 0, control
    assert control["ptrace"] == 0, control
    assert control["clone3"] == errno.EINVAL, control  # no arguments: the kernel, not the filter, answers
    differs = {name for name in filtered if filtered[name] != control[name]}
    assert {"unshare", "clone_newuser", "ptrace", "clone3"} <= differs


@pytest.mark.slow
def test_x32_call_kills_the_process() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("x32 calls exist only on x86_64")
    code = "import ctypes; ctypes.CDLL(None).syscall(ctypes.c_long(0x40000000 | 39)); print('survived')"  # getpid
    assert in_bwrap(code, seccomp=False).stdout == "survived\n"  # the control
    done = in_bwrap(code, seccomp=True)
    assert done.stdout == ""
    assert done.returncode == 128 + signal.SIGSYS  # bwrap reports its child's signal like a shell
