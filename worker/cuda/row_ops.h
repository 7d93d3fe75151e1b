// Row gathers for CudaRankCompute (layer: worker, internal to worker/cuda; plain C++ so that
// cuda_rank_compute.cc, compiled as C++, calls the kernel in row_ops.cu). The decoder's own
// ops are kernels/cuda's; this is only the glue that picks a step's logits rows.
#pragma once

#include <cstdint>

namespace tpserve::cuda_compute {

// Enqueues dst[i, :] = src[rows[i], :] for i in [0, n) on `stream` (a cudaStream_t as void*):
// bf16 rows of `dim` elements, src [*, dim] and dst [n, dim] row-major device arrays, `rows`
// a device [n] int32 array of indices the caller has checked. Returns the launch's
// cudaError_t as an int (0 = success); n == 0 enqueues nothing.
int LaunchGatherRowsBf16(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t n,
                         int64_t dim, void* stream);

}  // namespace tpserve::cuda_compute
