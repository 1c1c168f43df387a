#!/usr/bin/env bash
# Sets everything up (system packages, .venv, Docker and its images, browser for the page tests), runs the static checks
# (scripts/lint.sh) and the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the fast suite only.
set -euo pipefail
cd "$(dirname "$0")/.."
# The PostgreSQL tests start a throwaway cluster of their own: they need the server programs. The cluster
# tests (tests/cluster, marker `cluster`) also start a throwaway redis-server as the Celery broker.
extra=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || extra+=(postgresql)
command -v redis-server >/dev/null 2>&1 || extra+=(redis-server)
scripts/setup.sh "${extra[@]}"
# The Docker backend's tests need a daemon and the images (sandbox, service, and Redis and PostgreSQL for
# the cluster's compose test): installed, started and built here, reusing what a previous run left when
# nothing changed.
scripts/setup-docker.sh --service --cluster
if [ -x scripts/setup-browser.sh ]; then scripts/setup-browser.sh; fi
scripts/lint.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
