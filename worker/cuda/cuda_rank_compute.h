// The CUDA implementation of RankCompute (layer: worker; a plain C++ header: no CUDA types, so
// CPU code and builds without CUDA include it). One rank's step on one GPU with the ops of
// kernels/cuda/cuda_ops.h: bf16 weights and activations around an fp32 residual stream, the
// paged KV cache in device memory (bf16), tensor-parallel all-reduces and vocab gathers over a
// DeviceCommunicator (NCCL), and decode steps replayed from CUDA graphs captured per batch
// bucket. The arithmetic is CpuRankCompute's (worker/cpu_rank_compute.h) within the bf16 band.
// Threading: as RankCompute (one thread drives it). Every call makes `options.device` the
// calling thread's current device and leaves it so. Every call that enqueues device work waits
// for it before returning: the caller gets host data and nothing stays in flight, except the
// sends to the next pipeline stage once ConnectStages linked them (rank_compute.h): those run
// on a stream of their own, from one of two send buffers, and the destructor waits for them.
// Without CUDA (TPSERVE_HAVE_CUDA off) the same declarations link to a fallback:
// CudaDeviceCount() is 0 and CreateCudaRankCompute fails with FailedPrecondition.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "comm/device_communicator.h"
#include "model/config.h"
#include "worker/layout.h"
#include "worker/rank_compute.h"
#include "worker/shard_weights.h"

namespace tpserve {

struct CudaComputeOptions {
  int device = 0;                  // CUDA device ordinal of this rank
  double memory_fraction = 0.90;   // share of the device's total memory this rank may use for
                                   // weights + scratch + KV cache, in (0, 1]
  bool graphs = true;              // capture decode steps into CUDA graphs per batch bucket
  int64_t max_step_tokens = 4096;  // scratch reserved for this many rows per step at creation
                                   // (grown on demand beyond, dropping captured graphs); >= 1
  // Launch kernels/cuda's kernels as programmatic dependent launches (sm_90 and later; see
  // kernels::cuda::ScopedProgrammaticLaunch): each kernel's launch overlaps the tail of the one
  // before it. Same bits either way; off until a GPU run of bench/gpu measures it.
  bool programmatic_launch = false;
  // For profilers (bench/gpu's per-op breakdown): when set, called on the calling thread right
  // after each op is enqueued, with its category ("embedding", "norms", "qkv GEMM",
  // "rope + kv write", "attention", "o GEMM", "all-reduce", "gate_up GEMM + swiglu",
  // "down GEMM"; Logits/Sample: "logits rows", "logits GEMM", "logits gather", "sampling") and
  // the compute's stream (a cudaStream_t), where an event recorded measures the op. "start"
  // comes first in each run of ops. Never called while a graph is captured; a replayed step
  // makes no calls.
  std::function<void(const char* op, void* stream)> after_op;
};

// Counters of a CudaRankCompute's Forward calls (for tests and logs).
struct CudaComputeStats {
  int64_t eager_steps = 0;     // Forward calls whose ops were enqueued one by one
  int64_t graph_captures = 0;  // graphs captured (one per decode bucket; again after the
                               // scratch buffers or the KV cache were reallocated)
  int64_t graph_launches = 0;  // Forward calls that replayed a captured graph
  int64_t graph_capture_failures = 0;  // captures that failed (that bucket then runs eagerly)
};

// What CreateCudaRankCompute returns, for callers that want the CUDA-only extras.
class CudaRankCompute : public RankCompute {
 public:
  // Decode steps of up to kMaxGraphBatch sequences are padded to the next bucket (1, 2, 4, ...,
  // 256) whether or not graphs are on, so that a step computes the same bits either way.
  static constexpr int64_t kMaxGraphBatch = 256;

  virtual CudaComputeStats stats() const = 0;
};

// Visible CUDA devices: 0 when there is none, no driver, or this build has no CUDA.
int CudaDeviceCount();

// OK when the CUDA kernels can run `config` under `layout`; else InvalidArgument naming why:
// head_dim other than 64 or 128, a config that is no valid decoder, a local query-head ->
// KV-head mapping the device attention cannot express, more than kernels::cuda::kMaxDecodeGroup
// query heads per KV head (FailedPrecondition in a build without CUDA). Host-only: touches no
// device. --backend auto takes cuda only where this is OK on every rank.
[[nodiscard]] absl::Status CudaBackendSupports(const ModelConfig& config, const Layout& layout);

// Uploads this rank's `weights` (host; matrices F32, F16 or BF16 are stored as bf16 on the
// device, norm vectors likewise; the caller may free its copy afterwards), the RoPE tables and
// scratch for options.max_step_tokens rows on device options.device, and creates its stream
// and cuBLASLt handle. `tp_group` (must outlive the result) is the device communicator of this
// rank's tensor-parallel group: null when layout.tp == 1, else of size layout.tp with rank
// layout.tp_rank. The KV cache comes later (KvBlocksThatFit, AllocateKvCache).
// Errors, checked in this order (the InvalidArgument checks touch no device, so they also hold
// in a process without a GPU; a build without CUDA checks nothing and fails at once):
//   InvalidArgument     what the CUDA ops cannot run: head_dim other than 64 or 128, a local
//                       query-head -> KV-head mapping the device attention cannot express
//                       (it reads KV head h / (q_heads / kv_heads)), more than
//                       kernels::cuda::kMaxDecodeGroup query heads per KV head, weights whose
//                       shapes or dtypes do not match config and layout, a missing or
//                       mismatched tp_group, or options out of range;
//   FailedPrecondition  tpserve was built without CUDA;
//   Unavailable         no CUDA device, or options.device cannot be selected;
//   ResourceExhausted   the weights (or scratch) do not fit in the device's free memory (the
//                       message names the bytes needed and free);
//   Internal            any other CUDA failure.
[[nodiscard]] absl::StatusOr<std::unique_ptr<RankCompute>> CreateCudaRankCompute(
    const ModelConfig& config, const Layout& layout, const ShardWeights& weights,
    DeviceCommunicator* tp_group, const CudaComputeOptions& options);

}  // namespace tpserve
