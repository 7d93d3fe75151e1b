// Backend-ops test of the CUDA ops (kernels/cuda/cuda_ops.h) against the CPU references
// (kernels::ref, kernels/cpu/reference.cc). This file holds the element-wise ops, the registry
// check and main(); the GEMM cases are in cuda_gemm_test.cc and the attention cases in
// cuda_attention_test.cc (each states its tolerance), the shared helpers in cuda_test_util.h.
//  1. Table-driven GPU cases, one table per op: seeded random inputs (bf16 where the op takes
//     bf16), several shapes (1, 7 and 33 tokens, odd sizes, hidden 576/4096/5120, head_dim
//     2/64/128, fused-qkv strides, scattered and padding KV slots), NaN/inf injection. Each
//     device output sits between guard zones filled with a canary pattern that must survive;
//     outputs that are not updated in place start filled with a NaN sentinel, so an element
//     the kernel forgets to write fails NaN parity.
//  2. CudaOpRegistry: every op in kernels::cuda::RegisteredCudaOps() has cases in a table below
//     and every table belongs to a registered op. It needs no GPU.
//  3. CudaHostChecks: argument checks, the CUDA error -> Status mapping and DeviceBuffer's
//     range checks, all of which run before any CUDA call. They need no GPU.
// Tolerances (each stated on its case table):
//  - exact (bit for bit; NaN matches any NaN): Embedding, WriteKvCache, the residual update
//    of AddRmsNorm (one fp32 add on both sides), ApplyRope (bf16 of the reference's fp32
//    result: both sides compute without fused multiply-adds);
//  - exact including NaN payloads: GatherRows (a copy; its reference is a plain host copy);
//  - bf16 band: AddRmsNorm's and SwiGlu's bf16 outputs against the fp32 reference:
//    |gpu - ref| <= 2^-7 * |ref| + 1e-6 * max|ref| per element, i.e. within one bf16 ulp of the
//    exact value (round-to-nearest alone gives half an ulp; the other half covers fp32 sum order
//    and expf's 2-ulp error flipping a rounding), plus NaN/inf parity element by element.
// Without a CUDA device (or driver) main() runs only parts 2 and 3 and exits with code 77,
// which ctest reports as "skipped" (tests/gpu/CMakeLists.txt: SKIP_RETURN_CODE 77).
#include "kernels/cuda/cuda_ops.h"
#include "tests/gpu/gpu_test_main.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_runtime.h"
#include "kernels/ops.h"
#include "tests/gpu/cuda_test_util.h"

