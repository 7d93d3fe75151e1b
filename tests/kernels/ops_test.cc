// Backend-ops test for kernels/ops.h.
//  1. Hand-computed cases prove the references (ref::) and the fast ops on small inputs whose
//     answers are known without running either (RmsNorm of [3, 4], RoPE at position 0, one
//     key, sliding-window and causal masks read off one-hot values, GQA mapping, a scattered
//     block table, integer MatMuls that fp32 must get exactly, a double-precision dot product).
//  2. Table-driven cases run every fast op at every instruction-set level this CPU supports
//     (scalar, AVX2, AVX-512; a missing level reports SKIPPED) against its reference on seeded
//     random inputs: odd shapes, one token, F32/F16/BF16 weights, NaN injection. Outputs sit
//     between guard zones that must survive, and start filled with a NaN sentinel so that an
//     element the fast op forgets to write fails NaN parity.
// Error measure: "normalised error" = max_i |fast_i - ref_i| / max_i |ref_i| over finite
// values, with NaN/inf parity element by element; each case states its tolerance.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace tpserve::kernels {
namespace cpu {
// gtest prints parameters by name instead of as bytes.
void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }
}  // namespace cpu
namespace {

using cpu::Isa;

// ------------------------------- helpers -------------------------------

constexpr size_t kGuard = 64;                     // floats on each side of an output
constexpr uint32_t kGuardBits = 0x7fa5a5a5u;      // signalling-NaN pattern no op produces
constexpr uint32_t kUnwrittenBits = 0x7fc0deadu;  // quiet NaN: "the op never wrote this"

// A float buffer with guard zones before and after; starts filled with kUnwrittenBits.
class Guarded {
 public:
  explicit Guarded(size_t n) : n_(n), buf_(n + 2 * kGuard) {
    for (size_t i = 0; i < buf_.size(); ++i) {
      buf_[i] = std::bit_cast<float>(i < kGuard || i >= kGuard + n ? kGuardBits : kUnwrittenBits);
    }
  }
  Guarded(const std::vector<float>& init) : Guarded(init.size()) {
    std::copy(init.begin(), init.end(), data());
  }
  float* data() { return buf_.data() + kGuard; }
  const float* data() const { return buf_.data() + kGuard; }
  size_t size() const { return n_; }
  std::vector<float> vec() const { return {data(), data() + n_}; }

  ::testing::AssertionResult GuardsIntact() const {
    for (size_t i = 0; i < buf_.size(); ++i) {
      if (i >= kGuard && i < kGuard + n_) continue;
      if (std::bit_cast<uint32_t>(buf_[i]) != kGuardBits) {
        const long off = i < kGuard ? static_cast<long>(i) - static_cast<long>(kGuard)
                                    : static_cast<long>(i - kGuard - n_);
        return ::testing::AssertionFailure()
               << (i < kGuard ? "underrun: element " : "overrun: element ") << off
               << (i < kGuard ? " before the buffer" : " past the end") << " was written";
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  size_t n_;
  std::vector<float> buf_;
};

// NaN/inf parity element by element, then normalised error <= tol.
::testing::AssertionResult Matches(const float* got, const float* want, size_t n, double tol) {
  double max_err = 0.0, max_ref = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) {
      return ::testing::AssertionFailure()
             << "NaN parity broken at " << i << ": got " << got[i] << ", want " << want[i];
    }
    if (std::isnan(want[i])) continue;
    if (std::isinf(got[i]) || std::isinf(want[i])) {
      if (got[i] != want[i]) {
        return ::testing::AssertionFailure()
               << "inf parity broken at " << i << ": got " << got[i] << ", want " << want[i];
      }
      continue;
    }
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (err > max_err) max_err = err, worst = i;
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  const double norm_err = max_ref > 0 ? max_err / max_ref : max_err;
  if (norm_err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "normalised error " << norm_err << " > tolerance " << tol << " (worst at " << worst
         << ": got " << got[worst] << ", want " << want[worst] << ", max |ref| " << max_ref << ")";
}
::testing::AssertionResult Matches(const std::vector<float>& got, const std::vector<float>& want,
                                   double tol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  return Matches(got.data(), want.data(), got.size(), tol);
}

std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// A weight matrix stored in `dtype`, built from fp32 values (rounded as torch rounds).
struct HostWeights {
  std::vector<float> f32;
  std::vector<uint16_t> half;
  WeightMatrix view;
};
HostWeights MakeWeights(DType dtype, int64_t rows, int64_t cols, const std::vector<float>& v) {
  HostWeights w;
  w.f32 = v;
  if (dtype != DType::kF32) {
    w.half.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      w.half[i] = dtype == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
    }
  }
  w.view = {dtype == DType::kF32 ? static_cast<const void*>(w.f32.data()) : w.half.data(), dtype,
            rows, cols};
  return w;
}

std::vector<Isa> AllIsas() { return {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}; }

// Runs the body at one instruction-set level; restores the best level afterwards.
class IsaScope {
 public:
  explicit IsaScope(Isa isa) : ok_(cpu::ForceIsa(isa)) {}
  ~IsaScope() { cpu::ForceIsa(cpu::BestSupportedIsa()); }
  bool ok() const { return ok_; }

 private:
  bool ok_;
};

// The same op set, reference or fast, so hand-computed cases check both.
struct Impl {
  const char* name;
  decltype(&MatMul) matmul;
  decltype(&Embedding) embedding;
  decltype(&RmsNorm) rms_norm;
  decltype(&AddRmsNorm) add_rms_norm;
  decltype(&ApplyRope) apply_rope;
  decltype(&SwiGlu) swiglu;
  decltype(&WriteKvCache) write_kv;
  decltype(&PagedAttention) attention;
};
const Impl kRef{"ref",         &ref::MatMul,       &ref::Embedding,
                &ref::RmsNorm, &ref::AddRmsNorm,   &ref::ApplyRope,
                &ref::SwiGlu,  &ref::WriteKvCache, &ref::PagedAttention};
const Impl kFast{"fast",     &MatMul, &Embedding,    &RmsNorm,       &AddRmsNorm,
                 &ApplyRope, &SwiGlu, &WriteKvCache, &PagedAttention};

// =========================== hand-computed cases ===========================

TEST(HandComputedOps, RmsNormOf3And4IsThreeAndFourOverRootOf12Point5) {
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    const float x[2] = {3, 4};
    const float ones[2] = {1, 1}, w[2] = {2, 0.5f};
    float y[2];
    impl.rms_norm(x, ones, 1, 2, 0.0f, y);  // rms = sqrt((9 + 16) / 2) = 3.5355339
    EXPECT_NEAR(y[0], 0.84852814f, 1e-7);
    EXPECT_NEAR(y[1], 1.13137085f, 1e-7);
    impl.rms_norm(x, w, 1, 2, 0.0f, y);
    EXPECT_NEAR(y[0], 1.69705627f, 2e-7);
    EXPECT_NEAR(y[1], 0.56568542f, 1e-7);
    impl.rms_norm(x, ones, 1, 2, 12.5f, y);  // eps inside the root: sqrt(25) = 5
    EXPECT_FLOAT_EQ(y[0], 0.6f);
    EXPECT_FLOAT_EQ(y[1], 0.8f);
  }
}

TEST(HandComputedOps, AddRmsNormUpdatesTheResidualThenNormalisesIt) {
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float x[2] = {1, 2};
    const float r[2] = {2, 2}, ones[2] = {1, 1};
    float y[2];
    impl.add_rms_norm(x, r, ones, 1, 2, 0.0f, y);
    EXPECT_EQ(x[0], 3.0f);
    EXPECT_EQ(x[1], 4.0f);
    EXPECT_NEAR(y[0], 0.84852814f, 1e-7);
    EXPECT_NEAR(y[1], 1.13137085f, 1e-7);
  }
}

TEST(HandComputedOps, RopeTableFollowsHfFp32Recipe) {
  constexpr int64_t kDim = 128, kPositions = 4096;
  std::vector<float> cos(kPositions * kDim / 2), sin(cos.size());
  BuildRopeTable(1e6, kDim, kPositions, cos.data(), sin.data());
  for (int64_t i : {int64_t{0}, int64_t{1}, int64_t{17}, int64_t{63}}) {
    // inv_freq_i = theta^(-2i/d) rounded to fp32 (within 2 ulp of the exact value).
    const double exact_inv = std::pow(1e6, -2.0 * static_cast<double>(i) / kDim);
    const float inv = 1.0f / std::pow(1e6f, static_cast<float>(2 * i) / kDim);
    EXPECT_NEAR(inv, exact_inv, 2.5e-7 * exact_inv) << "i=" << i;
    for (int64_t p : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{1000}, int64_t{4095}}) {
      // The angle is the fp32 product float(p) * inv_freq (HF multiplies in fp32), so for
      // large p it differs from p * exact_inv; cos/sin of that fp32 angle within 1 ulp.
      const float angle = static_cast<float>(p) * inv;
      EXPECT_NEAR(cos[p * kDim / 2 + i], std::cos(static_cast<double>(angle)), 1.2e-7)
          << "p=" << p << " i=" << i;
      EXPECT_NEAR(sin[p * kDim / 2 + i], std::sin(static_cast<double>(angle)), 1.2e-7)
          << "p=" << p << " i=" << i;
    }
  }
  EXPECT_EQ(cos[0], 1.0f);
  EXPECT_EQ(sin[0], 0.0f);
  EXPECT_EQ(cos[4095 * kDim / 2], std::cos(4095.0f));  // inv_freq_0 = 1: angle is exact
}

