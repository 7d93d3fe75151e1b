// Backend-ops test of the GEMM (kernels::cuda::GemmHandle: cuBLASLt, and its own kernel for
// up to 8 tokens) against kernels::ref::MatMul, part of cuda_ops_test (tests/gpu/
// cuda_ops_test.cc has the registry check and main()). Every case the small-batch kernel
// takes runs twice: through it (the default) and through cuBLASLt (suffix _cublaslt); each
// case also asserts which of the two ran.
// Inputs: bf16 x and w from a seeded counter hash (uniform, fast enough for 131 M elements); the reference gets the same bf16 values
// (x widened to fp32, w as a BF16 WeightMatrix) and accumulates in double. For the large
// shapes the reference covers every token but only a sample of output rows (first, last and
// kSampledRows random ones): ref::MatMul over all of 28672 x 4096 x 333 would take a minute
// single-threaded. The whole output is still checked for NaN sentinels (unwritten elements)
// and its guard zones.
// Tolerance (stated per element, mag = sum_c |x[t, c]| * |w[r, c]|, the scale of fp32
// accumulation error):
//   bf16 output: |got - ref| <= 2^-8 * |ref| + 2^-12 * mag
//     (half a bf16 ulp for the final rounding, the other half for an fp32 sum order flipping
//     it, plus slack for fp32 accumulation over up to 14336 products; a transposed or
//     misindexed operand misses by about mag / sqrt(cols), thousands of times more);
//   fp32 output: |got - ref| <= 2^-12 * mag;
//   NaN/inf parity element by element (a NaN in x, an inf in w).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "common/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/ops.h"
#include "tests/gpu/cuda_test_util.h"

namespace tpserve::kernels::cuda {
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

constexpr int64_t kSampledRows = 48;
constexpr double kGemmRtol = 1.0 / 256;   // bf16 output: times |ref|
constexpr double kGemmMagTol = 1.0 / 4096;  // times sum |x| |w|

enum class GemmPoison { kNone, kNanInX, kInfInW };
struct GemmCase {
  std::string name;
  int64_t tokens, rows, cols;
  GemmOutput output = GemmOutput::kBf16;
  bool misaligned = false;  // x, w and y start one element past a 256-byte boundary
  GemmPoison poison = GemmPoison::kNone;
  bool small_batch_kernel = true;  // GemmHandle::set_small_batch_kernel for this case
};
void PrintTo(const GemmCase& c, std::ostream* os) { *os << c.name; }

// Whether GemmHandle takes its small-batch kernel for `c` (its own rule, restated).
bool TakesSmallBatchKernel(const GemmCase& c) {
  return c.small_batch_kernel && c.tokens >= 1 && c.tokens <= 8 && c.cols % 8 == 0 &&
         !c.misaligned;
}

std::vector<GemmCase> WithCublasLtTwins(std::vector<GemmCase> cases) {
  const size_t n = cases.size();
  for (size_t i = 0; i < n; ++i) {
    if (!TakesSmallBatchKernel(cases[i])) continue;
    GemmCase twin = cases[i];
    twin.name += "_cublaslt";
    twin.small_batch_kernel = false;
    cases.push_back(twin);
  }
  return cases;
}

const std::vector<GemmCase>& GemmCases() {
  static const std::vector<GemmCase> cases = WithCublasLtTwins({
      // The target model's projections (hidden 4096, 32/8 heads of 128, MLP 14336, vocab
      // 32000) at decode and prefill token counts.
      {"decode_1tok_o_proj_4096x4096", 1, 4096, 4096},
      {"8tok_o_proj_4096x4096", 8, 4096, 4096},
      {"64tok_qkv_6144x4096", 64, 6144, 4096},
      {"256tok_o_proj_4096x4096", 256, 4096, 4096},
      {"333tok_gate_up_fused_28672x4096", 333, 28672, 4096},
      {"1tok_gate_14336x4096", 1, 14336, 4096},
      {"64tok_down_4096x14336", 64, 4096, 14336},
      {"8tok_down_4096x14336", 8, 4096, 14336},
      {"1tok_logits_32000x4096_f32", 1, 32000, 4096, GemmOutput::kF32},
      {"64tok_logits_32000x4096_f32", 64, 32000, 4096, GemmOutput::kF32},
      {"333tok_logits_32000x4096_f32", 333, 32000, 4096, GemmOutput::kF32},
      // Small and odd shapes (odd leading dimensions), SmolLM2-sized rows.
      {"7tok_odd_33x100", 7, 33, 100},
      {"5tok_odd_3x7_f32", 5, 3, 7, GemmOutput::kF32},
      {"33tok_smollm_576x576", 33, 576, 576},
      {"misaligned_pointers_9tok_100x64", 9, 100, 64, GemmOutput::kBf16, true},
      {"misaligned_pointers_9tok_100x64_f32", 9, 100, 64, GemmOutput::kF32, true},
      // NaN / inf propagation.
      {"nan_in_x_row", 6, 40, 64, GemmOutput::kBf16, false, GemmPoison::kNanInX},
      {"inf_in_w_row_f32", 6, 40, 64, GemmOutput::kF32, false, GemmPoison::kInfInW},
      // The small-batch kernel's edges: rows not a multiple of its 16 rows per block (a
      // block's and a warp's last rows past the end), columns not a multiple of a loop step
      // (1024 columns for 1-2 tokens, 512 above: lanes without a vector), one vector per row,
      // every token count 1..8.
      {"1tok_tail_both_23x1048", 1, 23, 1048},
      {"1tok_tail_cols_7x2056_f32", 1, 7, 2056, GemmOutput::kF32},
      {"2tok_tail_rows_37x200", 2, 37, 200},
      {"3tok_one_vector_per_row_19x8_f32", 3, 19, 8, GemmOutput::kF32},
      {"4tok_tail_cols_70x1032", 4, 70, 1032},
      {"5tok_tail_both_1001x2056_f32", 5, 1001, 2056, GemmOutput::kF32},
      {"7tok_smollm_1536x576", 7, 1536, 576},
      {"8tok_inf_in_w_100x4096", 8, 100, 4096, GemmOutput::kBf16, false, GemmPoison::kInfInW},
  });
  return cases;
}

// n bf16 values uniform in [-scale, scale) from a counter hash (splitmix64) of (seed, i):
// the weight matrices here hold up to 131 M elements, too many for std::mt19937 (~10 s).
std::vector<uint16_t> HashedBf16(size_t n, uint64_t seed, float scale) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + i;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    const float u = static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
    v[i] = F32ToBf16(u * scale);
  }
  return v;
}