namespace tpserve::kernels::cuda {
namespace gpu_test {
size_t SampleTokensCaseCount();  // cuda_sampling_test.cc
}  // namespace gpu_test
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

// ============================== Embedding ==============================
// Tolerance: exact (widening bf16 to fp32 is exact on both sides).
enum class EmbeddingPoison { kNone, kOutOfRangeIds, kNanInfInTable };
struct EmbeddingCase {
  std::string name;
  int64_t tokens, vocab, hidden;
  EmbeddingPoison poison = EmbeddingPoison::kNone;
};
void PrintTo(const EmbeddingCase& c, std::ostream* os) { *os << c.name; }
const std::vector<EmbeddingCase>& EmbeddingCases() {
  static const std::vector<EmbeddingCase> cases = {
      {"decode_1tok_hidden4096", 1, 1000, 4096},
      {"7tok_hidden576", 7, 300, 576},
      {"33tok_hidden577_odd", 33, 97, 577},
      {"5tok_hidden1", 5, 3, 1},
      {"out_of_range_ids_are_nan_rows", 7, 50, 130, EmbeddingPoison::kOutOfRangeIds},
      {"nan_and_inf_rows_are_copied", 6, 40, 64, EmbeddingPoison::kNanInfInTable},
  };
  return cases;
}
using EmbeddingMatchesReference = GpuCase<EmbeddingCase>;

TEST_P(EmbeddingMatchesReference, ExactWithGuards) {
  const EmbeddingCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  std::vector<uint16_t> table = RandomBf16(c.vocab * c.hidden, rng, 2.0f);
  std::vector<int32_t> ids(c.tokens);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab - 1));
  for (int32_t& id : ids) id = pick(rng);
  std::vector<bool> bad(c.tokens, false);
  if (c.poison == EmbeddingPoison::kOutOfRangeIds) {
    const int32_t wrong[] = {-1, static_cast<int32_t>(c.vocab),
                             std::numeric_limits<int32_t>::max()};
    for (int i = 0; i < 3; ++i) {
      ids[2 * i] = wrong[i];
      bad[2 * i] = true;
    }
  }
  if (c.poison == EmbeddingPoison::kNanInfInTable) {
    table[ids[0] * c.hidden + 1] = kBf16QNan;
    table[ids[1] * c.hidden] = kBf16PosInf;
    table[ids[2] * c.hidden + c.hidden - 1] = kBf16NegInf;
  }

  // Reference: ref::Embedding on the same bf16 bits; out-of-range rows are all NaN.
  std::vector<float> want(c.tokens * c.hidden);
  const WeightMatrix w{table.data(), DType::kBF16, c.vocab, c.hidden};
  for (int64_t t = 0; t < c.tokens; ++t) {
    if (bad[t]) {
      std::fill_n(want.begin() + t * c.hidden, c.hidden, std::nanf(""));
    } else {
      ref::Embedding(&ids[t], 1, w, want.data() + t * c.hidden);
    }
  }

  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_table, Upload(table));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_ids, Upload(ids));
  ASSERT_OK_AND_ASSIGN(auto out, GuardedDevice<float>::Unwritten(want.size()));
  EmbeddingParams p;
  p.ids = d_ids.as<int32_t>();
  p.table = d_table.as<uint16_t>();
  p.out = out.data();
  p.tokens = c.tokens;
  p.vocab = c.vocab;
  p.hidden = c.hidden;
  ASSERT_OK(Embedding(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, out.Download());
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(SameBits(got, want));
  if (c.poison == EmbeddingPoison::kNanInfInTable) {
    EXPECT_TRUE(std::isnan(want[1]) && std::isinf(want[c.hidden])) << "poison did not land";
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, EmbeddingMatchesReference,
                         ::testing::ValuesIn(EmbeddingCases()), NameOf<EmbeddingCase>);

// ============================== AddRmsNorm ==============================
// Tolerance: residual exact; output within one bf16 ulp of ref (WithinBf16).
enum class NormPoison { kNone, kNanInResidual, kInfInDelta };
struct AddRmsNormCase {
  std::string name;
  int64_t tokens, dim;
  bool with_delta = true;
  float scale = 1.0f;  // magnitude of residual and delta
  float eps = 1e-5f;
  NormPoison poison = NormPoison::kNone;
};
void PrintTo(const AddRmsNormCase& c, std::ostream* os) { *os << c.name; }
const std::vector<AddRmsNormCase>& AddRmsNormCases() {
  static const std::vector<AddRmsNormCase> cases = {
      {"decode_1tok_dim4096", 1, 4096},
      {"7tok_dim576", 7, 576},
      {"33tok_dim4096", 33, 4096},
      {"3tok_dim1", 3, 1},
      {"5tok_dim5120_eps1e-6", 5, 5120, true, 1.0f, 1e-6f},
      {"2tok_dim14336", 2, 14336},
      {"7tok_dim1000_large_values", 7, 1000, true, 300.0f},
      {"7tok_dim512_tiny_values_eps_dominates", 7, 512, true, 1e-3f, 1e-5f},
      {"plain_rmsnorm_no_delta_7tok_dim4096", 7, 4096, false},
      {"plain_rmsnorm_no_delta_33tok_dim577", 33, 577, false},
      {"nan_in_residual_row", 4, 768, true, 1.0f, 1e-5f, NormPoison::kNanInResidual},
      {"inf_in_delta_row", 4, 768, true, 1.0f, 1e-5f, NormPoison::kInfInDelta},
  };
  return cases;
}
using AddRmsNormMatchesReference = GpuCase<AddRmsNormCase>;

TEST_P(AddRmsNormMatchesReference, ResidualExactOutputWithinBf16WithGuards) {
  const AddRmsNormCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  const size_t n = static_cast<size_t>(c.tokens * c.dim);
  std::vector<float> residual = RandomFloats(n, rng, c.scale);
  std::vector<uint16_t> delta = RandomBf16(n, rng, c.scale);
  const std::vector<uint16_t> weight = RandomBf16(c.dim, rng, 2.0f);
  const int64_t bad_row = c.tokens / 2;
  if (c.poison == NormPoison::kNanInResidual) residual[bad_row * c.dim + c.dim / 3] = NAN;
  if (c.poison == NormPoison::kInfInDelta) delta[bad_row * c.dim + c.dim - 1] = kBf16PosInf;

  std::vector<float> want_residual = residual, want(n);
  const std::vector<float> w = Widen(weight);
  if (c.with_delta) {
    ref::AddRmsNorm(want_residual.data(), Widen(delta).data(), w.data(), c.tokens, c.dim, c.eps,
                    want.data());
  } else {
    ref::RmsNorm(want_residual.data(), w.data(), c.tokens, c.dim, c.eps, want.data());
  }

  ASSERT_OK_AND_ASSIGN(auto d_residual, GuardedDevice<float>::Create(residual));
  ASSERT_OK_AND_ASSIGN(auto d_delta, GuardedDevice<uint16_t>::Create(delta));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_weight, Upload(weight));
  ASSERT_OK_AND_ASSIGN(auto out, GuardedDevice<uint16_t>::Unwritten(n));
  AddRmsNormParams p;
  p.residual = d_residual.data();
  p.delta = c.with_delta ? d_delta.data() : nullptr;
  p.weight = d_weight.as<uint16_t>();
  p.out = out.data();
  p.tokens = c.tokens;
  p.dim = c.dim;
  p.eps = c.eps;
  ASSERT_OK(AddRmsNorm(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<float> got_residual, d_residual.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got_delta, d_delta.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got, out.Download());
  EXPECT_TRUE(d_residual.GuardsIntact());
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(d_delta.GuardsIntact());
  EXPECT_TRUE(SameBits(got_delta, delta)) << "delta was modified";
  EXPECT_TRUE(SameBits(got_residual, want_residual)) << "residual update";
  EXPECT_TRUE(WithinBf16(got, want)) << "normalised output";
  if (c.poison == NormPoison::kNanInResidual) {  // the whole row, and only it
    for (int64_t i = 0; i < c.dim; ++i) ASSERT_TRUE(std::isnan(want[bad_row * c.dim + i]));
    ASSERT_FALSE(std::isnan(want[((bad_row + 1) % c.tokens) * c.dim]));
  }
  if (c.poison == NormPoison::kInfInDelta) {  // inf * 0 = NaN there, zeros elsewhere
    ASSERT_TRUE(std::isnan(want[bad_row * c.dim + c.dim - 1]));
    ASSERT_EQ(want[bad_row * c.dim], 0.0f);
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, AddRmsNormMatchesReference,
                         ::testing::ValuesIn(AddRmsNormCases()), NameOf<AddRmsNormCase>);

// ============================== ApplyRope ==============================
// Tolerance: exact against bf16(ref::ApplyRope(widen(x))), including the untouched parts of
// a strided row.
enum class RopePoison { kNone, kNanInX, kBadPositions };
struct RopeCase {
  std::string name;
  int64_t tokens, heads, head_dim;
  int64_t extra_stride = 0;  // elements after the rotated heads in each token's row
  int64_t max_positions = 4096;
  double theta = 10000.0;
  RopePoison poison = RopePoison::kNone;
};
void PrintTo(const RopeCase& c, std::ostream* os) { *os << c.name; }
const std::vector<RopeCase>& RopeCases() {
  static const std::vector<RopeCase> cases = {
      {"decode_1tok_32heads_dim128", 1, 32, 128},
      {"7tok_8heads_dim64", 7, 8, 64},
      {"33tok_fused_qkv_q32_k8_dim128", 33, 40, 128, 8 * 128},  // v stays untouched
      {"5tok_3heads_dim2", 5, 3, 2, 0, 100},
      {"9tok_9heads_dim64_theta1e6_stride_odd", 9, 9, 64, 3, 8192, 1e6},
      {"nan_in_x", 4, 4, 64, 0, 4096, 10000.0, RopePoison::kNanInX},
      {"bad_positions_are_nan_tokens", 6, 2, 32, 16, 50, 10000.0, RopePoison::kBadPositions},
  };
  return cases;
}
using ApplyRopeMatchesReference = GpuCase<RopeCase>;

TEST_P(ApplyRopeMatchesReference, BitExactWithGuards) {
  const RopeCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  const int64_t row = c.heads * c.head_dim, stride = row + c.extra_stride, half = c.head_dim / 2;
  std::vector<uint16_t> x = RandomBf16(c.tokens * stride, rng, 3.0f);
  std::vector<int32_t> positions(c.tokens);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.max_positions - 1));
  for (int32_t& pos : positions) pos = pick(rng);
  positions[0] = static_cast<int32_t>(c.max_positions - 1);  // the table's last row
  std::vector<bool> bad(c.tokens, false);
  if (c.poison == RopePoison::kBadPositions) {
    positions[1] = -1;
    positions[3] = static_cast<int32_t>(c.max_positions);
    bad[1] = bad[3] = true;
  }
  if (c.poison == RopePoison::kNanInX) x[1 * stride + 2 * c.head_dim + 5] = kBf16QNan;

  std::vector<float> cos(c.max_positions * half), sin(cos.size());
  BuildRopeTable(c.theta, c.head_dim, c.max_positions, cos.data(), sin.data());
  const RopeTable table{c.max_positions, half, cos.data(), sin.data()};

  // Reference on the widened rotated heads of each token; the rest of each row is unchanged.
  std::vector<uint16_t> want = x;
  for (int64_t t = 0; t < c.tokens; ++t) {
    if (bad[t]) {
      std::fill_n(want.begin() + t * stride, row, kBf16QNan);
      continue;
    }
    std::vector<float> heads(row);
    for (int64_t i = 0; i < row; ++i) heads[i] = Bf16ToF32(x[t * stride + i]);
    ref::ApplyRope(heads.data(), 1, c.heads, c.head_dim, &positions[t], table);
    for (int64_t i = 0; i < row; ++i) want[t * stride + i] = F32ToBf16(heads[i]);
  }

  ASSERT_OK_AND_ASSIGN(auto d_x, GuardedDevice<uint16_t>::Create(x));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_pos, Upload(positions));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_cos, Upload(cos));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_sin, Upload(sin));
  RopeParams p;
  p.x = d_x.data();
  p.tokens = c.tokens;
  p.heads = c.heads;
  p.head_dim = c.head_dim;
  p.token_stride = c.extra_stride == 0 ? 0 : stride;  // 0 exercises the "packed" default
  p.positions = d_pos.as<int32_t>();
  p.cos = d_cos.as<float>();
  p.sin = d_sin.as<float>();
  p.max_positions = c.max_positions;
  ASSERT_OK(ApplyRope(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got, d_x.Download());
  EXPECT_TRUE(d_x.GuardsIntact());
  EXPECT_TRUE(SameBits(got, want));
  if (c.poison == RopePoison::kNanInX) {  // the pair (5, 5 + half) of head 2 of token 1
    EXPECT_TRUE(IsNan(want[stride + 2 * c.head_dim + 5]) &&
                IsNan(want[stride + 2 * c.head_dim + 5 + half]) &&
                !IsNan(want[stride + 2 * c.head_dim + 4]));
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, ApplyRopeMatchesReference, ::testing::ValuesIn(RopeCases()),
                         NameOf<RopeCase>);

// ============================== SwiGlu ==============================
// Tolerance: within one bf16 ulp of ref (WithinBf16).
enum class SwiGluPoison { kNone, kNanInfInGate, kInfInUp };
struct SwiGluCase {
  std::string name;
  int64_t tokens, inter;
  float scale = 4.0f;
  SwiGluPoison poison = SwiGluPoison::kNone;
};
void PrintTo(const SwiGluCase& c, std::ostream* os) { *os << c.name; }
const std::vector<SwiGluCase>& SwiGluCases() {
  static const std::vector<SwiGluCase> cases = {
      {"decode_1tok_inter14336", 1, 14336},
      {"7tok_inter3584_tp4", 7, 3584},
      {"33tok_inter1000", 33, 1000},
      {"2tok_inter1", 2, 1},
      {"5tok_inter1537_saturating", 5, 1537, 100.0f},
      {"nan_and_inf_in_gate", 4, 64, 4.0f, SwiGluPoison::kNanInfInGate},
      {"inf_in_up", 3, 64, 4.0f, SwiGluPoison::kInfInUp},
  };
  return cases;
}
using SwiGluMatchesReference = GpuCase<SwiGluCase>;

TEST_P(SwiGluMatchesReference, WithinBf16WithGuardsAndNanParity) {
  const SwiGluCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  std::vector<uint16_t> gate_up = RandomBf16(c.tokens * 2 * c.inter, rng, c.scale);
  if (c.poison == SwiGluPoison::kNanInfInGate) {
    gate_up[0 * 2 * c.inter + 3] = kBf16QNan;
    gate_up[1 * 2 * c.inter + 4] = kBf16PosInf;  // silu(+inf) * u = +-inf
    gate_up[2 * 2 * c.inter + 5] = kBf16NegInf;  // -inf / (1 + inf) = NaN, as torch's formula
  }
  if (c.poison == SwiGluPoison::kInfInUp) gate_up[1 * 2 * c.inter + c.inter + 7] = kBf16NegInf;
  std::vector<float> want(c.tokens * c.inter);
  ref::SwiGlu(Widen(gate_up).data(), c.tokens, c.inter, want.data());

  ASSERT_OK_AND_ASSIGN(auto d_in, GuardedDevice<uint16_t>::Create(gate_up));
  ASSERT_OK_AND_ASSIGN(auto out, GuardedDevice<uint16_t>::Unwritten(want.size()));
  SwiGluParams p;
  p.gate_up = d_in.data();
  p.out = out.data();
  p.tokens = c.tokens;
  p.inter = c.inter;
  ASSERT_OK(SwiGlu(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got, out.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got_in, d_in.Download());
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(d_in.GuardsIntact());
  EXPECT_TRUE(SameBits(got_in, gate_up)) << "gate_up was modified";
  EXPECT_TRUE(WithinBf16(got, want));
  if (c.poison == SwiGluPoison::kNanInfInGate) {
    EXPECT_TRUE(std::isnan(want[3]) && std::isinf(want[c.inter + 4]) &&
                std::isnan(want[2 * c.inter + 5]))
        << "poison did not land";
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, SwiGluMatchesReference, ::testing::ValuesIn(SwiGluCases()),
                         NameOf<SwiGluCase>);

// ============================== WriteKvCache ==============================
// Tolerance: exact; every cache element outside the written slots keeps its bits.
struct KvCase {
  std::string name;
  int64_t tokens, num_blocks, block_size, kv_heads, head_dim;
  int64_t k_extra = 0, v_extra = 0;  // extra elements per token row (fused qkv layout)
  bool padding = false;             // some tokens have slot -1
  bool past_end = false;            // one slot >= capacity (skipped)
};
void PrintTo(const KvCase& c, std::ostream* os) { *os << c.name; }
const std::vector<KvCase>& KvCases() {
  static const std::vector<KvCase> cases = {
      {"decode_1tok_kv8_dim128_block16", 1, 4, 16, 8, 128},
      {"7tok_kv2_dim64_scattered", 7, 5, 16, 2, 64},
      {"33tok_fused_qkv_kv8_dim128", 33, 6, 16, 8, 128, 40 * 128, 40 * 128},
      {"9tok_kv1_dim64_block1", 9, 20, 1, 1, 64},
      {"5tok_kv3_dim7_odd", 5, 3, 4, 3, 7},
      {"padding_slots_skipped", 8, 3, 8, 2, 32, 0, 0, true},
      {"slot_past_end_skipped", 4, 2, 4, 1, 16, 0, 0, false, true},
  };
  return cases;
}
using WriteKvCacheMatchesReference = GpuCase<KvCase>;

TEST_P(WriteKvCacheMatchesReference, ExactAndTouchesOnlyItsSlots) {
  const KvCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  const int64_t row = c.kv_heads * c.head_dim;
  const int64_t k_stride = row + c.k_extra, v_stride = row + c.v_extra;
  const int64_t num_slots = c.num_blocks * c.block_size;
  ASSERT_LE(c.tokens, num_slots);
  std::vector<int64_t> slots(num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(c.tokens);
  if (c.padding) slots[0] = slots[3] = slots[c.tokens - 1] = -1;
  if (c.past_end) slots[1] = num_slots;
  const std::vector<uint16_t> k = RandomBf16(c.tokens * k_stride, rng);
  const std::vector<uint16_t> v = RandomBf16(c.tokens * v_stride, rng);
  const std::vector<uint16_t> init_k = RandomBf16(num_slots * row, rng, 5.0f);
  const std::vector<uint16_t> init_v = RandomBf16(num_slots * row, rng, 5.0f);

  // Reference: ref::WriteKvCache on the widened data of the tokens with a valid slot, packed.
  std::vector<float> ref_k = Widen(init_k), ref_v = Widen(init_v), pk, pv;
  std::vector<int64_t> valid_slots;
  for (int64_t t = 0; t < c.tokens; ++t) {
    if (slots[t] < 0 || slots[t] >= num_slots) continue;
    valid_slots.push_back(slots[t]);
    for (int64_t e = 0; e < row; ++e) {
      pk.push_back(Bf16ToF32(k[t * k_stride + e]));
      pv.push_back(Bf16ToF32(v[t * v_stride + e]));
    }
  }
  const KvCacheView view{ref_k.data(), ref_v.data(), c.num_blocks, c.block_size, c.kv_heads,
                         c.head_dim};
  ref::WriteKvCache(pk.data(), pv.data(), static_cast<int64_t>(valid_slots.size()),
                    valid_slots.data(), view);
  const std::vector<uint16_t> want_k = Narrow(ref_k), want_v = Narrow(ref_v);

  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_k, Upload(k));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_v, Upload(v));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_slots, Upload(slots));
  ASSERT_OK_AND_ASSIGN(auto cache_k, GuardedDevice<uint16_t>::Create(init_k));
  ASSERT_OK_AND_ASSIGN(auto cache_v, GuardedDevice<uint16_t>::Create(init_v));
  WriteKvCacheParams p;
  p.k = d_k.as<uint16_t>();
  p.v = d_v.as<uint16_t>();
  p.k_token_stride = c.k_extra == 0 ? 0 : k_stride;
  p.v_token_stride = c.v_extra == 0 ? 0 : v_stride;
  p.tokens = c.tokens;
  p.slots = d_slots.as<int64_t>();
  p.cache = {cache_k.data(), cache_v.data(), c.num_blocks, c.block_size, c.kv_heads, c.head_dim};
  ASSERT_OK(WriteKvCache(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got_k, cache_k.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got_v, cache_v.Download());
  EXPECT_TRUE(cache_k.GuardsIntact());
  EXPECT_TRUE(cache_v.GuardsIntact());
  EXPECT_TRUE(SameBits(got_k, want_k)) << "K cache";
  EXPECT_TRUE(SameBits(got_v, want_v)) << "V cache";
  EXPECT_NE(want_k, init_k) << "the case wrote nothing";
}
INSTANTIATE_TEST_SUITE_P(CudaOps, WriteKvCacheMatchesReference, ::testing::ValuesIn(KvCases()),
                         NameOf<KvCase>);

// ============================== GatherRows ==============================
// Tolerance: exact bits, NaN payloads included (the op copies); a row with an out-of-range index
// is bf16 0x7fc0 exactly (so a row the kernel forgets, still the 0x7fde sentinel, fails).
struct GatherRowsCase {
  std::string name;
  int64_t rows, src_rows, dim;
  bool repeats = false;       // indices repeat and run backwards
  bool out_of_range = false;  // three indices are -1, src_rows and INT32_MAX
  bool nan_payloads = false;  // picked src rows hold NaN payloads, infs and subnormals
};
void PrintTo(const GatherRowsCase& c, std::ostream* os) { *os << c.name; }
const std::vector<GatherRowsCase>& GatherRowsCases() {
  static const std::vector<GatherRowsCase> cases = {
      {"logits_1row_hidden4096", 1, 7, 4096},
      {"7rows_of_33_hidden576", 7, 33, 576},
      {"33rows_hidden577_odd", 33, 40, 577},
      {"300rows_hidden5120", 300, 512, 5120},
      {"5rows_dim1", 5, 9, 1},
      {"repeated_and_reversed_indices", 6, 4, 130, true},
      {"out_of_range_indices_are_nan_rows", 7, 12, 300, false, true},
      {"nan_payloads_copied_exactly", 4, 5, 64, false, false, true},
  };
  return cases;
}
using GatherRowsMatchesReference = GpuCase<GatherRowsCase>;

TEST_P(GatherRowsMatchesReference, ExactBitsWithGuards) {
  const GatherRowsCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  std::vector<uint16_t> src = RandomBf16(c.src_rows * c.dim, rng, 3.0f);
  std::vector<int32_t> indices(c.rows);
  if (c.repeats) {
    for (int64_t i = 0; i < c.rows; ++i) {
      indices[i] = static_cast<int32_t>((c.rows - 1 - i) % c.src_rows);
    }
  } else {
    ASSERT_LE(c.rows, c.src_rows);
    std::vector<int32_t> all(c.src_rows);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), c.rows, indices.begin());
  }
  if (c.out_of_range) {
    indices[0] = -1;
    indices[3] = static_cast<int32_t>(c.src_rows);
    indices[c.rows - 1] = std::numeric_limits<int32_t>::max();
  }
  if (c.nan_payloads) {
    const uint16_t odd[] = {0x7fc1u, 0xffffu, 0x7f81u, kBf16PosInf, kBf16NegInf, 0x0001u};
    for (int i = 0; i < 6; ++i) src[indices[i % 2] * c.dim + i] = odd[i];
  }

  // Reference: a plain host copy; rows with an index outside [0, src_rows) are bf16 NaN 0x7fc0.
  std::vector<uint16_t> want(c.rows * c.dim);
  for (int64_t i = 0; i < c.rows; ++i) {
    const int32_t r = indices[i];
    if (r < 0 || r >= c.src_rows) {
      std::fill_n(want.begin() + i * c.dim, c.dim, kBf16QNan);
    } else {
      std::copy_n(src.begin() + r * c.dim, c.dim, want.begin() + i * c.dim);
    }
  }

  ASSERT_OK_AND_ASSIGN(auto d_src, GuardedDevice<uint16_t>::Create(src));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_indices, Upload(indices));
  ASSERT_OK_AND_ASSIGN(auto out, GuardedDevice<uint16_t>::Unwritten(want.size()));
  GatherRowsParams p;
  p.src = d_src.data();
  p.indices = d_indices.as<int32_t>();
  p.out = out.data();
  p.rows = c.rows;
  p.src_rows = c.src_rows;
  p.dim = c.dim;
  ASSERT_OK(GatherRows(p, Stream{}));
  ASSERT_OK(SynchronizeStream(Stream{}));
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got, out.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> got_src, d_src.Download());
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_TRUE(d_src.GuardsIntact());
  EXPECT_TRUE(got_src == src) << "src was modified";
  const auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin());
  EXPECT_TRUE(g == got.end()) << "element " << (g - got.begin()) << " (row "
                              << (g - got.begin()) / c.dim << "): got bits 0x" << std::hex
                              << (g == got.end() ? 0 : *g) << ", want 0x"
                              << (w == want.end() ? 0 : *w);
  if (c.nan_payloads) {
    EXPECT_EQ(want[c.dim + 1], 0xffffu) << "poison did not land";
  }
}
INSTANTIATE_TEST_SUITE_P(CudaOps, GatherRowsMatchesReference,
                         ::testing::ValuesIn(GatherRowsCases()), NameOf<GatherRowsCase>);