TEST(HandComputedOps, RopeAtPositionZeroIsIdentity) {
  constexpr int64_t kDim = 8;
  std::vector<float> cos(4 * kDim / 2), sin(cos.size());
  BuildRopeTable(10000.0, kDim, 4, cos.data(), sin.data());
  const RopeTable table{4, kDim / 2, cos.data(), sin.data()};
  std::mt19937 rng(1);
  const std::vector<float> x0 = RandomFloats(3 * 2 * kDim, rng);
  const int32_t pos[3] = {0, 0, 0};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    std::vector<float> x = x0;
    impl.apply_rope(x.data(), 3, 2, kDim, pos, table);
    EXPECT_EQ(0, std::memcmp(x.data(), x0.data(), x.size() * sizeof(float)));
  }
}

TEST(HandComputedOps, RopeRotatesElementIWithElementIPlusHalfDim) {
  // head_dim 4, theta 10000: inv_freq = [1, 0.01]; at position 1 the pair (0, 2) turns by
  // 1 rad and the pair (1, 3) by 0.01 rad (HF's rotate_half, not interleaved pairs).
  std::vector<float> cos(2 * 2), sin(2 * 2);
  BuildRopeTable(10000.0, 4, 2, cos.data(), sin.data());
  const RopeTable table{2, 2, cos.data(), sin.data()};
  const int32_t pos[1] = {1};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float x[4] = {1, 0, 0, 1};
    impl.apply_rope(x, 1, 1, 4, pos, table);
    EXPECT_NEAR(x[0], std::cos(1.0), 1e-7);
    EXPECT_NEAR(x[2], std::sin(1.0), 1e-7);
    EXPECT_NEAR(x[1], -std::sin(0.01), 1e-7);
    EXPECT_NEAR(x[3], std::cos(0.01), 1e-7);
  }
}

TEST(HandComputedOps, SwiGluIsSiluOfGateTimesUp) {
  // gate_up row: [gate | up].
  const float gate_up[8] = {0, 1, -1, 20, 5, 2, 2, 1};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float out[4];
    impl.swiglu(gate_up, 1, 4, out);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_NEAR(out[1], 2 * 0.7310585786, 3e-7);
    EXPECT_NEAR(out[2], 2 * -0.2689414214, 3e-7);
    EXPECT_NEAR(out[3], 20.0 / (1.0 + std::exp(-20.0)), 3e-6);
  }
}

// An empty step reaches SwiGlu with no tokens (a pipeline stage's empty step in
// CpuRankCompute::Forward); the fast kernel once divided by the token count there.
TEST(HandComputedOps, SwiGluOfNoTokensWritesNothing) {
  const float gate_up[2] = {1, 2};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float out[1] = {-7.0f};
    impl.swiglu(gate_up, 0, 1, out);
    EXPECT_EQ(out[0], -7.0f);
  }
}

