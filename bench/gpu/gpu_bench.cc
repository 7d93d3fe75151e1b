// Full-size GPU benchmark: the Mistral-11B-AirOmniMix decoder (48 layers, hidden 4096, 32/8
// heads of 128, SwiGLU 14336, vocab 32000, bf16) on one GPU with random weights made on the
// device (no files), chained as the CUDA decoder will chain the ops of kernels/cuda/cuda_ops.h:
//   Embedding -> per layer: AddRmsNorm, qkv GEMM, RoPE (q and k in the fused row),
//   WriteKvCache, attention, o GEMM, AddRmsNorm (+ residual), gate_up GEMM, SwiGlu,
//   down GEMM -> final AddRmsNorm -> logits GEMM (fp32).
// Measured, in this order, with CUDA events after warm-up (median of the repetitions):
//  1. device copy bandwidth: cudaMemcpyAsync device to device of 2 GiB, counting bytes read
//     plus bytes written (the memory roofline);
//  2. bf16 GEMM rate: cuBLASLt 8192 x 8192 x 8192 through kernels::cuda::GemmHandle on random
//     data (the compute roofline);
//  3. decode steps at batch 1, 8, 64 and 256, every sequence at position 512 (512 keys in the
//     cache plus the new one): ms/step and tokens/s, beside max(bytes / bandwidth,
//     FLOPs / GEMM rate) with bytes = every weight read once + the K/V rows read (activations
//     left out); with --graphs also each step captured into a CUDA graph and replayed, and the
//     replay's logits compared bit for bit with the eager step's;
//  4. prefill of one 512- and one 2048-token prompt (logits for the last token only):
//     tokens/s beside FLOPs / GEMM rate (matmuls plus causal attention);
//  5. per-op time of one instrumented step (an event after every op) for decode batch 1 and
//     64 and the 2048-token prefill;
//  6. device memory used.
// Usage: tpserve_gpu_bench [--graphs] [--layers=N] [--no-breakdown] [--tiny]
//   --tiny: a small model (hidden 256, 4/2 heads of 64, 2 layers) and small copy and GEMM
//   sizes: a smoke test of the benchmark itself, not a measurement.
// Prints markdown tables; exits 1 on any CUDA or op error, or when a step's logits are not
// finite.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/gpu/fill.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/ops.h"

namespace tpserve::bench::gpu {
namespace {

namespace kc = tpserve::kernels::cuda;

// ---------------------------------- errors ----------------------------------
void Die(const std::string& what) {
  std::fprintf(stderr, "tpserve_gpu_bench: %s\n", what.c_str());
  std::exit(1);
}
void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + std::string(s.ToString()));
}
void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Die(std::string(what) + ": " + cudaGetErrorString(e));
}
template <typename T>
T Take(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Check(v.status(), what);
  return std::move(v).value();
}

// ---------------------------------- model ----------------------------------
struct Arch {
  int64_t layers = 48, hidden = 4096, q_heads = 32, kv_heads = 8, head_dim = 128;
  int64_t inter = 14336, vocab = 32000, block_size = 16, max_pos = 4096;
  float eps = 1e-5f;
  int64_t qkv_rows() const { return (q_heads + 2 * kv_heads) * head_dim; }
  // Elements of the matrices one decode step reads (every layer's four plus lm_head).
  int64_t layer_matmul_params() const {
    return qkv_rows() * hidden + hidden * q_heads * head_dim + 2 * inter * hidden +
           hidden * inter;
  }
  int64_t matmul_params() const { return layers * layer_matmul_params() + vocab * hidden; }
};

struct LayerWeights {
  const uint16_t *qkv, *o, *gate_up, *down, *norm1, *norm2;
};

struct Model {
  kc::DeviceBuffer buffer;
  std::vector<LayerWeights> layers;
  const uint16_t *embed = nullptr, *final_norm = nullptr, *lm_head = nullptr;
};

