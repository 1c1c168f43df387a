"""The sandbox images of the Docker backend: their names and the digest that ties an image to this runner.

An image carries a copy of `sandbox/` (the runner and the wire format). The grader refuses an image whose
`dl-grader.runner` label is not the digest of its own `sandbox/`, so a grader never talks to a stale runner.
`scripts/build-images.sh` builds the images and reads the digest with `python -m grader.isolation.images digest`.
"""

from __future__ import annotations

import hashlib
import sys
from functools import cache
from pathlib import Path

RUNNER_DIR = Path(__file__).resolve().parents[2] / "sandbox"
RUNNER_LABEL = "dl-grader.runner"
VARIANT_LABEL = "dl-grader.variant"
PYTHON = "/opt/py/bin/python"  # the interpreter inside a sandbox image
RUNNER_PATH = "/opt/runner"  # the folder holding the runner package `sandbox` inside an image


@cache
def runner_digest(root: Path = RUNNER_DIR) -> str:
    """sha256 over the runner's files (names and contents), caches left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix != ".pyc"):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    if sys.argv[1:] == ["digest"]:
        print(runner_digest())
    else:
        print("usage: python -m grader.isolation.images digest", file=sys.stderr)
        sys.exit(2)
