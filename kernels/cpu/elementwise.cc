// Fast Embedding (row gather with widening) and SwiGlu (silu(gate) * up with a vectorisable
// exp), both spread over tokens with OpenMP; SwiGlu is instantiated per instruction set.
// References in reference.cc; compared in tests/kernels/ops_test.cc.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {

constexpr int64_t kMinParallelElements = int64_t{1} << 15;

int ThreadsFor(int64_t elements) {
  return elements < kMinParallelElements ? 1 : omp_get_max_threads();
}

// torch's silu is x / (1 + exp(-x)); the product with `up` follows, as in HF's MLP.
TPSERVE_ALWAYS_INLINE void SwiGluRowBody(const float* gate, const float* up, int64_t n,
                                         float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + cpu::FastExp(-g)) * up[i];
  }
}

using SwiGluRowFn = void (*)(const float*, const float*, int64_t, float*);
void SwiGluRowScalar(const float* g, const float* u, int64_t n, float* o) {
  SwiGluRowBody(g, u, n, o);
}
TPSERVE_TARGET_AVX2 void SwiGluRowAvx2(const float* g, const float* u, int64_t n, float* o) {
  SwiGluRowBody(g, u, n, o);
}
TPSERVE_TARGET_AVX512 void SwiGluRowAvx512(const float* g, const float* u, int64_t n, float* o) {
  SwiGluRowBody(g, u, n, o);
}

}  // namespace

void Embedding(const int32_t* ids, int64_t tokens, const WeightMatrix& table, float* y) {
  const auto* base = static_cast<const uint8_t*>(table.data);
  const size_t row_bytes = static_cast<size_t>(table.cols) * DTypeSize(table.dtype);
  const int threads = ThreadsFor(tokens * table.cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tokens; ++t) {
    ConvertToF32(table.dtype, base + static_cast<size_t>(ids[t]) * row_bytes, y + t * table.cols,
                 static_cast<size_t>(table.cols));
  }
}

void SwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out) {
  SwiGluRowFn row = &SwiGluRowScalar;
  if (cpu::ActiveIsa() == cpu::Isa::kAvx512) row = &SwiGluRowAvx512;
  if (cpu::ActiveIsa() == cpu::Isa::kAvx2) row = &SwiGluRowAvx2;
  // With fewer tokens than threads (decode) rows are split by columns too, in pieces of at
  // least kMinPiece elements, so every thread gets work.
  constexpr int64_t kMinPiece = 1024;
  if (tokens <= 0) return;  // an empty step (a pipeline stage's); also guards the division
  const int threads = ThreadsFor(tokens * inter);
  const int64_t pieces = std::clamp<int64_t>((2 * threads + tokens - 1) / tokens, 1,
                                             std::max<int64_t>(1, inter / kMinPiece));
  const int64_t piece = (inter + pieces - 1) / pieces;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t job = 0; job < tokens * pieces; ++job) {
    const int64_t t = job / pieces, c0 = job % pieces * piece;
    if (c0 >= inter) continue;
    const float* g = gate_up + t * 2 * inter + c0;
    row(g, g + inter, std::min(piece, inter - c0), out + t * inter + c0);
  }
}

}  // namespace tpserve::kernels
