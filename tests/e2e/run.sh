#!/usr/bin/env bash
# End-to-end cluster tests: the Python SDK (venv of tests/python/run.sh) against real
# coordinator and mpirun worker processes built in $1 (default: build/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export TPSERVE_BUILD="${1:-$repo/build}"
shift || true
bash "$repo/tests/python/run.sh" --collect-only -q >/dev/null  # makes the venv and the SDK
cd "$repo/tests/e2e"
exec "$repo/build/python-venv/bin/python" -m pytest -ra -p no:cacheprovider "$@" .
