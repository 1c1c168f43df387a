"""How the end of a sandbox is told in the report, the same for both backends."""

from __future__ import annotations

from grader.isolation.base import describe_exit


def test_each_way_a_sandbox_ends_is_named() -> None:
    assert "out of memory (limit 512 MB)" in describe_exit(137, oom=True, memory_mb=512)
    assert describe_exit(None, oom=False, memory_mb=1) == "the sandbox stopped answering"
    assert describe_exit(-11, oom=False, memory_mb=1).endswith("killed by signal SIGSEGV")  # a process's -n
    assert describe_exit(139, oom=False, memory_mb=1).endswith("killed by signal SIGSEGV")  # an init's 128 + n
    assert describe_exit(3, oom=False, memory_mb=1) == "the sandbox process exited with status 3"
    assert describe_exit(200, oom=False, memory_mb=1) == "the sandbox process exited with status 200"
