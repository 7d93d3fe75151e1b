// Runs under mpirun: every rank builds an Engine; rank 0 runs the test cases and the others
// serve its steps. Proves the engine's logits, greedy tokens and prompt logprobs match the
// Hugging Face reference recorded by tests/data/make_golden.py, whatever the TP x PP layout.
// Built with TPSERVE_GOLDEN_SOLO it is one process without MPI (comm/solo_communicator.h,
// tp = pp = 1, CUDA device 0): the end-to-end check that runs on the GPU test machine, which
// has no MPI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#ifdef TPSERVE_GOLDEN_SOLO
#include "comm/solo_communicator.h"
#else
#include "comm/mpi/mpi_communicator.h"
#endif
#include "common/mapped_file.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "worker/engine.h"
#include "worker/cuda/cuda_rank_compute.h"
#include "worker/local_generate.h"

namespace tpserve {
namespace {

Engine* g_engine = nullptr;
std::string g_model;
EngineOptions g_options;  // as given to Engine::Create
// Allowed RowError of logits (and relative error of logprobs) against the reference. 1e-3
// for unquantised weights; a quantised GGUF run passes a larger one (see CMakeLists.txt).
double g_tolerance = 1e-3;
// Greedy tokens and top-1 tokens are compared only where the reference's top-1 margin is at
// least this: below it the run's own error may legitimately swap the top two.
double g_min_margin = 1e-2;
// How many greedy tokens (before each sequence's first near tie) must have been compared.
int g_min_compared = 11;

struct GoldenSeq {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;
  std::vector<float> margins;
  std::vector<float> logits;  // [prompt + greedy, vocab]
  std::vector<int32_t> All() const {
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), greedy.begin(), greedy.end());
    return all;
  }
};

std::vector<GoldenSeq> LoadGolden() {
  std::ifstream in(g_model + "/golden.json");
  nlohmann::json j = nlohmann::json::parse(in);
  absl::StatusOr<MappedFile> f = MappedFile::Open(g_model + "/golden_logits.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensors(
      std::string_view(reinterpret_cast<const char*>(f->data()), f->size()), "golden");
  EXPECT_TRUE(h.ok()) << h.status();
  std::vector<GoldenSeq> out;
  for (size_t i = 0; i < j["sequences"].size(); ++i) {
    GoldenSeq g;
    g.prompt = j["sequences"][i]["prompt"].get<std::vector<int32_t>>();
    g.greedy = j["sequences"][i]["greedy"].get<std::vector<int32_t>>();
    g.margins = j["sequences"][i]["margins"].get<std::vector<float>>();
    const std::string name = "seq" + std::to_string(i);
    for (const TensorInfo& t : h->tensors) {
      if (t.name != name) continue;
      const float* p = reinterpret_cast<const float*>(f->data() + h->data_offset + t.data_begin);
      g.logits.assign(p, p + t.NumElements());
    }
    out.push_back(std::move(g));
  }
  return out;
}

// max |a - b| / max |b| over one row: the numerics contract's relative error.
double RowError(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

// Hands out KV blocks in a scattered order so block tables are not contiguous.
std::vector<int32_t> ScatteredBlocks(int64_t count, int64_t total, uint32_t seed) {
  std::vector<int32_t> ids(total);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  ids.resize(count);
  return ids;
}

class EngineGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    golden_ = LoadGolden();
    ASSERT_FALSE(golden_.empty());
    vocab_ = g_engine->config().vocab_size;
  }
  // Sequence i's blocks: a disjoint share of a shuffled block list, sized for the longest.
  std::vector<int32_t> Table(size_t i, uint32_t seed) {
    size_t longest = 0;
    for (const GoldenSeq& g : golden_) longest = std::max(longest, g.All().size());
    const int64_t per_seq = (longest + g_engine->kv_block_size() - 1) / g_engine->kv_block_size();
    std::vector<int32_t> all = ScatteredBlocks(per_seq * golden_.size(), g_engine->kv_num_blocks(), seed);
    return std::vector<int32_t>(all.begin() + i * per_seq, all.begin() + (i + 1) * per_seq);
  }
  std::vector<GoldenSeq> golden_;
  int64_t vocab_ = 0;
};

