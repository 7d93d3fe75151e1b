// RoPE: the angle table (BuildRopeTable) and the fast in-place rotation (ApplyRope), with
// Hugging Face's rotate_half pairing (i, i + head_dim/2). Everything follows HF's fp32
// arithmetic step by step, with no fused multiply-add (the build compiles this file with
// -ffp-contract=off), so results are bit-identical to ref::ApplyRope and, given the same
// table, to HF's `q * cos + rotate_half(q) * sin`. Tokens are spread over OpenMP threads.
#include <omp.h>

#include <cmath>
#include <cstdint>

#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {
constexpr int64_t kMinParallelElements = int64_t{1} << 15;
}  // namespace

void BuildRopeTable(double theta, int64_t head_dim, int64_t max_positions, float* cos, float* sin) {
  const int64_t half = head_dim / 2;
  // HF: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all in fp32.
  const float base = static_cast<float>(theta);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float inv_freq = 1.0f / std::pow(base, exponent);
    // HF: freqs = inv_freq @ position_ids.float(), a product of two fp32 values.
    for (int64_t p = 0; p < max_positions; ++p) {
      const float angle = static_cast<float>(p) * inv_freq;
      cos[p * half + i] = std::cos(angle);
      sin[p * half + i] = std::sin(angle);
    }
  }
}

void ApplyRope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
               const RopeTable& table) {
  const int64_t half = head_dim / 2;
  const int threads = tokens * heads * head_dim < kMinParallelElements ? 1 : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = table.cos + positions[t] * table.half_dim;
    const float* s = table.sin + positions[t] * table.half_dim;
    for (int64_t h = 0; h < heads; ++h) {
      float* lo = x + (t * heads + h) * head_dim;
      float* hi = lo + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = lo[i], b = hi[i];
        lo[i] = a * c[i] - b * s[i];
        hi[i] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace tpserve::kernels
