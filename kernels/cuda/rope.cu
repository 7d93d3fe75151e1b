// Rotary embedding on the GPU, in place on bf16 q/k, HF rotate_half pairing (i, i + half).
// One block per token; each thread owns whole (i, i + half) pairs of one head, so no two
// threads touch the same element. The products and sums use __fmul_rn/__fadd_rn/__fsub_rn,
// which the compiler never fuses into FMAs: the fp32 results equal kernels::ref::ApplyRope
// (built with -ffp-contract=off) bit for bit, and so do the bf16 outputs after one rounding.
// Tested by tests/gpu/cuda_ops_test.cc (bit-exact against bf16(ref)).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 128;

__global__ void RopeKernel(uint16_t* __restrict__ x, int64_t heads, int64_t head_dim,
                           int64_t token_stride, const int32_t* __restrict__ positions,
                           const float* __restrict__ cos_table,
                           const float* __restrict__ sin_table, int64_t max_positions) {
  const int64_t t = blockIdx.x;
  const int64_t half = head_dim / 2;
  const int32_t pos = positions[t];
  const bool valid = pos >= 0 && pos < max_positions;
  const float* cos_row = cos_table + (valid ? pos : 0) * half;
  const float* sin_row = sin_table + (valid ? pos : 0) * half;
  uint16_t* row = x + t * token_stride;
  for (int64_t j = threadIdx.x; j < heads * half; j += kThreads) {
    const int64_t h = j / half;
    const int64_t i = j - h * half;
    uint16_t* lo = row + h * head_dim + i;
    uint16_t* hi = lo + half;
    if (!valid) {  // the host cannot check positions without waiting: poison the token
      *lo = kBf16Nan;
      *hi = kBf16Nan;
      continue;
    }
    const float a = Bf16ToF32(*lo), b = Bf16ToF32(*hi);
    const float c = cos_row[i], s = sin_row[i];
    *lo = F32ToBf16(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
    *hi = F32ToBf16(__fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
  }
}

}  // namespace

int LaunchApplyRope(const RopeParams& p, Stream stream) {
  RopeKernel<<<static_cast<unsigned>(p.tokens), kThreads, 0, ToCudaStream(stream)>>>(
      p.x, p.heads, p.head_dim, p.token_stride, p.positions, p.cos, p.sin, p.max_positions);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
