#!/usr/bin/env bash
# Installs what the pages' browser tests need: Debian's chromium (at /usr/bin/chromium) and the
# Playwright client library from PyPI into .venv. Playwright's own browser download is never used:
# the tests launch /usr/bin/chromium through executable_path. Safe to run again: each step is
# skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=1.65.2  # keep equal to the pin in pyproject.toml's dev extra

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-browser: need root to install chromium (run: sudo apt-get install -y chromium)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup-browser: no .venv yet; run scripts/setup.sh first" >&2
  exit 1
fi
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != '$PLAYWRIGHT_VERSION')" \
    >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
fi
echo "setup-browser: ready ($(/usr/bin/chromium --version 2>/dev/null || echo chromium), playwright $PLAYWRIGHT_VERSION)"
