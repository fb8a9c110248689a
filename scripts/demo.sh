#!/usr/bin/env bash
# Set up on a fresh machine, then run the embedded demo stack.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/otel-insights demo "$@"
