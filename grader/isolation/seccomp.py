"""A seccomp filter for the local sandbox, built by hand as classic BPF and loaded by `bwrap --seccomp FD`.

The namespaces, the read-only root, the dropped capabilities and the cgroup
limits already contain a candidate; this filter takes away the system calls a
test never needs and an escape or a kernel exploit usually does:

- namespaces and mounts (unshare, setns, clone with a CLONE_NEW* flag, mount,
  umount2, pivot_root, chroot and the new mount API: fsopen, fsconfig,
  fsmount, fspick, move_mount, open_tree, mount_setattr): a new user namespace
  gives back every capability inside it, and with them a fresh tmpfs without
  the size cap of /tmp or a different mount layout than the one the grader
  built;
- other processes (ptrace, process_vm_readv, process_vm_writev): they read
  and steer another process's memory and registers, which no test needs;
- common kernel attack surface (keyctl, add_key, request_key, bpf,
  perf_event_open, userfaultfd, io_uring_*): reachable without privileges on
  many kernels and the origin of a long line of local privilege escalations;
- the machine itself (kexec_*, *_module, swapon, swapoff, reboot, acct,
  quotactl, syslog, the clock setters, vhangup, iopl and ioperm): each needs a
  capability the sandbox never has, refused here as well so that a capability
  granted by mistake does not open them;
- file handles (open_by_handle_at, name_to_handle_at): open_by_handle_at
  reaches files outside the mounts ("shocker", the Docker escape of 2014).

Refused calls fail with EPERM, as they would without the capability, so that a
library probing for a feature falls back instead of crashing. clone3 fails with
ENOSYS instead: its flags sit behind a pointer a filter cannot read, and ENOSYS
makes glibc fall back to clone, whose flags are checked. Threads and fork use
plain clone and keep working. Everything else is allowed: the filter is a deny
list, kept short, on top of the other layers.

The program checks the architecture first and kills the process on any other
one (a 32-bit call through int 0x80 on x86_64 would otherwise be judged against
64-bit numbers), and on x86_64 kills any x32 call (bit 0x40000000 of the
number) for the same reason. Each refused call is one comparison followed by
its return, so no jump goes further than the next few instructions and the
8-bit jump offsets of classic BPF are never at risk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import struct

from grader.errors import SandboxUnavailable

REFUSED: dict[str, str] = {
    # namespaces and mounts
    "unshare": "a new user namespace gives back every capability inside it; a new mount namespace, a new layout",
    "setns": "joining another namespace leaves the sandbox's own",
    "mount": "a fresh tmpfs escapes the size cap of /tmp; a remount changes the read-only layout",
    "umount2": "unmounting would uncover what the grader's mounts hide",
    "pivot_root": "changes the root the grader built",
    "chroot": "changes the root the grader built",
    "fsopen": "the new mount API: the same as mount",
    "fsconfig": "the new mount API: the same as mount",
    "fsmount": "the new mount API: the same as mount",
    "fspick": "the new mount API: reconfigures an existing mount",
    "move_mount": "the new mount API: the same as mount",
    "open_tree": "the new mount API: clones a mount tree",
    "mount_setattr": "the new mount API: changes flags such as read-only on a mount",
    # other processes
    "ptrace": "reads and steers another process's memory and registers",
    "process_vm_readv": "reads another process's memory",
    "process_vm_writev": "writes another process's memory",
    # kernel attack surface
    "keyctl": "kernel keyrings: frequent local privilege escalations, never needed by a test",
    "add_key": "kernel keyrings: frequent local privilege escalations, never needed by a test",
    "request_key": "kernel keyrings: frequent local privilege escalations, never needed by a test",
    "bpf": "eBPF: large kernel attack surface (verifier bugs)",
    "perf_event_open": "large kernel attack surface; also leaks timing of other processes",
    "userfaultfd": "lets an exploit pause the kernel in a copy from user memory, widening race windows",
    "io_uring_setup": "io_uring: large kernel attack surface, and its operations bypass this filter",
    "io_uring_enter": "io_uring: large kernel attack surface, and its operations bypass this filter",
    "io_uring_register": "io_uring: large kernel attack surface, and its operations bypass this filter",
    # the machine itself (each needs a capability the sandbox never has)
    "kexec_load": "replaces the running kernel",
    "kexec_file_load": "replaces the running kernel",
    "init_module": "loads kernel code",
    "finit_module": "loads kernel code",
    "delete_module": "unloads kernel code",
    "swapon": "changes the host's swap",
    "swapoff": "changes the host's swap",
    "reboot": "reboots the host",
    "acct": "turns on process accounting to a file",
    "quotactl": "changes disk quotas",
    "syslog": "reads the kernel log, which leaks kernel addresses",
    "lookup_dcookie": "profiling interface that returns paths of the host",
    "vhangup": "hangs up the controlling terminal",
    "nfsservctl": "the removed NFS server control call",
    "settimeofday": "sets the host's clock",
    "clock_settime": "sets the host's clock",
    "adjtimex": "adjusts the host's clock",
    "clock_adjtime": "adjusts the host's clock",
    "iopl": "raw I/O port access (x86_64 only)",
    "ioperm": "raw I/O port access (x86_64 only)",
    # file handles
    "open_by_handle_at": "opens files by handle, outside the mounts (the 'shocker' escape)",
    "name_to_handle_at": "makes the handles open_by_handle_at takes",
}

# Numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (which arm64 uses). A name missing from an
# architecture's table does not exist there.
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "clone": 56, "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "adjtimex": 159,
        "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167,
        "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
        "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
        "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
        "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320,
        "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "clone3": 435, "mount_setattr": 442,
    },
    "aarch64": {
        "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "nfsservctl": 42, "chroot": 51,
        "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97, "kexec_load": 104, "init_module": 105,
        "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117, "reboot": 142,
        "settimeofday": 170, "adjtimex": 171, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "swapon": 224, "swapoff": 225, "perf_event_open": 241, "name_to_handle_at": 264,
        "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "finit_module": 273, "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
        "mount_setattr": 442,
    },
}

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# CLONE_NEWTIME shares its bit with the exit signal in clone()'s flags, and the
# kernel rejects a signal that large anyway; it is in the mask for clarity only.
CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
# Both architectures are little-endian, so the low half of args[0] comes first.
_NR_OFFSET = 0
_ARCH_OFFSET = 4
_ARG0_LOW_OFFSET = 16

# Classic BPF opcodes (linux/bpf_common.h) and seccomp actions (linux/seccomp.h).
_LD_W_ABS = 0x00 | 0x00 | 0x20
_JEQ_K = 0x05 | 0x10 | 0x00
_JSET_K = 0x05 | 0x40 | 0x00
_RET_K = 0x06 | 0x00
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_MAX_INSNS = 4096  # BPF_MAXINSNS

_Insn = tuple[int, int, int, int]


def _stmt(code: int, k: int) -> _Insn:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> _Insn:
    return (code, jt, jf, k)


def _program(arch: str) -> list[_Insn]:
    numbers = SYSCALL_NUMBERS[arch]
    kill = _stmt(_RET_K, _RET_KILL_PROCESS)
    prog = [
        _stmt(_LD_W_ABS, _ARCH_OFFSET),
        _jump(_JEQ_K, AUDIT_ARCH[arch], 1, 0),
        kill,
        _stmt(_LD_W_ABS, _NR_OFFSET),
    ]
    if arch == "x86_64":
        prog += [_jump(_JSET_K, X32_SYSCALL_BIT, 0, 1), kill]
    for name in REFUSED:
        if name in numbers:
            prog += [_jump(_JEQ_K, numbers[name], 0, 1), _stmt(_RET_K, _RET_ERRNO | errno.EPERM)]
    prog += [_jump(_JEQ_K, numbers["clone3"], 0, 1), _stmt(_RET_K, _RET_ERRNO | errno.ENOSYS)]
    # clone: refused only with a namespace flag; the accumulator then holds
    # args[0], so this block ends the program with its own allow.
    prog += [
        _jump(_JEQ_K, numbers["clone"], 0, 3),
        _stmt(_LD_W_ABS, _ARG0_LOW_OFFSET),
        _jump(_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
        _stmt(_RET_K, _RET_ERRNO | errno.EPERM),
        _stmt(_RET_K, _RET_ALLOW),
    ]
    return prog


def build_filter(arch: str | None = None) -> bytes:
    """The filter as an array of struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}, as bwrap reads it."""
    arch = arch or platform.machine()
    if arch not in SYSCALL_NUMBERS:
        raise SandboxUnavailable(
            f"the sandbox's seccomp filter supports {' and '.join(SYSCALL_NUMBERS)}, not {arch!r}; "
            "add that architecture's syscall numbers and AUDIT_ARCH to grader/isolation/seccomp.py")
    prog = _program(arch)
    assert len(prog) <= _MAX_INSNS
    # Both architectures are little-endian; "<" keeps the output the same on any host.
    return b"".join(struct.pack("<HBBI", *insn) for insn in prog)


def filter_fd() -> int:
    """A sealed memfd holding this machine's filter, at offset 0, for `bwrap --seccomp FD`; the caller closes it.

    The fd is close-on-exec (pass it with subprocess's pass_fds); the seals keep
    anyone who gets hold of it from changing the filter before bwrap reads it.
    """
    data = build_filter()
    fd = os.memfd_create("grader-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write of the seccomp filter to its memfd ({len(data)} bytes)")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
