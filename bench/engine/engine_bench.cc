// tpserve-engine-bench: prefill and decode speed of the worker engine on one replica, run
// under mpirun (TP x PP ranks), with the decode step time set against its memory-bandwidth
// floor (bytes of weights read per step / measured read bandwidth). Prints one table row per
// measurement; bench/run_engine_bench.sh runs the set recorded in bench/RESULTS.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/common/memory_bandwidth.h"
#include "comm/mpi/mpi_communicator.h"
#include "worker/engine.h"

ABSL_FLAG(std::string, model, "", "model folder");
ABSL_FLAG(int, tp, 1, "tensor-parallel ranks");
ABSL_FLAG(int, pp, 1, "pipeline stages");
ABSL_FLAG(int, prefill_len, 512, "prompt length for the prefill measurement");
ABSL_FLAG(int, decode_context, 128, "prompt length before decode steps");
ABSL_FLAG(int, decode_steps, 16, "timed decode steps per batch size");
ABSL_FLAG(std::string, batches, "1,16", "decode batch sizes");
ABSL_FLAG(double, bandwidth_gbps, 0, "read bandwidth to compare with (0 = measure on rank 0)");
ABSL_FLAG(bool, header, true, "print the table header");
ABSL_FLAG(bool, bandwidth_only, false, "print the measured read bandwidth in GB/s and exit");

namespace tpserve {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(const std::chrono::steady_clock::time_point& t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes of weights a decode step reads: every projection and the lm_head (the embedding is
// a gather of a few rows).
double WeightBytesPerStep(const ModelConfig& c) {
  const double elem = c.torch_dtype == DType::kF32 ? 4 : 2;
  const double h = c.hidden_size, d = c.head_dim;
  const double layer = h * (c.num_heads + 2.0 * c.num_kv_heads) * d + h * c.num_heads * d +
                       3.0 * h * c.intermediate_size;
  return elem * (c.num_layers * layer + static_cast<double>(c.vocab_size) * h);
}

StepPlan Prefill(int first_seq, int count, int len, int64_t block_size, std::mt19937& rng,
                 int vocab) {
  StepPlan plan;
  const int blocks = static_cast<int>((len + 256 + block_size - 1) / block_size);
  for (int i = 0; i < count; ++i) {
    SeqWork s;
    s.seq_id = first_seq + i;
    for (int t = 0; t < len; ++t) s.tokens.push_back(static_cast<int32_t>(rng() % vocab));
    for (int b = 0; b < blocks; ++b) s.block_table.push_back(i * blocks + b);
    s.sample = true;
    plan.seqs.push_back(std::move(s));
  }
  return plan;
}

int Lead(Engine& engine, double bandwidth) {
  const ModelConfig& c = engine.config();
  std::mt19937 rng(5);
  const std::string layout = "tp" + std::to_string(engine.layout().tp) + "xpp" +
                             std::to_string(engine.layout().pp);
  if (absl::GetFlag(FLAGS_header)) {
    std::printf("| layout | measurement | median | unit | floor (bandwidth) | ratio to floor |\n");
    std::printf("|---|---|---|---|---|---|\n");
  }
  // Prefill: one long prompt, three times (the first warms caches and page tables).
  const int plen = absl::GetFlag(FLAGS_prefill_len);
  std::vector<double> times;
  for (int rep = 0; rep < 3; ++rep) {
    StepPlan plan = Prefill(0, 1, plen, engine.kv_block_size(), rng, c.vocab_size);
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<StepResult> r = engine.Step(plan);
    if (!r.ok()) {
      std::fprintf(stderr, "prefill: %s\n", r.status().ToString().c_str());
      return 1;
    }
    if (rep > 0) times.push_back(Seconds(t0));
  }
  std::printf("| %s | prefill %d tokens | %.1f | tokens/s | | |\n", layout.c_str(), plen,
              plen / Median(times));

  const double step_bytes = WeightBytesPerStep(c);
  const double floor_ms = step_bytes / (bandwidth * 1e9) * 1e3;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int batch = 0;
    if (!absl::SimpleAtoi(b, &batch) || batch < 1) continue;
    const int ctx = absl::GetFlag(FLAGS_decode_context);
    StepPlan plan = Prefill(0, batch, ctx, engine.kv_block_size(), rng, c.vocab_size);
    absl::StatusOr<StepResult> r = engine.Step(plan);
    if (!r.ok()) {
      std::fprintf(stderr, "decode prefill: %s\n", r.status().ToString().c_str());
      return 1;
    }
    std::vector<double> step_times;
    for (int step = 0; step < absl::GetFlag(FLAGS_decode_steps); ++step) {
      for (int i = 0; i < batch; ++i) {
        SeqWork& s = plan.seqs[i];
        s.start_pos = ctx + step;
        s.tokens = {r->seqs[i].token};
      }
      const auto t0 = std::chrono::steady_clock::now();
      r = engine.Step(plan);
      if (!r.ok()) {
        std::fprintf(stderr, "decode: %s\n", r.status().ToString().c_str());
        return 1;
      }
      step_times.push_back(Seconds(t0));
    }
    const double ms = Median(step_times) * 1e3;
    std::printf("| %s | decode batch %d, context %d | %.2f ms/step = %.1f | tokens/s | %.2f ms/step "
                "(%.0f MB at %.1f GB/s) | %.2fx |\n",
                layout.c_str(), batch, ctx, ms, batch * 1e3 / ms, floor_ms, step_bytes / 1e6,
                bandwidth, ms / floor_ms);
  }
  return 0;
}

int Run(int argc, char** argv) {
  if (absl::GetFlag(FLAGS_bandwidth_only)) {
    std::printf("%.2f\n", bench::MeasureReadBandwidth());
    return 0;
  }
  auto mpi = MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) return 2;
  std::unique_ptr<Communicator> world = (*mpi)->World();
  double bandwidth = absl::GetFlag(FLAGS_bandwidth_gbps);
  if (bandwidth <= 0 && world->rank() == 0) bandwidth = bench::MeasureReadBandwidth();
  EngineOptions o;
  o.tp = absl::GetFlag(FLAGS_tp);
  o.pp = absl::GetFlag(FLAGS_pp);
  o.kv_num_blocks = 16 * ((std::max(absl::GetFlag(FLAGS_prefill_len), absl::GetFlag(FLAGS_decode_context)) + 256) / 16 + 1);
  auto engine = Engine::Create(absl::GetFlag(FLAGS_model), o, *world);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  if (!(*engine)->is_leader()) return (*engine)->Serve().ok() ? 0 : 1;
  const int rc = Lead(**engine, bandwidth);
  return (*engine)->Shutdown().ok() ? rc : 1;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  int n = static_cast<int>(rest.size());
  return tpserve::Run(n, rest.data());
}
