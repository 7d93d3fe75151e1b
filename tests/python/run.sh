#!/usr/bin/env bash
# Runs the Python SDK tests (tests/python) with pytest in the venv build/python-venv.
# First run: creates the venv and installs grpcio grpcio-tools pytest pytest-asyncio and
# ./clients/python from PyPI. Later runs reinstall only when the SDK, the proto or this script
# changed (a hash kept in the venv), so they start at once. Exit code: pytest's.
# Usage: tests/python/run.sh [pytest args...]    Env: PYTHON (default python3, >= 3.9).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/build/python-venv"
cd "$repo"

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"

stamp="$venv/.tpserve-sources.sha256"
sources_hash="$( { echo tests/python/run.sh proto/tpserve/v1/inference.proto
  find clients/python \( -path clients/python/build -o -name _proto -o -name '*.egg-info' \
    -o -name __pycache__ \) -prune -o -type f -print; } |
  tr ' ' '\n' | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sources_hash" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    grpcio grpcio-tools grpcio-reflection pytest pytest-asyncio ./clients/python
  echo "$sources_hash" > "$stamp"
fi

exec "$venv/bin/python" -m pytest tests/python -ra "$@"
