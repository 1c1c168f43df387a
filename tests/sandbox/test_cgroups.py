"""The cgroup hierarchies of the local sandbox (grader/isolation/cgroups.py): v1 and v2 against fake trees
written as the kernel presents them, detection, the real hierarchy of this machine, and a real v2 check
that runs only where the machine has one (and otherwise says why it cannot)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.errors import SandboxUnavailable
from grader.isolation import local
from grader.isolation.cgroups import (
    CGROUP_ROOT,
    PARENT,
    V1_CONTROLLERS,
    V2_CONTROLLERS,
    CgroupsUnavailable,
    CgroupV1,
    CgroupV2,
    Group,
    detect,
    v1_missing,
    v2_problem,
)

MB = 1 << 20


def fake_v1(root: Path) -> Path:
    for controller in V1_CONTROLLERS:
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
    return root


def fake_v2(root: Path, controllers: str = "cpu memory pids") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("\n")
    (root / "cgroup.procs").write_text("")
    (root / PARENT).mkdir()
    (root / PARENT / "cgroup.subtree_control").write_text("\n")  # the kernel makes it with the folder
    return root


def kernel_files(path: Path, files: dict[str, str]) -> None:
    """What the kernel would show in a new cgroup folder (a fake tree has only what the test writes)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)


# cgroup v1 ---------------------------------------------------------------------------------------------
def test_v1_session_writes_todays_limits_in_every_controller(tmp_path: Path) -> None:
    root = fake_v1(tmp_path)
    kernel_files(root / "memory" / PARENT / "s1-a", {"memory.memsw.limit_in_bytes": "9223372036854771712\n"})
    group = CgroupV1(root).session("s1-a", memory_bytes=256 * MB, pids=16, cpu_cores=1.5)
    assert group.dirs == [root / c / PARENT / "s1-a" for c in V1_CONTROLLERS]
    mem, pids, cpu, _ = group.dirs
    assert (mem / "memory.limit_in_bytes").read_text() == str(256 * MB)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(256 * MB)  # swap included, when accounted
    assert (pids / "pids.max").read_text() == "16"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert group.procs_files == [d / "cgroup.procs" for d in group.dirs]


def test_v1_a_tiny_cpu_share_is_the_kernels_minimum_quota_and_no_memsw_file_is_made(tmp_path: Path) -> None:
    group = CgroupV1(fake_v1(tmp_path)).session("s1-b", memory_bytes=MB, pids=1, cpu_cores=0.001)
    assert (group.dirs[2] / "cpu.cfs_quota_us").read_text() == "1000"
    assert not (group.dirs[0] / "memory.memsw.limit_in_bytes").exists()  # swap not accounted: not invented


def test_v1_co_mounted_cpu_and_cpuacct_share_one_folder_joined_once(tmp_path: Path) -> None:
    root = tmp_path
    for controller in ("memory", "pids", "cpu,cpuacct"):
        (root / controller).mkdir()
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    group = CgroupV1(root).session("s1-c", memory_bytes=MB, pids=4, cpu_cores=1)
    assert len(group.dirs) == 4 and group.dirs[2].resolve() == group.dirs[3].resolve()
    assert len(group.procs_files) == 3


def test_v1_zygote_has_memory_and_pids_only(tmp_path: Path) -> None:
    group = CgroupV1(fake_v1(tmp_path)).zygote("z1-a", memory_bytes=4096 * MB, pids=256)
    assert group.dirs == [tmp_path / "memory" / PARENT / "z1-a", tmp_path / "pids" / PARENT / "z1-a"]
    assert (group.dirs[0] / "memory.limit_in_bytes").read_text() == str(4096 * MB)
    assert (group.dirs[1] / "pids.max").read_text() == "256"
    assert not (tmp_path / "cpu" / PARENT / "z1-a").exists()


def test_v1_clock_is_cpuacct_usage_read_again_on_a_kept_descriptor(tmp_path: Path) -> None:
    group = CgroupV1(fake_v1(tmp_path)).session("s1-d", memory_bytes=MB, pids=4, cpu_cores=1)
    usage = group.dirs[3] / "cpuacct.usage"
    usage.write_text("123456789\n")
    assert group.cpu_ns() == 123_456_789
    usage.write_text("2000000000\n")  # the same file, a new value: the kept descriptor sees it
    assert group.cpu_ns() == 2_000_000_000
    usage.write_text("garbage\n")
    assert group.cpu_ns() is None


