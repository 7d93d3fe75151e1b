// Rotary embedding on the GPU, in place on bf16 q/k (RotateTokenRow in rope_kv.cuh: bit-exact
// against bf16(kernels::ref::ApplyRope)), one block per token; and the fused
// ApplyRopeAndWriteKvCache, which also copies each token's rotated K and its V into the paged
// cache (one launch per layer instead of two). Tested by tests/gpu/cuda_ops_test.cc and
// cuda_rope_kv_test.cc.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/rope_kv.cuh"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 128;

__global__ void RopeKernel(uint16_t* __restrict__ x, int64_t heads, int64_t head_dim,
                           int64_t token_stride, const int32_t* __restrict__ positions,
                           const float* __restrict__ cos_table,
                           const float* __restrict__ sin_table, int64_t max_positions) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t t = blockIdx.x;
  RotateTokenRow(x + t * token_stride, heads, head_dim, positions[t], cos_table, sin_table,
                 max_positions);
}

// ApplyRope then WriteKvCache for one token per block: the K and V rows the copy reads may
// lie in the rotated row (the fused qkv row), and only this block touches them.
// x, k and v may overlap, so neither they nor the cache are __restrict__: k and v are read
// after the barrier, through the coherent path.
__global__ void RopeAndWriteKvKernel(uint16_t* x, int64_t heads, int64_t head_dim,
                                     int64_t token_stride, const int32_t* __restrict__ positions,
                                     const float* __restrict__ cos_table,
                                     const float* __restrict__ sin_table, int64_t max_positions,
                                     const uint16_t* k, const uint16_t* v, int64_t k_stride,
                                     int64_t v_stride, const int64_t* __restrict__ slots,
                                     uint16_t* cache_k, uint16_t* cache_v, int64_t num_slots,
                                     int64_t row) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t t = blockIdx.x;
  RotateTokenRow(x + t * token_stride, heads, head_dim, positions[t], cos_table, sin_table,
                 max_positions);
  __syncthreads();  // the rotated K is in memory for every thread of the block
  CopyTokenToCache(k + t * k_stride, v + t * v_stride, slots[t], cache_k, cache_v, num_slots,
                   row);
}

}  // namespace

int LaunchApplyRope(const RopeParams& p, Stream stream) {
  LaunchKernel(RopeKernel, static_cast<unsigned>(p.tokens), kThreads, 0, ToCudaStream(stream), p.x,
               p.heads, p.head_dim, p.token_stride, p.positions, p.cos, p.sin, p.max_positions);
  return static_cast<int>(cudaGetLastError());
}

int LaunchApplyRopeAndWriteKvCache(const RopeParams& p, const WriteKvCacheParams& kv,
                                   Stream stream) {
  const PagedKvCache& c = kv.cache;
  LaunchKernel(RopeAndWriteKvKernel, static_cast<unsigned>(p.tokens), kThreads, 0,
               ToCudaStream(stream), p.x, p.heads, p.head_dim, p.token_stride, p.positions, p.cos,
               p.sin, p.max_positions, kv.k, kv.v, kv.k_token_stride, kv.v_token_stride, kv.slots,
               c.k, c.v, c.num_blocks * c.block_size, c.kv_heads * c.head_dim);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