TEST(HandComputedOps, EmbeddingCopiesTheChosenRowsWidened) {
  const std::vector<float> values = {1, 2, 3, 4, -0.5f, 256};  // exact in BF16 and F16
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const HostWeights table = MakeWeights(dt, 3, 2, values);
    const int32_t ids[3] = {2, 0, 2};
    for (const Impl& impl : {kRef, kFast}) {
      SCOPED_TRACE(std::string(impl.name) + " " + std::string(DTypeName(dt)));
      float y[6];
      impl.embedding(ids, 3, table.view, y);
      const float want[6] = {-0.5f, 256, 1, 2, -0.5f, 256};
      EXPECT_EQ(0, std::memcmp(y, want, sizeof y));
    }
  }
}

TEST(HandComputedOps, MatMulOfTinyMatrixIsXTimesWTransposed) {
  const float x[3] = {1, 2, 3};
  const HostWeights w = MakeWeights(DType::kF32, 4, 3, {1, 0, 0, 0, 1, 0, 1, 1, 1, -1, 0.5f, 2});
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float y[4];
    impl.matmul(x, 1, w.view, y);
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[1], 2.0f);
    EXPECT_EQ(y[2], 6.0f);
    EXPECT_EQ(y[3], 6.0f);
  }
}

// Small integers make every partial sum exact in fp32 whatever the summation order, so
// every kernel (GEMV and GEMM paths, every dtype and level) must agree bit for bit.
TEST(HandComputedOps, MatMulOfSmallIntegersIsExactOnEveryPathAndLevel) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-8, 8);
  constexpr int64_t kRows = 37, kCols = 1001;
  for (int64_t tokens : {int64_t{1}, int64_t{3}, int64_t{9}, int64_t{16}, cpu::kGemvMaxTokens,
                         cpu::kGemvMaxTokens + 1, int64_t{40}}) {
    std::vector<float> x(tokens * kCols), wv(kRows * kCols);
    for (float& v : x) v = static_cast<float>(small(rng));
    for (float& v : wv) v = static_cast<float>(small(rng));
    std::vector<float> want(tokens * kRows);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t r = 0; r < kRows; ++r) {
        int64_t s = 0;
        for (int64_t c = 0; c < kCols; ++c) {
          s += static_cast<int64_t>(x[t * kCols + c]) * static_cast<int64_t>(wv[r * kCols + c]);
        }
        want[t * kRows + r] = static_cast<float>(s);
      }
    }
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      const HostWeights w = MakeWeights(dt, kRows, kCols, wv);
      for (Isa isa : AllIsas()) {
        IsaScope scope(isa);
        if (!scope.ok()) continue;
        SCOPED_TRACE(std::string(DTypeName(dt)) + " " + std::string(cpu::IsaName(isa)) +
                     " tokens=" + std::to_string(tokens));
        std::vector<float> y(want.size()), yr(want.size());
        MatMul(x.data(), tokens, w.view, y.data());
        ref::MatMul(x.data(), tokens, w.view, yr.data());
        EXPECT_EQ(y, want);
        EXPECT_EQ(yr, want);
      }
    }
  }
}

// The reference against an independent double-precision dot product, and the fast op
// against both, on random BF16 weights.
TEST(HandComputedOps, MatMulAgreesWithDoublePrecisionDotProduct) {
  std::mt19937 rng(11);
  constexpr int64_t kTokens = 5, kRows = 19, kCols = 777;
  const std::vector<float> x = RandomFloats(kTokens * kCols, rng);
  const HostWeights w = MakeWeights(DType::kBF16, kRows, kCols, RandomFloats(kRows * kCols, rng));
  std::vector<float> y(kTokens * kRows), yr(y.size());
  MatMul(x.data(), kTokens, w.view, y.data());
  ref::MatMul(x.data(), kTokens, w.view, yr.data());
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t r = 0; r < kRows; ++r) {
      double dot = 0, mag = 0;
      for (int64_t c = 0; c < kCols; ++c) {
        const double p = static_cast<double>(x[t * kCols + c]) *
                         static_cast<double>(Bf16ToF32(w.half[r * kCols + c]));
        dot += p;
        mag += std::fabs(p);
      }
      // ref: one rounding of a double sum (error ~1e-16 * mag) to fp32.
      EXPECT_NEAR(yr[t * kRows + r], dot, std::fabs(dot) * 6e-8 + mag * 1e-12);
      // fast: fp32 accumulation, error bounded by a few ulp of the sum of |products|.
      EXPECT_NEAR(y[t * kRows + r], dot, mag * 1e-6);
    }
  }
}

// ---- attention hand cases ----

// A cache for one sequence whose positions [0, len) live in `table`.
struct HandCache {
  HandCache(int64_t num_blocks, int64_t block_size, int64_t kv_heads, int64_t dim)
      : k(static_cast<size_t>(num_blocks * block_size * kv_heads * dim), 0.0f), v(k.size(), 0.0f) {
    view = {k.data(), v.data(), num_blocks, block_size, kv_heads, dim};
  }
  float* KAt(const std::vector<int32_t>& table, int64_t pos, int64_t head) {
    return k.data() + Offset(table, pos, head);
  }
  float* VAt(const std::vector<int32_t>& table, int64_t pos, int64_t head) {
    return v.data() + Offset(table, pos, head);
  }
  int64_t Offset(const std::vector<int32_t>& table, int64_t pos, int64_t head) const {
    const int64_t slot = table[pos / view.block_size] * view.block_size + pos % view.block_size;
    return (slot * view.kv_heads + head) * view.head_dim;
  }
  std::vector<float> k, v;
  KvCacheView view;
};

AttentionParams OneSeqParams(const float* q, float* out, int64_t q_heads, const int32_t* map,
                             const KvCacheView& cache, const AttentionSeq* seq, int64_t window) {
  AttentionParams p;
  p.q = q;
  p.out = out;
  p.q_heads = q_heads;
  p.kv_head_of_q = map;
  p.scale = 1.0f;
  p.sliding_window = window;
  p.cache = cache;
  p.seqs = seq;
  p.num_seqs = 1;
  return p;
}

TEST(HandComputedOps, AttentionWithOneKeyReturnsItsValue) {
  std::mt19937 rng(3);
  HandCache cache(2, 4, 1, 16);
  const std::vector<int32_t> table = {1};
  const std::vector<float> v = RandomFloats(16, rng), k = RandomFloats(16, rng);
  std::copy(v.begin(), v.end(), cache.VAt(table, 0, 0));
  std::copy(k.begin(), k.end(), cache.KAt(table, 0, 0));
  const std::vector<float> q = RandomFloats(16, rng);
  const int32_t map[1] = {0};
  const AttentionSeq seq{0, 1, 0, table.data(), 1};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    std::vector<float> out(16, -1.0f);
    impl.attention(OneSeqParams(q.data(), out.data(), 1, map, cache.view, &seq, 0));
    EXPECT_EQ(out, v);
  }
}