// ============================== device runtime ==============================
// CaptureGraph (kernels/cuda/device_runtime.h) around an op: a capture that fails (a stream
// synchronisation inside it, which capture forbids) returns an error and leaves nothing behind,
// neither a capturing stream nor the runtime's "last error" that every launcher reads after its
// launch (left there, it would fail the next, unrelated op); a good capture runs nothing until
// its graph is launched, and then gives the eager op's exact result.
TEST(CudaRuntime, FailedCapturesLeaveNoErrorForTheNextLaunchAndGraphsReplayExactly) {
  ASSERT_OK_AND_ASSIGN(OwnedStream owned, OwnedStream::Create());
  const Stream s = owned.get();
  constexpr int64_t kRows = 3, kSrcRows = 5, kDim = 40;
  std::mt19937 rng(SeedOf("capture_gather"));
  const std::vector<uint16_t> src = RandomBf16(kSrcRows * kDim, rng, 3.0f);
  const std::vector<int32_t> indices = {4, 0, 2};
  std::vector<uint16_t> want(kRows * kDim);
  for (int64_t i = 0; i < kRows; ++i) {
    std::copy_n(src.begin() + indices[i] * kDim, kDim, want.begin() + i * kDim);
  }
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_src, Upload(src));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_indices, Upload(indices));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_out, DeviceBuffer::Allocate(want.size() * 2));
  const GatherRowsParams p{d_src.as<uint16_t>(), d_indices.as<int32_t>(),
                           d_out.as<uint16_t>(),  kRows, kSrcRows, kDim};
  auto download = [&]() {
    std::vector<uint16_t> got(want.size(), 0);
    EXPECT_TRUE(SynchronizeStream(s).ok());
    EXPECT_TRUE(d_out.CopyToHost(got.data(), got.size() * 2).ok());
    return got;
  };

  // Enqueue fails (its own error is returned), the end of the capture fails too.
  absl::StatusOr<ExecutableGraph> failed = CaptureGraph(s, [&]() -> absl::Status {
    if (absl::Status st = GatherRows(p, s); !st.ok()) return st;
    return SynchronizeStream(s);
  });
  EXPECT_FALSE(failed.ok()) << "a synchronisation inside a capture went unnoticed";
  ASSERT_OK(MemsetAsync(d_out.data(), 0, want.size() * 2, s));
  {
    const absl::Status next = GatherRows(p, s);
    ASSERT_TRUE(next.ok()) << "a failed capture left its error for the next launch: " << next;
  }
  EXPECT_TRUE(download() == want);

  // Enqueue reports success, only the end of the capture fails.
  failed = CaptureGraph(s, [&]() -> absl::Status {
    (void)SynchronizeStream(s);
    return absl::OkStatus();
  });
  EXPECT_FALSE(failed.ok()) << "an invalidated capture was instantiated";
  {
    const absl::Status next = GatherRows(p, s);
    ASSERT_TRUE(next.ok()) << "a failed capture left its error for the next launch: " << next;
  }

  // A good capture: nothing runs until the graph is launched, then each launch gathers.
  ASSERT_OK(MemsetAsync(d_out.data(), 0, want.size() * 2, s));
  ASSERT_OK_AND_ASSIGN(ExecutableGraph graph, CaptureGraph(s, [&] { return GatherRows(p, s); }));
  EXPECT_TRUE(download() == std::vector<uint16_t>(want.size(), 0)) << "capture ran the op";
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_OK(MemsetAsync(d_out.data(), 0, want.size() * 2, s));
    ASSERT_OK(graph.Launch(s));
    EXPECT_TRUE(download() == want) << "replay " << replay;
  }
}

