"""Read a submission from disk without following anything the candidate could have planted.

One reader for every command that takes a file or a folder (`grader grade`,
and the client and batch commands that build on it). A folder submission is
untrusted input on the grader's own disk: a symlink in it would make the grader
(often root) read any host file and grade or print it. So:

- the named path itself must be a regular file or a real directory, not a symlink;
- a folder is opened once (O_DIRECTORY | O_NOFOLLOW) and every entry is opened
  relative to that descriptor with O_NOFOLLOW | O_NONBLOCK, then checked with
  fstat on the open descriptor (no check-then-open race): only regular files are
  read; a symlink, FIFO, socket or device among the entries is refused by name;
- nothing outside the folder is reachable: entries are single names, never paths,
  subfolders are not entered, and a file with several hard links is refused;
- sizes are capped while reading (never trusting st_size), as are file counts.

A Jupyter notebook is read as its JSON text and sent as `solution.ipynb` (a lone .ipynb
file, or the one notebook of a folder without solution.py); the API, the CLI and the engine
convert it into solution.py (`grader.engine.notebook`) with the same rules everywhere.

Refusals are InvalidRequest: the CLI exits 2 with the message, naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from grader.engine.files import decode_text
from grader.engine.notebook import MAX_NOTEBOOK_BYTES, SUFFIX, is_notebook_name
from grader.errors import InvalidRequest

MAX_FILES = 32
MAX_TOTAL_BYTES = 256 * 1024


def _open_flags(directory: bool) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    return flags | (os.O_DIRECTORY if directory else 0)


def _read_fd(fd: int, label: str, budget: int, limit: int = MAX_TOTAL_BYTES) -> str:
    """Read a regular file's descriptor, at most `budget` bytes (of `limit` in all), as UTF-8."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequest(f"{label} is not a regular file; symlinks, pipes and devices are refused")
    if info.st_nlink > 1:
        raise InvalidRequest(f"{label} is a hard link to a file elsewhere; copy the file instead")
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        total += len(chunk)
        if total > budget:
            raise InvalidRequest(f"{label}: the submission is over {limit} bytes in all"
                                 + (" (clear the notebook's outputs: they are ignored)" if limit != MAX_TOTAL_BYTES
                                    else ""))
        chunks.append(chunk)
    return decode_text(b"".join(chunks), label)


def _open(path: str, label: str, flags: int, dir_fd: int | None = None) -> int:
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidRequest(f"{label} is a symlink; symlinks are refused in submissions") from None
        if exc.errno == errno.ENOENT:
            raise InvalidRequest(f"{label}: no such file or folder") from None
        raise InvalidRequest(f"{label} cannot be read: {exc.strerror}") from None


def notebook_name(entry: str) -> str:
    """The name a notebook is sent under: the entry's with .ipynb (solution.ipynb)."""
    return entry.removesuffix(".py") + SUFFIX


def read_submission(path: Path, entry: str = "solution.py") -> dict[str, str]:
    """A .py file (sent as the entry file), a .ipynb notebook (sent as solution.ipynb), or a folder of .py
    files with the entry among them (or, without it, one notebook)."""
    label = str(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise InvalidRequest(f"{label}: no such file or folder") from None
    except OSError as exc:
        raise InvalidRequest(f"{label} cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise InvalidRequest(f"{label} is a symlink; name the file or folder itself")
    if stat.S_ISREG(info.st_mode):
        fd = _open(str(path), label, _open_flags(directory=False))
        try:
            if is_notebook_name(path.name):
                return {notebook_name(entry): _read_fd(fd, label, MAX_NOTEBOOK_BYTES, MAX_NOTEBOOK_BYTES)}
            return {entry: _read_fd(fd, label, MAX_TOTAL_BYTES)}
        finally:
            os.close(fd)
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidRequest(f"{label} is not a regular file or a folder")
    return _read_folder(path, entry)


def _read_folder(path: Path, entry: str) -> dict[str, str]:
    dir_fd = _open(str(path), str(path), _open_flags(directory=True))
    try:
        files: dict[str, str] = {}
        notebooks: list[str] = []
        budget = MAX_TOTAL_BYTES
        for name in sorted(os.listdir(dir_fd)):
            label = str(path / name)
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                continue  # subfolders are not part of a submission (and are never entered)
            if not stat.S_ISREG(info.st_mode):
                kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                raise InvalidRequest(f"{label} is {kind}; a submission folder may hold only regular files")
            if is_notebook_name(name):
                notebooks.append(name)
                continue
            if not name.endswith(".py"):
                continue
            if len(files) >= MAX_FILES:
                raise InvalidRequest(f"{path} holds more than {MAX_FILES} .py files")
            fd = _open(name, label, _open_flags(directory=False), dir_fd=dir_fd)
            try:
                files[name] = _read_fd(fd, label, budget)
            finally:
                os.close(fd)
            budget -= len(files[name].encode("utf-8"))
        if entry not in files and len(notebooks) == 1:
            # A folder of a notebook (and helpers): the notebook is the entry, sent as solution.ipynb whatever its
            # name ("Untitled-1.ipynb"); beside solution.py, notebooks are ignored as before.
            name, label = notebooks[0], str(path / notebooks[0])
            fd = _open(name, label, _open_flags(directory=False), dir_fd=dir_fd)
            try:
                files[notebook_name(entry)] = _read_fd(fd, label, MAX_NOTEBOOK_BYTES, MAX_NOTEBOOK_BYTES)
            finally:
                os.close(fd)
            return files
    finally:
        os.close(dir_fd)
    if entry not in files:
        if len(notebooks) > 1:
            raise InvalidRequest(f"{path} has no {entry} and {len(notebooks)} notebooks ({', '.join(notebooks)}): "
                                 f"keep one notebook, or add {entry} as the entry file")
        raise InvalidRequest(f"{path} has no {entry}: the entry file of a folder submission is {entry} "
                             "(or a single .ipynb notebook)")
    return files