TEST(HandComputedOps, AttentionWeightsAreSoftmaxOfScaledScores) {
  // Keys e0 and e1, q = (1, 0), scale 2: scores (2, 0), weights (e^2, 1) / (e^2 + 1).
  HandCache cache(1, 2, 1, 2);
  const std::vector<int32_t> table = {0};
  cache.KAt(table, 0, 0)[0] = 1;
  cache.KAt(table, 1, 0)[1] = 1;
  cache.VAt(table, 0, 0)[0] = 1;  // one-hot values read the weights back
  cache.VAt(table, 1, 0)[1] = 1;
  const float q[2] = {1, 0};
  const int32_t map[1] = {0};
  const AttentionSeq seq{0, 1, 1, table.data(), 1};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    float out[2];
    AttentionParams p = OneSeqParams(q, out, 1, map, cache.view, &seq, 0);
    p.scale = 2.0f;
    impl.attention(p);
    const double e2 = std::exp(2.0);
    EXPECT_NEAR(out[0], e2 / (e2 + 1), 1e-7);
    EXPECT_NEAR(out[1], 1 / (e2 + 1), 1e-7);
  }
}

// With all keys equal every visible position gets the same weight, and a one-hot value per
// position shows which positions were visible: out[i][j] = 1/n if j is visible from i.
void ExpectVisiblePositions(const Impl& impl, int64_t len, int64_t window, int64_t first_query) {
  const int64_t dim = len;
  HandCache cache(len, 1, 1, dim);
  std::vector<int32_t> table(len);
  std::iota(table.begin(), table.end(), 0);
  std::reverse(table.begin(), table.end());  // block i of the sequence is physical len-1-i
  for (int64_t j = 0; j < len; ++j) cache.VAt(table, j, 0)[j] = 1.0f;
  const int64_t n_q = len - first_query;
  const std::vector<float> q(n_q * dim, 0.5f);
  std::vector<float> out(n_q * dim, -1.0f);
  const int32_t map[1] = {0};
  const AttentionSeq seq{0, n_q, first_query, table.data(), len};
  impl.attention(OneSeqParams(q.data(), out.data(), 1, map, cache.view, &seq, window));
  for (int64_t i = first_query; i < len; ++i) {
    const int64_t lo = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
    for (int64_t j = 0; j < len; ++j) {
      const double want = (j >= lo && j <= i) ? 1.0 / static_cast<double>(i - lo + 1) : 0.0;
      EXPECT_NEAR(out[(i - first_query) * dim + j], want, 1e-6)
          << impl.name << ": query " << i << " key " << j << " window " << window;
    }
  }
}

TEST(HandComputedOps, CausalMaskHidesFuturePositionsAlreadyInTheCache) {
  for (const Impl& impl : {kRef, kFast}) {
    ExpectVisiblePositions(impl, 12, 0, 0);   // prefill of 12 tokens
    ExpectVisiblePositions(impl, 12, 0, 11);  // decode at position 11
  }
}

TEST(HandComputedOps, SlidingWindowSeesExactlyTheLastWindowPositionsIncludingSelf) {
  for (const Impl& impl : {kRef, kFast}) {
    ExpectVisiblePositions(impl, 12, 4, 0);   // queries before the window fills see 0..i
    ExpectVisiblePositions(impl, 12, 4, 9);   // chunked prefill inside a full window
    ExpectVisiblePositions(impl, 12, 1, 0);   // window 1: only itself
    ExpectVisiblePositions(impl, 12, 50, 0);  // window longer than the context: causal
  }
}

TEST(HandComputedOps, GqaQueryHeadReadsTheKvHeadItIsMappedTo) {
  constexpr int64_t kDim = 4, kLen = 5, kKvHeads = 3, kQHeads = 6;
  HandCache cache(kLen, 1, kKvHeads, kDim);
  std::vector<int32_t> table(kLen);
  std::iota(table.begin(), table.end(), 0);
  std::mt19937 rng(5);
  for (int64_t j = 0; j < kLen; ++j) {
    for (int64_t g = 0; g < kKvHeads; ++g) {
      const std::vector<float> k = RandomFloats(kDim, rng);
      std::copy(k.begin(), k.end(), cache.KAt(table, j, g));
      for (int64_t d = 0; d < kDim; ++d) cache.VAt(table, j, g)[d] = (g + 1) * 10.0f + d;
    }
  }
  const int32_t map[kQHeads] = {2, 0, 1, 1, 0, 2};  // not sorted, groups of two
  const std::vector<float> q = RandomFloats(kQHeads * kDim, rng);
  const AttentionSeq seq{0, 1, kLen - 1, table.data(), kLen};
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    std::vector<float> out(kQHeads * kDim);
    impl.attention(OneSeqParams(q.data(), out.data(), kQHeads, map, cache.view, &seq, 0));
    for (int64_t h = 0; h < kQHeads; ++h) {
      for (int64_t d = 0; d < kDim; ++d) {
        EXPECT_NEAR(out[h * kDim + d], (map[h] + 1) * 10.0f + d, 1e-4) << "head " << h;
      }
    }
  }
}

TEST(HandComputedOps, ScatteredBlockTableIsFollowedByWriteAndAttention) {
  // block_size 2, sequence blocks [3, 0, 2]: positions 0..5 live in physical slots
  // 6, 7, 0, 1, 4, 5; block 1 (slots 2, 3) belongs to nobody and must stay untouched.
  constexpr int64_t kDim = 6;
  const std::vector<int32_t> table = {3, 0, 2};
  const int64_t slots[6] = {6, 7, 0, 1, 4, 5};
  std::vector<float> k(6 * kDim, 0.0f), v(6 * kDim, 0.0f);
  for (int64_t p = 0; p < 6; ++p) v[p * kDim + p] = 1.0f;  // one-hot by position
  for (const Impl& impl : {kRef, kFast}) {
    SCOPED_TRACE(impl.name);
    HandCache cache(4, 2, 1, kDim);
    std::fill(cache.v.begin(), cache.v.end(), 7.0f);
    impl.write_kv(k.data(), v.data(), 6, slots, cache.view);
    EXPECT_EQ(cache.v[6 * kDim + 0], 1.0f);  // position 0 is in block 3, offset 0
    EXPECT_EQ(cache.v[1 * kDim + 3], 1.0f);  // position 3 is in block 0, offset 1
    for (int64_t i = 2 * kDim; i < 4 * kDim; ++i) ASSERT_EQ(cache.v[i], 7.0f) << i;
    const std::vector<float> q(kDim, 1.0f);
    std::vector<float> out(kDim);
    const int32_t map[1] = {0};
    const AttentionSeq seq{0, 1, 5, table.data(), 3};
    impl.attention(OneSeqParams(q.data(), out.data(), 1, map, cache.view, &seq, 0));
    for (int64_t j = 0; j < 6; ++j) EXPECT_NEAR(out[j], 1.0 / 6, 1e-6) << "position " << j;
  }
}