// Carves every weight out of one allocation and fills it with random bf16 on the device
// (matrices uniform with scale sqrt(3 / cols), i.e. unit-variance outputs).
Model MakeModel(const Arch& a, cudaStream_t stream) {
  struct Piece {
    const uint16_t** dst;
    int64_t elems;
    float scale;
  };
  Model m;
  m.layers.resize(a.layers);
  std::vector<Piece> pieces;
  auto mat = [&](const uint16_t** dst, int64_t rows, int64_t cols) {
    pieces.push_back({dst, rows * cols, std::sqrt(3.0f / static_cast<float>(cols))});
  };
  mat(&m.embed, a.vocab, a.hidden);
  for (LayerWeights& l : m.layers) {
    mat(&l.qkv, a.qkv_rows(), a.hidden);
    mat(&l.o, a.hidden, a.q_heads * a.head_dim);
    mat(&l.gate_up, 2 * a.inter, a.hidden);
    mat(&l.down, a.hidden, a.inter);
    pieces.push_back({&l.norm1, a.hidden, -1.0f});
    pieces.push_back({&l.norm2, a.hidden, -1.0f});
  }
  pieces.push_back({&m.final_norm, a.hidden, -1.0f});
  mat(&m.lm_head, a.vocab, a.hidden);
  int64_t total = 0;
  for (const Piece& p : pieces) total += (p.elems + 127) / 128 * 128;  // 256-byte aligned
  m.buffer = Take(kc::DeviceBuffer::Allocate(total * 2), "weights");
  uint16_t* next = m.buffer.as<uint16_t>();
  uint64_t seed = 1;
  for (const Piece& p : pieces) {
    *p.dst = next;
    // Norm weights (scale < 0 above): uniform(-1.25, 1.25); any finite values do for timing.
    const float scale = p.scale > 0 ? p.scale : 1.25f;
    CheckCuda(static_cast<cudaError_t>(
                  FillRandomBf16(next, static_cast<size_t>(p.elems), seed++, scale, stream)),
              "fill weights");
    next += (p.elems + 127) / 128 * 128;
  }
  return m;
}

// ---------------------------------- run state ----------------------------------
// One batch shape: its sequences, tokens and the host-side metadata, uploaded.
struct Batch {
  std::string name;
  bool decode = false;
  int64_t tokens = 0, num_seqs = 0, context = 0;  // context: keys per sequence incl. new
  int64_t logits_rows = 0;                        // decode: every row; prefill: the last
};

class Runner {
 public:
  Runner(const Arch& a, cudaStream_t stream, kc::GemmHandle* gemm, const Model* model)
      : a_(a), stream_(stream), gemm_(gemm), model_(model) {}