// One handle for the whole test (as a worker would hold one per device).
GemmHandle* SharedHandle() {
  static GemmHandle* handle = [] {
    absl::StatusOr<GemmHandle> h = GemmHandle::Create();
    return h.ok() ? new GemmHandle(std::move(h).value()) : nullptr;
  }();
  return handle;
}

// The output rows the reference computes: all of them for small shapes, else a sample.
std::vector<int64_t> RowsToCheck(const GemmCase& c, std::mt19937& rng) {
  std::vector<int64_t> rows;
  if (c.rows * c.tokens * c.cols <= int64_t{64} << 20) {
    for (int64_t r = 0; r < c.rows; ++r) rows.push_back(r);
    return rows;
  }
  rows = {0, c.rows - 1};
  std::uniform_int_distribution<int64_t> pick(1, c.rows - 2);
  for (int64_t i = 0; i < kSampledRows; ++i) rows.push_back(pick(rng));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// Compares output column r (all tokens) with the reference, per the tolerance above.
::testing::AssertionResult GemmColumnMatches(const GemmCase& c, int64_t r,
                                             const std::vector<float>& got_col,
                                             const std::vector<float>& want_col,
                                             const std::vector<double>& mag_col) {
  for (int64_t t = 0; t < c.tokens; ++t) {
    const double g = got_col[t], w = want_col[t];
    if (std::isnan(g) != std::isnan(w)) {
      return ::testing::AssertionFailure() << "NaN parity broken at token " << t << ", row " << r
                                           << ": got " << g << ", want " << w;
    }
    if (std::isnan(w)) continue;
    if (std::isinf(g) || std::isinf(w)) {
      if (g != w) {
        return ::testing::AssertionFailure() << "inf parity broken at token " << t << ", row "
                                             << r << ": got " << g << ", want " << w;
      }
      continue;
    }
    const double rtol = c.output == GemmOutput::kBf16 ? kGemmRtol : 0.0;
    const double tol = rtol * std::fabs(w) + kGemmMagTol * mag_col[t];
    if (std::fabs(g - w) > tol) {
      return ::testing::AssertionFailure()
             << "token " << t << ", row " << r << ": got " << g << ", want " << w << " (error "
             << std::fabs(g - w) << " > tolerance " << tol << ", sum|x||w| " << mag_col[t] << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

using GemmMatchesReference = GpuCase<GemmCase>;

TEST_P(GemmMatchesReference, WithinToleranceWithGuards) {
  const GemmCase& c = GetParam();
  GemmHandle* handle = SharedHandle();
  ASSERT_NE(handle, nullptr) << "GemmHandle::Create failed";
  handle->set_small_batch_kernel(c.small_batch_kernel);
  std::mt19937 rng(SeedOf(c.name));
  std::vector<uint16_t> x = HashedBf16(c.tokens * c.cols, rng(), 1.0f);
  std::vector<uint16_t> w =
      HashedBf16(c.rows * c.cols, rng(), 1.0f / std::sqrt(static_cast<float>(c.cols)));
  const int64_t bad_token = c.tokens / 2, bad_row = c.rows / 3;
  if (c.poison == GemmPoison::kNanInX) x[bad_token * c.cols + c.cols / 2] = kBf16QNan;
  if (c.poison == GemmPoison::kInfInW) w[bad_row * c.cols + 1] = kBf16PosInf;
  const std::vector<float> xf = Widen(x);

  // Device buffers: guarded, with one extra leading element when misaligned.
  const int64_t lead = c.misaligned ? 1 : 0;
  std::vector<uint16_t> x_dev(lead, 0), w_dev(lead, 0);
  x_dev.insert(x_dev.end(), x.begin(), x.end());
  w_dev.insert(w_dev.end(), w.begin(), w.end());
  ASSERT_OK_AND_ASSIGN(auto d_x, GuardedDevice<uint16_t>::Create(x_dev));
  ASSERT_OK_AND_ASSIGN(auto d_w, GuardedDevice<uint16_t>::Create(w_dev));
  const size_t n_out = static_cast<size_t>(c.tokens * c.rows + lead);
  std::vector<float> got(c.tokens * c.rows);
  GemmParams p;
  p.x = d_x.data() + lead;
  p.w = d_w.data() + lead;
  p.output = c.output;
  p.tokens = c.tokens;
  p.rows = c.rows;
  p.cols = c.cols;
  ASSERT_EQ(handle->small_batch_kernel() && GemmHandle::UsesSmallBatchKernel(p),
            TakesSmallBatchKernel(c))
      << "the case does not run the GEMM path it is named for";
  if (c.output == GemmOutput::kF32) {
    ASSERT_OK_AND_ASSIGN(auto d_y, GuardedDevice<float>::Unwritten(n_out));
    p.y = d_y.data() + lead;
    ASSERT_OK(handle->Gemm(p, Stream{}));
    ASSERT_OK(SynchronizeStream(Stream{}));
    ASSERT_OK_AND_ASSIGN(std::vector<float> y, d_y.Download());
    EXPECT_TRUE(d_y.GuardsIntact());
    if (lead) {
      EXPECT_EQ(Bits(y[0]), kF32Unwritten) << "the element before y was written";
    }
    std::copy(y.begin() + lead, y.end(), got.begin());
  } else {
    ASSERT_OK_AND_ASSIGN(auto d_y, GuardedDevice<uint16_t>::Unwritten(n_out));
    p.y = d_y.data() + lead;
    ASSERT_OK(handle->Gemm(p, Stream{}));
    ASSERT_OK(SynchronizeStream(Stream{}));
    ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> y, d_y.Download());
    EXPECT_TRUE(d_y.GuardsIntact());
    if (lead) {
      EXPECT_EQ(y[0], kBf16Unwritten) << "the element before y was written";
    }
    for (size_t i = 0; i < got.size(); ++i) got[i] = Bf16ToF32(y[i + lead]);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> x_after, d_x.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> w_after, d_w.Download());
  EXPECT_TRUE(d_x.GuardsIntact());
  EXPECT_TRUE(d_w.GuardsIntact());
  EXPECT_TRUE(SameBits(x_after, x_dev)) << "x was modified";
  EXPECT_TRUE(SameBits(w_after, w_dev)) << "w was modified";

  // Every element written: the sentinel is a NaN, and NaN is expected only where poisoned.
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t r = 0; r < c.rows; ++r) {
      const bool may_be_nan = c.poison == GemmPoison::kNanInX && t == bad_token;
      if (!may_be_nan && std::isnan(got[t * c.rows + r])) {
        FAIL() << "y[" << t << ", " << r << "] is NaN (unwritten?)";
      }
    }
  }

  // Reference on the checked rows: ref::MatMul over a weight matrix of just those rows.
  const std::vector<int64_t> rows = RowsToCheck(c, rng);
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  std::vector<uint16_t> w_rows(n_rows * c.cols);
  for (int64_t i = 0; i < n_rows; ++i) {
    std::copy_n(w.begin() + rows[i] * c.cols, c.cols, w_rows.begin() + i * c.cols);
  }
  std::vector<float> want(c.tokens * n_rows);
  ref::MatMul(xf.data(), c.tokens, WeightMatrix{w_rows.data(), DType::kBF16, n_rows, c.cols},
              want.data());
  for (int64_t i = 0; i < n_rows; ++i) {
    const int64_t r = rows[i];
    std::vector<float> got_col(c.tokens), want_col(c.tokens);
    std::vector<double> mag_col(c.tokens);
    for (int64_t t = 0; t < c.tokens; ++t) {
      got_col[t] = got[t * c.rows + r];
      want_col[t] = want[t * n_rows + i];
      double mag = 0.0;
      for (int64_t k = 0; k < c.cols; ++k) {
        mag += std::fabs(static_cast<double>(xf[t * c.cols + k]) * Bf16ToF32(w[r * c.cols + k]));
      }
      mag_col[t] = mag;
    }
    ASSERT_TRUE(GemmColumnMatches(c, r, got_col, want_col, mag_col));
  }
  if (c.poison == GemmPoison::kNanInX) {
    EXPECT_TRUE(std::isnan(got[bad_token * c.rows])) << "NaN in x did not reach y";
    EXPECT_FALSE(std::isnan(got[0])) << "NaN reached another token";
  }
  if (c.poison == GemmPoison::kInfInW) {
    EXPECT_TRUE(std::isinf(got[bad_row])) << "inf in w did not reach y";
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, GemmMatchesReference, ::testing::ValuesIn(GemmCases()),
                         NameOf<GemmCase>);

// Random bf16 x (with 8 spare elements, for a less aligned view) and w on the device, room
// for a bf16 y, and the GemmParams over them.
struct DeviceGemm {
  DeviceBuffer x, w, y;
  GemmParams params;
};
absl::StatusOr<DeviceGemm> MakeDeviceGemm(int64_t tokens, int64_t rows, int64_t cols,
                                          uint32_t seed) {
  std::mt19937 rng(seed);
  DeviceGemm g;
  ASSIGN_OR_RETURN(g.x, Upload(RandomBf16(tokens * cols + 8, rng)));
  ASSIGN_OR_RETURN(g.w, Upload(RandomBf16(rows * cols, rng)));
  ASSIGN_OR_RETURN(g.y, DeviceBuffer::Allocate(tokens * rows * 2));
  g.params = {g.x.as<uint16_t>(), g.w.as<uint16_t>(), g.y.data(), GemmOutput::kBf16,
              tokens, rows, cols};
  return g;
}

// Runs g.params twice: the second run must give the first run's bits.
::testing::AssertionResult RepeatsItsBits(GemmHandle& handle, DeviceGemm& g) {
  const GemmParams& p = g.params;
  std::vector<uint16_t> first(p.tokens * p.rows), second(first.size());
  for (std::vector<uint16_t>* out : {&first, &second}) {
    absl::Status s = handle.Gemm(p, Stream{});
    if (s.ok()) s = g.y.CopyToHost(out->data(), out->size() * 2);
    if (!s.ok()) return ::testing::AssertionFailure() << s;
  }
  if (!SameBits(first, second)) return ::testing::AssertionFailure() << "different bits";
  return ::testing::AssertionSuccess();
}

// Plans are cached per shape and alignment, and a cached plan gives the same bits again.
TEST(GemmPlans, CachedPerShapeAndAlignmentAndRepeatable) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(GemmHandle handle, GemmHandle::Create());
  EXPECT_TRUE(handle.small_batch_kernel());
  handle.set_small_batch_kernel(false);  // cuBLASLt's plans for every shape below
  EXPECT_EQ(handle.cached_plans(), 0u);
  ASSERT_OK_AND_ASSIGN(DeviceGemm g, MakeDeviceGemm(16, 256, 512, 7));
  EXPECT_TRUE(RepeatsItsBits(handle, g)) << "a cached plan";
  EXPECT_EQ(handle.cached_plans(), 1u);
  GemmParams& p = g.params;
  p.x = g.x.as<uint16_t>() + 4;  // 8-byte aligned: a plan of its own
  ASSERT_OK(handle.Gemm(p, Stream{}));
  EXPECT_EQ(handle.cached_plans(), 2u);
  p.tokens = 3;  // another shape
  ASSERT_OK(handle.Gemm(p, Stream{}));
  EXPECT_EQ(handle.cached_plans(), 3u);
  p.tokens = 0;  // nothing to do: no plan
  ASSERT_OK(handle.Gemm(p, Stream{}));
  EXPECT_EQ(handle.cached_plans(), 3u);
  ASSERT_OK(SynchronizeStream(Stream{}));
}

// The small-batch kernel needs no plan, gives the same bits again, and hands a shape it
// cannot take (8-byte aligned x) to cuBLASLt.
TEST(GemmPlans, SmallBatchKernelNeedsNoPlanAndRepeatsItsBits) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(GemmHandle handle, GemmHandle::Create());
  ASSERT_OK_AND_ASSIGN(DeviceGemm g, MakeDeviceGemm(5, 300, 1024, 8));
  ASSERT_TRUE(GemmHandle::UsesSmallBatchKernel(g.params));
  EXPECT_TRUE(RepeatsItsBits(handle, g)) << "the small-batch kernel";
  EXPECT_EQ(handle.cached_plans(), 0u);
  g.params.x = g.x.as<uint16_t>() + 4;
  ASSERT_FALSE(GemmHandle::UsesSmallBatchKernel(g.params));
  ASSERT_OK(handle.Gemm(g.params, Stream{}));
  EXPECT_EQ(handle.cached_plans(), 1u);
  ASSERT_OK(SynchronizeStream(Stream{}));
}

