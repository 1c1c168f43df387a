#!/usr/bin/env bash
# Sets everything up and runs the service on its embedded defaults: SQLite in ./data, embedded workers,
# the local bubblewrap sandbox. Extra arguments go to `grader serve` (e.g. --host 0.0.0.0 --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/grader serve "$@"