  // Allocates the KV cache for `max_blocks` blocks per layer and scratch for `max_tokens`.
  void Allocate(int64_t max_blocks, int64_t max_tokens, int64_t max_seqs) {
    max_blocks_ = max_blocks;
    const int64_t per_cache = max_blocks * a_.block_size * a_.kv_heads * a_.head_dim;
    kv_ = Take(kc::DeviceBuffer::Allocate(per_cache * 2 * 2 * a_.layers), "KV cache");
    for (int64_t i = 0; i < per_cache * 2 * a_.layers; i += int64_t{1} << 30) {
      const int64_t n = std::min<int64_t>(int64_t{1} << 30, per_cache * 2 * a_.layers - i);
      CheckCuda(static_cast<cudaError_t>(FillRandomBf16(kv_.as<uint16_t>() + i,
                                                        static_cast<size_t>(n), 1000 + i, 1.0f,
                                                        stream_)),
                "fill KV cache");
    }
    const int64_t t = max_tokens;
    auto alloc = [&](int64_t bytes, const char* what) {
      return Take(kc::DeviceBuffer::Allocate(static_cast<size_t>(bytes)), what);
    };
    residual_ = alloc(t * a_.hidden * 4, "residual");
    normed_ = alloc(t * a_.hidden * 2, "normed");
    qkv_ = alloc(t * a_.qkv_rows() * 2, "qkv");
    attn_ = alloc(t * a_.q_heads * a_.head_dim * 2, "attn");
    o_out_ = alloc(t * a_.hidden * 2, "o_out");
    gate_up_ = alloc(t * 2 * a_.inter * 2, "gate_up");
    act_ = alloc(t * a_.inter * 2, "act");
    down_ = alloc(t * a_.hidden * 2, "down");
    logits_ = alloc(std::max(max_seqs, int64_t{1}) * a_.vocab * 4, "logits");
    ids_ = alloc(t * 4, "ids");
    positions_ = alloc(t * 4, "positions");
    slots_ = alloc(t * 8, "slots");
    seqs_ = alloc(max_seqs * static_cast<int64_t>(sizeof(kc::AttentionSeq)), "seqs");
    tables_ = alloc(max_blocks * 4, "block tables");
    workspace_bytes_ = kc::DecodeAttentionWorkspaceBytes(max_seqs, a_.q_heads, a_.head_dim,
                                                         kc::kMaxDecodeSplits);
    workspace_ = alloc(workspace_bytes_, "decode workspace");
    std::vector<float> cos(a_.max_pos * a_.head_dim / 2), sin(cos.size());
    kernels::BuildRopeTable(10000.0, a_.head_dim, a_.max_pos, cos.data(), sin.data());
    cos_ = alloc(cos.size() * 4, "rope cos");
    sin_ = alloc(sin.size() * 4, "rope sin");
    Check(cos_.CopyFromHost(cos.data(), cos.size() * 4), "upload rope cos");
    Check(sin_.CopyFromHost(sin.data(), sin.size() * 4), "upload rope sin");
  }

