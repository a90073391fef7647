#!/usr/bin/env bash
# Install Plateau into ./.venv (first run only), apply the migrations and start
# the whole service on embedded defaults: API, one worker and the dashboard,
# with SQLite under ./var/ and a broker that needs no server.
# Extra arguments go to `plateau up`, e.g. scripts/up.sh --port 8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
exec .venv/bin/plateau up "$@"