// ============================== registry ==============================

// Every op tested above or in the other files of this test (cuda_gemm_test.cc,
// cuda_attention_test.cc), with its number of cases. Add a line with each new op's table.
std::map<std::string_view, size_t> TestedOps() {
  return {
      {"Embedding", EmbeddingCases().size()},   {"AddRmsNorm", AddRmsNormCases().size()},
      {"ApplyRope", RopeCases().size()},        {"SwiGlu", SwiGluCases().size()},
      {"WriteKvCache", KvCases().size()},       {"Gemm", GemmCaseCount()},
      {"GemmSwiGlu", GemmSwiGluCaseCount()},
      {"PagedPrefillAttention", PrefillAttentionCaseCount()},
      {"PagedDecodeAttention", DecodeAttentionCaseCount()},
      {"SampleTokens", SampleTokensCaseCount()},
      {"GatherRows", GatherRowsCases().size()},
      {"ApplyRopeAndWriteKvCache", RopeKvCaseCount()},
  };
}

TEST(CudaOpRegistry, EveryRegisteredOpHasCasesAndEveryTestedOpIsRegistered) {
  const std::map<std::string_view, size_t> tested = TestedOps();
  ASSERT_FALSE(RegisteredCudaOps().empty());
  std::map<std::string_view, int> registered;
  for (const CudaOpInfo& op : RegisteredCudaOps()) {
    EXPECT_EQ(++registered[op.name], 1) << op.name << " is registered twice";
    EXPECT_FALSE(op.contract.empty()) << op.name << " has no contract line";
    const auto it = tested.find(op.name);
    EXPECT_TRUE(it != tested.end() && it->second > 0)
        << "registered CUDA op " << op.name << " has no case in tests/gpu/cuda_ops_test.cc";
  }
  for (const auto& [name, count] : tested) {
    EXPECT_TRUE(registered.count(name)) << "tested op " << name << " is not registered";
  }
}

