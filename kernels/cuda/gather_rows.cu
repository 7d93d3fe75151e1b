// GatherRows on the GPU (cuda_ops.h): out[i, :] = src[indices[i], :] for bf16 rows.
// One block per output row, threads striding over the row's 2-byte elements (coalesced reads
// and writes). A plain version: the worker runs it once per step on the few logits rows (a few
// KB each), so an 8- or 16-byte vectorised copy would not show.
// Tested by tests/gpu/cuda_ops_test.cc against a plain host copy (bit-exact).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {


namespace {

constexpr int kThreads = 256;

__global__ void GatherRowsKernel(const uint16_t* __restrict__ src,
                                 const int32_t* __restrict__ indices, int64_t src_rows,
                                 int64_t dim, uint16_t* __restrict__ out) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t i = blockIdx.x;
  const int32_t row = indices[i];
  uint16_t* to = out + i * dim;
  if (row < 0 || row >= src_rows) {  // the host cannot check indices without waiting
    for (int64_t c = threadIdx.x; c < dim; c += kThreads) to[c] = kBf16Nan;
    return;
  }
  const uint16_t* from = src + static_cast<int64_t>(row) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) to[c] = from[c];
}

}  // namespace

int LaunchGatherRows(const GatherRowsParams& p, Stream stream) {
  LaunchKernel(GatherRowsKernel, static_cast<unsigned>(p.rows), kThreads, 0, ToCudaStream(stream),
               p.src, p.indices, p.src_rows, p.dim, p.out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
