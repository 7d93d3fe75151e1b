#!/usr/bin/env bash
# Engine benchmark of bench/RESULTS.md: a ~150M-parameter random Mistral-shaped model
# (48 layers, hidden 512, 8/2 heads, MLP 1792, vocab 32000, bf16), prefill 512 tokens and
# decode at batch 1 and 16, on 1 rank (all cores) and on TP=2 (one core per rank).
# The read bandwidth is measured once at the start of the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
bin="$build/bench/engine/tpserve-engine-bench"
model="$root/.cache/bench-mistral-150m"
[ -f "$model/model.safetensors" ] || "$build/tools/tpserve-make-model" --out "$model" \
  --arch mistral --layers 48 --hidden 512 --intermediate 1792 --heads 8 --kv_heads 2 \
  --vocab 32000 --dtype bf16 --seed 3
cores=$(nproc)
# No --oversubscribe: it switches Open MPI to yielding waits, which slows every
# collective tenfold; these runs use at most one rank per core.
flags=(--bind-to none)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
bw=$(OMP_NUM_THREADS=$cores "$bin" --bandwidth_only)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores, $(free -g | awk '/Mem/{print $2}') GiB"
OMP_NUM_THREADS=$cores OMP_PROC_BIND=close mpirun -np 1 "${flags[@]}" "$bin" --model "$model" --bandwidth_gbps "$bw" "$@"
OMP_NUM_THREADS=$(( cores / 2 > 0 ? cores / 2 : 1 )) mpirun -np 2 "${flags[@]}" "$bin" \
  --model "$model" --tp 2 --header=false --bandwidth_gbps "$bw" "$@"