// ------------------------- host-side checks (no GPU needed) -------------------------

TEST(CudaHostChecks, SmallBatchKernelRule) {
  auto* a = reinterpret_cast<const uint16_t*>(uintptr_t{4096});
  void* y = reinterpret_cast<void*>(uintptr_t{8192});
  GemmParams p{a, a, y, GemmOutput::kBf16, 1, 64, 4096};
  EXPECT_TRUE(GemmHandle::UsesSmallBatchKernel(p));
  p.tokens = 8;
  EXPECT_TRUE(GemmHandle::UsesSmallBatchKernel(p));
  p.tokens = 9;
  EXPECT_FALSE(GemmHandle::UsesSmallBatchKernel(p));
  p.tokens = 0;
  EXPECT_FALSE(GemmHandle::UsesSmallBatchKernel(p));
  p.tokens = 3;
  p.cols = 4100;  // not whole 16-byte vectors
  EXPECT_FALSE(GemmHandle::UsesSmallBatchKernel(p));
  p.cols = 8;
  EXPECT_TRUE(GemmHandle::UsesSmallBatchKernel(p));
  p.x = a + 4;  // 8-byte aligned
  EXPECT_FALSE(GemmHandle::UsesSmallBatchKernel(p));
  p.x = a;
  p.w = a + 1;
  EXPECT_FALSE(GemmHandle::UsesSmallBatchKernel(p));
  GemmHandle empty;
  empty.set_small_batch_kernel(true);  // no state: nothing to switch
  EXPECT_FALSE(empty.small_batch_kernel());
}


