#!/usr/bin/env bash
# The main job on its embedded default: builds tpserve, makes a small random Mistral-shaped
# model (cached in .cache/), and generates from it on 2 x 2 MPI ranks (TP 2 x PP 2),
# printing the tokens and tokens/s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
model="$root/.cache/demo-mistral"
if [ ! -f "$model/model.safetensors" ]; then
  "$root/build/tools/tpserve-make-model" --out "$model" --arch mistral --layers 8 --hidden 512 \
    --intermediate 1792 --heads 8 --kv_heads 2 --vocab 32000 --dtype bf16 --seed 7
fi
mpi_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} mpirun -np 4 "${mpi_flags[@]}" \
  "$root/build/worker/tpserve-worker" --model "$model" --tp 2 --pp 2 \
  --prompt_len 24 --max_new_tokens 32 --batch 4 "$@"
