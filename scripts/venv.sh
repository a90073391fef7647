#!/usr/bin/env bash
# Create ./.venv if needed and install Plateau into it (editable), with extras.
# Usage: scripts/venv.sh [EXTRAS]   e.g. scripts/venv.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "plateau: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "plateau: installing dependencies (the first time this includes PyTorch)" >&2
  target="."
  [ -n "$extras" ] && target=".[$extras]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  touch "$stamp"
fi
