#!/usr/bin/env bash
# Static checks, run by scripts/test.sh before the tests: style and likely bugs (ruff), types (mypy, strict on
# grader/ and sandbox/), and the import layers (import-linter: a lower layer never imports a higher one).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check grader sandbox problems reference tests scripts benchmarks
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