// ======================= table-driven backend-ops cases =======================

std::string CaseName(const std::string& name, Isa isa) {
  return name + "_" + std::string(cpu::IsaName(isa));
}

// ---- MatMul ----
enum class Poison { kNone, kNanInX, kNanInW, kInfInX };
struct MatMulCase {
  std::string name;
  int64_t tokens, rows, cols;
  DType dtype;
  double tol;
  Poison poison = Poison::kNone;
};
void PrintTo(const MatMulCase& c, std::ostream* os) { *os << c.name; }
const std::vector<MatMulCase>& MatMulCases() {
  static const std::vector<MatMulCase> cases = {
      {"decode_bf16_1x1792x512", 1, 1792, 512, DType::kBF16, 1e-5},
      {"decode_bf16_odd_1x13x37", 1, 13, 37, DType::kBF16, 1e-5},
      {"decode_f16_1x67x4096", 1, 67, 4096, DType::kF16, 1e-5},
      {"decode_f32_1x1x1", 1, 1, 1, DType::kF32, 1e-6},
      {"decode_f32_1x9x33", 1, 9, 33, DType::kF32, 1e-5},
      {"gemv_bf16_2tok_5x31", 2, 5, 31, DType::kBF16, 1e-5},
      {"gemv_bf16_3tok_33x100", 3, 33, 100, DType::kBF16, 1e-5},
      {"gemv_f16_5tok_17x47", 5, 17, 47, DType::kF16, 1e-5},
      {"gemv_f32_8tok_130x257", 8, 130, 257, DType::kF32, 1e-5},
      {"gemv_bf16_9tok_130x257", 9, 130, 257, DType::kBF16, 1e-5},
      {"gemv_f16_16tok_96x512", 16, 96, 512, DType::kF16, 1e-5},
      {"gemv_bf16_13tok_5x600", 13, 5, 600, DType::kBF16, 1e-5},
      {"gemv_bf16_21tok_300x700_two_row_blocks", 21, 300, 700, DType::kBF16, 1e-5},
      // Column-blocked GEMV (8+ tokens, AVX-512): several column blocks with a partial last
      // chunk, row counts that leave a row tail, token counts that leave 1-3 tokens over.
      {"gemv_blocked_bf16_8tok_37x1100", 8, 37, 1100, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_9tok_70x1537", 9, 70, 1537, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_15tok_67x1025", 15, 67, 1025, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_16tok_130x4097", 16, 130, 4097, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_17tok_33x513", 17, 33, 513, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_24tok_300x1000_two_row_blocks", 24, 300, 1000, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_31tok_21x31", 31, 21, 31, DType::kBF16, 1e-5},
      {"gemv_blocked_bf16_32tok_45x2049", 32, 45, 2049, DType::kBF16, 1e-5},
      {"gemv_blocked_f16_12tok_19x777", 12, 19, 777, DType::kF16, 1e-5},
      {"gemv_blocked_f32_10tok_23x1030", 10, 23, 1030, DType::kF32, 1e-5},
      {"nan_in_w_gemv_blocked_bf16_16tok", 16, 21, 700, DType::kBF16, 1e-5, Poison::kNanInW},
      {"nan_in_x_gemv_blocked_f32_8tok", 8, 21, 700, DType::kF32, 1e-5, Poison::kNanInX},
      // The GEMV/GEMM switch (matmul_kernels.h), from both sides.
      {"gemv_last_bf16_" + std::to_string(cpu::kGemvMaxTokens) + "tok_70x1100", cpu::kGemvMaxTokens,
       70, 1100, DType::kBF16, 1e-5},
      {"gemm_first_bf16_" + std::to_string(cpu::kGemvMaxTokens + 1) + "tok_70x1100",
       cpu::kGemvMaxTokens + 1, 70, 1100, DType::kBF16, 1e-5},
      {"gemm_f32_45tok_161x300", 45, 161, 300, DType::kF32, 1e-5},
      {"gemm_bf16_37tok_5x600", 37, 5, 600, DType::kBF16, 1e-5},
      {"gemm_f32_40tok_70x1", 40, 70, 1, DType::kF32, 1e-6},
      {"gemm_bf16_64tok_300x1024", 64, 300, 1024, DType::kBF16, 1e-5},
      {"gemm_bf16_100tok_35x513", 100, 35, 513, DType::kBF16, 1e-5},
      {"gemm_f16_512tok_64x128", 512, 64, 128, DType::kF16, 1e-5},
      {"nan_in_x_gemv_bf16_2tok", 2, 21, 70, DType::kBF16, 1e-5, Poison::kNanInX},
      {"nan_in_w_gemv_f16_1tok", 1, 21, 70, DType::kF16, 1e-5, Poison::kNanInW},
      {"nan_in_x_gemm_f32_40tok", 40, 45, 70, DType::kF32, 1e-5, Poison::kNanInX},
      {"nan_in_w_gemm_bf16_40tok", 40, 45, 70, DType::kBF16, 1e-5, Poison::kNanInW},
      {"inf_in_x_gemm_f16_40tok", 40, 45, 70, DType::kF16, 1e-5, Poison::kInfInX},
  };
  return cases;
}

class MatMulMatchesReference : public ::testing::TestWithParam<std::tuple<MatMulCase, Isa>> {};

