// CudaRankCompute (cuda_rank_compute.h): one rank's step on one GPU, chaining the ops of
// kernels/cuda/cuda_ops.h as bench/gpu/gpu_bench.cc's Runner does, with the meaning of
// CpuRankCompute (worker/cpu_rank_compute.cc). Plain C++: streams, pinned staging, events,
// graphs and copies come from kernels/cuda/device_runtime.h, never from CUDA headers.
//
// Device memory of one rank:
//  - weights: one allocation, every matrix and norm vector as bf16, 256-byte aligned pieces;
//  - scratch for `capacity_` rows: the fp32 residual stream and the bf16 activations
//    (normed, qkv, attention output, the o/down projection output `delta_` (they are never
//    live at once), gate_up, SwiGLU output), the step's metadata (ids, positions, slots,
//    sequence descriptors), the block tables (grown on their own), the decode-attention
//    workspace, and on the last stage the logits and sampling buffers;
//  - the KV cache: one allocation, per layer K then V, each [num_blocks, block_size,
//    kv_heads, head_dim] bf16.
// A step: the host metadata is written into pinned staging and copied on the compute's own
// (non-blocking) stream into the fixed device buffers; then the layers run, eagerly or as a
// CUDA graph replay; the caller's results are downloaded and the stream is synchronised.
//
// Decode steps of up to kMaxGraphBatch sequences are padded to a bucket (powers of two):
// padded rows embed token 0 at position 0 with slot -1 (WriteKvCache skips them) and the
// padded sequences have no tokens (attention skips them). Every row is independent of the
// others in every op, so padding changes no real row; but the GEMM shapes and the decode
// split count are then functions of the bucket alone, so a graph replay and an eager step of
// the same rows compute the same bits (which the GPU test checks). The first step of a bucket
// runs eagerly (which also builds the GEMM plans: cuBLASLt's heuristic is host work that a
// graph cannot hold) and is then captured; later steps of that bucket replay the graph. The
// decode split count is chosen here from the bucket and the longest possible context
// (max_position_embeddings, or the sliding window), never from the step's contexts, so a
// captured graph stays correct for every later context.
//
// Pipeline links (ConnectStages) are worker/cuda/stage_link.h's StageLink: a later stage
// receives its input on the compute stream before the step's kernels (before a graph launch;
// never inside a capture) into the residual's first `tokens` rows, and its padded rows are
// cleared here as on the host path; a stage with a next stage hands the residual's real rows
// to the link after the step, which sends them on a stream of its own.
#include "worker/cuda/cuda_rank_compute.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/logging.h"
#include "common/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_runtime.h"
#include "worker/cuda/compute_util.h"
#include "worker/cuda/create_checks.h"
#include "worker/cuda/stage_link.h"

namespace tpserve {
namespace {

namespace kc = kernels::cuda;
using cuda_compute::Grow;
using cuda_compute::Prefixed;

constexpr int64_t kAlignBytes = 256;
// Decode splits never get fewer keys than this (as kernels/cuda's automatic choice).
constexpr int64_t kMinKeysPerSplit = 128;
// Logits rows reserved at creation on the last stage (grown on demand beyond).
constexpr int64_t kReservedLogitsRows = 256;
// Host->device chunk of the weight upload (two of them in pinned memory, double-buffered).
constexpr int64_t kUploadChunkBytes = int64_t{16} << 20;
// Smallest pinned staging allocation: small steps then share one.
constexpr size_t kMinStagingBytes = size_t{64} << 10;

int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

std::string Bytes(double b) {
  return absl::StrCat(static_cast<int64_t>(b), " bytes (",
                      static_cast<int64_t>(std::llround(b / (1024.0 * 1024.0))), " MiB)");
}

// Grows pinned staging to at least `bytes` (contents are not kept). Only when no copy from or
// to the buffer is still queued.
absl::Status ReserveStaging(kc::PinnedHostBuffer& buf, size_t bytes) {
  if (bytes <= buf.size()) return absl::OkStatus();
  return Prefixed(buf.Reserve(std::max(bytes, kMinStagingBytes)), "pinned staging");
}

// Carves aligned regions out of one staging area: Add() returns each region's offset.
struct Carver {
  size_t end = 0;
  size_t Add(size_t bytes) {
    const size_t at = end;
    end = static_cast<size_t>(AlignUp(static_cast<int64_t>(at + bytes), 16));
    return at;
  }
};

// n elements of `src` (dtype t) as bf16 at `dst`.
void ToBf16(DType t, const void* src, int64_t n, uint16_t* dst) {
  switch (t) {
    case DType::kBF16:
      std::memcpy(dst, src, static_cast<size_t>(n) * 2);
      return;
    case DType::kF32: {
      const auto* f = static_cast<const float*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(f[i]);
      return;
    }
    default: {  // kF16 (ConvertibleDType checked it)
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(F16ToF32(h[i]));
      return;
    }
  }
}

// The next power of two >= n (n >= 1).
int64_t Bucket(int64_t n) {
  int64_t b = 1;
  while (b < n) b *= 2;
  return b;
}

// ------------------------------- the compute -------------------------------

struct DeviceLayer {
  const uint16_t *input_norm = nullptr, *qkv = nullptr, *o = nullptr, *post_norm = nullptr,
                 *gate_up = nullptr, *down = nullptr;
};

class CudaRankComputeImpl final : public CudaRankCompute {
 public:
  CudaRankComputeImpl(const ModelConfig& config, const Layout& layout,
                      DeviceCommunicator* tp_group, const CudaComputeOptions& options)
      : config_(config),
        layout_(layout),
        tp_group_(layout.tp > 1 ? tp_group : nullptr),
        options_(options),
        h_(config.hidden_size),
        d_(config.head_dim),
        lq_(layout.q_heads()),
        lkv_(layout.kv_heads()),
        mlp_(layout.mlp_end - layout.mlp_begin),
        qkv_rows_((lq_ + 2 * lkv_) * d_),
        vocab_local_(layout.vocab_end - layout.vocab_begin),
        link_(layout, config.hidden_size) {}
  ~CudaRankComputeImpl() override;

  // Creation after the host checks: device, stream, GEMM handle, weights, tables, scratch.
  absl::Status Init(const ShardWeights& weights);

