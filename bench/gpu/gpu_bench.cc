// Full-size GPU benchmark of the worker's real GPU path: CudaRankCompute
// (worker/cuda/cuda_rank_compute.h) running the Mistral-11B-AirOmniMix architecture (48
// layers, hidden 4096, 32/8 heads of 128, SwiGLU 14336, vocab 32000, 4096 positions, sliding
// window 4096, bf16) on one GPU as one rank (tp = pp = 1), with random weights made on the
// host (random_weights.h: 10.7 B parameters, 21.5 GB, on every core) and uploaded by
// CreateCudaRankCompute as a checkpoint's would be. Measured, in this order:
//  1. device copy bandwidth: cudaMemcpyAsync device to device of 2 GiB, counting bytes read
//     plus bytes written (the memory roofline), CUDA events, median of 7;
//  2. bf16 GEMM rate: cuBLASLt 8192 x 8192 x 8192 through kernels::cuda::GemmHandle on random
//     data (the compute roofline), CUDA events, median of 10;
//  3. CudaRankCompute with CUDA graphs (the default) and the KV cache the worker would take:
//     KvBlocksThatFit(16) at memory_fraction 0.9, all of it allocated. Steps timed as the
//     Engine sees them (step_timing.h): std::chrono around Forward + Sample (greedy) of each
//     sequence's last row, after warm-up (which captures the decode graphs), median of the
//     repetitions: decode at batch 1, 8, 64 and 256 with every sequence at position 512 (512
//     cached keys, zeros, plus the new one; each sequence on its own shuffled blocks), and
//     prefill of one 512- and one 2048-token prompt. After each: logits of the sampled rows
//     all finite, the graph counters show replays;
//  4. a second CudaRankCompute with graphs off (the first is destroyed first; the weights are
//     uploaded again: the compute has no switch for graphs): decode at batch 1 and 64, whose
//     greedy tokens must equal the graph run's (a decode step computes the same bits either
//     way, see cuda_rank_compute.cc);
//  5. per-op device time of one step (an event after every op, through
//     CudaComputeOptions::after_op of the graphs-off compute) for decode batch 1 and 64 and
//     the 2048-token prefill: where the time of a step goes; then decode at batch 1 and 64
//     with graphs on a third compute with CudaComputeOptions::programmatic_launch (off by
//     default until this row shows it pays; its errors are failure lines, not fatal);
//  6. device memory of the compute: weights, KV cache, the rest;
//  7. prefill attention alone (bench/gpu/attention_kernels.cc): one layer of a 2048-token
//     causal prompt through the tensor-core kernel and the CUDA-core kernel, in TFLOP/s;
//  8. the decode GEMMs alone (bench/gpu/decode_gemms.cc): each projection and lm_head at 1, 4
//     and 8 tokens through GemmHandle's small-batch kernel (the default for up to 8 tokens)
//     and through cuBLASLt, beside the weight-streaming roofline.
// The table puts every step beside its roofline, max(bytes / copy bandwidth, FLOPs / GEMM
// rate) with bytes = every matmul weight once + the K/V rows read (activations left out), and
// marks the goals: batch-1 decode >= 85% of that roofline, batch-64 decode >= 7,000 tokens/s,
// prefill >= 60% of the measured GEMM rate.
// Usage: tpserve_gpu_bench [--tiny] [--layers=N] [--no-breakdown]
//   --layers=N: N decoder layers instead of 48 (quicker; no goals are marked);
//   --tiny: a small model (hidden 256, 4/2 heads of 64, SwiGLU 512, vocab 1000, 2 layers),
//   small copy and GEMM sizes and a KV cache of just the blocks the steps use: a smoke test of
//   the benchmark itself, not a measurement.
// Expected run time on an H200: ~20-40 s (host fill ~2-5 s, two uploads of 21.5 GB ~3-8 s
// each, the steps a few seconds).
// Prints progress lines, then markdown tables. Exits 1 on any CUDA, op or compute error, on
// non-finite logits, on missing graph replays or on graph / eager tokens that differ (after
// printing what was measured); a goal NOT MET is a result, not an error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/gpu/attention_kernels.h"
#include "bench/gpu/decode_gemms.h"
#include "bench/gpu/event_timing.h"
#include "bench/gpu/fill.h"
#include "bench/gpu/random_weights.h"
#include "bench/gpu/step_timing.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "model/config.h"
#include "worker/cuda/cuda_rank_compute.h"
#include "worker/layout.h"