TEST(CudaHostChecks, CublasStatusesMapToStatusCodes) {
  EXPECT_TRUE(CublasStatusToStatus(0, "x").ok());
  const absl::Status alloc = CublasStatusToStatus(3, "cublasLtMatmul");  // ALLOC_FAILED
  EXPECT_EQ(alloc.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(alloc.message()).find("cublasLtMatmul: CUBLAS_STATUS_ALLOC_FAILED"),
            std::string::npos)
      << alloc;
  EXPECT_EQ(CublasStatusToStatus(1, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CublasStatusToStatus(7, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CublasStatusToStatus(8, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CublasStatusToStatus(15, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CublasStatusToStatus(13, "x").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(CublasStatusToStatus(14, "x").code(), absl::StatusCode::kInternal);
}

TEST(CudaHostChecks, GemmArgumentsAreCheckedBeforeTheHandle) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  auto* h = reinterpret_cast<uint16_t*>(uintptr_t{256});
  void* y = reinterpret_cast<void*>(uintptr_t{512});
  GemmHandle empty;  // no cuBLASLt behind it: only the checks can answer
  EXPECT_EQ(empty.cached_plans(), 0u);
  const GemmParams good{h, h, y, GemmOutput::kBf16, 4, 16, 32};
  EXPECT_EQ(empty.Gemm(good, Stream{}).code(), absl::StatusCode::kFailedPrecondition);
  GemmParams p = good;
  p.tokens = 0;  // checked, then refused for the empty handle (never enqueued)
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), absl::StatusCode::kFailedPrecondition);
  p = good;
  p.tokens = -1;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p.tokens = int64_t{1} << 31;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.rows = 0;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.cols = int64_t{1} << 31;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.output = static_cast<GemmOutput>(7);
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.x = nullptr;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.w = nullptr;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.y = nullptr;
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.x = reinterpret_cast<const uint16_t*>(uintptr_t{257});  // odd address
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p = good;
  p.output = GemmOutput::kF32;
  p.y = reinterpret_cast<void*>(uintptr_t{514});  // 2-byte aligned fp32
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), kInvalid);
  p.output = GemmOutput::kBf16;  // fine for bf16
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), absl::StatusCode::kFailedPrecondition);
  p = good;
  p.tokens = 0;
  p.x = nullptr;  // zero tokens: pointers are not needed
  EXPECT_EQ(empty.Gemm(p, Stream{}).code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(GemmHandle::Create(-1).status().code(), kInvalid);
  if (CudaDeviceCount() == 0) {
    EXPECT_EQ(GemmHandle::Create().status().code(), absl::StatusCode::kUnavailable);
  }
  GemmHandle moved = std::move(empty);  // moves of an empty handle are fine
  EXPECT_EQ(moved.Gemm(good, Stream{}).code(), absl::StatusCode::kFailedPrecondition);
}

