// The compute of one rank for one step (layer: worker): the first stage embeds the step's
// tokens (later stages take the previous stage's hidden state), this stage's decoder layers
// run with their tensor-parallel all-reduces, and the last stage applies the final norm and
// its vocabulary shard of lm_head. Engine owns the step protocol (plans, stage hand-offs,
// results) and calls a RankCompute for the arithmetic; a RankCompute knows nothing of plans.
// Implementations: CpuRankCompute (kernels/ops.h; fp32 activations, weights in their stored
// dtype, host collectives over the TP Communicator) and CudaRankCompute (kernels/cuda; bf16
// weights and activations around an fp32 residual stream, device collectives), chosen by
// --backend. Not thread-safe: the one thread driving the Engine calls it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/device_communicator.h"
#include "common/step.h"
#include "kernels/ops.h"

namespace tpserve {

// One step's rows, flattened on the host: one row per new token, sequences back to back.
struct StepRows {
  std::span<const int32_t> token_ids;  // [tokens], each in [0, vocab)
  std::span<const int32_t> positions;  // [tokens]
  std::span<const int64_t> slots;      // [tokens] KV slot = block * block_size + offset
  // One entry per sequence; block tables are HOST pointers into the plan.
  std::span<const kernels::AttentionSeq> seqs;
  int64_t max_context = 0;  // max over sequences of start_pos + num_tokens
  bool decode = false;      // every sequence has exactly one new token
  int64_t tokens() const { return static_cast<int64_t>(token_ids.size()); }
};

// A row of the last Forward to sample from.
struct SampleRow {
  int64_t row = 0;  // index into the step's rows
  SamplingParams params;
  int64_t position = 0;            // Philox counter: position of the token being sampled
  std::span<const int32_t> seen;   // tokens for the repetition penalty (empty when off)
  uint32_t top_logprobs = 0;       // > 0: also return the sampled token's logprob and top-N
};

struct SampledToken {
  int32_t token = -1;
  TokenLogprob logprob;  // filled when top_logprobs > 0
};

class RankCompute {
 public:
  virtual ~RankCompute() = default;

  virtual std::string_view backend() const = 0;  // "cpu" or "cuda"
  // Bytes of weights this rank holds on its compute device.
  virtual uint64_t weight_bytes() const = 0;

  // KV blocks of `block_size` tokens this rank can hold once the rest of its memory is
  // spoken for (the CPU: room for four full contexts; CUDA: a fraction of device memory,
  // after weights and scratch). The Engine takes the minimum over ranks.
  [[nodiscard]] virtual absl::StatusOr<int64_t> KvBlocksThatFit(int64_t block_size) const = 0;
  // Allocates the paged KV cache (zeroed). ResourceExhausted when it does not fit.
  [[nodiscard]] virtual absl::Status AllocateKvCache(int64_t num_blocks, int64_t block_size) = 0;
  virtual int64_t kv_num_blocks() const = 0;
  virtual uint64_t kv_bytes() const = 0;

  // Runs this stage over `rows`. The first stage embeds rows.token_ids and ignores
  // `hidden_in`; later stages read `hidden_in` ([tokens, hidden] fp32, host). When
  // `hidden_out` is not null it receives the stage's output residual stream ([tokens, hidden]
  // fp32, host; what the next stage receives). Writes the step's K/V into the cache.
  // Collective over the tensor-parallel group. Unavailable when a collective fails.
  // After ConnectStages, a connected direction bypasses the host: see there.
  [[nodiscard]] virtual absl::Status Forward(const StepRows& rows, const float* hidden_in,
                                             std::vector<float>* hidden_out) = 0;

  // Runs the tensor group's device collectives once at each message size a step can use, so
  // that NCCL connects (and allocates its buffers, which it does on first use) now, before
  // KvBlocksThatFit measures the free memory. Collective over the tensor-parallel group. The
  // default (no device collectives: the CPU backend, or a tensor group of one) does nothing.
  // Unavailable when a collective fails.
  [[nodiscard]] virtual absl::Status PrepareCollectives() { return absl::OkStatus(); }

  // Optional (the default returns Unimplemented; CudaRankCompute implements it): hands the
  // hidden state between pipeline stages device to device. `from_previous` (null on the
  // first stage, or to keep that direction on the host) is a device communicator of this rank
  // and its counterpart (the same tensor rank) on stage - 1, which is its rank
  // `previous_peer`; `to_next` likewise for stage + 1 and `next_peer` (null on the last
  // stage). Both must outlive this object.
  // Afterwards each Forward with tokens > 0:
  //  - connected from the previous stage: does not read `hidden_in` (pass null); receives
  //    [tokens, hidden] fp32 from `previous_peer` into the residual stream before the step;
  //  - connected to the next stage: does not write `hidden_out` (pass null); after the step
  //    copies the output residual ([tokens, hidden] fp32) aside and sends it to `next_peer`,
  //    and returns without waiting for the send to complete (the next stage may not have
  //    asked for it yet): this stage can take its next step at once. A bounded number of
  //    sends stay in flight; beyond that Forward waits (on the device) for the oldest.
  // The two ends of a link must run the same steps in the same order (the Engine's plans do).
  // The destructor waits for outstanding sends: the next stage must receive every step it
  // was sent (the Engine's shutdown sees to it).
  // Collective with the neighbours: the rank at the other end of each link must call it too.
  // One small message goes over each link, down the pipeline (each rank receives from the
  // previous stage, then sends to the next; the first stage only sends, so nothing waits in a
  // circle). It connects the link now rather than in the first step (NCCL connects a
  // point-to-point pair on first use, blocking until both ends take part, and allocates its
  // buffers then) and checks that the two ends agree on the hidden size and the stage order.
  // Synchronous. Errors: InvalidArgument for a link the layout cannot have (from_previous on
  // the first stage, to_next on the last) or a bad peer; FailedPrecondition when called
  // twice or the two ends disagree; Unavailable when a link failed or its peer did not take
  // part within the communicator's timeout; ResourceExhausted when the send buffers do not
  // fit. After an error the compute is not fit for Forward.
  [[nodiscard]] virtual absl::Status ConnectStages(DeviceCommunicator* from_previous,
                                                   int previous_peer, DeviceCommunicator* to_next,
                                                   int next_peer) {
    return absl::UnimplementedError(
        "ConnectStages: this compute backend hands hidden states over the host only");
  }

  // Last stage, after Forward: the logits of the given rows of that step, [rows.size(), vocab]
  // fp32 in `logits` (host, the full vocabulary, on every tensor rank). Collective over the
  // tensor-parallel group.
  [[nodiscard]] virtual absl::Status Logits(std::span<const int64_t> rows,
                                            std::vector<float>* logits) = 0;

  // Last stage, after Forward: samples one token for each of `rows`, as worker/sampler.h's
  // SampleToken and ComputeLogprobs do on the rows' logits. Collective over the
  // tensor-parallel group; `out` ([rows.size()]) is filled on tensor rank 0 only. The default
  // computes Logits and samples on the host.
  [[nodiscard]] virtual absl::Status Sample(std::span<const SampleRow> rows,
                                            std::vector<SampledToken>* out);
};

}  // namespace tpserve
