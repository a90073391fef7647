#!/usr/bin/env bash
# Install what the tests need into ./.venv, check style, run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k verdict
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh dev
.venv/bin/ruff format --check .
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