// ------------------------------ GemmSwiGlu ------------------------------
// GemmSwiGlu against what it replaces, on the device: Gemm (bf16 y) into gate_up, then SwiGlu.
// Bit for bit: the fused kernel sums each row exactly as the small-batch GEMM does and applies
// the same SwiGLU function to the same bf16 roundings; the two-op path is those ops (each
// checked against the CPU reference by its own cases). Odd inter leaves a warp one gate row.
struct GemmSwiGluCase {
  std::string name;
  int64_t tokens, inter, cols;
  bool small_batch_kernel = true;
  bool nan_in_x = false;
};
void PrintTo(const GemmSwiGluCase& c, std::ostream* os) { *os << c.name; }

std::vector<GemmSwiGluCase> GemmSwiGluCases() {
  return {
      {"fused_1tok_inter640", 1, 640, 512},        {"fused_2tok_inter1001", 2, 1001, 256},
      {"fused_3tok_inter24", 3, 24, 4096},         {"fused_8tok_inter640", 8, 640, 512},
      {"fused_5tok_nan_in_x", 5, 96, 256, true, true},
      {"two_op_9tok_inter640", 9, 640, 512},       {"two_op_33tok_inter1001", 33, 1001, 256},
      {"two_op_4tok_small_batch_off", 4, 640, 512, false},
  };
}

