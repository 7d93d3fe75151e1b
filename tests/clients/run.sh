#!/usr/bin/env bash
# End-to-end tests of the `tpserve` CLI (tests/clients/test_cli.py): real coordinator and mpirun
# worker processes built in $1 (default: build/), the Python SDK as the reference client.
# Usage: tests/clients/run.sh [BUILD_DIR] [pytest args...]
# Env: TPSERVE_CLI = the tpserve binary (default BUILD_DIR/clients/tpserve).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export TPSERVE_BUILD="$(cd "${1:-$repo/build}" && pwd)"
shift || true
bash "$repo/tests/python/run.sh" --collect-only -q >/dev/null  # makes the venv and the SDK
cd "$repo/tests/clients"
exec "$repo/build/python-venv/bin/python" -m pytest -ra -p no:cacheprovider "$@" test_cli.py
