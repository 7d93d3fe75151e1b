// Fast RmsNorm and AddRmsNorm: rows spread over OpenMP threads, each row vectorised at the
// width of the active instruction set (one plain body instantiated per target). fp32 sum of
// squares, then x * (1 / sqrt(mean + eps)) * weight in the order Hugging Face uses.
// Reference: RmsNorm/AddRmsNorm in reference.cc; compared in tests/kernels/ops_test.cc.
#include <omp.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {

constexpr int64_t kMinParallelElements = int64_t{1} << 15;

// `r` may be null (plain RmsNorm). With r, x is updated in place first. y may alias x.
TPSERVE_ALWAYS_INLINE void NormRowBody(float* x_out, const float* x, const float* r,
                                       const float* weight, int64_t dim, float eps, float* y) {
  float ss = 0.0f;
  if (r != nullptr) {
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) {
      const float v = x[i] + r[i];
      x_out[i] = v;
      ss += v * v;
    }
    x = x_out;
  } else {
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  }
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] * inv) * weight[i];
}

using NormRowFn = void (*)(float*, const float*, const float*, const float*, int64_t, float,
                           float*);

void NormRowScalar(float* xo, const float* x, const float* r, const float* w, int64_t d, float e,
                   float* y) {
  NormRowBody(xo, x, r, w, d, e, y);
}
TPSERVE_TARGET_AVX2 void NormRowAvx2(float* xo, const float* x, const float* r, const float* w,
                                     int64_t d, float e, float* y) {
  NormRowBody(xo, x, r, w, d, e, y);
}
TPSERVE_TARGET_AVX512 void NormRowAvx512(float* xo, const float* x, const float* r, const float* w,
                                         int64_t d, float e, float* y) {
  NormRowBody(xo, x, r, w, d, e, y);
}

NormRowFn PickNormRow() {
  switch (cpu::ActiveIsa()) {
    case cpu::Isa::kAvx512: return &NormRowAvx512;
    case cpu::Isa::kAvx2: return &NormRowAvx2;
    default: return &NormRowScalar;
  }
}

void Run(float* x_out, const float* x, const float* r, const float* weight, int64_t tokens,
         int64_t dim, float eps, float* y) {
  const NormRowFn row = PickNormRow();
  const int threads = tokens * dim < kMinParallelElements ? 1 : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tokens; ++t) {
    row(x_out == nullptr ? nullptr : x_out + t * dim, x + t * dim,
        r == nullptr ? nullptr : r + t * dim, weight, dim, eps, y + t * dim);
  }
}

}  // namespace

void RmsNorm(const float* x, const float* weight, int64_t tokens, int64_t dim, float eps,
             float* y) {
  Run(nullptr, x, nullptr, weight, tokens, dim, eps, y);
}

void AddRmsNorm(float* x, const float* r, const float* weight, int64_t tokens, int64_t dim,
                float eps, float* y) {
  Run(x, x, r, weight, tokens, dim, eps, y);
}

}  // namespace tpserve::kernels