namespace tpserve::bench::gpu {
namespace {

namespace kc = tpserve::kernels::cuda;

constexpr int64_t kBlockSize = 16;
constexpr int64_t kDecodePosition = 512;  // cached keys per sequence in the decode steps

// ---------------------------------- errors ----------------------------------
void Die(const std::string& what) {
  std::fprintf(stderr, "tpserve_gpu_bench: %s\n", what.c_str());
  std::fflush(stdout);
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

// Seconds since the program started, for the progress lines.
double Elapsed() {
  static const auto start = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
template <typename... Args>
void Progress(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::printf("[%6.1f s] %s\n", Elapsed(), absl::StrFormat(format, args...).c_str());
  std::fflush(stdout);
}

// ---------------------------------- model ----------------------------------
ModelConfig BenchConfig(bool tiny, int layers) {
  ModelConfig c;
  c.architecture = Architecture::kMistral;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 48;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 1e6;
  c.sliding_window = 4096;
  c.max_position_embeddings = 4096;
  c.vocab_size = 32000;
  c.torch_dtype = DType::kBF16;
  if (tiny) {
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.vocab_size = 1000;
  }
  if (layers > 0) c.num_layers = layers;
  return c;
}

// ---------------------------------- per-op breakdown ----------------------------------
// Ops of the breakdown table, in chain order (CudaComputeOptions::after_op's categories).
constexpr const char* kOps[] = {"embedding",
                                "norms",
                                "qkv GEMM",
                                "rope + kv write",
                                "attention",
                                "o GEMM",
                                "gate_up GEMM + swiglu",
                                "down GEMM",
                                "logits rows",
                                "logits GEMM",
                                "sampling"};

struct Breakdown {
  std::string name;
  std::map<std::string, double> ms;  // by op
};

// CudaComputeOptions::after_op for the breakdown: while `recording`, an event after every op
// on the compute's stream (events pooled across steps).
class OpRecorder {
 public:
  OpRecorder() = default;
  OpRecorder(const OpRecorder&) = delete;
  OpRecorder& operator=(const OpRecorder&) = delete;
  ~OpRecorder() {
    for (cudaEvent_t e : pool_) (void)cudaEventDestroy(e);
  }

  void AfterOp(const char* op, void* stream) {
    if (!recording_) return;
    if (events_.size() == pool_.size()) {
      cudaEvent_t e;
      CheckCuda(cudaEventCreate(&e), "cudaEventCreate");
      pool_.push_back(e);
    }
    cudaEvent_t e = pool_[events_.size()];
    CheckCuda(cudaEventRecord(e, static_cast<cudaStream_t>(stream)), "cudaEventRecord");
    events_.push_back({op, e});
  }

  // Records the ops of whatever `run` makes the compute do (synchronous calls: the events
  // have completed when it returns) and returns each op's device time, an op's time being
  // that since the previous event of the same run of ops (a "start" begins a run).
  template <typename Run>
  std::map<std::string, double> Record(Run run) {
    events_.clear();
    recording_ = true;
    run();
    recording_ = false;
    std::map<std::string, double> ms;
    for (size_t i = 1; i < events_.size(); ++i) {
      if (std::string_view(events_[i].first) == "start") continue;
      float t = 0;
      CheckCuda(cudaEventElapsedTime(&t, events_[i - 1].second, events_[i].second), "elapsed");
      ms[events_[i].first] += t;
    }
    return ms;
  }

 private:
  bool recording_ = false;
  std::vector<cudaEvent_t> pool_;
  std::vector<std::pair<const char*, cudaEvent_t>> events_;
};

// ---------------------------------- timing ----------------------------------

double GiB(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

size_t FreeDeviceBytes() {
  size_t free_bytes = 0, total = 0;
  CheckCuda(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
  return free_bytes;
}

int64_t MaxBlocks(const std::vector<StepShape>& shapes) {
  int64_t most = 0;
  for (const StepShape& s : shapes) most = std::max(most, s.blocks(kBlockSize));
  return most;
}

// The first `need` entries of a seeded shuffle of [0, num_blocks): blocks scattered over the
// whole cache, as a long-running server's free list leaves them.
std::vector<int32_t> BlockPool(int64_t num_blocks, int64_t need) {
  std::vector<int32_t> all(num_blocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), std::mt19937(7));
  all.resize(std::min(num_blocks, need));
  return all;
}

// ---------------------------------- the measurement ----------------------------------
struct Measured {
  std::string label;  // table row name
  StepShape shape;
  StepTiming timing;
  bool graphs = true;
  bool programmatic = false;  // CudaComputeOptions::programmatic_launch
};

struct Compute {
  std::unique_ptr<RankCompute> compute;
  CudaRankCompute* cuda = nullptr;
  double create_s = 0.0;
};

// With `recorder`, the compute reports its ops to it (CudaComputeOptions::after_op).
Compute Create(const ModelConfig& config, const Layout& layout, const ShardWeights& weights,
               bool graphs, OpRecorder* recorder = nullptr) {
  CudaComputeOptions options;
  options.device = 0;
  options.memory_fraction = 0.9;
  options.graphs = graphs;
  if (recorder != nullptr) {
    options.after_op = [recorder](const char* op, void* stream) { recorder->AfterOp(op, stream); };
  }
  const auto t0 = std::chrono::steady_clock::now();
  Compute c;
  c.compute = Take(CreateCudaRankCompute(config, layout, weights, nullptr, options),
                   graphs ? "CreateCudaRankCompute (graphs)" : "CreateCudaRankCompute (no graphs)");
  c.create_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  c.cuda = dynamic_cast<CudaRankCompute*>(c.compute.get());
  if (c.cuda == nullptr) Die("CreateCudaRankCompute returned no CudaRankCompute");
  return c;
}

// Times `shape` on `c` and checks the graph counters: with graphs, every timed decode step of a
// padded bucket must be a replay; without, none may be.
Measured Run(Compute& c, const std::string& label, const StepShape& shape, bool graphs,
             std::span<const int32_t> pool, int64_t vocab, std::vector<std::string>* failures) {
  const int warmup = shape.decode() ? 3 : 2;
  const int reps = shape.decode() ? 30 : 10;
  const CudaComputeStats before = c.cuda->stats();
  Measured m{label, shape,
             Take(TimeSteps(*c.compute, shape, vocab, kBlockSize, pool, warmup, reps), "step"),
             graphs};
  const CudaComputeStats after = c.cuda->stats();
  const int64_t launches = after.graph_launches - before.graph_launches;
  const bool bucketed = shape.decode() && shape.num_seqs <= CudaRankCompute::kMaxGraphBatch;
  if (graphs && bucketed && launches < reps) {
    failures->push_back(absl::StrCat(label, ": only ", launches, " graph replays in ", reps,
                                     " timed steps"));
  }
  if (!graphs && (launches != 0 || after.graph_captures != before.graph_captures)) {
    failures->push_back(absl::StrCat(label, ": graphs are off but ", launches,
                                     " replays happened"));
  }
  Progress("%s: %.3f ms/step (min %.3f, max %.3f; Sample %.3f) over %d steps; graph replays %d, "
           "captures %d, eager %d",
           label, m.timing.step_ms, m.timing.min_ms, m.timing.max_ms, m.timing.sample_ms, reps,
           launches, after.graph_captures - before.graph_captures,
           after.eager_steps - before.eager_steps);
  return m;
}

int Main(int argc, char** argv) {
  bool breakdown = true, tiny = false;
  int layers = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--no-breakdown") breakdown = false;
    else if (arg == "--tiny") tiny = true;
    else if (arg.rfind("--layers=", 0) == 0) layers = std::max(1, std::atoi(arg.c_str() + 9));
    else Die("usage: tpserve_gpu_bench [--tiny] [--layers=N] [--no-breakdown]");
  }
  Elapsed();
  const ModelConfig config = BenchConfig(tiny, layers);
  const Layout layout = Take(MakeLayout(config, 1, 1, 1, 0, {}), "MakeLayout");
  if (kc::CudaDeviceCount() == 0) Die("no CUDA device");
  std::printf("# tpserve GPU benchmark: CudaRankCompute\n\ndevice: %s\n",
              Take(kc::CudaDeviceDescription(0), "device").c_str());
  std::printf("model: %s: %d layers, hidden %d, %d/%d heads of %d, MLP %d, vocab %d, random "
              "bf16 weights; one rank (tp=1, pp=1)%s\n\n",
              tiny ? "TINY smoke-test shape (not a measurement)" : "Mistral-11B-AirOmniMix shape",
              config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads,
              config.head_dim, config.intermediate_size, config.vocab_size,
              layers > 0 && !tiny ? ", --layers given: not the full model" : "");
  std::fflush(stdout);
  CheckCuda(cudaSetDevice(0), "cudaSetDevice");
  size_t total = 0, free_at_start = 0;
  CheckCuda(cudaMemGetInfo(&free_at_start, &total), "cudaMemGetInfo");
  std::printf("device memory: %.1f GiB free of %.1f GiB at start\n\n",
              GiB(static_cast<double>(free_at_start)), GiB(static_cast<double>(total)));
  cudaStream_t stream;
  CheckCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const kc::Stream s{stream};
  kc::GemmHandle gemm = Take(kc::GemmHandle::Create(), "GemmHandle::Create");
  std::vector<std::string> failures;

  // 1. Copy bandwidth.
  double bandwidth = 0;  // bytes/s, read + write
  std::string bandwidth_row;
  {
    const size_t bytes = tiny ? size_t{16} << 20 : size_t{2} << 30;
    kc::DeviceBuffer src = Take(kc::DeviceBuffer::Allocate(bytes), "copy src");
    kc::DeviceBuffer dst = Take(kc::DeviceBuffer::Allocate(bytes), "copy dst");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(src.as<uint16_t>(), bytes / 2, 7, 1.0f,
                                                      stream)),
              "fill");
    const double ms = MedianEventMs(stream, 2, 7, [&] {
      CheckCuda(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream),
                "cudaMemcpyAsync");
    });
    bandwidth = 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
    bandwidth_row = absl::StrFormat("| device copy, %d MiB D2D (read + write) | %.0f GB/s | "
                                    "%.3f ms |",
                                    bytes >> 20, bandwidth / 1e9, ms);
  }
  // 2. GEMM rate.
  double gemm_rate = 0;  // FLOP/s
  std::string gemm_row;
  {
    const int64_t n = tiny ? 256 : 8192;
    kc::DeviceBuffer x = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm x");
    kc::DeviceBuffer w = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm w");
    kc::DeviceBuffer y = Take(kc::DeviceBuffer::Allocate(n * n * 2), "gemm y");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(x.as<uint16_t>(), n * n, 8, 1.0f, stream)),
              "fill");
    CheckCuda(static_cast<cudaError_t>(FillRandomBf16(w.as<uint16_t>(), n * n, 9, 0.02f, stream)),
              "fill");
    const double ms = MedianEventMs(stream, 3, 10, [&] {
      Check(gemm.Gemm({x.as<uint16_t>(), w.as<uint16_t>(), y.data(), kc::GemmOutput::kBf16, n, n,
                       n},
                      s),
            "GEMM rate");
    });
    gemm_rate = 2.0 * n * n * n / (ms * 1e-3);
    gemm_row = absl::StrFormat("| bf16 GEMM %d^3, cuBLASLt, bf16 out | %.0f TFLOP/s | %.3f ms |",
                               n, gemm_rate / 1e12, ms);
  }
  std::printf("| rate | measured | time |\n|---|---:|---:|\n%s\n%s\n\n", bandwidth_row.c_str(),
              gemm_row.c_str());
  Progress("rates measured: %.0f GB/s copy, %.0f TFLOP/s GEMM", bandwidth / 1e9,
           gemm_rate / 1e12);

  // 3. Host weights, then the compute with graphs.
  const std::vector<StepShape> decodes = {{1, 1, kDecodePosition},
                                          {8, 1, kDecodePosition},
                                          {64, 1, kDecodePosition},
                                          {256, 1, kDecodePosition}};
  const std::vector<StepShape> prefills = {{1, 512, 0}, {1, 2048, 0}};
  // KV blocks: each decode sequence its own (shapes one after the other reuse them), then the
  // prompts' own.
  const int64_t decode_blocks = MaxBlocks(decodes), prefill_blocks = MaxBlocks(prefills);
  const int64_t need_blocks = decode_blocks + prefill_blocks;

  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const auto fill_start = std::chrono::steady_clock::now();
  auto weights = std::make_unique<ShardWeights>(RandomShardWeights(config, layout, 1, threads));
  const double fill_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - fill_start).count();
  Progress("host weights: %.2f GB (bf16 matrices, fp32 norms) filled in %.1f s on %d threads",
           static_cast<double>(weights->bytes) / 1e9, fill_s, threads);

  const size_t free_before = FreeDeviceBytes();
  Compute with_graphs = Create(config, layout, *weights, /*graphs=*/true);
  const size_t free_created = FreeDeviceBytes();
  const uint64_t weight_bytes = with_graphs.compute->weight_bytes();
  Progress("CreateCudaRankCompute (graphs on): %.1f s (%.1f GB/s for %.2f GB of weights, "
           "setup included)",
           with_graphs.create_s, static_cast<double>(weight_bytes) / 1e9 / with_graphs.create_s,
           static_cast<double>(weight_bytes) / 1e9);
  const int64_t fit = Take(with_graphs.compute->KvBlocksThatFit(kBlockSize), "KvBlocksThatFit");
  // The worker allocates every block that fits; --tiny only what the steps use (a tiny model's
  // blocks are small, and 90% of the device in them would only cost time).
  const int64_t kv_blocks = tiny ? need_blocks : fit;
  if (fit < need_blocks) {
    Die(absl::StrCat("KvBlocksThatFit(", kBlockSize, ") = ", fit, " blocks; the steps need ",
                     need_blocks));
  }
  Check(with_graphs.compute->AllocateKvCache(kv_blocks, kBlockSize), "AllocateKvCache");
  const size_t free_kv = FreeDeviceBytes();
  const uint64_t kv_bytes = with_graphs.compute->kv_bytes();
  Progress("KV cache: KvBlocksThatFit(%d) at memory_fraction 0.9 = %d blocks (%d tokens, "
           "%.2f GB); allocated %d blocks, kv_bytes() %.2f GB",
           kBlockSize, fit, fit * kBlockSize,
           static_cast<double>(fit) * static_cast<double>(kv_bytes) / kv_blocks / 1e9,
           kv_blocks, static_cast<double>(kv_bytes) / 1e9);

  std::vector<Measured> rows;
  std::map<int64_t, std::vector<int32_t>> graph_tokens;  // by decode batch
  {
    const std::vector<int32_t> pool = BlockPool(kv_blocks, need_blocks);
    const std::span<const int32_t> decode_pool(pool.data(), decode_blocks);
    const std::span<const int32_t> prefill_pool(pool.data() + decode_blocks, prefill_blocks);
    for (const StepShape& d : decodes) {
      rows.push_back(Run(with_graphs, absl::StrCat("decode batch ", d.num_seqs, ", CUDA graphs"),
                         d, true, decode_pool, config.vocab_size, &failures));
      graph_tokens[d.num_seqs] = rows.back().timing.tokens;
    }
    for (const StepShape& p : prefills) {
      rows.push_back(Run(with_graphs, absl::StrCat("prefill ", p.new_tokens, " tokens"), p, true,
                         prefill_pool, config.vocab_size, &failures));
    }
  }
  const CudaComputeStats graph_stats = with_graphs.cuda->stats();
  const double graph_create_s = with_graphs.create_s;
  with_graphs = Compute();  // frees the device for the second copy

  // 4. Graphs off: a second compute (and upload), which also reports its ops for the per-op
  //    breakdown (5).
  const std::vector<StepShape> eager_decodes = {decodes[0], decodes[2]};
  const std::vector<StepShape> breakdown_shapes = {decodes[0], decodes[2], prefills[1]};
  double eager_create_s = 0.0;
  std::vector<Breakdown> breakdowns;
  {
    const int64_t eager_blocks = std::max(MaxBlocks(eager_decodes), MaxBlocks(breakdown_shapes));
    OpRecorder recorder;
    Compute eager = Create(config, layout, *weights, /*graphs=*/false, &recorder);
    eager_create_s = eager.create_s;
    Progress("CreateCudaRankCompute (graphs off): %.1f s", eager.create_s);
    Check(eager.compute->AllocateKvCache(eager_blocks, kBlockSize), "AllocateKvCache (no graphs)");
    const std::vector<int32_t> pool = BlockPool(eager_blocks, eager_blocks);
    for (const StepShape& d : eager_decodes) {
      rows.push_back(Run(eager, absl::StrCat("decode batch ", d.num_seqs, ", no graphs"), d,
                         false, pool, config.vocab_size, &failures));
      if (rows.back().timing.tokens != graph_tokens[d.num_seqs]) {
        failures.push_back(absl::StrCat("decode batch ", d.num_seqs,
                                        ": greedy tokens with graphs off differ from graphs on"));
      }
    }
    // 5. Per-op breakdown: one recorded step of each shape, after one that warms it up.
    for (const StepShape& shape : breakdown ? breakdown_shapes : std::vector<StepShape>{}) {
      auto step = [&] {
        Take(TimeSteps(*eager.compute, shape, config.vocab_size, kBlockSize, pool, 0, 1),
             "breakdown step");
      };
      step();
      breakdowns.push_back({Describe(shape), recorder.Record(step)});
    }
    if (breakdown) Progress("per-op breakdown measured");
  }
  // 4b. Programmatic dependent launch (CudaComputeOptions::programmatic_launch, off by
  //     default): the graph decode steps of batch 1 and 64 again on a third compute. Not fatal:
  //     an error here becomes a failure line and the other tables still print.
  {
    CudaComputeOptions options;
    options.memory_fraction = 0.9;
    options.programmatic_launch = true;
    absl::StatusOr<std::unique_ptr<RankCompute>> pdl =
        CreateCudaRankCompute(config, layout, *weights, nullptr, options);
    absl::Status status = pdl.status();
    const int64_t pdl_blocks = MaxBlocks(eager_decodes);
    if (status.ok()) status = (*pdl)->AllocateKvCache(pdl_blocks, kBlockSize);
    const std::vector<int32_t> pool = BlockPool(pdl_blocks, pdl_blocks);
    for (const StepShape& d : eager_decodes) {
      if (!status.ok()) break;
      absl::StatusOr<StepTiming> t =
          TimeSteps(**pdl, d, config.vocab_size, kBlockSize, pool, 3, 30);
      if (!t.ok()) {
        status = t.status();
        break;
      }
      const std::string label =
          absl::StrCat("decode batch ", d.num_seqs, ", CUDA graphs, programmatic launch");
      Progress("%s: %.3f ms/step", label.c_str(), t->step_ms);
      if (t->tokens != graph_tokens[d.num_seqs]) {
        failures.push_back(absl::StrCat(label, ": greedy tokens differ from graphs on"));
      }
      rows.push_back({label, d, *std::move(t), true, true});
    }
    if (!status.ok()) {
      failures.push_back(absl::StrCat("programmatic launch: ", status.ToString()));
    }
  }
  weights.reset();
  // 6. Prefill attention alone: the tensor-core kernel against the CUDA-core one.
  const AttentionKernelTimes attention =
      TimePrefillAttentionKernels(config, tiny ? 256 : 2048, stream);
  Progress("prefill attention kernels measured");
  // 7. The decode GEMMs alone: the small-batch kernel against cuBLASLt.
  const std::vector<DecodeGemmTime> decode_gemms = TimeDecodeGemms(config, {1, 4, 8}, stream);
  Progress("decode GEMMs measured");
  CheckCuda(cudaStreamDestroy(stream), "cudaStreamDestroy");

  // ---- the tables ----
  const double matmul = static_cast<double>(MatmulParams(config, layout));
  const double lm_head = static_cast<double>(layout.vocab_end - layout.vocab_begin) *
                         config.hidden_size;
  const double weight_read = 2.0 * matmul;  // bf16
  const double kv_per_key =
      2.0 * 2.0 * config.num_kv_heads * config.head_dim * config.num_layers;  // K+V bf16
  const double attn_per_pair = 4.0 * config.num_heads * config.head_dim * config.num_layers;
  std::printf("\n## CudaRankCompute steps (wall clock around Forward + Sample, greedy)\n\n");
  std::printf("| step | ms/step | roofline ms | tokens/s | roofline tokens/s | %% of roofline | "
              "Sample part, ms | goal |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
  for (const Measured& m : rows) {
    const StepShape& sh = m.shape;
    double bytes = 0, flops = 0;
    if (sh.decode()) {
      bytes = weight_read + sh.num_seqs * sh.context() * kv_per_key;
      flops = 2.0 * matmul * sh.num_seqs + attn_per_pair * sh.num_seqs * sh.context();
    } else {
      const double t = static_cast<double>(sh.new_tokens);
      bytes = weight_read + t * kv_per_key;  // the prompt's K/V written once
      flops = 2.0 * (matmul - lm_head) * t + 2.0 * lm_head + attn_per_pair * t * (t + 1) / 2;
    }
    const bool memory_bound = bytes / bandwidth >= flops / gemm_rate;
    const double roof_ms = std::max(bytes / bandwidth, flops / gemm_rate) * 1e3;
    const double ms = m.timing.step_ms;
    const double tokens = static_cast<double>(sh.tokens());
    std::string goal;
    if (tiny || layers > 0) {
      goal = "(not the full model: no goal)";
    } else if (m.graphs && sh.decode() && sh.num_seqs == 1) {
      goal = absl::StrFormat("batch-1 decode >= 85%% of the HBM roofline: **%s**",
                             roof_ms / ms >= 0.85 ? "MET" : "NOT MET");
    } else if (m.graphs && sh.decode() && sh.num_seqs == 64) {
      goal = absl::StrFormat("batch-64 decode >= 7,000 tokens/s: **%s**",
                             tokens / (ms * 1e-3) >= 7000.0 ? "MET" : "NOT MET");
    } else if (!sh.decode()) {
      const double rate = flops / (ms * 1e-3);
      goal = absl::StrFormat("prefill >= 60%% of the GEMM rate: %.0f TFLOP/s = %.0f%%: **%s**",
                             rate / 1e12, 100.0 * rate / gemm_rate,
                             rate >= 0.6 * gemm_rate ? "MET" : "NOT MET");
    }
    const char* mode = !sh.decode()      ? ""
                       : m.programmatic ? ", CUDA graphs, programmatic launch"
                       : m.graphs       ? ", CUDA graphs"
                                        : ", no graphs";
    std::printf("| %s%s | %.3f | %.3f (%s: %s) | %.0f | %.0f | %.0f%% | %.3f | %s |\n",
                Describe(sh).c_str(), mode, ms, roof_ms, memory_bound ? "memory" : "compute",
                memory_bound ? absl::StrFormat("%.1f GB", bytes / 1e9).c_str()
                             : absl::StrFormat("%.1f TFLOP", flops / 1e12).c_str(),
                tokens / (ms * 1e-3), tokens / (roof_ms * 1e-3), 100.0 * roof_ms / ms,
                m.timing.sample_ms, goal.c_str());
  }
  absl::PrintF(
      "\nroofline: max(bytes / copy bandwidth, FLOPs / GEMM rate), both rates measured above; "
      "bytes = every matmul weight once (%.2f GB) + the K/V rows read (decode: batch x %d keys "
      "x %.0f KB; prefill: the prompt's written); FLOPs = 2 x matmul parameters per token + "
      "attention. Sample part = the logits GEMM + device sampling, inside ms/step. Decode "
      "batches are padded to power-of-two buckets (all four here are buckets already); the "
      "graph steps replay one captured graph per bucket (%d captures, %d replays in all).\n",
      weight_read / 1e9, kDecodePosition + 1, kv_per_key / 1e3, graph_stats.graph_captures,
      graph_stats.graph_launches);
  absl::PrintF(
      "\ndevice memory of the graph compute: weights %.2f GB (weight_bytes()), KV cache %.2f GB "
      "(%d blocks of %d tokens = %d tokens, kv_bytes(); KvBlocksThatFit at memory_fraction 0.9 "
      "said %d blocks), the rest (scratch for 4096 rows, logits, workspaces) %.2f GB; %.1f of "
      "%.1f GiB in use with the CUDA context (%.0f%%). Host weights filled in %.1f s on %d "
      "threads; CreateCudaRankCompute (upload included) %.1f s with graphs, %.1f s without.\n",
      static_cast<double>(weight_bytes) / 1e9, static_cast<double>(kv_bytes) / 1e9, kv_blocks,
      kBlockSize, kv_blocks * kBlockSize, fit,
      (static_cast<double>(free_before - free_created) - static_cast<double>(weight_bytes)) / 1e9,
      GiB(static_cast<double>(total - free_kv)), GiB(static_cast<double>(total)),
      100.0 * static_cast<double>(total - free_kv) / static_cast<double>(total), fill_s,
      threads, graph_create_s, eager_create_s);

  if (!breakdowns.empty()) {
    std::printf("\n### per-op device time of one step, ms (CudaRankCompute without graphs, an "
                "event after every op; Forward, then Sample)\n\n| op |");
    for (const Breakdown& b : breakdowns) std::printf(" %s |", b.name.c_str());
    std::printf("\n|---|");
    for (size_t i = 0; i < breakdowns.size(); ++i) std::printf("---:|");
    std::printf("\n");
    for (const char* op : kOps) {
      std::printf("| %s |", op);
      for (const Breakdown& b : breakdowns) {
        const auto it = b.ms.find(op);
        std::printf(" %.3f |", it == b.ms.end() ? 0.0 : it->second);
      }
      std::printf("\n");
    }
    std::printf("| total |");
    for (const Breakdown& b : breakdowns) {
      double sum = 0;
      for (const auto& [op, t] : b.ms) sum += t;
      std::printf(" %.3f |", sum);
    }
    std::printf("\n");
  }
  std::printf("\n### prefill attention alone: one layer, one %lld-token causal prompt, %d/%d "
              "heads of %d (CUDA events, median)\n\n| kernel | ms | TFLOP/s | %% of the GEMM "
              "rate |\n|---|---:|---:|---:|\n",
              static_cast<long long>(attention.tokens), config.num_heads, config.num_kv_heads,
              config.head_dim);
  for (const auto& [name, ms] : {std::pair<const char*, double>{"tensor cores (mma.sync)",
                                                                attention.tensor_core_ms},
                                 {"CUDA cores (fp32 FMA)", attention.simt_ms}}) {
    const double rate = attention.flops / (ms * 1e-3);
    std::printf("| %s | %.3f | %.1f | %.0f%% |\n", name, ms, rate / 1e12, 100.0 * rate / gemm_rate);
  }
  std::printf("\nlargest |difference| between the two kernels' outputs: %.3g (bf16 results)\n",
              attention.max_abs_diff);
  std::printf("\n### decode GEMMs alone: one layer's projections and lm_head (CUDA events, "
              "median; weights rotated past L2; %% of the copy-bandwidth roofline = weight bytes "
              "/ %.0f GB/s)\n\n| GEMM | tokens | rows x cols | small-batch kernel ms | %% | "
              "cuBLASLt ms | %% | small / cuBLASLt | max |diff| |\n"
              "|---|---:|---|---:|---:|---:|---:|---:|---:|\n",
              bandwidth / 1e9);
  for (const DecodeGemmTime& g : decode_gemms) {
    const double roofline_ms = g.weight_bytes / bandwidth * 1e3;
    std::printf("| %s | %lld | %lld x %lld | %.4f | %.0f%% | %.4f | %.0f%% | %.2f | %.3g |\n",
                g.name.c_str(), static_cast<long long>(g.tokens),
                static_cast<long long>(g.rows), static_cast<long long>(g.cols), g.small_batch_ms,
                100.0 * roofline_ms / g.small_batch_ms, g.cublaslt_ms,
                100.0 * roofline_ms / g.cublaslt_ms, g.small_batch_ms / g.cublaslt_ms,
                g.max_abs_diff);
  }
  Progress("done");
  if (!failures.empty()) {
    for (const std::string& f : failures) {
      std::fprintf(stderr, "tpserve_gpu_bench: FAILED: %s\n", f.c_str());
    }
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tpserve::bench::gpu

int main(int argc, char** argv) { return tpserve::bench::gpu::Main(argc, argv); }