TEST_F(EngineGoldenTest, WholeSequencePrefillLogitsMatchReference) {
  StepPlan plan;
  for (size_t i = 0; i < golden_.size(); ++i) {
    SeqWork s;
    s.seq_id = i;
    s.tokens = golden_[i].All();
    s.block_table = Table(i, 1);
    s.return_logits = true;
    plan.seqs.push_back(s);
  }
  absl::StatusOr<StepResult> r = g_engine->Step(plan);
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t i = 0; i < golden_.size(); ++i) {
    const int64_t rows = golden_[i].All().size();
    ASSERT_EQ(r->seqs[i].logits.size(), size_t(rows * vocab_));
    for (int64_t row = 0; row < rows; ++row) {
      EXPECT_LT(RowError(r->seqs[i].logits.data() + row * vocab_,
                         golden_[i].logits.data() + row * vocab_, vocab_),
                g_tolerance)
          << "seq " << i << " position " << row;
    }
  }
}

// Up to PP plans over disjoint sequences can be in the pipeline at once; results come back in
// submit order and match the reference as when run one at a time.
TEST_F(EngineGoldenTest, PipelinedMicroBatchesMatchReference) {
  const int n = static_cast<int>(golden_.size());
  std::vector<StepPlan> plans(n);
  for (int i = 0; i < n; ++i) {
    SeqWork s;
    s.seq_id = i;
    s.tokens = golden_[i].All();
    s.block_table = Table(i, 4);
    s.return_logits = true;
    plans[i].step_id = 100 + i;
    plans[i].seqs.push_back(s);
  }
  const int depth = g_engine->layout().pp;
  std::vector<StepResult> results;
  for (int i = 0; i < n; ++i) {
    if (g_engine->in_flight() == depth) {
      absl::StatusOr<StepResult> r = g_engine->Collect();
      ASSERT_TRUE(r.ok()) << r.status();
      results.push_back(*r);
    }
    ASSERT_TRUE(g_engine->Submit(plans[i]).ok());
  }
  while (g_engine->in_flight() > 0) {
    absl::StatusOr<StepResult> r = g_engine->Collect();
    ASSERT_TRUE(r.ok()) << r.status();
    results.push_back(*r);
  }
  ASSERT_EQ(static_cast<int>(results.size()), n);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(results[i].step_id, uint64_t(100 + i));
    const int64_t rows = golden_[i].All().size();
    for (int64_t row = 0; row < rows; ++row) {
      EXPECT_LT(RowError(results[i].seqs[0].logits.data() + row * vocab_,
                         golden_[i].logits.data() + row * vocab_, vocab_),
                g_tolerance)
          << "seq " << i << " position " << row;
    }
  }
}

// Sequences join at different steps and advance by random chunk sizes (1 = decode), so
// every step mixes prefill chunks and decode tokens of different lengths.
TEST_F(EngineGoldenTest, MixedPrefillAndDecodeBatchesMatchReference) {
  std::mt19937 rng(7);
  std::vector<size_t> done(golden_.size(), 0);
  std::vector<std::vector<int32_t>> tables;
  for (size_t i = 0; i < golden_.size(); ++i) tables.push_back(Table(i, 2));
  for (int step = 0;; ++step) {
    StepPlan plan;
    plan.step_id = step;
    std::vector<size_t> owners;
    for (size_t i = 0; i < golden_.size(); ++i) {
      const std::vector<int32_t> all = golden_[i].All();
      if (done[i] == all.size() || step < int(i)) continue;
      const size_t n = std::min<size_t>(all.size() - done[i], 1 + rng() % 7);
      SeqWork s;
      s.seq_id = i;
      s.start_pos = static_cast<int32_t>(done[i]);
      s.tokens.assign(all.begin() + done[i], all.begin() + done[i] + n);
      s.block_table = tables[i];
      s.return_logits = true;
      plan.seqs.push_back(s);
      owners.push_back(i);
    }
    if (plan.seqs.empty()) break;
    absl::StatusOr<StepResult> r = g_engine->Step(plan);
    ASSERT_TRUE(r.ok()) << r.status();
    for (size_t k = 0; k < owners.size(); ++k) {
      const size_t i = owners[k];
      const size_t n = plan.seqs[k].tokens.size();
      for (size_t row = 0; row < n; ++row) {
        EXPECT_LT(RowError(r->seqs[k].logits.data() + row * vocab_,
                           golden_[i].logits.data() + (done[i] + row) * vocab_, vocab_),
                  g_tolerance)
            << "seq " << i << " position " << done[i] + row << " step " << step;
      }
      done[i] += n;
    }
  }
}

