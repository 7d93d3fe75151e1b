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
int LaunchApplyRopeAndWriteKvCache(const RopeParams& p, const WriteKvCacheParams& kv,
                                   Stream stream);                // rope.cu
int LaunchSwiGlu(const SwiGluParams& p, Stream stream);            // swiglu.cu
int LaunchWriteKvCache(const WriteKvCacheParams& p, Stream stream);  // kv_cache.cu
int LaunchSampleTokens(const SampleTokensParams& p, Stream stream);  // sampling.cu
int LaunchGatherRows(const GatherRowsParams& p, Stream stream);      // gather_rows.cu
// gemm_skinny.cu: GemmHandle's kernel for 1..kSkinnyGemmMaxTokens tokens; also needs
// cols % 8 == 0 and 16-byte aligned x and w (y aligned to its dtype).
constexpr int64_t kSkinnyGemmMaxTokens = 8;
int LaunchSkinnyGemm(const GemmParams& p, Stream stream);
// The same kernel with the SwiGLU epilogue: each warp takes gate rows j, j + 1 and up rows
// inter + j, inter + j + 1 and writes out[:, j..j+1] (same conditions, on x and w).
int LaunchSkinnyGemmSwiGlu(const GemmSwiGluParams& p, Stream stream);

// attention_internal.cc, which dispatches to the tensor-core or the CUDA-core kernel:
// q_token_stride and max_seq_tokens resolved (non-zero).
int LaunchPagedPrefillAttention(const PagedAttentionParams& p, Stream stream);
// attention_decode.cu: q_token_stride resolved, `splits` in [1, kMaxDecodeSplits] chosen by
// ChooseDecodeSplits and backed by p.workspace when > 1.
int LaunchPagedDecodeAttention(const DecodeAttentionParams& p, int splits, Stream stream);
// device_query.cc: the current device's multiprocessor count (cached per device), or 0 when
// it cannot be read; and whether this thread's launches are to be programmatic dependent ones
// (a live ScopedProgrammaticLaunch(true) and an sm_90 or later device).
int CurrentDeviceMultiprocessors();
bool ProgrammaticLaunchRequested();

// The number of key ranges each decode sequence is split into (cuda_ops.cc; pure, so that the
// host tests can check it). `requested` > 0 asks for that many; 0 chooses: enough blocks
// (num_seqs * kv_heads * splits) for about two waves over `multiprocessors`, but at least
// kMinKeysPerDecodeSplit keys per split of the at most min(max_context, sliding_window)
// visible keys (either limit ignored when 0). Always capped at kMaxDecodeSplits and at what
// `workspace_bytes` holds (DecodeAttentionWorkspaceBytes), and at least 1.
constexpr int64_t kMinKeysPerDecodeSplit = 128;
int ChooseDecodeSplits(int64_t num_seqs, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                       int64_t max_context, int64_t sliding_window, int64_t requested,
                       int64_t workspace_bytes, int multiprocessors);

}  // namespace tpserve::kernels::cuda::internal
