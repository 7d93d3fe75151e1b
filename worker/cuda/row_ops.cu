// The row gather of row_ops.h: one block per output row, each thread copying 2-byte elements
// with a grid-stride loop (rows are a few KB; this runs once per step on the logits rows).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "worker/cuda/row_ops.h"

namespace tpserve::cuda_compute {
namespace {

__global__ void GatherRowsKernel(const uint16_t* __restrict__ src,
                                 const int32_t* __restrict__ rows, uint16_t* __restrict__ dst,
                                 int64_t dim) {
  const int64_t i = blockIdx.x;
  const uint16_t* from = src + static_cast<int64_t>(rows[i]) * dim;
  uint16_t* to = dst + i * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) to[c] = from[c];
}

}  // namespace

int LaunchGatherRowsBf16(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t n,
                         int64_t dim, void* stream) {
  if (n <= 0 || dim <= 0) return static_cast<int>(cudaSuccess);
  GatherRowsKernel<<<static_cast<unsigned>(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      src, rows, dst, dim);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::cuda_compute
