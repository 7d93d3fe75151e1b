#!/usr/bin/env bash
# The device check: the one script to run on the GPU test machine (one H200, nvcc 13, cmake,
# python3; no MPI, gRPC or network). From the repository root:
#   bash tests/gpu/device_check.sh
#  1. builds the GPU-only tree in Release for sm_90 only (scripts/build_gpu.sh into build-gpu/;
#     warnings are not fatal there, since that machine's compiler may warn where CI's does not);
#  2. runs every ctest test labelled `gpu` and prints one table row per test suite;
#  3. runs the benchmark (bench/gpu/gpu_bench.cc): first its --tiny smoke mode (a few seconds;
#     the benchmark's own code on a small model), then the full size: copy bandwidth, GEMM rate,
#     then CudaRankCompute (the worker's GPU path) on the 48-layer Mistral-11B-AirOmniMix
#     shape with random host weights (21.5 GB, filled on every core and uploaded twice: with
#     and without CUDA graphs): decode batch 1/8/64/256 at position 512 and 512/2048-token
#     prefill, wall clock per Forward + Sample beside the rooflines, the goals marked MET /
#     NOT MET, and the per-op breakdown of one step; its tables to stdout and bench.txt;
#  4. runs the CUDA ops test under compute-sanitizer (memcheck on everything but the large
#     GEMM shapes, memcheck on rank_compute_test, racecheck on the shared-memory kernels:
#     AddRmsNorm and attention) when the
#     sanitizer exists and works there, within what is left of an 8-minute budget.
# Logs and gtest JSON files go to $OUT (the device tool's output folder) when set, else to
# build-gpu/device-check/. The device machine (a PyTorch image) has none of Debian's abseil,
# GoogleTest or nlohmann_json as far as we know: first, here, run
# `bash scripts/build_gpu.sh --bundle-deps .gpu-deps` (~10 MB, ignored by git), then call the
# device tool with carry [".gpu-deps"] and `bash tests/gpu/device_check.sh` (timeout_s 540);
# .gpu-deps is used when present. NCCL: the system's, else NVIDIA's Python wheel (below).
# The GPU tests include the engine end to end in one process (engine_golden.*.solo.cuda:
# tiny-mistral-hd64 against Hugging Face's logits, see tests/worker/golden_solo.cmake).
# Expected time on 16 cores: build ~1-2 min, tests ~30 s (CPU references), benchmark ~5 s tiny
# + ~30-60 s full size (capped at 60 s + 180 s), sanitizers ~2-3 min (capped so that the whole
# script ends within ~7.5 minutes).
# Exit code 0 only when the build, every GPU test (run, not skipped), both benchmark runs (an
# error, non-finite logits or missing graph replays fail them; a goal NOT MET does not) and the
# sanitizers passed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${TPSERVE_GPU_BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/device-check}
mkdir -p "$out"
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*"; }
status=0

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
"$nvcc" --version 2>&1 | tail -1
echo "cmake: $(cmake --version | head -1), $(nproc) cores"
[ -d "$root/.gpu-deps" ] && export TPSERVE_GPU_DEPS="$root/.gpu-deps"
if [ -z "${TPSERVE_GPU_DEPS:-}" ] && [ ! -d /usr/include/absl ] &&
    [ ! -d /usr/local/include/absl ]; then
  echo "no abseil here and no .gpu-deps/: the build will fail (bundle abseil, GoogleTest and" \
    "nlohmann_json" \
    "with 'bash scripts/build_gpu.sh --bundle-deps .gpu-deps' and carry .gpu-deps)"
fi
# No NCCL beside the CUDA toolkit: take the one in NVIDIA's Python wheel, if python3 has it.
if [ -z "${NCCL_HOME:-}" ] && [ ! -f /usr/local/include/nccl.h ] &&
    [ ! -f /usr/local/cuda/include/nccl.h ] && [ ! -f /usr/include/nccl.h ]; then
  wheel=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  [ -n "$wheel" ] && [ -f "$wheel/include/nccl.h" ] && export NCCL_HOME=$wheel
fi
echo "NCCL: ${NCCL_HOME:-searched in the system paths}"

# ---- 1. build ----
# Past a target that fails to build, the others are still built and run below: one lease
# then still checks what did build.
stamp "build: scripts/build_gpu.sh (Release, GPU-only) -> $build"
if ! TPSERVE_GPU_BUILD_DIR="$build" CUDACXX="$nvcc" TPSERVE_KEEP_GOING=1 timeout 420 \
    bash scripts/build_gpu.sh -DTPSERVE_WERROR=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
    >"$out/build.log" 2>&1; then
  status=1
  grep -E "error|FAILED" "$out/build.log" | head -40
  if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
    tail -40 "$out/build.log"; stamp "CONFIGURE FAILED"; exit 1
  fi
  stamp "BUILD FAILED for some targets (above; log: build.log); running what was built"
else
  stamp "build done ($(grep -c 'warning' "$out/build.log") warning lines; log: build.log)"
fi
grep -E "^-- (NCCL|No NCCL)" "$out/build.log"

