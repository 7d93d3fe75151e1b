// Kernel launchers of kernels/cuda (internal to kernels/cuda; plain C++ so that the public ops
// in cuda_ops.cc, compiled as C++, can call the .cu files, and the .cu files need no abseil).
// Each enqueues its op's kernel(s) on `stream` for parameters that cuda_ops.cc has already
// validated (tokens in [1, 2^31 - 1], every size positive, pointers non-null where needed,
// strides filled in) and returns the launch's cudaError_t value (cudaGetLastError) as an int.
#pragma once

#include "kernels/cuda/cuda_types.h"

namespace tpserve::kernels::cuda::internal {

int LaunchEmbedding(const EmbeddingParams& p, Stream stream);      // embedding.cu
int LaunchAddRmsNorm(const AddRmsNormParams& p, Stream stream);    // rms_norm.cu
int LaunchApplyRope(const RopeParams& p, Stream stream);           // rope.cu
int LaunchSwiGlu(const SwiGluParams& p, Stream stream);            // swiglu.cu
int LaunchWriteKvCache(const WriteKvCacheParams& p, Stream stream);  // kv_cache.cu

}  // namespace tpserve::kernels::cuda::internal
