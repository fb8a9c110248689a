#!/usr/bin/env bash
# The whole test suite: lint, types, unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The UI tests drive Debian's Chromium through Playwright (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "error: the UI tests need Debian's chromium: apt-get install chromium (as root)" >&2
    exit 1
  fi
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/ruff check processor pipelines tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
