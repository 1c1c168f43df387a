"""Folder submissions on the grader's own disk: nothing the candidate planted is followed.

On the engine before the safe reader, a symlink named solution.py pointing at
reference/mlp.py earned full marks, and links to grader source or /etc files
were printed into the report.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grader.errors import InvalidRequest
from grader.submission_files import MAX_FILES, MAX_TOTAL_BYTES, read_submission
from tests.conftest import ROOT

GOOD = "def affine_forward(x, w, b):\n    return x @ w + b\n"


def folder(tmp_path: Path) -> Path:
    d = tmp_path / "sub"
    d.mkdir()
    (d / "solution.py").write_text(GOOD)
    return d


def test_plain_folder_and_file_are_read(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "helpers.py").write_text("X = 1\n")
    (d / "notes.txt").write_text("ignored")
    (d / "pkg").mkdir()
    assert read_submission(d) == {"solution.py": GOOD, "helpers.py": "X = 1\n"}
    assert read_submission(d / "solution.py") == {"solution.py": GOOD}


@pytest.mark.parametrize("target", [ROOT / "reference" / "mlp.py", Path("/etc/hostname"), ROOT / "grader" / "cli.py"])
def test_symlinked_entry_or_helper_is_refused_by_name(tmp_path: Path, target: Path) -> None:
    d = tmp_path / "sub"
    d.mkdir()
    (d / "solution.py").symlink_to(target)
    with pytest.raises(InvalidRequest, match=r"solution\.py is a symlink"):
        read_submission(d)
    (d / "solution.py").unlink()
    (d / "solution.py").write_text(GOOD)
    (d / "helpers.py").symlink_to(target)
    with pytest.raises(InvalidRequest, match=r"helpers\.py is a symlink"):
        read_submission(d)


def test_symlink_to_a_non_python_name_is_refused_too(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "data").symlink_to("/etc/passwd")
    with pytest.raises(InvalidRequest, match="data is a symlink"):
        read_submission(d)


def test_the_named_path_itself_may_not_be_a_symlink(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (tmp_path / "link").symlink_to(d)
    (tmp_path / "file.py").symlink_to(ROOT / "reference" / "mlp.py")
    for p in (tmp_path / "link", tmp_path / "file.py"):
        with pytest.raises(InvalidRequest, match="is a symlink"):
            read_submission(p)


def test_special_files_and_hard_links_are_refused(tmp_path: Path) -> None:
    d = folder(tmp_path)
    os.mkfifo(d / "pipe.py")  # opening it for reading would block forever without O_NONBLOCK
    with pytest.raises(InvalidRequest, match="pipe.py is not a regular file"):
        read_submission(d)
    os.unlink(d / "pipe.py")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "s.py"))
    try:
        with pytest.raises(InvalidRequest, match="s.py is not a regular file"):
            read_submission(d)
    finally:
        sock.close()
        os.unlink(d / "s.py")
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    os.link(outside, d / "helpers.py")
    with pytest.raises(InvalidRequest, match="helpers.py is a hard link"):
        read_submission(d)


def test_sizes_and_counts_are_capped_while_reading(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "big.py").write_text("#" * (MAX_TOTAL_BYTES + 1))
    with pytest.raises(InvalidRequest, match="over"):
        read_submission(d)
    (d / "big.py").unlink()
    for i in range(MAX_FILES):
        (d / f"m{i}.py").write_text("")
    with pytest.raises(InvalidRequest, match="more than"):
        read_submission(d)


def test_cli_exits_2_naming_the_file_and_prints_nothing_of_it(tmp_path: Path) -> None:
    d = tmp_path / "sub"
    d.mkdir()
    (d / "solution.py").symlink_to(ROOT / "reference" / "mlp.py")
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "grade", "mlp", str(d), "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "solution.py is a symlink" in proc.stderr
    assert proc.stdout == ""