TEST_P(MatMulMatchesReference, WithinToleranceWithGuardsAndNanParity) {
  const auto& [c, isa] = GetParam();
  IsaScope scope(isa);
  if (!scope.ok()) GTEST_SKIP() << "CPU lacks " << cpu::IsaName(isa);
  std::mt19937 rng(static_cast<uint32_t>(c.tokens * 1000003 + c.rows * 1009 + c.cols));
  std::vector<float> x = RandomFloats(c.tokens * c.cols, rng);
  std::vector<float> wv = RandomFloats(c.rows * c.cols, rng);
  const int64_t t_bad = c.tokens / 2, r_bad = c.rows / 3, c_bad = c.cols - 1;
  if (c.poison == Poison::kNanInX) x[t_bad * c.cols + c_bad] = NAN;
  if (c.poison == Poison::kInfInX) x[t_bad * c.cols + c_bad] = INFINITY;
  if (c.poison == Poison::kNanInW) wv[r_bad * c.cols + c_bad] = NAN;
  const HostWeights w = MakeWeights(c.dtype, c.rows, c.cols, wv);
  const std::vector<float> x_before = x;

  Guarded y(c.tokens * c.rows), want(c.tokens * c.rows);
  MatMul(x.data(), c.tokens, w.view, y.data());
  ref::MatMul(x.data(), c.tokens, w.view, want.data());
  EXPECT_TRUE(y.GuardsIntact());
  EXPECT_TRUE(Matches(y.vec(), want.vec(), c.tol));
  EXPECT_EQ(0, std::memcmp(x.data(), x_before.data(), x.size() * sizeof(float)))
      << "x was modified";
  if (c.poison == Poison::kNanInX) {  // the poisoned token's whole row, and only it
    for (int64_t r = 0; r < c.rows; ++r) ASSERT_TRUE(std::isnan(want.data()[t_bad * c.rows + r]));
    ASSERT_FALSE(std::isnan(want.data()[(t_bad + 1) % c.tokens * c.rows]));
  }
}

INSTANTIATE_TEST_SUITE_P(BackendOps, MatMulMatchesReference,
                         ::testing::Combine(::testing::ValuesIn(MatMulCases()),
                                            ::testing::ValuesIn(AllIsas())),
                         [](const auto& info) {
                           return CaseName(std::get<0>(info.param).name, std::get<1>(info.param));
                         });

// ---- Embedding, RmsNorm, AddRmsNorm, RoPE, SwiGlu, WriteKvCache ----
struct RowOpCase {
  std::string name;
  int64_t tokens, dim;
  DType dtype = DType::kF32;  // Embedding table dtype
  float scale = 1.0f;         // input magnitude
  double tol = 1e-5;
  bool poison = false;  // a NaN in one input row
};
void PrintTo(const RowOpCase& c, std::ostream* os) { *os << c.name; }
const std::vector<RowOpCase>& RowOpCases() {
  static const std::vector<RowOpCase> cases = {
      {"1tok_dim4096_bf16", 1, 4096, DType::kBF16, 1.0f, 1e-5},
      {"7tok_dim1_f16", 7, 1, DType::kF16, 1.0f, 1e-6},
      {"3tok_dim37_f32", 3, 37, DType::kF32, 1.0f, 1e-6},
      {"33tok_dim1000_bf16", 33, 1000, DType::kBF16, 1.0f, 1e-5},
      {"5tok_dim128_large_values_f16", 5, 128, DType::kF16, 100.0f, 1e-5},
      {"4tok_dim5120_nan_in_a_row_f32", 4, 5120, DType::kF32, 1.0f, 1e-5, true},
  };
  return cases;
}

class RowOpsMatchReference : public ::testing::TestWithParam<std::tuple<RowOpCase, Isa>> {
 protected:
  void SetUp() override {
    scope_ = std::make_unique<IsaScope>(std::get<1>(GetParam()));
    if (!scope_->ok()) GTEST_SKIP() << "CPU lacks this level";
    const RowOpCase& c = std::get<0>(GetParam());
    rng_.seed(static_cast<uint32_t>(c.tokens * 7919 + c.dim));
  }
  std::vector<float> Input(int64_t n) {
    const RowOpCase& c = std::get<0>(GetParam());
    std::vector<float> v = RandomFloats(n, rng_, c.scale);
    if (c.poison) v[n / 2] = NAN;
    return v;
  }
  std::unique_ptr<IsaScope> scope_;
  std::mt19937 rng_;
};

TEST_P(RowOpsMatchReference, EmbeddingIsExact) {
  const RowOpCase& c = std::get<0>(GetParam());
  constexpr int64_t kVocab = 50;
  const HostWeights table = MakeWeights(c.dtype, kVocab, c.dim, Input(kVocab * c.dim));
  std::vector<int32_t> ids(c.tokens);
  for (int64_t t = 0; t < c.tokens; ++t) ids[t] = static_cast<int32_t>((t * 17 + 49) % kVocab);
  Guarded y(c.tokens * c.dim), want(c.tokens * c.dim);
  Embedding(ids.data(), c.tokens, table.view, y.data());
  ref::Embedding(ids.data(), c.tokens, table.view, want.data());
  EXPECT_TRUE(y.GuardsIntact());
  EXPECT_TRUE(Matches(y.vec(), want.vec(), 0.0));
}

TEST_P(RowOpsMatchReference, RmsNormWithinTolerance) {
  const RowOpCase& c = std::get<0>(GetParam());
  const std::vector<float> x = Input(c.tokens * c.dim), w = RandomFloats(c.dim, rng_);
  Guarded y(c.tokens * c.dim), want(c.tokens * c.dim);
  RmsNorm(x.data(), w.data(), c.tokens, c.dim, 1e-5f, y.data());
  ref::RmsNorm(x.data(), w.data(), c.tokens, c.dim, 1e-5f, want.data());
  EXPECT_TRUE(y.GuardsIntact());
  EXPECT_TRUE(Matches(y.vec(), want.vec(), c.tol));
  // In place (x and y alias), as the contract allows.
  Guarded inplace(x);
  RmsNorm(inplace.data(), w.data(), c.tokens, c.dim, 1e-5f, inplace.data());
  EXPECT_TRUE(inplace.GuardsIntact());
  EXPECT_TRUE(Matches(inplace.vec(), want.vec(), c.tol));
}

