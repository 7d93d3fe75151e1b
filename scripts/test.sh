#!/usr/bin/env bash
# Builds everything and runs the whole test suite (unit, MPI, bad-input and fuzz tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
