#!/usr/bin/env bash
# The whole test suite: lint, types, unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/ruff check processor pipelines tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
