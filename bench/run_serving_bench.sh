#!/usr/bin/env bash
# Serving benchmark of bench/RESULTS.md: bench/serving_bench.py against clusters built in
# $BUILD_DIR (default build/), using the SDK venv that tests/python/run.sh makes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export TPSERVE_BUILD=${BUILD_DIR:-$root/build}
bash "$root/tests/python/run.sh" --collect-only -q >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
exec "$root/build/python-venv/bin/python" "$root/bench/serving_bench.py" "$@"
