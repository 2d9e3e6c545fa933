#!/usr/bin/env bash
# Sets up .venv (idempotent), then trains -> converts -> verifies -> runs a digits CNN.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
.venv/bin/python examples/quickstart.py "$@"