TEST_F(EngineGoldenTest, GreedyContinuationsMatchReferenceWhereMarginIsClear) {
  std::vector<LocalRequest> reqs;
  for (const GoldenSeq& g : golden_) {
    LocalRequest r;
    r.prompt = g.prompt;
    r.max_new_tokens = static_cast<int>(g.greedy.size());
    reqs.push_back(r);
  }
  absl::StatusOr<LocalOutput> out = GenerateLocally(*g_engine, reqs, 5, nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  int compared = 0;
  for (size_t i = 0; i < golden_.size(); ++i) {
    for (size_t t = 0; t < golden_[i].greedy.size(); ++t) {
      if (golden_[i].margins[t] < g_min_margin) break;  // a near tie: later tokens may diverge
      EXPECT_EQ(out->tokens[i][t], golden_[i].greedy[t]) << "seq " << i << " token " << t;
      ++compared;
    }
  }
  EXPECT_GE(compared, g_min_compared);
}

// The draw is keyed by (seed, position). On the CPU, whose logits do not depend on the batch
// (bit for bit), a request samples the same tokens alone or batched. On CUDA the batch changes
// the GEMM shapes and the decode split count, so logits may differ in their last bits and flip
// a draw at a cut-off: there the same batch must give the same tokens again.
TEST_F(EngineGoldenTest, SeededSamplingDoesNotDependOnTheBatch) {
  auto request = [&](size_t i, uint64_t seed) {
    LocalRequest r;
    r.prompt = golden_[i].prompt;
    r.max_new_tokens = 12;
    r.sampling.temperature = 4.0f;  // the tiny Llama's logits are peaked: flatten them
    r.sampling.top_p = 0.99f;
    r.sampling.top_k = 50;
    r.sampling.repetition_penalty = 1.3f;
    r.sampling.seed = seed;
    return r;
  };
  absl::StatusOr<LocalOutput> alone = GenerateLocally(*g_engine, {request(0, 42)}, 0, nullptr);
  ASSERT_TRUE(alone.ok()) << alone.status();
  const std::vector<LocalRequest> batch = {request(1, 7), request(2, 8), request(0, 42),
                                           request(3, 9)};
  absl::StatusOr<LocalOutput> batched = GenerateLocally(*g_engine, batch, 3, nullptr);
  ASSERT_TRUE(batched.ok()) << batched.status();
  if (g_engine->backend() == "cuda") {
    absl::StatusOr<LocalOutput> again = GenerateLocally(*g_engine, batch, 3, nullptr);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->tokens, batched->tokens);
    absl::StatusOr<LocalOutput> alone_again =
        GenerateLocally(*g_engine, {request(0, 42)}, 0, nullptr);
    ASSERT_TRUE(alone_again.ok()) << alone_again.status();
    EXPECT_EQ(alone_again->tokens[0], alone->tokens[0]);
  } else {
    EXPECT_EQ(alone->tokens[0], batched->tokens[2]);
  }
  absl::StatusOr<LocalOutput> other_seed = GenerateLocally(*g_engine, {request(0, 43)}, 0, nullptr);
  ASSERT_TRUE(other_seed.ok());
  EXPECT_NE(alone->tokens[0], other_seed->tokens[0]);
}

