// WriteKvCache on the GPU: copies each token's bf16 K and V rows ([kv_heads, head_dim],
// possibly slices of a fused qkv row) into the paged cache at its slot. One block per token,
// threads striding over the row. Negative slots (padding) and slots past the cache are
// skipped, so a bad slot never writes outside the cache.
// Tested by tests/gpu/cuda_ops_test.cc against kernels::ref::WriteKvCache (bit-exact).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 256;

__global__ void WriteKvCacheKernel(const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                                   int64_t k_stride, int64_t v_stride,
                                   const int64_t* __restrict__ slots,
                                   uint16_t* __restrict__ cache_k, uint16_t* __restrict__ cache_v,
                                   int64_t num_slots, int64_t row) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= num_slots) return;
  const uint16_t* src_k = k + t * k_stride;
  const uint16_t* src_v = v + t * v_stride;
  uint16_t* dst_k = cache_k + slot * row;
  uint16_t* dst_v = cache_v + slot * row;
  for (int64_t e = threadIdx.x; e < row; e += kThreads) {
    dst_k[e] = src_k[e];
    dst_v[e] = src_v[e];
  }
}

}  // namespace

int LaunchWriteKvCache(const WriteKvCacheParams& p, Stream stream) {
  const PagedKvCache& c = p.cache;
  WriteKvCacheKernel<<<static_cast<unsigned>(p.tokens), kThreads, 0, ToCudaStream(stream)>>>(
      p.k, p.v, p.k_token_stride, p.v_token_stride, p.slots, c.k, c.v,
      c.num_blocks * c.block_size, c.kv_heads * c.head_dim);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