TEST_P(RowOpsMatchReference, AddRmsNormUpdatesResidualExactlyAndNormWithinTolerance) {
  const RowOpCase& c = std::get<0>(GetParam());
  const std::vector<float> x0 = Input(c.tokens * c.dim), r = RandomFloats(x0.size(), rng_);
  const std::vector<float> w = RandomFloats(c.dim, rng_);
  Guarded x(x0), xr(x0), y(x0.size()), want(x0.size());
  AddRmsNorm(x.data(), r.data(), w.data(), c.tokens, c.dim, 1e-6f, y.data());
  ref::AddRmsNorm(xr.data(), r.data(), w.data(), c.tokens, c.dim, 1e-6f, want.data());
  EXPECT_TRUE(x.GuardsIntact());
  EXPECT_TRUE(y.GuardsIntact());
  EXPECT_TRUE(Matches(x.vec(), xr.vec(), 0.0));
  EXPECT_TRUE(Matches(y.vec(), want.vec(), c.tol));
}

TEST_P(RowOpsMatchReference, RopeIsBitIdentical) {
  const RowOpCase& c = std::get<0>(GetParam());
  const int64_t head_dim = c.dim % 2 == 0 ? std::min<int64_t>(c.dim, 128) : 2;
  const int64_t heads = std::max<int64_t>(1, c.dim / head_dim);
  constexpr int64_t kPositions = 5000;
  std::vector<float> cos(kPositions * head_dim / 2), sin(cos.size());
  BuildRopeTable(c.scale > 1 ? 1e6 : 10000.0, head_dim, kPositions, cos.data(), sin.data());
  const RopeTable table{kPositions, head_dim / 2, cos.data(), sin.data()};
  std::vector<int32_t> pos(c.tokens);
  for (int64_t t = 0; t < c.tokens; ++t) pos[t] = static_cast<int32_t>((t * 1237 + 3) % kPositions);
  const std::vector<float> x0 = Input(c.tokens * heads * head_dim);
  Guarded x(x0), xr(x0);
  ApplyRope(x.data(), c.tokens, heads, head_dim, pos.data(), table);
  ref::ApplyRope(xr.data(), c.tokens, heads, head_dim, pos.data(), table);
  EXPECT_TRUE(x.GuardsIntact());
  EXPECT_TRUE(Matches(x.vec(), xr.vec(), 0.0));
}

TEST_P(RowOpsMatchReference, SwiGluWithinTolerance) {
  const RowOpCase& c = std::get<0>(GetParam());
  const std::vector<float> gate_up = Input(c.tokens * 2 * c.dim);
  Guarded out(c.tokens * c.dim), want(c.tokens * c.dim);
  SwiGlu(gate_up.data(), c.tokens, c.dim, out.data());
  ref::SwiGlu(gate_up.data(), c.tokens, c.dim, want.data());
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(Matches(out.vec(), want.vec(), 2e-6));  // exp within ~2 ulp of libm's
}

TEST_P(RowOpsMatchReference, WriteKvCacheIsExactAndTouchesOnlyItsSlots) {
  const RowOpCase& c = std::get<0>(GetParam());
  const int64_t kv_heads = c.dim % 2 == 0 ? 2 : 1, head_dim = c.dim / kv_heads;
  const int64_t num_slots = 3 * c.tokens + 5;
  std::vector<int64_t> slots(num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng_);
  slots.resize(c.tokens);
  const std::vector<float> k = Input(c.tokens * c.dim), v = RandomFloats(k.size(), rng_);
  const std::vector<float> init = RandomFloats(num_slots * c.dim, rng_);
  Guarded ck(init), cv(init), rk(init), rv(init);
  const KvCacheView fast{ck.data(), cv.data(), num_slots, 1, kv_heads, head_dim};
  const KvCacheView want{rk.data(), rv.data(), num_slots, 1, kv_heads, head_dim};
  WriteKvCache(k.data(), v.data(), c.tokens, slots.data(), fast);
  ref::WriteKvCache(k.data(), v.data(), c.tokens, slots.data(), want);
  EXPECT_TRUE(ck.GuardsIntact());
  EXPECT_TRUE(cv.GuardsIntact());
  EXPECT_TRUE(Matches(ck.vec(), rk.vec(), 0.0));
  EXPECT_TRUE(Matches(cv.vec(), rv.vec(), 0.0));
}

INSTANTIATE_TEST_SUITE_P(BackendOps, RowOpsMatchReference,
                         ::testing::Combine(::testing::ValuesIn(RowOpCases()),
                                            ::testing::ValuesIn(AllIsas())),
                         [](const auto& info) {
                           return CaseName(std::get<0>(info.param).name, std::get<1>(info.param));
                         });

// ---- PagedAttention ----
struct SeqShape {
  int64_t start_pos, num_tokens;
};
struct AttentionCase {
  std::string name;
  std::vector<SeqShape> seqs;
  int64_t q_heads, kv_heads, head_dim, block_size, window;
  bool scrambled_map = false;  // kv_head_of_q not the usual h / group
  bool poison = false;         // NaN in one query vector
  double tol = 2e-5;
};
void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }
const std::vector<AttentionCase>& AttentionCases() {
  static const std::vector<AttentionCase> cases = {
      {"decode_first_token", {{0, 1}}, 4, 2, 64, 16, 0},
      {"decode_4seqs_gqa4_dim128", {{17, 1}, {0, 1}, {100, 1}, {31, 1}}, 8, 2, 128, 16, 0},
      {"decode_1seq_gqa4_ctx301", {{300, 1}}, 4, 1, 128, 16, 0},
      {"decode_1seq_ctx3000_keys_split_and_merged", {{2999, 1}}, 8, 2, 64, 16, 0},
      {"sliding_window_700_decode_ctx2000_split", {{1999, 1}, {650, 1}}, 4, 4, 32, 32, 700},
      {"prefill_37tok_mha", {{0, 37}}, 3, 3, 32, 8, 0},
      {"chunked_prefill_and_decode_mixed", {{20, 13}, {5, 1}, {0, 9}}, 6, 2, 48, 4, 0},
      {"scrambled_kv_head_map", {{9, 4}, {40, 1}}, 6, 3, 16, 5, 0, true},
      {"sliding_window_5_prefill", {{0, 23}}, 4, 2, 32, 4, 5},
      {"sliding_window_64_decode", {{200, 1}, {30, 1}}, 8, 8, 64, 16, 64},
      {"head_dim_7_block_1", {{6, 3}}, 2, 1, 7, 1, 0},
      {"head_dim_80_block_3_window_10", {{0, 30}, {50, 2}}, 5, 1, 80, 3, 10},
      {"long_decode_32heads_ctx1000", {{999, 1}, {500, 1}}, 32, 8, 128, 16, 0},
      {"nan_in_one_query", {{7, 3}}, 4, 2, 16, 4, 0, false, true},
      // Query tiles (attention_tiles.h: sequences of >= 4 new tokens, 16 per tile).
      {"tiles_prefill_100tok_gqa3_dim64", {{0, 100}}, 9, 3, 64, 16, 0},
      {"tiles_chunked_prefill_after_70_odd_count", {{70, 45}, {3, 1}, {0, 4}}, 6, 2, 128, 8, 0},
      {"tiles_window_inside_a_tile_and_across_blocks", {{0, 150}}, 4, 2, 32, 4, 7},
      {"tiles_window_100_long_prefill", {{300, 213}}, 8, 2, 64, 16, 100},
      {"tiles_head_dim_80_and_7", {{0, 33}, {10, 17}}, 5, 1, 80, 3, 0},
      {"tiles_head_dim_7_block_1", {{2, 9}}, 2, 1, 7, 1, 0},
      {"tiles_scrambled_map_mixed_with_decode", {{12, 20}, {40, 1}, {5, 2}}, 6, 3, 16, 5, 0,
       true},
      {"tiles_nan_in_one_query", {{7, 18}}, 4, 2, 16, 4, 0, false, true},
  };
  return cases;
}

