// The per-token bodies of the RoPE and KV-cache kernels (internal; CUDA code only), shared by
// rope.cu (ApplyRope, and the fused ApplyRopeAndWriteKvCache) and kv_cache.cu (WriteKvCache):
// one block per token, its threads striding over the token's row. A fused kernel runs them
// one after the other with a __syncthreads() between, so the copy reads the rotated K. No
// __restrict__ on the rows: in the fused kernel the copy reads what the rotation wrote, and a
// restrict-qualified pointer would let the compiler read it through the non-coherent cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"

namespace tpserve::kernels::cuda::internal {

// Rotates heads [0, heads) of one token's row in place, HF rotate_half pairing (i, i + half).
// Each thread owns whole (i, i + half) pairs, so no two threads touch one element. The
// products and sums use __fmul_rn/__fadd_rn/__fsub_rn, which the compiler never fuses into
// FMAs: the fp32 results equal kernels::ref::ApplyRope (built with -ffp-contract=off) bit for
// bit. A position outside [0, max_positions) (the host cannot check positions without
// waiting) poisons the token's rotated heads with NaN.
__device__ __forceinline__ void RotateTokenRow(uint16_t* row, int64_t heads,
                                               int64_t head_dim, int32_t pos,
                                               const float* __restrict__ cos_table,
                                               const float* __restrict__ sin_table,
                                               int64_t max_positions) {
  const int64_t half = head_dim / 2;
  const bool valid = pos >= 0 && pos < max_positions;
  const float* cos_row = cos_table + (valid ? pos : 0) * half;
  const float* sin_row = sin_table + (valid ? pos : 0) * half;
  for (int64_t j = threadIdx.x; j < heads * half; j += blockDim.x) {
    const int64_t h = j / half;
    const int64_t i = j - h * half;
    uint16_t* lo = row + h * head_dim + i;
    uint16_t* hi = lo + half;
    if (!valid) {
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

// Copies one token's K and V rows (`row` elements each) into the cache at `slot`; a negative
// slot (padding) or one at or past `num_slots` (a caller bug) writes nothing.
__device__ __forceinline__ void CopyTokenToCache(const uint16_t* src_k, const uint16_t* src_v,
                                                 int64_t slot, uint16_t* cache_k,
                                                 uint16_t* cache_v, int64_t num_slots,
                                                 int64_t row) {
  if (slot < 0 || slot >= num_slots) return;
  uint16_t* dst_k = cache_k + slot * row;
  uint16_t* dst_v = cache_v + slot * row;
  for (int64_t e = threadIdx.x; e < row; e += blockDim.x) {
    dst_k[e] = src_k[e];
    dst_v[e] = src_v[e];
  }
}

}  // namespace tpserve::kernels::cuda::internal
