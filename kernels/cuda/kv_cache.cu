// WriteKvCache on the GPU: copies each token's bf16 K and V rows ([kv_heads, head_dim],
// possibly slices of a fused qkv row) into the paged cache at its slot. One block per token,
// threads striding over the row (CopyTokenToCache in rope_kv.cuh). Negative slots (padding)
// and slots past the cache are skipped, so a bad slot never writes outside the cache.
// Tested by tests/gpu/cuda_ops_test.cc against kernels::ref::WriteKvCache (bit-exact).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/rope_kv.cuh"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 256;

__global__ void WriteKvCacheKernel(const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                                   int64_t k_stride, int64_t v_stride,
                                   const int64_t* __restrict__ slots,
                                   uint16_t* __restrict__ cache_k, uint16_t* __restrict__ cache_v,
                                   int64_t num_slots, int64_t row) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t t = blockIdx.x;
  CopyTokenToCache(k + t * k_stride, v + t * v_stride, slots[t], cache_k, cache_v, num_slots,
                   row);
}

}  // namespace

int LaunchWriteKvCache(const WriteKvCacheParams& p, Stream stream) {
  const PagedKvCache& c = p.cache;
  LaunchKernel(WriteKvCacheKernel, static_cast<unsigned>(p.tokens), kThreads, 0,
               ToCudaStream(stream), p.k, p.v, p.k_token_stride, p.v_token_stride, p.slots, c.k,
               c.v, c.num_blocks * c.block_size, c.kv_heads * c.head_dim);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