  std::string_view backend() const override { return "cuda"; }
  uint64_t weight_bytes() const override { return weights_.size(); }
  absl::StatusOr<int64_t> KvBlocksThatFit(int64_t block_size) const override;
  absl::Status AllocateKvCache(int64_t num_blocks, int64_t block_size) override;
  int64_t kv_num_blocks() const override { return kv_blocks_; }
  uint64_t kv_bytes() const override { return kv_.size(); }
  absl::Status Forward(const StepRows& rows, const float* hidden_in,
                       std::vector<float>* hidden_out) override;
  absl::Status Logits(std::span<const int64_t> rows, std::vector<float>* logits) override;
  absl::Status Sample(std::span<const SampleRow> rows, std::vector<SampledToken>* out) override;
  absl::Status PrepareCollectives() override;
  absl::Status ConnectStages(DeviceCommunicator* from_previous, int previous_peer,
                             DeviceCommunicator* to_next, int next_peer) override;
  CudaComputeStats stats() const override { return stats_; }

 private:
  kc::Stream stream() const { return stream_.get(); }
  absl::Status SetDevice() const {
    return Prefixed(kc::SetDevice(options_.device), absl::StrCat("CUDA device ", options_.device));
  }
  absl::Status Sync() { return kc::SynchronizeStream(stream()); }
  // CudaComputeOptions::after_op, outside captures.
  void AfterOp(const char* op) const {
    if (options_.after_op && !capturing_) options_.after_op(op, stream().handle);
  }
  // Asynchronous copies on the compute's stream (nothing for 0 bytes).
  absl::Status Upload(void* dst, const void* src, size_t bytes, absl::string_view what) {
    return Prefixed(kc::CopyHostToDeviceAsync(dst, src, bytes, stream()), what);
  }
  absl::Status Download(void* dst, const void* src, size_t bytes, absl::string_view what) {
    return Prefixed(kc::CopyDeviceToHostAsync(dst, src, bytes, stream()), what);
  }

  absl::Status UploadWeights(const ShardWeights& w);
  absl::Status EnsureScratch(int64_t rows);
  absl::Status EnsureHead(int64_t rows);
  void DropGraphs();
  int64_t DecodeSplits(int64_t num_seqs, bool cap_by_workspace) const;
  kc::PagedKvCache Cache(int layer) const;
  kc::GemmParams GemmArgs(const void* x, const uint16_t* w, void* y, int64_t tokens,
                          int64_t rows, int64_t cols) const {
    return {static_cast<const uint16_t*>(x), w, y, kc::GemmOutput::kBf16, tokens, rows, cols};
  }
  // Enqueues the step's device work over `rows` rows (padding included) and `num_seqs`
  // sequence descriptors: embedding (first stage), the layers, the residual's last add (and
  // on the last stage the final norm into normed_). Captured as is into graphs.
  absl::Status EnqueueStep(int64_t rows, int64_t num_seqs, bool decode, int64_t max_seq_tokens);
  absl::Status Capture(int64_t rows);
  // Enqueues the logits of `rows` of the last step into logits_ ([n, vocab] fp32), with the
  // vocab gather over the TP group.
  absl::Status DeviceLogits(std::span<const int64_t> rows);

  const ModelConfig config_;
  const Layout layout_;
  DeviceCommunicator* const tp_group_;
  const CudaComputeOptions options_;
  const int64_t h_, d_, lq_, lkv_, mlp_, qkv_rows_, vocab_local_;

  kc::OwnedStream stream_;
  int multiprocessors_ = 0;
  kc::GemmHandle gemm_;

  kc::DeviceBuffer weights_, rope_cos_, rope_sin_;
  std::vector<DeviceLayer> layers_;
  const uint16_t *embedding_ = nullptr, *final_norm_ = nullptr, *lm_head_ = nullptr;

  // Step scratch for capacity_ rows (and as many sequences).
  int64_t capacity_ = 0;
  kc::DeviceBuffer residual_, normed_, qkv_, attn_, delta_, gate_up_, act_;
  kc::DeviceBuffer ids_, positions_, slots_, seqs_, tables_, decode_ws_;
  kc::PinnedHostBuffer meta_staging_, head_staging_, sample_staging_;

  // Logits and sampling (last stage), for head_capacity_ rows.
  int64_t head_capacity_ = 0;
  kc::DeviceBuffer head_rows_, head_in_, shard_logits_, padded_, gathered_, logits_;
  kc::DeviceBuffer sample_ws_, sample_params_, seen_offsets_, seen_ids_, tokens_out_,
      token_logprobs_, top_ids_, top_logprobs_;

  kc::DeviceBuffer kv_;
  int64_t kv_blocks_ = 0, kv_block_size_ = 0;

  int64_t step_tokens_ = -1;  // rows of the last successful Forward; -1: none
  std::map<int64_t, kc::ExecutableGraph> graphs_;  // by padded decode batch
  std::set<int64_t> uncapturable_;                  // padded batches whose capture failed
  bool capturing_ = false;                          // inside Capture
  CudaComputeStats stats_;