using GemmSwiGluMatchesGemmThenSwiGlu = GpuCase<GemmSwiGluCase>;

TEST_P(GemmSwiGluMatchesGemmThenSwiGlu, BitForBitWithGuards) {
  const GemmSwiGluCase& c = GetParam();
  GemmHandle* handle = SharedHandle();
  ASSERT_NE(handle, nullptr) << "GemmHandle::Create failed";
  handle->set_small_batch_kernel(c.small_batch_kernel);
  std::mt19937 rng(SeedOf(c.name));
  std::vector<uint16_t> x = HashedBf16(c.tokens * c.cols, rng(), 1.0f);
  // Gate values of a few units, where silu is far from both linear and zero.
  const std::vector<uint16_t> w =
      HashedBf16(2 * c.inter * c.cols, rng(), 4.0f / std::sqrt(static_cast<float>(c.cols)));
  if (c.nan_in_x) x[(c.tokens / 2) * c.cols + 3] = kBf16QNan;
  ASSERT_OK_AND_ASSIGN(auto d_x, GuardedDevice<uint16_t>::Create(x));
  ASSERT_OK_AND_ASSIGN(auto d_w, GuardedDevice<uint16_t>::Create(w));
  const size_t n_out = static_cast<size_t>(c.tokens * c.inter);
  ASSERT_OK_AND_ASSIGN(auto d_out, GuardedDevice<uint16_t>::Unwritten(n_out));
  ASSERT_OK_AND_ASSIGN(auto d_gate_up, GuardedDevice<uint16_t>::Unwritten(2 * n_out));
  ASSERT_OK_AND_ASSIGN(auto d_ref_gate_up, GuardedDevice<uint16_t>::Unwritten(2 * n_out));
  ASSERT_OK_AND_ASSIGN(auto d_want, GuardedDevice<uint16_t>::Unwritten(n_out));

  GemmSwiGluParams p{d_x.data(), d_w.data(), nullptr, d_out.data(), c.tokens, c.inter, c.cols};
  const bool fused = c.small_batch_kernel && GemmHandle::UsesFusedSwiGluKernel(p);
  ASSERT_EQ(fused, c.name.rfind("fused", 0) == 0)
      << "the case does not run the path it is named for";
  if (!fused) {
    EXPECT_EQ(handle->GemmSwiGlu(p, Stream{}).code(), absl::StatusCode::kInvalidArgument)
        << "the two-op path ran without gate_up";
    p.gate_up = d_gate_up.data();
  }
  ASSERT_OK(handle->GemmSwiGlu(p, Stream{}));
  ASSERT_OK(handle->Gemm({d_x.data(), d_w.data(), d_ref_gate_up.data(), GemmOutput::kBf16,
                          c.tokens, 2 * c.inter, c.cols},
                         Stream{}));
  ASSERT_OK(SwiGlu({d_ref_gate_up.data(), d_want.data(), c.tokens, c.inter}, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));

  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got, d_out.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> want, d_want.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> gate_up, d_gate_up.Download());
  EXPECT_TRUE(d_out.GuardsIntact());
  EXPECT_TRUE(d_gate_up.GuardsIntact());
  for (size_t i = 0; i < n_out; ++i) {
    ASSERT_NE(got[i], kBf16Unwritten) << "out[" << i << "] was not written";
    ASSERT_EQ(got[i], want[i]) << "out[" << i / c.inter << ", " << i % c.inter << "]";
  }
  const bool gate_up_written =
      std::any_of(gate_up.begin(), gate_up.end(), [](uint16_t v) { return v != kBf16Unwritten; });
  EXPECT_EQ(gate_up_written, !fused) << "gate_up is the two-op path's scratch only";
  if (c.nan_in_x) {
    const int64_t bad = c.tokens / 2;
    EXPECT_TRUE(IsNan(got[bad * c.inter])) << "NaN in x did not reach its token";
    EXPECT_FALSE(IsNan(got[0])) << "NaN reached another token";
  }
  handle->set_small_batch_kernel(true);
}
INSTANTIATE_TEST_SUITE_P(CudaOps, GemmSwiGluMatchesGemmThenSwiGlu,
                         ::testing::ValuesIn(GemmSwiGluCases()), NameOf<GemmSwiGluCase>);