def test_v1_oom_kill_from_oom_control_or_failcnt_on_older_kernels(tmp_path: Path) -> None:
    group = CgroupV1(fake_v1(tmp_path)).session("s1-e", memory_bytes=MB, pids=4, cpu_cores=1)
    mem = group.dirs[0]
    assert not group.oom_killed()  # nothing to read: not an OOM kill
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (mem / "memory.failcnt").write_text("7\n")
    assert not group.oom_killed()  # oom_kill is what counts where the kernel has it
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert group.oom_killed()
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert group.oom_killed()  # no oom_kill line: the limit was hit (failcnt 7)
    (mem / "memory.failcnt").write_text("0\n")
    assert not group.oom_killed()


def test_v1_procs_are_the_pids_controllers(tmp_path: Path) -> None:
    group = CgroupV1(fake_v1(tmp_path)).session("s1-f", memory_bytes=MB, pids=4, cpu_cores=1)
    (group.dirs[1] / "cgroup.procs").write_text("12\n34\n")
    assert group.procs() == [12, 34]


# cgroup v2 ---------------------------------------------------------------------------------------------
def test_v2_session_is_a_leaf_with_memory_swap_pids_and_cpu_max(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    kernel_files(root / PARENT / "s2-a", {"memory.swap.max": "max\n", "cgroup.procs": ""})
    group = CgroupV2(root).session("s2-a", memory_bytes=256 * MB, pids=16, cpu_cores=1.5)
    leaf = root / PARENT / "s2-a"
    assert group.dirs == [leaf] and group.procs_files == [leaf / "cgroup.procs"]
    assert (leaf / "memory.max").read_text() == str(256 * MB)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "16"
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    # the controllers are enabled for dl-grader and for its children
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (root / PARENT / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_enabled_controllers_are_left_alone_and_no_swap_file_is_made(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    (root / "cgroup.subtree_control").write_text("cpu io memory pids\n")  # as the kernel lists them
    group = CgroupV2(root).session("s2-b", memory_bytes=MB, pids=2, cpu_cores=0.001)
    assert (root / "cgroup.subtree_control").read_text() == "cpu io memory pids\n"
    assert (group.dirs[0] / "cpu.max").read_text() == "1000 100000"
    assert not (group.dirs[0] / "memory.swap.max").exists()


def test_v2_zygote_has_memory_and_pids_limits(tmp_path: Path) -> None:
    group = CgroupV2(fake_v2(tmp_path)).zygote("z2-a", memory_bytes=4096 * MB, pids=256)
    assert (group.dirs[0] / "memory.max").read_text() == str(4096 * MB)
    assert (group.dirs[0] / "pids.max").read_text() == "256"
    assert not (group.dirs[0] / "cpu.max").exists()


def test_v2_clock_is_usage_usec_of_cpu_stat_in_ns(tmp_path: Path) -> None:
    group = CgroupV2(fake_v2(tmp_path)).session("s2-c", memory_bytes=MB, pids=4, cpu_cores=1)
    stat = group.dirs[0] / "cpu.stat"
    stat.write_text("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\nnr_throttled 0\n"
                    "throttled_usec 0\n")
    assert group.cpu_ns() == 1_234_000
    stat.write_text("usage_usec 98765432\nuser_usec 1\nsystem_usec 2\n")
    assert group.cpu_ns() == 98_765_432_000
    stat.write_text("user_usec 1\n")
    assert group.cpu_ns() is None


def test_v2_oom_kill_from_memory_events(tmp_path: Path) -> None:
    group = CgroupV2(fake_v2(tmp_path)).session("s2-d", memory_bytes=MB, pids=4, cpu_cores=1)
    events = group.dirs[0] / "memory.events"
    assert not group.oom_killed()
    events.write_text("low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\noom_group_kill 0\n")
    assert not group.oom_killed()  # the limit was reached, reclaim coped: nothing was killed
    events.write_text("low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert group.oom_killed()


def test_v2_removal_writes_cgroup_kill_then_removes_the_leaf(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    kernel_files(root / PARENT / "s2-e", {"cgroup.kill": "", "cgroup.procs": ""})
    group = CgroupV2(root).session("s2-e", memory_bytes=MB, pids=4, cpu_cores=1)
    group.cpu_ns()
    assert not group.remove(attempts=1)  # a fake folder keeps its files: rmdir refused, and said so
    assert (group.dirs[0] / "cgroup.kill").read_text() == "1"
    empty = CgroupV2(root).session("s2-f", memory_bytes=MB, pids=4, cpu_cores=1)
    for f in empty.dirs[0].iterdir():
        f.unlink()
    assert empty.remove() and not empty.dirs[0].exists()


# detection ---------------------------------------------------------------------------------------------
def test_detect_chooses_v2_when_the_unified_root_has_the_controllers(tmp_path: Path) -> None:
    hierarchy = detect(fake_v2(tmp_path))
    assert isinstance(hierarchy, CgroupV2) and hierarchy.version == 2 and hierarchy.root == tmp_path


def test_detect_chooses_v1_when_its_controllers_are_mounted(tmp_path: Path) -> None:
    hierarchy = detect(fake_v1(tmp_path))
    assert isinstance(hierarchy, CgroupV1) and hierarchy.version == 1
    assert "cgroup.controllers absent" in (v2_problem(tmp_path) or "")


def test_detect_chooses_v1_on_a_hybrid_host_whose_v2_lacks_the_controllers(tmp_path: Path) -> None:
    fake_v1(tmp_path)
    fake_v2(tmp_path / "unified", "hugetlb")
    assert isinstance(detect(tmp_path), CgroupV1)
    assert "lists hugetlb, not memory, pids, cpu" in (v2_problem(tmp_path / "unified") or "")


def test_detect_without_either_names_what_is_missing_for_both(tmp_path: Path) -> None:
    fake_v2(tmp_path, "cpu hugetlb")
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "cgroup.procs").write_text("")
    with pytest.raises(CgroupsUnavailable) as info:
        detect(tmp_path)
    message = str(info.value)
    assert "cgroup v2" in message and "lists cpu hugetlb, not memory, pids" in message
    assert "cgroup v1" in message and "missing or read-only: memory, cpu, cpuacct" in message
    with pytest.raises(CgroupsUnavailable, match=r"cgroup.controllers absent.*missing or read-only: memory, pids"):
        detect(tmp_path / "nothing")


def test_the_backend_refuses_to_start_without_cgroups_and_says_why(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("setpriv"):
        pytest.skip("the local backend needs root and bubblewrap before it looks at cgroups")
    monkeypatch.setattr(local, "CGROUP_ROOT", tmp_path)
    with pytest.raises(SandboxUnavailable, match=r"cgroup v2.*cgroup v1.*does not run with weaker isolation"):
        local.LocalBackend(zygote=False)


# this machine's hierarchies ----------------------------------------------------------------------------
def mounts() -> dict[str, str]:
    """Mount point -> file system type, as this process sees them."""
    table = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            table[fields[1]] = fields[2]
    return table


def why_no_v2() -> str | None:
    """Why this machine cannot show a usable cgroup v2 hierarchy at /sys/fs/cgroup, read from the machine;
    None when it can."""
    table = mounts()
    kind = table.get(str(CGROUP_ROOT), "not a mount point")
    problem = v2_problem(CGROUP_ROOT)
    if kind == "cgroup2" and problem is None:
        return None
    v1 = [c for c in V1_CONTROLLERS if table.get(str(CGROUP_ROOT / c)) == "cgroup"]
    what = f"cgroup v1 ({CGROUP_ROOT} is a {kind} holding the cgroup mounts {', '.join(v1)}" if v1 else \
        f"no cgroup v1 controllers ({CGROUP_ROOT} is {kind}"
    unified = []
    for point, fs in table.items():
        if fs == "cgroup2" and point != str(CGROUP_ROOT):
            try:
                offered = " ".join((Path(point) / "cgroup.controllers").read_text().split()) or "no controller"
            except OSError:
                offered = "unreadable controllers"
            unified.append(f"{point} offers only {offered}")
    return (f"this machine mounts {what}; {problem}) and its cgroup2 hierarchy "
            f"({'; '.join(unified) or 'none mounted'}) has no memory, pids or cpu controller: a controller bound "
            "to a v1 hierarchy is not available in v2, and a new cgroup2 mount is the same hierarchy, so the v2 "
            "path is checked against a fake tree only")


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


@pytest.fixture
def real_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    yield CGROUP_ROOT


def test_detect_on_this_machine_picks_the_hierarchy_it_has(real_root: Path) -> None:
    hierarchy = detect(real_root)
    assert hierarchy.version == (2 if why_no_v2() is None else 1)
    assert hierarchy.version == 2 or v1_missing(real_root) == []


def test_a_real_v1_session_is_limited_holds_its_process_and_leaves_nothing(real_root: Path) -> None:
    if v1_missing(real_root):
        pytest.skip(f"no cgroup v1 here: missing {', '.join(v1_missing(real_root))} under {real_root}")
    name = f"s{os.getpid()}-cgtest"
    group = CgroupV1(real_root).session(name, memory_bytes=64 * MB, pids=8, cpu_cores=0.5)
    proc = sleeper()
    try:
        check_real_group(group, proc)
        mem, pids, cpu, cpuacct = group.dirs
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * MB
        assert (pids / "pids.max").read_text().strip() == "8"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert not group.oom_killed()
    finally:
        removed = group.remove()
        proc.wait(5)
    assert removed and proc.returncode == -9  # what was left in it was killed
    assert [p for c in V1_CONTROLLERS for p in (real_root / c / PARENT).glob(name)] == []


def test_a_real_v1_session_whose_limits_fail_leaves_no_folder(real_root: Path) -> None:
    if v1_missing(real_root):
        pytest.skip(f"no cgroup v1 here: missing {', '.join(v1_missing(real_root))} under {real_root}")
    name = f"s{os.getpid()}-cgfail"
    with pytest.raises(ValueError):  # after the folders were made and the CFS period written
        CgroupV1(real_root).session(name, memory_bytes=64 * MB, pids=8, cpu_cores=float("nan"))
    assert [p for c in V1_CONTROLLERS for p in (real_root / c / PARENT).glob(name)] == []


def test_a_real_v2_session_where_the_machine_has_one(real_root: Path) -> None:
    reason = why_no_v2()
    if reason is not None:
        pytest.skip(reason)
    name = f"s{os.getpid()}-cgtest"
    group = CgroupV2(real_root).session(name, memory_bytes=64 * MB, pids=8, cpu_cores=0.5)
    proc = sleeper()
    try:
        check_real_group(group, proc)
        leaf = group.dirs[0]
        assert int((leaf / "memory.max").read_text()) == 64 * MB
        assert (leaf / "pids.max").read_text().strip() == "8"
        assert (leaf / "cpu.max").read_text().split() == ["50000", "100000"]
        assert set(V2_CONTROLLERS) <= set((real_root / PARENT / "cgroup.subtree_control").read_text().split())
        assert not group.oom_killed()
    finally:
        removed = group.remove()
        proc.wait(5)
    assert removed and proc.returncode == -9
    assert not (real_root / PARENT / name).exists()


def check_real_group(group: Group, proc: subprocess.Popen[bytes]) -> None:
    """A process written into the group's cgroup.procs files is in it, for every controller, and counted."""
    for procs in group.procs_files:
        procs.write_text(str(proc.pid))
    assert group.procs() == [proc.pid]
    assert group.misplaced(proc.pid) == []
    assert group.misplaced(os.getpid())  # the test itself is not in it
    ns = group.cpu_ns()
    assert ns is not None and ns >= 0


def test_v2_that_cannot_enable_its_controllers_says_so_at_start(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    (root / PARENT / "cgroup.subtree_control").unlink()
    (root / PARENT / "cgroup.subtree_control").mkdir()  # the write is refused, as EBUSY would be
    with pytest.raises(CgroupsUnavailable, match="must run in a leaf cgroup"):
        detect(root).prepare()