// ============================== host-side checks ==============================
// These run before any CUDA call, so they need no GPU.

TEST(CudaHostChecks, CudaErrorsMapToStatusCodes) {
  EXPECT_TRUE(CudaErrorToStatus(0, "x").ok());
  const absl::Status oom = CudaErrorToStatus(2, "cudaMalloc");  // cudaErrorMemoryAllocation
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(oom.message()).find("cudaMalloc: cudaErrorMemoryAllocation"),
            std::string::npos)
      << oom;
  EXPECT_EQ(CudaErrorToStatus(35, "x").code(), absl::StatusCode::kUnavailable);   // no driver
  EXPECT_EQ(CudaErrorToStatus(100, "x").code(), absl::StatusCode::kUnavailable);  // no device
  EXPECT_EQ(CudaErrorToStatus(1, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaErrorToStatus(209, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaErrorToStatus(700, "x").code(), absl::StatusCode::kInternal);  // illegal address
}

TEST(CudaHostChecks, DeviceQueryNeverFailsAndBuffersCheckTheirRanges) {
  const int devices = CudaDeviceCount();
  EXPECT_GE(devices, 0);
  if (devices == 0) {  // no driver or device: an error Status, not an abort
    EXPECT_FALSE(DeviceBuffer::Allocate(256).ok());
    EXPECT_FALSE(CudaDeviceDescription(0).ok());
  }
  absl::StatusOr<DeviceBuffer> empty = DeviceBuffer::Allocate(0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->data(), nullptr);
  char byte = 0;
  EXPECT_EQ(empty->CopyFromHost(&byte, 1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(empty->CopyToHost(&byte, 1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(empty->CopyToHost(&byte, 0).ok());
}

TEST(CudaHostChecks, BadArgumentsAreInvalidArgumentAndZeroTokensIsANoOp) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  // Fake device pointers: the checks must reject these calls before launching anything.
  auto* f = reinterpret_cast<float*>(uintptr_t{256});
  auto* h = reinterpret_cast<uint16_t*>(uintptr_t{256});
  auto* i32 = reinterpret_cast<int32_t*>(uintptr_t{256});
  auto* i64 = reinterpret_cast<int64_t*>(uintptr_t{256});

  EXPECT_TRUE(Embedding({nullptr, nullptr, nullptr, 0, 10, 16}, Stream{}).ok());
  EXPECT_EQ(Embedding({i32, h, f, -1, 10, 16}, Stream{}).code(), kInvalid);
  EXPECT_EQ(Embedding({i32, h, f, 1, 10, 0}, Stream{}).code(), kInvalid);
  EXPECT_EQ(Embedding({nullptr, h, f, 1, 10, 16}, Stream{}).code(), kInvalid);
  EXPECT_EQ(Embedding({i32, h, f, int64_t{1} << 31, 10, 16}, Stream{}).code(), kInvalid);

  AddRmsNormParams norm{f, h, h, h, 1, 16, 1e-5f};
  norm.eps = NAN;
  EXPECT_EQ(AddRmsNorm(norm, Stream{}).code(), kInvalid);
  norm.eps = 1e-5f;
  norm.dim = 0;
  EXPECT_EQ(AddRmsNorm(norm, Stream{}).code(), kInvalid);
  norm.dim = 16;
  norm.weight = nullptr;
  EXPECT_EQ(AddRmsNorm(norm, Stream{}).code(), kInvalid);
  norm.tokens = 0;
  EXPECT_TRUE(AddRmsNorm(norm, Stream{}).ok());

  RopeParams rope{h, 1, 2, 7, 0, i32, f, f, 16};  // odd head_dim
  EXPECT_EQ(ApplyRope(rope, Stream{}).code(), kInvalid);
  rope.head_dim = 8;
  rope.token_stride = 15;  // less than heads * head_dim = 16
  EXPECT_EQ(ApplyRope(rope, Stream{}).code(), kInvalid);
  rope.token_stride = 16;
  rope.max_positions = 0;
  EXPECT_EQ(ApplyRope(rope, Stream{}).code(), kInvalid);

  EXPECT_EQ(SwiGlu({h, h, 1, 0}, Stream{}).code(), kInvalid);
  EXPECT_EQ(SwiGlu({h, nullptr, 1, 8}, Stream{}).code(), kInvalid);
  EXPECT_TRUE(SwiGlu({nullptr, nullptr, 0, 8}, Stream{}).ok());

  WriteKvCacheParams kv{h, h, 0, 0, 1, i64, {h, nullptr, 2, 16, 1, 8}};
  EXPECT_EQ(WriteKvCache(kv, Stream{}).code(), kInvalid);  // cache.v is null
  kv.cache.v = h;
  kv.k_token_stride = 4;  // less than the row of 8
  EXPECT_EQ(WriteKvCache(kv, Stream{}).code(), kInvalid);
  kv.k_token_stride = 0;
  kv.cache.block_size = 0;
  EXPECT_EQ(WriteKvCache(kv, Stream{}).code(), kInvalid);

  EXPECT_TRUE(GatherRows({nullptr, nullptr, nullptr, 0, 4, 16}, Stream{}).ok());
  GatherRowsParams gather{h, i32, h, 1, 4, 16};
  gather.src_rows = 0;
  EXPECT_EQ(GatherRows(gather, Stream{}).code(), kInvalid);
  gather.src_rows = 4;
  gather.dim = int64_t{1} << 31;
  EXPECT_EQ(GatherRows(gather, Stream{}).code(), kInvalid);
  gather.dim = 16;
  gather.indices = nullptr;
  EXPECT_EQ(GatherRows(gather, Stream{}).code(), kInvalid);
  gather.indices = i32;
  gather.rows = -1;
  EXPECT_EQ(GatherRows(gather, Stream{}).code(), kInvalid);
}

}  // namespace
}  // namespace tpserve::kernels::cuda

int main(int argc, char** argv) {
  const int devices = tpserve::kernels::cuda::CudaDeviceCount();
  for (int d = 0; d < devices; ++d) {
    const absl::StatusOr<std::string> desc = tpserve::kernels::cuda::CudaDeviceDescription(d);
    std::printf("cuda_ops_test: device %d: %s\n", d,
                desc.ok() ? desc->c_str() : std::string(desc.status().message()).c_str());
  }
  return tpserve::testing::RunGpuTests(argc, argv, "cuda_ops_test", devices,
                                       "CudaOpRegistry.*:CudaHostChecks.*");
}