TEST(CudaHostChecks, GemmSwiGluRefusesBadArguments) {
  GemmHandle empty;
  const auto* some = reinterpret_cast<const uint16_t*>(uintptr_t{256});
  auto* out = reinterpret_cast<uint16_t*>(uintptr_t{512});
  const GemmSwiGluParams good{some, some, nullptr, out, 4, 64, 128};
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  GemmSwiGluParams p = good;
  p.inter = 0;
  EXPECT_EQ(empty.GemmSwiGlu(p, Stream{}).code(), kInvalid);
  p = good;
  p.inter = int64_t{1} << 30;
  EXPECT_EQ(empty.GemmSwiGlu(p, Stream{}).code(), kInvalid);
  p = good;
  p.out = nullptr;
  EXPECT_EQ(empty.GemmSwiGlu(p, Stream{}).code(), kInvalid);
  p = good;
  p.x = nullptr;
  EXPECT_EQ(empty.GemmSwiGlu(p, Stream{}).code(), kInvalid);
  EXPECT_EQ(empty.GemmSwiGlu(good, Stream{}).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace

namespace gpu_test {
size_t GemmCaseCount() { return GemmCases().size(); }
size_t GemmSwiGluCaseCount() { return GemmSwiGluCases().size(); }
}  // namespace gpu_test

}  // namespace tpserve::kernels::cuda