TEST_F(EngineGoldenTest, PromptLogprobsMatchReferenceLogSoftmax) {
  const GoldenSeq& g = golden_[0];
  const size_t half = g.prompt.size() / 2;
  std::vector<int32_t> table = Table(0, 3);
  std::vector<TokenLogprob> got;
  for (int chunk = 0; chunk < 2; ++chunk) {
    StepPlan plan;
    SeqWork s;
    s.start_pos = chunk == 0 ? 0 : static_cast<int32_t>(half);
    s.tokens.assign(g.prompt.begin() + s.start_pos, chunk == 0 ? g.prompt.begin() + half : g.prompt.end());
    s.next_prompt_token = chunk == 0 ? g.prompt[half] : -1;
    s.block_table = table;
    s.prompt_logprobs = 3;
    s.sample = chunk == 1;
    s.logprobs = 2;
    plan.seqs.push_back(s);
    absl::StatusOr<StepResult> r = g_engine->Step(plan);
    ASSERT_TRUE(r.ok()) << r.status();
    got.insert(got.end(), r->seqs[0].prompt_logprobs.begin(), r->seqs[0].prompt_logprobs.end());
    if (chunk == 1) {
      EXPECT_EQ(r->seqs[0].token, g.greedy[0]);
      ASSERT_EQ(r->seqs[0].sampled.top.size(), 2u);
      EXPECT_EQ(r->seqs[0].sampled.top[0].token, g.greedy[0]);
    }
  }
  ASSERT_EQ(got.size(), g.prompt.size() - 1);
  for (size_t p = 0; p + 1 < g.prompt.size(); ++p) {
    const float* row = g.logits.data() + p * vocab_;
    double z = 0;
    const float mx = *std::max_element(row, row + vocab_);
    for (int64_t v = 0; v < vocab_; ++v) z += std::exp(double(row[v]) - mx);
    const double want = row[g.prompt[p + 1]] - mx - std::log(z);
    EXPECT_EQ(got[p].token, g.prompt[p + 1]);
    EXPECT_NEAR(got[p].logprob, want, g_tolerance * std::max(1.0, std::fabs(want))) << p;
    ASSERT_EQ(got[p].top.size(), 3u);
    const int64_t best = std::max_element(row, row + vocab_) - row;
    float second = -INFINITY;
    for (int64_t v = 0; v < vocab_; ++v) {
      if (v != best) second = std::max(second, row[v]);
    }
    if (row[best] - second >= g_min_margin) {
      EXPECT_EQ(got[p].top[0].token, best) << p;
    }
  }
}

