#!/usr/bin/env bash
# Configures and builds the GPU-only tree in Release: TPSERVE_GPU_ONLY=ON (common/, kernels/
# CPU + CUDA, comm/nccl, the worker's compute, tests/gpu and bench/gpu; with nlohmann_json
# also model/ and the Engine, for the one-process golden test) with TPSERVE_CUDA=ON, into
# build-gpu/ (or $TPSERVE_GPU_BUILD_DIR). This is what runs on the GPU test machine, which has
# cmake, a C++ compiler and nvcc but no MPI, gRPC, protobuf, yaml-cpp or sentencepiece: the
# first four are hidden from find_package here (sentencepiece is optional everywhere), so a
# build that passes on a machine that has them proves it needs none of them.
#   bash scripts/build_gpu.sh [extra cmake args]      e.g. -DTPSERVE_WERROR=OFF
#   bash scripts/build_gpu.sh --bundle-deps DIR       copies this machine's abseil,
#       GoogleTest and nlohmann_json (Debian's headers, libraries and CMake packages, ~10 MB)
#       into DIR, a prefix
#       for TPSERVE_GPU_DEPS on a machine that lacks them (tests/gpu/device_check.sh uses
#       .gpu-deps/ in the repository root when it exists).
# Environment: CC/CXX pick the compilers (default: gcc/g++ if present, else clang/clang++: GCC
# always brings its OpenMP runtime and is nvcc's usual host compiler, where a clang may lack
# libomp or be newer than nvcc accepts);
# JOBS the parallel jobs (default: nproc); TPSERVE_GPU_DEPS a prefix searched first for
# abseil, GoogleTest and nlohmann_json (CMake packages), for a machine without them;
# TPSERVE_KEEP_GOING=1 builds every target it can past a failed one (still exits non-zero).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = "--bundle-deps" ]; then
  dest=${2:?usage: build_gpu.sh --bundle-deps DIR}
  arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  lib=/usr/lib/$arch
  mkdir -p "$dest/include" "$dest/lib/$arch/cmake" "$dest/share/cmake"
  cp -a /usr/include/absl /usr/include/gtest /usr/include/gmock /usr/include/nlohmann \
    "$dest/include/"
  cp -a /usr/share/cmake/nlohmann_json "$dest/share/cmake/"
  cp -a "$lib"/libabsl_*.so* "$lib"/libgtest*.a "$lib"/libgmock*.a "$dest/lib/$arch/"
  cp -a "$lib/cmake/absl" "$lib/cmake/GTest" "$dest/lib/$arch/cmake/"
  echo "bundled abseil, GoogleTest and nlohmann_json into $dest ($(du -sh "$dest" | cut -f1))"
  exit 0
fi

build=${TPSERVE_GPU_BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}

if [ -z "${CXX:-}" ]; then
  if command -v g++ >/dev/null; then export CC=gcc CXX=g++; else export CC=clang CXX=clang++; fi
fi
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$nvcc" ] || { echo "build_gpu.sh: no nvcc (set CUDACXX)" >&2; exit 1; }
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja

args=(
  -S "$root" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CUDA_COMPILER="$nvcc"
  -DTPSERVE_GPU_ONLY=ON -DTPSERVE_CUDA=ON -DTPSERVE_BUILD_FUZZERS=OFF
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DCMAKE_DISABLE_FIND_PACKAGE_gRPC=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON -DCMAKE_DISABLE_FIND_PACKAGE_yaml-cpp=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=OFF  # a cache from before it was wanted
)
if [ -n "${TPSERVE_GPU_DEPS:-}" ]; then
  # Debian 12's abseil (20220623) predates GCC 13's leaner standard headers: its str_format
  # headers use uint8_t without including <cstdint>.
  args+=(-DCMAKE_PREFIX_PATH="$TPSERVE_GPU_DEPS" "-DCMAKE_CXX_FLAGS=-include cstdint")
fi
cmake --no-warn-unused-cli "${args[@]}" "$@"
keep_going=()
if [ "${TPSERVE_KEEP_GOING:-0}" = 1 ]; then
  [ "$generator" = Ninja ] && keep_going=(-- -k 0) || keep_going=(-- -k)
fi
cmake --build "$build" -j "$jobs" "${keep_going[@]}"
