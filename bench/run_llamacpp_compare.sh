#!/usr/bin/env bash
# tpserve vs llama.cpp on SmolLM2-135M-Instruct, side by side in one run on this CPU, the same
# thread count and the same weights precision: tpserve dequantises the Q4_1 GGUF to fp32 at
# load; llama.cpp runs an fp32 copy of that GGUF (bench/convert_gguf_f32.py: the very same
# values). llama.cpp on the Q4_1 file itself (8-bit activations, a quarter of the bytes) is
# printed too, as users run it. The first run builds llama-cpp-python into
# .cache/llamacpp-venv (about 4 minutes on 2 cores; LLAMACPP_VENV names another venv with
# llama-cpp-python and gguf).
#   BUILD_DIR (default build/), THREADS (default: all cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
threads=${THREADS:-$(nproc)}
model=$(bash "$root/scripts/fetch_smollm2.sh")
q4="$model/SmolLM2-135M-Instruct.Q4_1.gguf"
venv=${LLAMACPP_VENV:-$root/.cache/llamacpp-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp, gguf" 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/pip" install -q llama-cpp-python==0.3.36 gguf numpy
fi
f32="$root/.cache/smollm2-f32/SmolLM2-135M-Instruct.F32.gguf"
if [ ! -f "$f32" ]; then
  mkdir -p "$(dirname "$f32")"
  "$venv/bin/python" "$root/bench/convert_gguf_f32.py" --gguf "$q4" --out "$f32.part"
  mv "$f32.part" "$f32"
fi
flags=(--bind-to none)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
tpserve_run() {
  OMP_NUM_THREADS=$threads mpirun -np 1 "${flags[@]}" "$build/bench/engine/tpserve-engine-bench" \
    --model "$model" --prefill_len 512 --decode_context 22 --decode_steps 64 --batches 1,16 \
    --bandwidth_gbps "$bw" "$@"
}
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads"
bw=$(OMP_NUM_THREADS=$threads "$build/bench/engine/tpserve-engine-bench" --bandwidth_only)
echo "== tpserve (fp32 weights from the Q4_1 GGUF), run 1"
tpserve_run
echo "== llama.cpp, fp32 GGUF"
"$venv/bin/python" "$root/bench/llamacpp_bench.py" --gguf "$f32" --threads "$threads" --repeats 5
echo "== tpserve, run 2"
tpserve_run --header=false
echo "== llama.cpp, Q4_1 GGUF (not the same precision: for reference)"
"$venv/bin/python" "$root/bench/llamacpp_bench.py" --gguf "$q4" --threads "$threads" --repeats 5