  // Uploads the metadata of `b`: sequences over shuffled blocks, ids, positions, slots.
  void Prepare(const Batch& b) {
    CheckCuda(cudaStreamSynchronize(stream_), "sync before upload");
    batch_ = b;
    std::mt19937 rng(42);
    const int64_t blocks_per_seq = (b.context + a_.block_size - 1) / a_.block_size;
    if (blocks_per_seq * b.num_seqs > max_blocks_) Die("KV cache too small for " + b.name);
    std::vector<int32_t> table(max_blocks_);
    for (int64_t i = 0; i < max_blocks_; ++i) table[i] = static_cast<int32_t>(i);
    std::shuffle(table.begin(), table.end(), rng);
    std::vector<kc::AttentionSeq> seqs(b.num_seqs);
    std::vector<int32_t> ids(b.tokens), positions(b.tokens);
    std::vector<int64_t> slots(b.tokens);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(a_.vocab - 1));
    const int64_t new_per_seq = b.tokens / b.num_seqs;
    for (int64_t s = 0; s < b.num_seqs; ++s) {
      const int64_t start = b.context - new_per_seq;
      seqs[s] = {s * new_per_seq, new_per_seq, start, tables_.as<int32_t>() + s * blocks_per_seq,
                 blocks_per_seq};
      for (int64_t i = 0; i < new_per_seq; ++i) {
        const int64_t t = s * new_per_seq + i, pos = start + i;
        ids[t] = pick(rng);
        positions[t] = static_cast<int32_t>(pos);
        slots[t] = int64_t{table[s * blocks_per_seq + pos / a_.block_size]} * a_.block_size +
                   pos % a_.block_size;
      }
    }
    Check(tables_.CopyFromHost(table.data(), table.size() * 4), "upload tables");
    Check(seqs_.CopyFromHost(seqs.data(), seqs.size() * sizeof(kc::AttentionSeq)), "upload seqs");
    Check(ids_.CopyFromHost(ids.data(), ids.size() * 4), "upload ids");
    Check(positions_.CopyFromHost(positions.data(), positions.size() * 4), "upload positions");
    Check(slots_.CopyFromHost(slots.data(), slots.size() * 8), "upload slots");
  }

  // Enqueues one step of the current batch. With `events`, records an event after every op
  // and its category, for the per-op breakdown.
  void Step(std::vector<std::pair<const char*, cudaEvent_t>>* events = nullptr) {
    const Batch& b = batch_;
    const kc::Stream s{stream_};
    size_t next_event = 0;
    auto mark = [&](const char* what) {
      if (events == nullptr) return;
      if (next_event >= event_pool_.size()) {
        cudaEvent_t e;
        CheckCuda(cudaEventCreate(&e), "cudaEventCreate");
        event_pool_.push_back(e);
      }
      cudaEvent_t e = event_pool_[next_event++];
      CheckCuda(cudaEventRecord(e, stream_), "cudaEventRecord");
      events->push_back({what, e});
    };
    mark("start");
    const int64_t T = b.tokens, H = a_.hidden, D = a_.head_dim;
    Check(kc::Embedding({ids_.as<int32_t>(), model_->embed, residual_.as<float>(), T, a_.vocab, H},
                        s),
          "Embedding");
    mark("embedding");
    for (int64_t l = 0; l < a_.layers; ++l) {
      const LayerWeights& w = model_->layers[l];
      const uint16_t* delta = l == 0 ? nullptr : down_.as<uint16_t>();
      Check(kc::AddRmsNorm({residual_.as<float>(), delta, w.norm1, normed_.as<uint16_t>(), T, H,
                            a_.eps},
                           s),
            "AddRmsNorm 1");
      mark("norms");
      Gemm(normed_.as<uint16_t>(), w.qkv, qkv_.data(), T, a_.qkv_rows(), H, "qkv GEMM");
      mark("qkv GEMM");
      kc::RopeParams rope;
      rope.x = qkv_.as<uint16_t>();
      rope.tokens = T;
      rope.heads = a_.q_heads + a_.kv_heads;
      rope.head_dim = D;
      rope.token_stride = a_.qkv_rows();
      rope.positions = positions_.as<int32_t>();
      rope.cos = cos_.as<float>();
      rope.sin = sin_.as<float>();
      rope.max_positions = a_.max_pos;
      Check(kc::ApplyRope(rope, s), "ApplyRope");
      mark("rope");
      const kc::PagedKvCache cache = Cache(l);
      kc::WriteKvCacheParams kv;
      kv.k = qkv_.as<uint16_t>() + a_.q_heads * D;
      kv.v = kv.k + a_.kv_heads * D;
      kv.k_token_stride = kv.v_token_stride = a_.qkv_rows();
      kv.tokens = T;
      kv.slots = slots_.as<int64_t>();
      kv.cache = cache;
      Check(kc::WriteKvCache(kv, s), "WriteKvCache");
      mark("kv write");
      kc::PagedAttentionParams at;
      at.q = qkv_.as<uint16_t>();
      at.q_token_stride = a_.qkv_rows();
      at.out = attn_.as<uint16_t>();
      at.tokens = T;
      at.q_heads = a_.q_heads;
      at.scale = 1.0f / std::sqrt(static_cast<float>(D));
      at.sliding_window = 4096;
      at.cache = cache;
      at.seqs = seqs_.as<kc::AttentionSeq>();
      at.num_seqs = b.num_seqs;
      if (b.decode) {
        kc::DecodeAttentionParams dp;
        dp.attn = at;
        dp.max_context = b.context;
        dp.workspace = workspace_.data();
        dp.workspace_bytes = workspace_bytes_;
        Check(kc::PagedDecodeAttention(dp, s), "PagedDecodeAttention");
      } else {
        at.max_seq_tokens = T / b.num_seqs;
        Check(kc::PagedPrefillAttention(at, s), "PagedPrefillAttention");
      }
      mark("attention");
      Gemm(attn_.as<uint16_t>(), w.o, o_out_.data(), T, H, a_.q_heads * D, "o GEMM");
      mark("o GEMM");
      Check(kc::AddRmsNorm({residual_.as<float>(), o_out_.as<uint16_t>(), w.norm2,
                            normed_.as<uint16_t>(), T, H, a_.eps},
                           s),
            "AddRmsNorm 2");
      mark("norms");
      Gemm(normed_.as<uint16_t>(), w.gate_up, gate_up_.data(), T, 2 * a_.inter, H,
           "gate_up GEMM");
      mark("gate_up GEMM");
      Check(kc::SwiGlu({gate_up_.as<uint16_t>(), act_.as<uint16_t>(), T, a_.inter}, s), "SwiGlu");
      mark("swiglu");
      Gemm(act_.as<uint16_t>(), w.down, down_.data(), T, H, a_.inter, "down GEMM");
      mark("down GEMM");
    }
    Check(kc::AddRmsNorm({residual_.as<float>(), down_.as<uint16_t>(), model_->final_norm,
                          normed_.as<uint16_t>(), T, H, a_.eps},
                         s),
          "final AddRmsNorm");
    mark("norms");
    kc::GemmParams g;
    g.x = normed_.as<uint16_t>() + (T - b.logits_rows) * H;
    g.w = model_->lm_head;
    g.y = logits_.data();
    g.output = kc::GemmOutput::kF32;
    g.tokens = b.logits_rows;
    g.rows = a_.vocab;
    g.cols = H;
    Check(gemm_->Gemm(g, s), "logits GEMM");
    mark("logits GEMM");
  }

  std::vector<float> Logits() {
    CheckCuda(cudaStreamSynchronize(stream_), "sync for logits");
    std::vector<float> v(batch_.logits_rows * a_.vocab);
    Check(logits_.CopyToHost(v.data(), v.size() * 4), "download logits");
    return v;
  }

  int64_t kv_bytes() const { return static_cast<int64_t>(kv_.size()); }

 private:
  void Gemm(const uint16_t* x, const uint16_t* w, void* y, int64_t tokens, int64_t rows,
            int64_t cols, const char* what) {
    Check(gemm_->Gemm({x, w, y, kc::GemmOutput::kBf16, tokens, rows, cols}, kc::Stream{stream_}),
          what);
  }
  kc::PagedKvCache Cache(int64_t layer) {
    const int64_t per_cache = max_blocks_ * a_.block_size * a_.kv_heads * a_.head_dim;
    uint16_t* k = kv_.as<uint16_t>() + 2 * layer * per_cache;
    return {k, k + per_cache, max_blocks_, a_.block_size, a_.kv_heads, a_.head_dim};
  }

  const Arch a_;
  cudaStream_t stream_;
  kc::GemmHandle* gemm_;
  const Model* model_;
  Batch batch_;
  int64_t max_blocks_ = 0, workspace_bytes_ = 0;
  kc::DeviceBuffer kv_, residual_, normed_, qkv_, attn_, o_out_, gate_up_, act_, down_, logits_;
  kc::DeviceBuffer ids_, positions_, slots_, seqs_, tables_, workspace_, cos_, sin_;
  std::vector<cudaEvent_t> event_pool_;
};