class PagedAttentionMatchesReference
    : public ::testing::TestWithParam<std::tuple<AttentionCase, Isa>> {};

TEST_P(PagedAttentionMatchesReference, WithinToleranceWithGuardsAndNanParity) {
  const auto& [c, isa] = GetParam();
  IsaScope scope(isa);
  if (!scope.ok()) GTEST_SKIP() << "CPU lacks " << cpu::IsaName(isa);
  std::mt19937 rng(static_cast<uint32_t>(c.q_heads * 31 + c.head_dim * 7 + c.seqs.size()));
  // Blocks of all sequences, handed out in a random order, plus spare blocks of garbage.
  int64_t total_blocks = 3;
  for (const SeqShape& s : c.seqs) {
    total_blocks += (s.start_pos + s.num_tokens + c.block_size - 1) / c.block_size;
  }
  std::vector<int32_t> physical(total_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  std::vector<std::vector<int32_t>> tables;
  std::vector<AttentionSeq> seqs;
  int64_t next_block = 0, rows = 0;
  for (const SeqShape& s : c.seqs) {
    const int64_t nb = (s.start_pos + s.num_tokens + c.block_size - 1) / c.block_size;
    tables.emplace_back(physical.begin() + next_block, physical.begin() + next_block + nb);
    next_block += nb;
    seqs.push_back({rows, s.num_tokens, s.start_pos, nullptr, nb});
    rows += s.num_tokens;
  }
  for (size_t i = 0; i < seqs.size(); ++i) seqs[i].block_table = tables[i].data();

  const size_t cache_size = total_blocks * c.block_size * c.kv_heads * c.head_dim;
  std::vector<float> k = RandomFloats(cache_size, rng, 2.0f), v = RandomFloats(cache_size, rng);
  std::vector<float> q = RandomFloats(rows * c.q_heads * c.head_dim, rng);
  if (c.poison) q[(1 * c.q_heads + 2) * c.head_dim + 3] = NAN;  // row 1, head 2
  std::vector<int32_t> map(c.q_heads);
  for (int64_t h = 0; h < c.q_heads; ++h) {
    map[h] = static_cast<int32_t>(c.scrambled_map ? (h * 2 + 1) % c.kv_heads
                                                  : h / (c.q_heads / c.kv_heads));
  }
  const std::vector<float> k_before = k, v_before = v;

  Guarded out(q.size()), want(q.size());
  AttentionParams p;
  p.q = q.data();
  p.q_heads = c.q_heads;
  p.kv_head_of_q = map.data();
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.sliding_window = c.window;
  p.cache = {k.data(), v.data(), total_blocks, c.block_size, c.kv_heads, c.head_dim};
  p.seqs = seqs.data();
  p.num_seqs = static_cast<int64_t>(seqs.size());
  p.out = out.data();
  PagedAttention(p);
  p.out = want.data();
  ref::PagedAttention(p);
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(Matches(out.vec(), want.vec(), c.tol));
  EXPECT_TRUE(k == k_before && v == v_before) << "the cache was modified";
  if (c.poison) {
    const float* bad = want.data() + (1 * c.q_heads + 2) * c.head_dim;
    EXPECT_TRUE(std::isnan(bad[0]) && !std::isnan(bad[-1]) && !std::isnan(bad[c.head_dim]));
  }
}

INSTANTIATE_TEST_SUITE_P(BackendOps, PagedAttentionMatchesReference,
                         ::testing::Combine(::testing::ValuesIn(AttentionCases()),
                                            ::testing::ValuesIn(AllIsas())),
                         [](const auto& info) {
                           return CaseName(std::get<0>(info.param).name, std::get<1>(info.param));
                         });

// FastExp backs the fast softmax and SwiGlu; its edges decide NaN/inf parity there.
TEST(HandComputedOps, FastExpIsWithinThreeUlpOfLibmAndKeepsItsEdges) {
  for (float x = -87.0f; x <= 88.5f; x += 0.0137f) {
    const float want = std::exp(x), got = cpu::FastExp(x);
    ASSERT_NEAR(got, want, 3 * 1.2e-7 * want) << "x=" << x;
  }
  EXPECT_EQ(cpu::FastExp(0.0f), 1.0f);
  EXPECT_EQ(cpu::FastExp(89.0f), INFINITY);
  EXPECT_EQ(cpu::FastExp(INFINITY), INFINITY);
  EXPECT_EQ(cpu::FastExp(-88.0f), 0.0f);
  EXPECT_EQ(cpu::FastExp(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isnan(cpu::FastExp(NAN)));
}

TEST(HandComputedOps, CpuDispatchReportsALevelAndForcingAnUnsupportedOneFails) {
  const Isa best = cpu::BestSupportedIsa();
  EXPECT_TRUE(cpu::ForceIsa(Isa::kScalar));
  EXPECT_EQ(cpu::ActiveIsa(), Isa::kScalar);
  EXPECT_TRUE(cpu::ForceIsa(best));
  EXPECT_EQ(cpu::ActiveIsa(), best);
  if (best != Isa::kAvx512) {
    EXPECT_FALSE(cpu::ForceIsa(Isa::kAvx512));
  }
}

}  // namespace
}  // namespace tpserve::kernels
