"""The fault suite's own leftover checks find what they claim to, on both cgroup layouts (fake roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import leftovers


def test_session_cgroups_are_found_in_the_unified_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cgroup v2 root as `cgroups.detect()` accepts it: the parent is <root>/dl-grader itself.
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    for name in ("s4242-1", "z4242-0", "s77-1"):
        (tmp_path / "dl-grader" / name).mkdir(parents=True)
    monkeypatch.setattr(leftovers, "CGROUP_ROOT", tmp_path)
    assert leftovers.session_parents() == [tmp_path / "dl-grader"]
    assert leftovers.grader_cgroups({4242}) == [tmp_path / "dl-grader" / "s4242-1", tmp_path / "dl-grader" / "z4242-0"]


def test_session_cgroups_are_found_under_each_v1_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
        (tmp_path / controller / "dl-grader" / "s4242-1").mkdir(parents=True)
    monkeypatch.setattr(leftovers, "CGROUP_ROOT", tmp_path)
    assert leftovers.grader_cgroups({4242}) == sorted(tmp_path / c / "dl-grader" / "s4242-1"
                                                      for c in ("memory", "pids", "cpu", "cpuacct"))


def test_only_the_database_files_may_stay_in_the_data_directory(tmp_path: Path) -> None:
    assert leftovers.stray_data_files(tmp_path / "never-created") == []
    for name in ("grader.db", "grader.db-wal", "grader.db-shm"):
        (tmp_path / name).write_text("")
    assert leftovers.stray_data_files(tmp_path) == []
    (tmp_path / "upload.tmp").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "grader.db").write_text("")
    assert leftovers.stray_data_files(tmp_path) == ["sub", "sub/grader.db", "upload.tmp"]