  // Pipeline links (ConnectStages); connected in neither direction where the hidden state
  // goes through the host.
  cuda_compute::StageLink link_;
};

CudaRankComputeImpl::~CudaRankComputeImpl() {
  if (!SetDevice().ok()) return;
  if (stream().handle != nullptr) (void)kc::SynchronizeStream(stream());
  // The send buffers go with this object: the next stage must have received every send.
  (void)link_.WaitForSends();
  DropGraphs();
  stream_ = kc::OwnedStream();
  // The DeviceBuffers free themselves after this.
}

void CudaRankComputeImpl::DropGraphs() { graphs_.clear(); }

absl::Status CudaRankComputeImpl::Init(const ShardWeights& weights) {
  const int devices = CudaDeviceCount();
  if (devices == 0) {
    return absl::UnavailableError("no CUDA device is visible (no GPU, no driver, or "
                                  "CUDA_VISIBLE_DEVICES hides them)");
  }
  if (options_.device >= devices) {
    return absl::UnavailableError(absl::StrCat("CUDA device ", options_.device,
                                               " does not exist: ", devices, " visible"));
  }
  if (absl::Status s = SetDevice(); !s.ok()) return absl::UnavailableError(s.message());
  ASSIGN_OR_RETURN(multiprocessors_, kc::MultiprocessorCount(options_.device));
  ASSIGN_OR_RETURN(stream_, kc::OwnedStream::Create());
  ASSIGN_OR_RETURN(gemm_, kc::GemmHandle::Create());
  RETURN_IF_ERROR(UploadWeights(weights));

  const int64_t max_pos = config_.max_position_embeddings;
  std::vector<float> cos(max_pos * d_ / 2), sin(cos.size());
  kernels::BuildRopeTable(config_.rope_theta, d_, max_pos, cos.data(), sin.data());
  RETURN_IF_ERROR(Grow(rope_cos_, static_cast<int64_t>(cos.size() * 4), "RoPE cos table"));
  RETURN_IF_ERROR(Grow(rope_sin_, static_cast<int64_t>(sin.size() * 4), "RoPE sin table"));
  RETURN_IF_ERROR(Upload(rope_cos_.data(), cos.data(), cos.size() * 4, "upload RoPE cos"));
  RETURN_IF_ERROR(Upload(rope_sin_.data(), sin.data(), sin.size() * 4, "upload RoPE sin"));

  // The decode workspace for the largest num_seqs * splits any batch asks for.
  int64_t ws = 0;
  for (int64_t n = 1; n <= 2 * int64_t{std::max(multiprocessors_, 1)} + 1; ++n) {
    ws = std::max(ws, kc::DecodeAttentionWorkspaceBytes(n, lq_, d_, DecodeSplits(n, false)));
  }
  RETURN_IF_ERROR(Grow(decode_ws_, ws, "decode attention workspace"));
  RETURN_IF_ERROR(EnsureScratch(options_.max_step_tokens));
  if (layout_.last_stage()) {
    RETURN_IF_ERROR(EnsureHead(std::min(options_.max_step_tokens, kReservedLogitsRows)));
  }
  return Sync();
}

absl::Status CudaRankComputeImpl::UploadWeights(const ShardWeights& w) {
  struct Piece {
    const void* src;
    DType dtype;
    int64_t elems;
    const uint16_t** dst;
  };
  std::vector<Piece> pieces;
  auto matrix = [&](const OwnedMatrix& m, const uint16_t** dst) {
    pieces.push_back({m.view.data, m.view.dtype, m.view.rows * m.view.cols, dst});
  };
  auto vec = [&](const std::vector<float>& v, const uint16_t** dst) {
    pieces.push_back({v.data(), DType::kF32, static_cast<int64_t>(v.size()), dst});
  };
  layers_.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    vec(w.layers[i].input_norm, &layers_[i].input_norm);
    matrix(w.layers[i].qkv, &layers_[i].qkv);
    matrix(w.layers[i].o, &layers_[i].o);
    vec(w.layers[i].post_norm, &layers_[i].post_norm);
    matrix(w.layers[i].gate_up, &layers_[i].gate_up);
    matrix(w.layers[i].down, &layers_[i].down);
  }
  if (layout_.first_stage()) matrix(w.embedding, &embedding_);
  if (layout_.last_stage()) {
    vec(w.final_norm, &final_norm_);
    matrix(w.lm_head, &lm_head_);
  }
  int64_t total = 0;
  for (const Piece& p : pieces) total += AlignUp(p.elems * 2, kAlignBytes);
  ASSIGN_OR_RETURN(const kc::DeviceMemoryInfo memory, kc::DeviceMemory());
  const size_t free_bytes = memory.free_bytes, total_bytes = memory.total_bytes;
  if (static_cast<double>(total) > static_cast<double>(free_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the weights of ", layout_.Describe(), " need ", Bytes(static_cast<double>(total)),
        " of bf16 on CUDA device ", options_.device, ", which has ",
        Bytes(static_cast<double>(free_bytes)), " free of ",
        Bytes(static_cast<double>(total_bytes))));
  }
  RETURN_IF_ERROR(Grow(weights_, total, "the weights"));

  // Convert on the host into one half of the pinned staging while the other half uploads.
  kc::PinnedHostBuffer staging;
  RETURN_IF_ERROR(ReserveStaging(staging, 2 * kUploadChunkBytes));
  kc::Event done[2];
  absl::Status status;
  for (kc::Event& e : done) {
    if (!status.ok()) break;
    absl::StatusOr<kc::Event> created = kc::Event::Create();
    if (created.ok()) {
      e = std::move(created).value();
    } else {
      status = created.status();
    }
  }
  auto* next = weights_.as<uint8_t>();
  int half = 0;
  constexpr int64_t kChunkElems = kUploadChunkBytes / 2;
  for (const Piece& p : pieces) {
    if (!status.ok()) break;
    auto* dst = reinterpret_cast<uint16_t*>(next);
    *p.dst = dst;
    next += AlignUp(p.elems * 2, kAlignBytes);
    const size_t src_elem = DTypeSize(p.dtype);
    for (int64_t at = 0; at < p.elems && status.ok(); at += kChunkElems) {
      const int64_t n = std::min(kChunkElems, p.elems - at);
      status = Prefixed(done[half].Synchronize(), "upload weights");
      if (!status.ok()) break;
      auto* chunk = reinterpret_cast<uint16_t*>(staging.data() + half * kUploadChunkBytes);
      ToBf16(p.dtype, static_cast<const uint8_t*>(p.src) + at * src_elem, n, chunk);
      status = Upload(dst + at, chunk, static_cast<size_t>(n) * 2, "upload weights");
      if (status.ok()) status = done[half].Record(stream());
      half ^= 1;
    }
  }
  // Wait before the events and the staging go: no queued copy may outlive its source.
  if (absl::Status s = Sync(); status.ok()) status = s;
  return status;
}