// ---------------------------------- timing ----------------------------------
// Median milliseconds of `reps` runs of `fn` on `stream` after `warmup` runs.
template <typename Fn>
double TimeMs(cudaStream_t stream, int warmup, int reps, Fn fn) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  CheckCuda(cudaEventCreate(&start), "cudaEventCreate");
  CheckCuda(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CheckCuda(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    CheckCuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    CheckCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    CheckCuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  CheckCuda(cudaEventDestroy(start), "cudaEventDestroy");
  CheckCuda(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

size_t CountNonFinite(const std::vector<float>& v) {
  return static_cast<size_t>(std::count_if(v.begin(), v.end(),
                                           [](float f) { return !std::isfinite(f); }));
}

double GiB(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

struct Row {
  std::string what, measured, roofline, percent, graph;
};

int Main(int argc, char** argv) {
  bool graphs = false, breakdown = true, tiny = false;
  Arch a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--graphs") graphs = true;
    else if (arg == "--no-breakdown") breakdown = false;
    else if (arg == "--tiny") tiny = true;
    else if (arg.rfind("--layers=", 0) == 0) a.layers = std::max(1, std::atoi(arg.c_str() + 9));
    else Die("usage: tpserve_gpu_bench [--graphs] [--layers=N] [--no-breakdown] [--tiny]");
  }
  if (tiny) {
    const int64_t layers = a.layers == 48 ? 2 : a.layers;
    a = Arch{layers, 256, 4, 2, 64, 512, 1000, 16, 4096, 1e-5f};
  }
  if (kc::CudaDeviceCount() == 0) Die("no CUDA device");
  std::printf("# tpserve GPU benchmark\n\ndevice: %s\n",
              Take(kc::CudaDeviceDescription(0), "device").c_str());
  std::printf("model: %s, %lld layers, random bf16 weights\n\n",
              tiny ? "TINY smoke-test shape (not a measurement)" : "Mistral-11B-AirOmniMix shape",
              static_cast<long long>(a.layers));
  size_t free0 = 0, total = 0;
  CheckCuda(cudaMemGetInfo(&free0, &total), "cudaMemGetInfo");
  cudaStream_t stream;
  CheckCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const kc::Stream s{stream};
  kc::GemmHandle gemm = Take(kc::GemmHandle::Create(), "GemmHandle::Create");
  std::vector<Row> rows;
  char buf[256];

  // 1. Copy bandwidth.
  double bandwidth = 0;  // bytes/s, read + write
  {
    const size_t bytes = tiny ? size_t{16} << 20 : size_t{2} << 30;
    kc::DeviceBuffer src = Take(kc::DeviceBuffer::Allocate(bytes), "copy src");
    kc::DeviceBuffer dst = Take(kc::DeviceBuffer::Allocate(bytes), "copy dst");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(src.as<uint16_t>(), bytes / 2, 7, 1.0f,
                                                      stream)),
              "fill");
    const double ms = TimeMs(stream, 2, 7, [&] {
      CheckCuda(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream),
                "cudaMemcpyAsync");
    });
    bandwidth = 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
    std::snprintf(buf, sizeof buf, "%.0f GB/s (%.2f ms)", bandwidth / 1e9, ms);
    rows.push_back({"device copy, " + std::to_string(bytes >> 20) + " MiB D2D (read + write)",
                    buf, "", "", ""});
  }
  // 2. GEMM rate.
  double gemm_rate = 0;  // FLOP/s
  {
    const int64_t n = tiny ? 256 : 8192;
    kc::DeviceBuffer x = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm x");
    kc::DeviceBuffer w = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm w");
    kc::DeviceBuffer y = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm y");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(x.as<uint16_t>(), n * n, 8, 1.0f, stream)),
              "fill");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(w.as<uint16_t>(), n * n, 9, 0.02f, stream)),
              "fill");
    const double ms = TimeMs(stream, 3, 10, [&] {
      Check(gemm.Gemm({x.as<uint16_t>(), w.as<uint16_t>(), y.data(), kc::GemmOutput::kBf16, n, n, n},
                      s),
            "GEMM 8192");
    });
    gemm_rate = 2.0 * n * n * n / (ms * 1e-3);
    std::snprintf(buf, sizeof buf, "%.0f TFLOP/s (%.2f ms)", gemm_rate / 1e12, ms);
    rows.push_back({"bf16 GEMM " + std::to_string(n) + "^3, cuBLASLt, bf16 out", buf, "", "", ""});
  }

  // The model, cache and scratch.
  Model model = MakeModel(a, stream);
  const std::vector<int64_t> decode_batches = {1, 8, 64, 256};
  const std::vector<int64_t> prompts = {512, 2048};
  const int64_t decode_context = 513;  // 512 cached keys + the new token
  const int64_t blocks_decode = (decode_context + a.block_size - 1) / a.block_size * 256;
  Runner runner(a, stream, &gemm, &model);
  runner.Allocate(std::max<int64_t>(blocks_decode, 2048 / a.block_size) + 16, 2048, 256);
  CheckCuda(cudaStreamSynchronize(stream), "setup");
  size_t free1 = 0;
  CheckCuda(cudaMemGetInfo(&free1, &total), "cudaMemGetInfo");

  const double weight_bytes = 2.0 * static_cast<double>(a.matmul_params());
  const double kv_row_bytes = 2.0 * 2.0 * a.kv_heads * a.head_dim * a.layers;  // K+V, per key
  std::map<std::string, std::map<std::string, double>> breakdowns;
  std::vector<std::string> breakdown_order;
  auto run_breakdown = [&](const std::string& name) {
    std::vector<std::pair<const char*, cudaEvent_t>> events;
    runner.Step(&events);
    CheckCuda(cudaStreamSynchronize(stream), "breakdown");
    std::map<std::string, double>& out = breakdowns[name];
    for (size_t i = 1; i < events.size(); ++i) {
      float t = 0;
      CheckCuda(cudaEventElapsedTime(&t, events[i - 1].second, events[i].second), "elapsed");
      out[events[i].first] += t;
    }
    breakdown_order.push_back(name);
  };

  // 3. Decode.
  for (int64_t batch : decode_batches) {
    Batch b{"decode batch " + std::to_string(batch), true, batch, batch, decode_context, batch};
    runner.Prepare(b);
    const double ms = TimeMs(stream, 2, 10, [&] { runner.Step(); });
    const std::vector<float> eager = runner.Logits();
    if (size_t bad = CountNonFinite(eager)) {
      Die(b.name + ": " + std::to_string(bad) + " logits are not finite");
    }
    const double bytes = weight_bytes + batch * decode_context * kv_row_bytes;
    const double flops = 2.0 * a.matmul_params() * batch +
                         4.0 * batch * decode_context * a.q_heads * a.head_dim * a.layers;
    const double floor_ms = std::max(bytes / bandwidth, flops / gemm_rate) * 1e3;
    Row r;
    r.what = b.name + ", context 512";
    std::snprintf(buf, sizeof buf, "%.2f ms/step, %.0f tokens/s", ms, batch / (ms * 1e-3));
    r.measured = buf;
    std::snprintf(buf, sizeof buf, "%.2f ms (%s: %.1f GB / BW%s)", floor_ms,
                  bytes / bandwidth >= flops / gemm_rate ? "memory" : "compute", bytes / 1e9,
                  bytes / bandwidth >= flops / gemm_rate ? "" : "; FLOPs / GEMM rate larger");
    r.roofline = buf;
    std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * floor_ms / ms);
    r.percent = buf;
    if (graphs) {
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CheckCuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
      runner.Step();
      CheckCuda(cudaStreamEndCapture(stream, &graph), "end capture");
      CheckCuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      const double gms = TimeMs(stream, 2, 10, [&] {
        CheckCuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
      });
      const std::vector<float> replay = runner.Logits();
      const bool same = std::memcmp(replay.data(), eager.data(), eager.size() * 4) == 0;
      std::snprintf(buf, sizeof buf, "%.2f ms/step, %.0f tokens/s, logits %s", gms,
                    batch / (gms * 1e-3), same ? "== eager" : "DIFFER from eager");
      r.graph = buf;
      CheckCuda(cudaGraphExecDestroy(exec), "destroy graph exec");
      CheckCuda(cudaGraphDestroy(graph), "destroy graph");
      if (!same) Die(b.name + ": graph replay logits differ from the eager step's");
    }
    rows.push_back(r);
    if (breakdown && (batch == 1 || batch == 64)) run_breakdown(b.name);
  }

  // 4. Prefill.
  for (int64_t t : prompts) {
    Batch b{"prefill " + std::to_string(t) + " tokens", false, t, 1, t, 1};
    runner.Prepare(b);
    const double ms = TimeMs(stream, 1, 5, [&] { runner.Step(); });
    if (size_t bad = CountNonFinite(runner.Logits())) {
      Die(b.name + ": " + std::to_string(bad) + " logits are not finite");
    }
    const double flops =
        2.0 * (a.matmul_params() - a.vocab * a.hidden) * t + 2.0 * a.vocab * a.hidden +
        4.0 * (t * (t + 1) / 2.0) * a.q_heads * a.head_dim * a.layers;
    const double floor_ms = std::max(flops / gemm_rate, weight_bytes / bandwidth) * 1e3;
    Row r;
    r.what = b.name + " (one prompt)";
    std::snprintf(buf, sizeof buf, "%.1f ms, %.0f tokens/s", ms, t / (ms * 1e-3));
    r.measured = buf;
    std::snprintf(buf, sizeof buf, "%.1f ms (%.1f TFLOP / GEMM rate)", floor_ms, flops / 1e12);
    r.roofline = buf;
    std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * floor_ms / ms);
    r.percent = buf;
    rows.push_back(r);
    if (breakdown && t == 2048) run_breakdown(b.name);
  }

  // 6. Memory.
  std::snprintf(buf, sizeof buf, "%.1f GiB of %.1f (weights %.1f, KV cache %.1f, rest %.1f)",
                GiB(static_cast<double>(free0 - free1)), GiB(static_cast<double>(total)),
                GiB(static_cast<double>(model.buffer.size())),
                GiB(static_cast<double>(runner.kv_bytes())),
                GiB(static_cast<double>(free0 - free1) - model.buffer.size() - runner.kv_bytes()));
  rows.push_back({"device memory used by the model run", buf, "", "", ""});

  std::printf("| measurement | measured | roofline | roofline / measured |%s\n",
              graphs ? " CUDA graph replay |" : "");
  std::printf("|---|---|---|---|%s\n", graphs ? "---|" : "");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %s | %s |%s\n", r.what.c_str(), r.measured.c_str(),
                r.roofline.c_str(), r.percent.c_str(),
                graphs ? (" " + r.graph + " |").c_str() : "");
  }
  std::printf("\nroofline: max(bytes / copy bandwidth, FLOPs / GEMM rate) with the two rates "
              "measured above; bytes = all matmul weights once + K/V rows read.\n");

  if (!breakdown_order.empty()) {
    std::printf("\n### per-op time of one step, ms (an event after every op)\n\n| op |");
    for (const std::string& n : breakdown_order) std::printf(" %s |", n.c_str());
    std::printf("\n|---|");
    for (size_t i = 0; i < breakdown_order.size(); ++i) std::printf("---|");
    std::printf("\n");
    const char* ops[] = {"embedding", "norms", "qkv GEMM", "rope", "kv write", "attention",
                         "o GEMM", "gate_up GEMM", "swiglu", "down GEMM", "logits GEMM"};
    for (const char* op : ops) {
      std::printf("| %s |", op);
      for (const std::string& n : breakdown_order) std::printf(" %.3f |", breakdowns[n][op]);
      std::printf("\n");
    }
    std::printf("| total |");
    for (const std::string& n : breakdown_order) {
      double sum = 0;
      for (const auto& [op, t] : breakdowns[n]) sum += t;
      std::printf(" %.3f |", sum);
    }
    std::printf("\n");
  }
  CheckCuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
  return 0;
}

}  // namespace
}  // namespace tpserve::bench::gpu

int main(int argc, char** argv) { return tpserve::bench::gpu::Main(argc, argv); }
