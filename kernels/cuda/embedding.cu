// Embedding on the GPU: bf16 table rows widened into the fp32 residual stream.
// One block per token, threads striding over the row (coalesced reads and writes). A plain
// first version: correctness over speed (an 8-byte vectorised copy is the obvious next step).
// Tested by tests/gpu/cuda_ops_test.cc against kernels::ref::Embedding (bit-exact).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 256;

__global__ void EmbeddingKernel(const int32_t* __restrict__ ids,
                                const uint16_t* __restrict__ table, int64_t vocab,
                                int64_t hidden, float* __restrict__ out) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  float* dst = out + t * hidden;
  if (id < 0 || id >= vocab) {  // the host cannot check ids without waiting: poison the row
    for (int64_t c = threadIdx.x; c < hidden; c += kThreads) dst[c] = F32Nan();
    return;
  }
  const uint16_t* src = table + static_cast<int64_t>(id) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += kThreads) dst[c] = Bf16ToF32(src[c]);
}

}  // namespace

int LaunchEmbedding(const EmbeddingParams& p, Stream stream) {
  LaunchKernel(EmbeddingKernel, static_cast<unsigned>(p.tokens), kThreads, 0, ToCudaStream(stream),
               p.ids, p.table, p.vocab, p.hidden, p.out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