TEST_F(EngineGoldenTest, InvalidPlanIsRefusedAndTheEngineKeepsServing) {
  StepPlan bad;
  SeqWork s;
  s.tokens = {static_cast<int32_t>(vocab_)};
  s.block_table = {0};
  bad.seqs.push_back(s);
  absl::StatusOr<StepResult> r = g_engine->Step(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("outside the vocabulary"), std::string_view::npos);
  bad.seqs[0].tokens = {1};
  bad.seqs[0].block_table = {};
  EXPECT_EQ(g_engine->Step(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.seqs[0].block_table = {static_cast<int32_t>(g_engine->kv_num_blocks())};
  EXPECT_EQ(g_engine->Step(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.seqs[0].block_table = {0};
  bad.seqs[0].sample = true;
  bad.seqs[0].sampling.top_p = 0.0f;
  EXPECT_EQ(g_engine->Step(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.seqs[0].sampling.top_p = 1.0f;
  EXPECT_TRUE(g_engine->Step(bad).ok());
}

// With several stages, CUDA hands hidden states over NCCL unless told to use the host (so a
// passing CUDA run with PP > 1 proves the GPU-to-GPU path); the CPU always goes through the
// host; one stage hands over nothing.
TEST_F(EngineGoldenTest, StagesHandOverTheWayAskedFor) {
  std::string want = "none";
  if (g_engine->layout().pp > 1) {
    want = g_engine->backend() == "cuda" ? g_options.stage_handoff : "host";
  }
  EXPECT_EQ(g_engine->stage_handoff(), want);
}

// A rank holds its 1/TP slice of its stage's layers (KV heads replicated when TP exceeds
// them), plus the embedding on the first stage and its lm_head vocab shard on the last. The CPU
// keeps the checkpoint's matrices and fp32 norms; CUDA keeps every matrix and norm as bf16 in
// 256-byte aligned pieces of one allocation (worker/cuda/cuda_rank_compute.cc).
TEST_F(EngineGoldenTest, RankOwnsOnlyItsShareOfTheWeights) {
  const ModelConfig& c = g_engine->config();
  const Layout& l = g_engine->layout();
  const bool cuda = g_engine->backend() == "cuda";
  const int64_t checkpoint_elem = c.torch_dtype == DType::kF32 ? 4 : 2;
  const int64_t elem = cuda ? 2 : checkpoint_elem, norm_elem = cuda ? 2 : 4;
  auto piece = [&](int64_t bytes) { return cuda ? (bytes + 255) / 256 * 256 : bytes; };
  const int64_t h = c.hidden_size, d = c.head_dim;
  const int64_t mlp = l.mlp_end - l.mlp_begin;
  const int64_t norm = piece(norm_elem * h);
  const int64_t layer = 2 * norm + piece(elem * (l.q_heads() + 2 * l.kv_heads()) * d * h) +
                        piece(elem * h * l.q_heads() * d) + piece(elem * 2 * mlp * h) +
                        piece(elem * h * mlp);
  int64_t expected = l.num_layers() * layer;
  if (l.first_stage()) expected += piece(elem * c.vocab_size * h);
  if (l.last_stage()) expected += norm + piece(elem * (l.vocab_end - l.vocab_begin) * h);
  EXPECT_EQ(int64_t(g_engine->weight_bytes()), expected);
  const int64_t whole_layer =
      checkpoint_elem * (h * (c.num_heads + 2 * c.num_kv_heads) * d + h * c.num_heads * d +
                         3 * h * c.intermediate_size) + 2 * h * 4;
  // And far less than the whole model when the job is split.
  const int64_t whole = c.num_layers * whole_layer + 2 * checkpoint_elem * c.vocab_size * h;
  if (l.tp * l.pp > 1) {
    EXPECT_LT(int64_t(g_engine->weight_bytes()), whole * 3 / 4);
  }
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  tpserve::EngineOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--model") tpserve::g_model = value;
    if (key == "--tp") options.tp = std::stoi(value);
    if (key == "--pp") options.pp = std::stoi(value);
    if (key == "--tolerance") tpserve::g_tolerance = std::stod(value);
    if (key == "--min_margin") tpserve::g_min_margin = std::stod(value);
    if (key == "--min_compared") tpserve::g_min_compared = std::stoi(value);
    if (key == "--block_size") options.kv_block_size = std::stoi(value);
    if (key == "--kv_num_blocks") options.kv_num_blocks = std::stoi(value);
    if (key == "--backend") options.backend = value;
    if (key == "--stage_handoff") options.stage_handoff = value;
    if (key == "--layers_per_stage") {
      for (absl::string_view p : absl::StrSplit(value, ',')) {
        int n = 0;
        if (absl::SimpleAtoi(p, &n)) options.layers_per_stage.push_back(n);
      }
    }
  }
#ifdef TPSERVE_GOLDEN_SOLO
  if (options.tp != 1 || options.pp != 1) {
    std::fprintf(stderr, "one process without MPI: --tp and --pp must be 1\n");
    return 2;
  }
  std::unique_ptr<tpserve::Communicator> world = std::make_unique<tpserve::SoloCommunicator>();
  absl::StatusOr<int> local_rank = 0;
#else
  auto mpi = tpserve::MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) return 2;
  std::unique_ptr<tpserve::Communicator> world = (*mpi)->World();
  absl::StatusOr<int> local_rank = tpserve::NodeLocalRank();
  if (!local_rank.ok()) return 2;
#endif
  options.cuda_device = *local_rank;
  if (options.backend == "cuda" && tpserve::CudaDeviceCount() <= *local_rank) {
    // Every rank of one node sees the same devices, so all ranks skip together.
    std::fprintf(stderr, "rank %d: no CUDA device %d visible: skipped\n", world->rank(), *local_rank);
    return 77;
  }
  tpserve::g_options = options;
  auto engine = tpserve::Engine::Create(tpserve::g_model, options, *world);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  if (!(*engine)->is_leader()) {
    if (!(*engine)->Serve().ok()) world->Abort(1);
    return 0;
  }
  tpserve::g_engine = engine->get();
  const int rc = RUN_ALL_TESTS();
  if (!(*engine)->Shutdown().ok()) world->Abort(1);
  return rc;
}