absl::Status CudaRankComputeImpl::EnsureScratch(int64_t rows) {
  if (rows <= capacity_) return absl::OkStatus();
  // Captured graphs hold the old pointers; free before allocating to keep the peak down.
  DropGraphs();
  for (kc::DeviceBuffer* b : {&residual_, &normed_, &qkv_, &attn_, &delta_, &gate_up_, &act_,
                              &ids_, &positions_, &slots_, &seqs_}) {
    *b = kc::DeviceBuffer();
  }
  capacity_ = 0;
  const int64_t c = AlignUp(rows, 64);
  RETURN_IF_ERROR(Grow(residual_, c * h_ * 4, "the residual stream"));
  RETURN_IF_ERROR(Grow(normed_, c * h_ * 2, "normed activations"));
  RETURN_IF_ERROR(Grow(qkv_, c * qkv_rows_ * 2, "qkv activations"));
  RETURN_IF_ERROR(Grow(attn_, c * lq_ * d_ * 2, "attention output"));
  RETURN_IF_ERROR(Grow(delta_, c * h_ * 2, "projection output"));
  RETURN_IF_ERROR(Grow(gate_up_, c * 2 * mlp_ * 2, "gate_up activations"));
  RETURN_IF_ERROR(Grow(act_, c * mlp_ * 2, "SwiGLU output"));
  RETURN_IF_ERROR(Grow(ids_, c * 4, "token ids"));
  RETURN_IF_ERROR(Grow(positions_, c * 4, "positions"));
  RETURN_IF_ERROR(Grow(slots_, c * 8, "slots"));
  RETURN_IF_ERROR(Grow(seqs_, c * static_cast<int64_t>(sizeof(kc::AttentionSeq)), "sequences"));
  RETURN_IF_ERROR(Grow(tables_, std::max<int64_t>(c, 1 << 14) * 4, "block tables"));
  // Rows no step has written yet (padding) then hold zeros, never stale NaN bit patterns.
  for (kc::DeviceBuffer* b : {&residual_, &normed_, &qkv_, &attn_, &delta_, &gate_up_, &act_}) {
    RETURN_IF_ERROR(kc::MemsetAsync(b->data(), 0, b->size(), stream()));
  }
  capacity_ = c;
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::EnsureHead(int64_t rows) {
  if (rows <= head_capacity_) return absl::OkStatus();
  // Grow frees a buffer before allocating its replacement: should one allocation fail, the
  // buffers before it are larger and the failed one is empty, so the old capacity no longer
  // holds. Zero until every buffer has grown, so that the next call retries them all instead
  // of handing the ops an empty buffer.
  head_capacity_ = 0;
  const int64_t n = AlignUp(rows, 16), vocab = config_.vocab_size;
  const int64_t shard = layout_.vocab_shard;
  RETURN_IF_ERROR(Grow(head_rows_, n * 4, "logits row indices"));
  RETURN_IF_ERROR(Grow(head_in_, n * h_ * 2, "logits input rows"));
  if (layout_.tp > 1) {
    RETURN_IF_ERROR(Grow(shard_logits_, n * vocab_local_ * 4, "vocab shard logits"));
    RETURN_IF_ERROR(Grow(padded_, n * shard * 4, "padded vocab shard logits"));
    RETURN_IF_ERROR(Grow(gathered_, layout_.tp * n * shard * 4, "gathered logits"));
  }
  RETURN_IF_ERROR(Grow(logits_, n * vocab * 4, "logits"));
  RETURN_IF_ERROR(Grow(sample_ws_, n * vocab * 4, "sampling workspace"));
  RETURN_IF_ERROR(Grow(sample_params_, n * static_cast<int64_t>(sizeof(kc::SamplingRow)),
                       "sampling parameters"));
  RETURN_IF_ERROR(Grow(seen_offsets_, (n + 1) * 4, "seen-token offsets"));
  RETURN_IF_ERROR(Grow(tokens_out_, n * 4, "sampled tokens"));
  RETURN_IF_ERROR(Grow(token_logprobs_, n * 4, "sampled logprobs"));
  RETURN_IF_ERROR(Grow(top_ids_, n * kc::kMaxSampleTopLogprobs * 4, "top logprob ids"));
  RETURN_IF_ERROR(Grow(top_logprobs_, n * kc::kMaxSampleTopLogprobs * 4, "top logprobs"));
  head_capacity_ = n;
  return absl::OkStatus();
}

int64_t CudaRankComputeImpl::DecodeSplits(int64_t num_seqs, bool cap_by_workspace) const {
  // About two waves of (sequence, KV head, split) blocks over the multiprocessors, no split
  // under kMinKeysPerSplit of the longest visible context, at most kMaxDecodeSplits.
  int64_t keys = config_.max_position_embeddings;
  if (config_.sliding_window > 0) keys = std::min<int64_t>(keys, config_.sliding_window);
  const int64_t blocks = num_seqs * lkv_;
  int64_t splits = (2 * int64_t{std::max(multiprocessors_, 1)} + blocks - 1) / blocks;
  splits = std::min(splits, (keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
  splits = std::min(splits, kc::kMaxDecodeSplits);
  if (cap_by_workspace && splits > 1) {
    const int64_t per_split = kc::DecodeAttentionWorkspaceBytes(num_seqs, lq_, d_, 2) / 2;
    splits = std::min<int64_t>(splits, static_cast<int64_t>(decode_ws_.size()) / per_split);
  }
  return std::max<int64_t>(splits, 1);
}

kc::PagedKvCache CudaRankComputeImpl::Cache(int layer) const {
  const int64_t per = kv_blocks_ * kv_block_size_ * lkv_ * d_;
  uint16_t* k = kv_.as<uint16_t>() + 2 * layer * per;
  return {k, k + per, kv_blocks_, kv_block_size_, lkv_, d_};
}

absl::StatusOr<int64_t> CudaRankComputeImpl::KvBlocksThatFit(int64_t block_size) const {
  if (block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KV block size ", block_size, " < 1"));
  }
  RETURN_IF_ERROR(SetDevice());
  ASSIGN_OR_RETURN(const kc::DeviceMemoryInfo memory, kc::DeviceMemory());
  const size_t free_bytes = memory.free_bytes, total_bytes = memory.total_bytes;
  const double per_block = 2.0 * layout_.num_layers() * block_size * lkv_ * d_ * 2;
  // An existing cache is given back by AllocateKvCache before it allocates the new one.
  const double in_use = static_cast<double>(total_bytes - free_bytes) - kv_.size();
  const double budget = options_.memory_fraction * static_cast<double>(total_bytes) - in_use;
  const double blocks = per_block > 0 ? std::floor(budget / per_block) : 0.0;
  if (blocks < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no room for a KV cache on CUDA device ", options_.device, ": memory_fraction ",
        options_.memory_fraction, " of ", Bytes(static_cast<double>(total_bytes)), " minus ",
        Bytes(in_use), " in use (weights ", Bytes(static_cast<double>(weights_.size())),
        ", scratch and the CUDA context) leaves ", Bytes(budget), ", one block of ",
        block_size, " tokens needs ", Bytes(per_block)));
  }
  return static_cast<int64_t>(blocks);
}

absl::Status CudaRankComputeImpl::AllocateKvCache(int64_t num_blocks, int64_t block_size) {
  if (num_blocks < 1 || block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache of ", num_blocks, " blocks of ", block_size, " tokens"));
  }
  RETURN_IF_ERROR(SetDevice());
  DropGraphs();  // they hold the old cache's pointers and sizes
  kv_ = kc::DeviceBuffer();
  kv_blocks_ = kv_block_size_ = 0;
  const int64_t bytes = 2 * int64_t{layout_.num_layers()} * num_blocks * block_size * lkv_ * d_ * 2;
  RETURN_IF_ERROR(Grow(kv_, bytes,
                       absl::StrCat("a KV cache of ", num_blocks, " blocks of ", block_size,
                                    " tokens (", Bytes(static_cast<double>(bytes)), ")")));
  RETURN_IF_ERROR(Prefixed(kc::MemsetAsync(kv_.data(), 0, kv_.size(), stream()),
                           "zero the KV cache"));
  RETURN_IF_ERROR(Sync());
  kv_blocks_ = num_blocks;
  kv_block_size_ = block_size;
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::EnqueueStep(int64_t rows, int64_t num_seqs, bool decode,
                                              int64_t max_seq_tokens) {
  const kc::ScopedProgrammaticLaunch programmatic(options_.programmatic_launch);
  const kc::Stream s = stream();
  const int64_t t = rows;
  const float eps = config_.rms_norm_eps;
  auto* residual = residual_.as<float>();
  auto* normed = normed_.as<uint16_t>();
  auto* qkv = qkv_.as<uint16_t>();
  auto* delta = delta_.as<uint16_t>();
  AfterOp("start");
  if (layout_.first_stage()) {
    RETURN_IF_ERROR(kc::Embedding(
        {ids_.as<int32_t>(), embedding_, residual, t, config_.vocab_size, h_}, s));
    AfterOp("embedding");
  }
  for (int l = 0; l < static_cast<int>(layers_.size()); ++l) {
    const DeviceLayer& w = layers_[l];
    // The first layer of a stage starts from the stage's input, where the previous stage
    // already added its last MLP output.
    RETURN_IF_ERROR(kc::AddRmsNorm(
        {residual, l == 0 ? nullptr : delta, w.input_norm, normed, t, h_, eps}, s));
    AfterOp("norms");
    RETURN_IF_ERROR(gemm_.Gemm(GemmArgs(normed, w.qkv, qkv, t, qkv_rows_, h_), s));
    AfterOp("qkv GEMM");
    kc::RopeParams rope;
    rope.x = qkv;  // q and k heads are adjacent in the fused row: one call rotates both
    rope.tokens = t;
    rope.heads = lq_ + lkv_;
    rope.head_dim = d_;
    rope.token_stride = qkv_rows_;
    rope.positions = positions_.as<int32_t>();
    rope.cos = rope_cos_.as<float>();
    rope.sin = rope_sin_.as<float>();
    rope.max_positions = config_.max_position_embeddings;
    const kc::PagedKvCache cache = Cache(l);
    kc::WriteKvCacheParams kv;
    kv.k = qkv + lq_ * d_;
    kv.v = kv.k + lkv_ * d_;
    kv.k_token_stride = kv.v_token_stride = qkv_rows_;
    kv.tokens = t;
    kv.slots = slots_.as<int64_t>();
    kv.cache = cache;
    RETURN_IF_ERROR(kc::ApplyRopeAndWriteKvCache(rope, kv, s));
    AfterOp("rope + kv write");
    kc::PagedAttentionParams at;
    at.q = qkv;
    at.q_token_stride = qkv_rows_;
    at.out = attn_.as<uint16_t>();
    at.tokens = t;
    at.q_heads = lq_;
    at.scale = 1.0f / std::sqrt(static_cast<float>(d_));
    at.sliding_window = config_.sliding_window;
    at.cache = cache;
    at.seqs = seqs_.as<kc::AttentionSeq>();
    at.num_seqs = num_seqs;
    if (decode) {
      kc::DecodeAttentionParams dp;
      dp.attn = at;
      dp.max_context = config_.max_position_embeddings;
      dp.splits = DecodeSplits(num_seqs, true);
      dp.workspace = decode_ws_.data();
      dp.workspace_bytes = static_cast<int64_t>(decode_ws_.size());
      RETURN_IF_ERROR(kc::PagedDecodeAttention(dp, s));
    } else {
      at.max_seq_tokens = max_seq_tokens;
      RETURN_IF_ERROR(kc::PagedPrefillAttention(at, s));
    }
    AfterOp("attention");
    RETURN_IF_ERROR(gemm_.Gemm(GemmArgs(attn_.data(), w.o, delta, t, h_, lq_ * d_), s));
    AfterOp("o GEMM");
    if (tp_group_ != nullptr) {
      RETURN_IF_ERROR(Prefixed(
          tp_group_->AllReduceSum(delta, static_cast<size_t>(t * h_), DeviceDType::kBf16,
                                  s.handle),
          "all-reduce of the attention output"));
      AfterOp("all-reduce");
    }
    RETURN_IF_ERROR(kc::AddRmsNorm({residual, delta, w.post_norm, normed, t, h_, eps}, s));
    AfterOp("norms");
    // One launch for decode batches (the small-batch GEMM with the SwiGLU epilogue), else the
    // GEMM into gate_up_ and SwiGlu: the same bits either way.
    RETURN_IF_ERROR(gemm_.GemmSwiGlu(
        {normed, w.gate_up, gate_up_.as<uint16_t>(), act_.as<uint16_t>(), t, mlp_, h_}, s));
    AfterOp("gate_up GEMM + swiglu");
    RETURN_IF_ERROR(gemm_.Gemm(GemmArgs(act_.data(), w.down, delta, t, h_, mlp_), s));
    AfterOp("down GEMM");
    if (tp_group_ != nullptr) {
      RETURN_IF_ERROR(Prefixed(
          tp_group_->AllReduceSum(delta, static_cast<size_t>(t * h_), DeviceDType::kBf16,
                                  s.handle),
          "all-reduce of the MLP output"));
      AfterOp("all-reduce");
    }
  }
  // The last MLP output joins the residual: the stage's output (what the next stage gets and
  // hidden_out returns). On the last stage the same op applies the final norm for the logits;
  // elsewhere its normalised output is not used (any norm weight does).
  const uint16_t* last_delta = layers_.empty() ? nullptr : delta;
  if (layout_.last_stage()) {
    RETURN_IF_ERROR(kc::AddRmsNorm({residual, last_delta, final_norm_, normed, t, h_, eps}, s));
    AfterOp("norms");
  } else if (last_delta != nullptr) {
    RETURN_IF_ERROR(kc::AddRmsNorm(
        {residual, last_delta, layers_.back().input_norm, normed, t, h_, eps}, s));
    AfterOp("norms");
  }
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::Capture(int64_t rows) {
  // Thread-local capture mode (kc::CaptureGraph), then instantiation; the capture always ends,
  // even when enqueueing failed, so the stream stays usable.
  capturing_ = true;
  absl::StatusOr<kc::ExecutableGraph> exec = kc::CaptureGraph(stream(), [&] {
    return EnqueueStep(rows, rows, /*decode=*/true, /*max_seq_tokens=*/1);
  });
  capturing_ = false;
  if (!exec.ok()) {
    return Prefixed(exec.status(), absl::StrCat("capturing the decode step of ", rows,
                                                " rows into a CUDA graph (graphs can be turned "
                                                "off)"));
  }
  graphs_[rows] = std::move(exec).value();
  ++stats_.graph_captures;
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::Forward(const StepRows& rows, const float* hidden_in,
                                          std::vector<float>* hidden_out) {
  step_tokens_ = -1;
  if (kv_blocks_ == 0) return absl::FailedPreconditionError("Forward before AllocateKvCache");
  const int64_t tokens = rows.tokens();
  const int64_t num_seqs = static_cast<int64_t>(rows.seqs.size());
  if (static_cast<int64_t>(rows.positions.size()) != tokens ||
      static_cast<int64_t>(rows.slots.size()) != tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step rows: ", tokens, " token ids, ", rows.positions.size(), " positions, ",
        rows.slots.size(), " slots"));
  }
  if (!layout_.first_stage() && !link_.receives() && hidden_in == nullptr && tokens > 0) {
    return absl::InvalidArgumentError("Forward on a later stage needs hidden_in");
  }
  int64_t total_blocks = 0, max_seq_tokens = 1;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const kernels::AttentionSeq& q = rows.seqs[i];
    if (q.token_begin < 0 || q.num_tokens < 0 || q.token_begin + q.num_tokens > tokens ||
        q.num_blocks < 0 || (q.num_blocks > 0 && q.block_table == nullptr) ||
        (rows.decode && q.num_tokens != 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step sequence ", i, ": rows [", q.token_begin, ", +", q.num_tokens, ") of ", tokens,
          ", ", q.num_blocks, " blocks", rows.decode ? ", in a decode step" : ""));
    }
    total_blocks += q.num_blocks;
    max_seq_tokens = std::max(max_seq_tokens, q.num_tokens);
  }
  RETURN_IF_ERROR(SetDevice());
  // Normally idle already; after a failed call this keeps its queued copies from racing with
  // the staging buffers this step rewrites.
  RETURN_IF_ERROR(Sync());
  if (tokens == 0) {  // nothing to compute, send or receive (both ends see the same rows)
    if (hidden_out != nullptr && !link_.sends()) hidden_out->clear();
    step_tokens_ = 0;
    return absl::OkStatus();
  }
  // Decode batches are padded to their bucket (see the top of this file).
  const bool bucketed = rows.decode && num_seqs == tokens && tokens <= kMaxGraphBatch;
  const int64_t padded = bucketed ? Bucket(tokens) : tokens;
  const int64_t padded_seqs = bucketed ? padded : num_seqs;
  RETURN_IF_ERROR(EnsureScratch(std::max(padded, padded_seqs)));
  RETURN_IF_ERROR(Grow(tables_, total_blocks * 4, "block tables"));

  // Stage the metadata in pinned memory; block tables become one device array.
  Carver c;
  const size_t ids_at = c.Add(padded * 4), pos_at = c.Add(padded * 4),
               slots_at = c.Add(padded * 8),
               seqs_at = c.Add(padded_seqs * sizeof(kc::AttentionSeq)),
               tables_at = c.Add(total_blocks * 4);
  RETURN_IF_ERROR(ReserveStaging(meta_staging_, c.end));
  uint8_t* st = meta_staging_.data();
  auto* ids = reinterpret_cast<int32_t*>(st + ids_at);
  auto* positions = reinterpret_cast<int32_t*>(st + pos_at);
  auto* slots = reinterpret_cast<int64_t*>(st + slots_at);
  auto* seqs = reinterpret_cast<kc::AttentionSeq*>(st + seqs_at);
  auto* tables = reinterpret_cast<int32_t*>(st + tables_at);
  std::copy(rows.token_ids.begin(), rows.token_ids.end(), ids);
  std::copy(rows.positions.begin(), rows.positions.end(), positions);
  std::copy(rows.slots.begin(), rows.slots.end(), slots);
  std::fill(ids + tokens, ids + padded, 0);
  std::fill(positions + tokens, positions + padded, 0);
  std::fill(slots + tokens, slots + padded, int64_t{-1});
  int64_t next_block = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const kernels::AttentionSeq& q = rows.seqs[i];
    std::copy(q.block_table, q.block_table + q.num_blocks, tables + next_block);
    seqs[i] = {q.token_begin, q.num_tokens, q.start_pos,
               q.num_blocks > 0 ? tables_.as<int32_t>() + next_block : nullptr, q.num_blocks};
    next_block += q.num_blocks;
  }
  for (int64_t i = num_seqs; i < padded_seqs; ++i) seqs[i] = {i, 0, 0, nullptr, 0};
  RETURN_IF_ERROR(Upload(ids_.data(), ids, padded * 4, "upload ids"));
  RETURN_IF_ERROR(Upload(positions_.data(), positions, padded * 4, "upload positions"));
  RETURN_IF_ERROR(Upload(slots_.data(), slots, padded * 8, "upload slots"));
  RETURN_IF_ERROR(Upload(seqs_.data(), seqs, padded_seqs * sizeof(kc::AttentionSeq),
                         "upload sequences"));
  RETURN_IF_ERROR(Upload(tables_.data(), tables, total_blocks * 4, "upload block tables"));
  if (link_.receives()) {
    RETURN_IF_ERROR(link_.EnqueueReceive(residual_.data(), tokens, stream()));
  } else if (!layout_.first_stage()) {
    RETURN_IF_ERROR(Upload(residual_.data(), hidden_in, tokens * h_ * 4, "upload hidden_in"));
  }
  if (!layout_.first_stage() && padded > tokens) {
    RETURN_IF_ERROR(Prefixed(kc::MemsetAsync(residual_.as<float>() + tokens * h_, 0,
                                             (padded - tokens) * h_ * 4, stream()),
                             "clear padded rows"));
  }

  const bool graph = bucketed && options_.graphs && !uncapturable_.contains(padded);
  bool capture = false;
  if (auto it = graphs_.find(padded); graph && it != graphs_.end()) {
    RETURN_IF_ERROR(it->second.Launch(stream()));
    ++stats_.graph_launches;
  } else {
    RETURN_IF_ERROR(EnqueueStep(padded, padded_seqs, rows.decode, max_seq_tokens));
    ++stats_.eager_steps;
    capture = graph;
  }
  if (link_.sends()) {
    RETURN_IF_ERROR(link_.EnqueueSend(residual_.data(), tokens, capacity_, stream()));
  } else if (hidden_out != nullptr) {
    hidden_out->resize(tokens * h_);
    RETURN_IF_ERROR(Download(hidden_out->data(), residual_.data(), tokens * h_ * 4,
                             "download hidden_out"));
  }
  RETURN_IF_ERROR(Sync());
  step_tokens_ = tokens;
  // The eager step has built every GEMM plan of this bucket: capture it for the next time.
  // The step itself is done and correct; a bucket whose capture fails runs eagerly from then
  // on (a lost optimisation is no reason to fail the requests of this step).
  if (capture) {
    if (absl::Status s = Capture(padded); !s.ok()) {
      uncapturable_.insert(padded);
      ++stats_.graph_capture_failures;
      LogError(absl::StrCat("CUDA device ", options_.device, ": ", s.message(),
                            "; this batch size runs without a graph from now on"));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::PrepareCollectives() {
  if (tp_group_ == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(SetDevice());
  const kc::Stream s = stream();
  // The all-reduces of the layers at every power of two of rows up to the largest step (the
  // decode buckets among them) and at the largest step: NCCL picks its algorithm and protocol
  // by size and connects what that choice needs on first use. The buffers hold zeros or stale
  // values; a step overwrites them before it reads them.
  std::vector<int64_t> rows;
  for (int64_t n = 1; n <= capacity_; n *= 2) rows.push_back(n);
  if (rows.back() != capacity_) rows.push_back(capacity_);
  for (const int64_t n : rows) {
    RETURN_IF_ERROR(Prefixed(tp_group_->AllReduceSum(delta_.data(), static_cast<size_t>(n * h_),
                                                     DeviceDType::kBf16, s.handle),
                             "warm-up all-reduce"));
  }
  // The vocab gather of the logits (the last stage's tensor group alone makes it).
  if (layout_.last_stage()) {
    const int64_t shard = layout_.vocab_shard;
    for (int64_t n = 1; n <= head_capacity_; n *= 2) {
      RETURN_IF_ERROR(Prefixed(tp_group_->AllGather(padded_.data(),
                                                    static_cast<size_t>(n * shard * 4),
                                                    gathered_.data(), s.handle),
                               "warm-up all-gather"));
    }
  }
  return Sync();
}

absl::Status CudaRankComputeImpl::ConnectStages(DeviceCommunicator* from_previous,
                                                int previous_peer, DeviceCommunicator* to_next,
                                                int next_peer) {
  RETURN_IF_ERROR(link_.Claim(from_previous, previous_peer, to_next, next_peer));
  RETURN_IF_ERROR(SetDevice());
  RETURN_IF_ERROR(Sync());
  return link_.Connect(stream(), capacity_);
}

absl::Status CudaRankComputeImpl::DeviceLogits(std::span<const int64_t> rows) {
  const kc::ScopedProgrammaticLaunch programmatic(options_.programmatic_launch);
  if (!layout_.last_stage()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "logits on stage ", layout_.stage, " of ", layout_.pp,
        ": only the last stage has lm_head"));
  }
  if (step_tokens_ < 0) return absl::FailedPreconditionError("logits before a successful Forward");
  const int64_t n = static_cast<int64_t>(rows.size());
  bool consecutive = true;
  for (int64_t i = 0; i < n; ++i) {
    if (rows[i] < 0 || rows[i] >= step_tokens_) {
      return absl::InvalidArgumentError(absl::StrCat("logits row ", rows[i],
                                                     " outside the step's ", step_tokens_));
    }
    if (i > 0 && rows[i] != rows[i - 1] + 1) consecutive = false;
  }
  RETURN_IF_ERROR(SetDevice());
  RETURN_IF_ERROR(Sync());  // as in Forward
  if (n == 0) return absl::OkStatus();
  RETURN_IF_ERROR(EnsureHead(n));
  const kc::Stream s = stream();
  AfterOp("start");
  // normed_ holds every row's final norm (EnqueueStep); pick the rows.
  const uint16_t* x = normed_.as<uint16_t>() + (consecutive ? rows[0] * h_ : 0);
  if (!consecutive) {
    RETURN_IF_ERROR(ReserveStaging(head_staging_, n * 4));
    auto* idx = reinterpret_cast<int32_t*>(head_staging_.data());
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(rows[i]);
    RETURN_IF_ERROR(Upload(head_rows_.data(), idx, n * 4, "upload logits rows"));
    kc::GatherRowsParams gather;
    gather.src = normed_.as<uint16_t>();
    gather.indices = head_rows_.as<int32_t>();
    gather.out = head_in_.as<uint16_t>();
    gather.rows = n;
    gather.src_rows = step_tokens_;  // every index was checked against it above
    gather.dim = h_;
    RETURN_IF_ERROR(Prefixed(kc::GatherRows(gather, s), "gather logits rows"));
    AfterOp("logits rows");
    x = head_in_.as<uint16_t>();
  }
  const int64_t vocab = config_.vocab_size;
  if (layout_.tp == 1) {
    kc::GemmParams g{x, lm_head_, logits_.data(), kc::GemmOutput::kF32, n, vocab, h_};
    RETURN_IF_ERROR(gemm_.Gemm(g, s));
    AfterOp("logits GEMM");
    return absl::OkStatus();
  }
  // Each tensor rank holds a vocab shard; shards are padded to one size for the gather, then
  // the full rows are reassembled from the gathered [tp, n, shard] blocks.
  const int64_t shard = layout_.vocab_shard;
  auto* padded = padded_.as<float>();
  if (vocab_local_ > 0) {
    void* y = vocab_local_ == shard ? padded_.data() : shard_logits_.data();
    RETURN_IF_ERROR(gemm_.Gemm({x, lm_head_, y, kc::GemmOutput::kF32, n, vocab_local_, h_}, s));
    AfterOp("logits GEMM");
  }
  if (vocab_local_ != shard) {
    RETURN_IF_ERROR(Prefixed(kc::MemsetAsync(padded, 0, n * shard * 4, s), "pad logits"));
    if (vocab_local_ > 0) {
      RETURN_IF_ERROR(Prefixed(
          kc::CopyDeviceToDevice2DAsync(padded, shard * 4, shard_logits_.data(),
                                        vocab_local_ * 4, vocab_local_ * 4, n, s),
          "pad logits"));
    }
  }
  RETURN_IF_ERROR(Prefixed(tp_group_->AllGather(padded, static_cast<size_t>(n * shard * 4),
                                                gathered_.data(), s.handle),
                           "all-gather of the vocab shards"));
  for (int t = 0; t < layout_.tp; ++t) {
    const int64_t begin = t * shard, count = std::min(shard, vocab - begin);
    if (count <= 0) continue;
    RETURN_IF_ERROR(Prefixed(
        kc::CopyDeviceToDevice2DAsync(logits_.as<float>() + begin, vocab * 4,
                                      gathered_.as<float>() + t * n * shard, shard * 4,
                                      count * 4, n, s),
        "reassemble logits"));
  }
  AfterOp("logits gather");
  return absl::OkStatus();
}

absl::Status CudaRankComputeImpl::Logits(std::span<const int64_t> rows,
                                         std::vector<float>* logits) {
  RETURN_IF_ERROR(DeviceLogits(rows));
  const int64_t n = static_cast<int64_t>(rows.size());
  logits->resize(n * config_.vocab_size);
  RETURN_IF_ERROR(Download(logits->data(), logits_.data(), logits->size() * 4,
                           "download logits"));
  return Sync();
}

absl::Status CudaRankComputeImpl::Sample(std::span<const SampleRow> rows,
                                         std::vector<SampledToken>* out) {
  const kc::ScopedProgrammaticLaunch programmatic(options_.programmatic_launch);
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t top_n = 0, num_seen = 0;
  for (const SampleRow& r : rows) {
    top_n = std::max<int64_t>(top_n, r.top_logprobs);
    num_seen += static_cast<int64_t>(r.seen.size());
  }
  // The device sampler returns at most kMaxSampleTopLogprobs; beyond that, the host samples.
  // Every tensor rank sees the same rows, so all take the same branch (both are collective).
  if (top_n > kc::kMaxSampleTopLogprobs || num_seen > std::numeric_limits<int32_t>::max()) {
    return RankCompute::Sample(rows, out);
  }
  std::vector<int64_t> indices;
  indices.reserve(rows.size());
  for (const SampleRow& r : rows) indices.push_back(r.row);
  RETURN_IF_ERROR(DeviceLogits(indices));
  out->assign(rows.size(), SampledToken());
  if (n == 0) return absl::OkStatus();
  if (layout_.tp_rank != 0) return Sync();  // it took part in the gather; rank 0 samples

  Carver c;
  const size_t params_at = c.Add(n * sizeof(kc::SamplingRow)), offsets_at = c.Add((n + 1) * 4),
               seen_at = c.Add(num_seen * 4);
  RETURN_IF_ERROR(ReserveStaging(sample_staging_, c.end));
  auto* params = reinterpret_cast<kc::SamplingRow*>(sample_staging_.data() + params_at);
  auto* offsets = reinterpret_cast<int32_t*>(sample_staging_.data() + offsets_at);
  auto* seen = reinterpret_cast<int32_t*>(sample_staging_.data() + seen_at);
  int32_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const SampleRow& r = rows[i];
    params[i] = {r.params.temperature, r.params.top_p,  r.params.top_k, r.params.min_p,
                 r.params.repetition_penalty, r.params.seed, r.position};
    offsets[i] = next;
    std::copy(r.seen.begin(), r.seen.end(), seen + next);
    next += static_cast<int32_t>(r.seen.size());
  }
  offsets[n] = next;
  RETURN_IF_ERROR(Grow(seen_ids_, num_seen * 4, "seen tokens"));
  RETURN_IF_ERROR(Upload(sample_params_.data(), params, n * sizeof(kc::SamplingRow),
                         "upload sampling parameters"));
  RETURN_IF_ERROR(Upload(seen_offsets_.data(), offsets, (n + 1) * 4, "upload seen offsets"));
  RETURN_IF_ERROR(Upload(seen_ids_.data(), seen, num_seen * 4, "upload seen tokens"));
  kc::SampleTokensParams p;
  p.logits = logits_.as<float>();
  p.rows = n;
  p.vocab = config_.vocab_size;
  p.params = sample_params_.as<kc::SamplingRow>();
  p.seen_offsets = seen_offsets_.as<int32_t>();
  p.seen_ids = num_seen > 0 ? seen_ids_.as<int32_t>() : nullptr;
  p.num_seen = num_seen;
  p.workspace = sample_ws_.as<float>();
  p.tokens = tokens_out_.as<int32_t>();
  p.token_logprobs = token_logprobs_.as<float>();
  p.top_n = top_n;
  p.top_ids = top_ids_.as<int32_t>();
  p.top_logprobs = top_logprobs_.as<float>();
  RETURN_IF_ERROR(kc::SampleTokens(p, stream()));
  AfterOp("sampling");
  std::vector<int32_t> tokens(n), top_ids(n * top_n);
  std::vector<float> token_logprobs(n), top_logprobs(n * top_n);
  RETURN_IF_ERROR(Download(tokens.data(), p.tokens, n * 4, "download sampled tokens"));
  RETURN_IF_ERROR(Download(token_logprobs.data(), p.token_logprobs, n * 4, "download logprobs"));
  RETURN_IF_ERROR(Download(top_ids.data(), p.top_ids, n * top_n * 4, "download top logprob ids"));
  RETURN_IF_ERROR(Download(top_logprobs.data(), p.top_logprobs, n * top_n * 4,
                           "download top logprobs"));
  RETURN_IF_ERROR(Sync());
  for (int64_t i = 0; i < n; ++i) {
    SampledToken& o = (*out)[i];
    o.token = tokens[i];
    if (rows[i].top_logprobs == 0) continue;
    o.logprob.token = tokens[i];
    o.logprob.logprob = token_logprobs[i];
    for (int64_t j = 0; j < static_cast<int64_t>(rows[i].top_logprobs); ++j) {
      const int32_t id = top_ids[i * top_n + j];
      if (id < 0) break;  // fewer tokens than asked for
      o.logprob.top.push_back({id, top_logprobs[i * top_n + j]});
    }
  }
  return absl::OkStatus();
}

}  // namespace

int CudaDeviceCount() { return kc::CudaDeviceCount(); }

absl::StatusOr<std::unique_ptr<RankCompute>> CreateCudaRankCompute(
    const ModelConfig& config, const Layout& layout, const ShardWeights& weights,
    DeviceCommunicator* tp_group, const CudaComputeOptions& options) {
  RETURN_IF_ERROR(cuda_compute::CheckCreateArgs(config, layout, weights, tp_group, options));
  auto compute = std::make_unique<CudaRankComputeImpl>(config, layout, tp_group, options);
  RETURN_IF_ERROR(compute->Init(weights));
  return std::unique_ptr<RankCompute>(std::move(compute));
}

}  // namespace tpserve