# ---- 2. GPU tests ----
stamp "GPU tests: ctest -L gpu"
rm -f "$out"/*.json
GTEST_OUTPUT="json:$out/" ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300 \
  >"$out/ctest.log" 2>&1 || status=1
grep -E "Test +#|tests passed|Skipped|Failed" "$out/ctest.log"
if ! grep -q "engine_golden.tiny-mistral-hd64.solo.cuda" "$out/ctest.log"; then
  echo "the engine's end-to-end GPU test was not built (no nlohmann_json? see build.log)"
  status=1
fi
if grep -q "Skipped" "$out/ctest.log"; then
  echo "GPU tests were SKIPPED: no CUDA device visible to the tests"
  status=1
fi

if command -v python3 >/dev/null; then
  python3 - "$out" <<'PY'
import glob, json, sys
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    try:
        data = json.load(open(path))
    except ValueError:
        continue
    for suite in data.get("testsuites", []):
        tests = suite.get("testsuite", [])
        failed = sum(1 for t in tests if t.get("failures"))
        skipped = sum(1 for t in tests if t.get("result") == "SKIPPED")
        ms = sum(float(str(t.get("time", "0s")).rstrip("s")) for t in tests) * 1000
        rows.append((suite["name"], len(tests), len(tests) - failed - skipped, failed, skipped, ms))
print(f"{'test suite':<52} {'cases':>5} {'pass':>5} {'fail':>5} {'skip':>5} {'ms':>8}")
for r in rows:
    print(f"{r[0]:<52} {r[1]:>5} {r[2]:>5} {r[3]:>5} {r[4]:>5} {r[5]:>8.1f}")
tot = [sum(r[i] for r in rows) for i in range(1, 6)]
print(f"{'total':<52} {tot[0]:>5} {tot[1]:>5} {tot[2]:>5} {tot[3]:>5} {tot[4]:>8.1f}")
PY
fi

# ---- 3. benchmark: tiny smoke, then full size ----
bench_bin="$build/bench/gpu/tpserve_gpu_bench"
if [ -x "$bench_bin" ]; then
  stamp "benchmark smoke: $bench_bin --tiny (log: bench-tiny.txt)"
  if timeout 60 "$bench_bin" --tiny >"$out/bench-tiny.txt" 2>&1; then
    echo "tiny benchmark: passed"
  else
    echo "TINY BENCHMARK FAILED (rc $?)"; tail -30 "$out/bench-tiny.txt"; status=1
  fi
  stamp "benchmark: $bench_bin (full size)"
  # pipefail (set above): a failing or timed-out benchmark fails the check.
  timeout 180 "$bench_bin" 2>&1 | tee "$out/bench.txt" || {
    echo "BENCHMARK FAILED (rc $?)"; status=1; }
else
  stamp "benchmark binary missing: $bench_bin"
  status=1
fi

# ---- 4. compute-sanitizer, within the time that is left ----
budget=450  # seconds for the whole script, leaving a margin under 8 minutes
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer \
  /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
test_bin="$build/tests/gpu/cuda_ops_test"
if [ -n "$sanitizer" ] && [ -x "$test_bin" ]; then
  run_sanitizer() {  # name, tool, gtest filter, share of the remaining time (percent), binary
    local rc=0 left=$((budget - ($(date +%s) - t0))) bin=${5:-$test_bin}
    local limit=$((left * $4 / 100))
    if [ "$limit" -lt 30 ]; then
      echo "compute-sanitizer $2 ($3): not run, only ${left}s of the budget left"
      return
    fi
    [ "$limit" -gt 200 ] && limit=200
    timeout "$limit" "$sanitizer" --tool "$2" --error-exitcode 9 --print-limit 20 "$bin" \
      --gtest_brief=1 --gtest_filter="$3" >"$out/sanitizer-$1.log" 2>&1 || rc=$?
    case $rc in
      0) echo "compute-sanitizer $2 ($3): clean" ;;
      9) echo "compute-sanitizer $2 ($3): ERRORS"; tail -30 "$out/sanitizer-$1.log"; status=1 ;;
      124) echo "compute-sanitizer $2 ($3): inconclusive, stopped after ${limit}s"
           tail -4 "$out/sanitizer-$1.log" ;;
      *) echo "compute-sanitizer $2 ($3): inconclusive (rc $rc; unsupported here?)"
         tail -8 "$out/sanitizer-$1.log" ;;
    esac
  }
  stamp "compute-sanitizer ($sanitizer)"
  # The large GEMM shapes (names with x4096 / x14336) only exercise cuBLASLt at size, slowly.
  run_sanitizer memcheck memcheck '*-*x4096*:*x14336*' 40
  # The worker's compute on the tiny model: staging copies, graphs, stage link, sampling.
  [ -x "$build/tests/gpu/rank_compute_test" ] &&
    run_sanitizer memcheck-compute memcheck '*' 40 "$build/tests/gpu/rank_compute_test"
  run_sanitizer racecheck racecheck '*AddRmsNorm*:*PrefillAttention*:*DecodeAttention*' 100
else
  stamp "compute-sanitizer not found: skipped"
fi

stamp "done: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
