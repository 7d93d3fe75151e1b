// Backend-ops test of ApplyRopeAndWriteKvCache (kernels/cuda/cuda_ops.h), part of
// cuda_ops_test: the fused op against its definition, ApplyRope then WriteKvCache, each of
// which cuda_ops_test.cc checks bit for bit against the CPU reference. Over fused qkv rows
// (K and V inside the rotated row, as CudaRankCompute calls it), bit for bit: the whole qkv
// buffer (q and k rotated, v untouched, the row's padding untouched) and both caches,
// guarded, with padding slots (-1), a slot past the cache and positions outside the table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/ops.h"
#include "tests/gpu/cuda_test_util.h"

namespace tpserve::kernels::cuda {
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

struct RopeKvCase {
  std::string name;
  int64_t tokens, q_heads, kv_heads, head_dim;
  int64_t extra_stride = 0;  // elements after v in each token's row
  bool bad_inputs = false;   // padding slots, a slot past the cache, positions off the table
};
void PrintTo(const RopeKvCase& c, std::ostream* os) { *os << c.name; }

const std::vector<RopeKvCase>& RopeKvCases() {
  static const std::vector<RopeKvCase> cases = {
      {"decode_1tok_q32_kv8_dim128", 1, 32, 8, 128},
      {"8tok_q8_kv2_dim64", 8, 8, 2, 64},
      {"33tok_q32_kv8_dim128_padded_row", 33, 32, 8, 128, 24},
      {"9tok_mha_q4_kv4_dim64_bad_inputs", 9, 4, 4, 64, 0, true},
      {"70tok_q8_kv1_dim128_bad_inputs", 70, 8, 1, 128, 8, true},
  };
  return cases;
}
using RopeKvMatchesTwoOps = GpuCase<RopeKvCase>;

TEST_P(RopeKvMatchesTwoOps, BitExactWithGuards) {
  const RopeKvCase& c = GetParam();
  std::mt19937 rng(SeedOf(c.name));
  const int64_t d = c.head_dim, half = d / 2, max_positions = 512;
  const int64_t kv_row = c.kv_heads * d;
  const int64_t stride = (c.q_heads + 2 * c.kv_heads) * d + c.extra_stride;
  const int64_t block_size = 16, num_blocks = (c.tokens + block_size - 1) / block_size + 2;
  const int64_t num_slots = num_blocks * block_size;

  const std::vector<uint16_t> qkv = RandomBf16(c.tokens * stride, rng, 3.0f);
  std::vector<int32_t> positions(c.tokens);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(max_positions - 1));
  for (int32_t& p : positions) p = pick(rng);
  std::vector<int64_t> slots(num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(c.tokens);
  if (c.bad_inputs) {
    slots[0] = slots[c.tokens - 1] = -1;
    slots[2] = num_slots;
    positions[1] = -3;
    positions[4] = static_cast<int32_t>(max_positions);
  }
  const std::vector<uint16_t> init_k = RandomBf16(num_slots * kv_row, rng, 5.0f);
  const std::vector<uint16_t> init_v = RandomBf16(num_slots * kv_row, rng, 5.0f);
  std::vector<float> cos(max_positions * half), sin(cos.size());
  BuildRopeTable(10000.0, d, max_positions, cos.data(), sin.data());
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_pos, Upload(positions));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_slots, Upload(slots));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_cos, Upload(cos));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_sin, Upload(sin));

  struct Run {
    std::vector<uint16_t> qkv, k, v;
    bool guards_intact = false;
  };
  // fused = false: ApplyRope, then WriteKvCache; true: the fused op.
  auto run = [&](bool fused) -> absl::StatusOr<Run> {
    ASSIGN_OR_RETURN(auto d_qkv, GuardedDevice<uint16_t>::Create(qkv));
    ASSIGN_OR_RETURN(auto d_k, GuardedDevice<uint16_t>::Create(init_k));
    ASSIGN_OR_RETURN(auto d_v, GuardedDevice<uint16_t>::Create(init_v));
    RopeParams rope;
    rope.x = d_qkv.data();
    rope.tokens = c.tokens;
    rope.heads = c.q_heads + c.kv_heads;
    rope.head_dim = d;
    rope.token_stride = stride;
    rope.positions = d_pos.as<int32_t>();
    rope.cos = d_cos.as<float>();
    rope.sin = d_sin.as<float>();
    rope.max_positions = max_positions;
    WriteKvCacheParams kv;
    kv.k = d_qkv.data() + c.q_heads * d;
    kv.v = kv.k + kv_row;
    kv.k_token_stride = kv.v_token_stride = stride;
    kv.tokens = c.tokens;
    kv.slots = d_slots.as<int64_t>();
    kv.cache = {d_k.data(), d_v.data(), num_blocks, block_size, c.kv_heads, d};
    if (fused) {
      RETURN_IF_ERROR(ApplyRopeAndWriteKvCache(rope, kv, Stream{}));
    } else {
      RETURN_IF_ERROR(ApplyRope(rope, Stream{}));
      RETURN_IF_ERROR(WriteKvCache(kv, Stream{}));
    }
    RETURN_IF_ERROR(SynchronizeStream(Stream{}));
    Run r;
    ASSIGN_OR_RETURN(r.qkv, d_qkv.Download());
    ASSIGN_OR_RETURN(r.k, d_k.Download());
    ASSIGN_OR_RETURN(r.v, d_v.Download());
    r.guards_intact = d_qkv.GuardsIntact() && d_k.GuardsIntact() && d_v.GuardsIntact();
    return r;
  };
  ASSERT_OK_AND_ASSIGN(const Run want, run(false));
  ASSERT_OK_AND_ASSIGN(const Run got, run(true));
  EXPECT_TRUE(got.guards_intact);
  EXPECT_TRUE(SameBits(got.qkv, want.qkv)) << "qkv rows";
  EXPECT_TRUE(SameBits(got.k, want.k)) << "K cache";
  EXPECT_TRUE(SameBits(got.v, want.v)) << "V cache";
  EXPECT_NE(want.k, init_k) << "the case wrote nothing";
  EXPECT_NE(want.qkv, qkv) << "the case rotated nothing";
}
INSTANTIATE_TEST_SUITE_P(CudaOps, RopeKvMatchesTwoOps, ::testing::ValuesIn(RopeKvCases()),
                         NameOf<RopeKvCase>);

TEST(CudaHostChecks, RopeKvChecksBothParameterSetsAndTheirTokenCounts) {
  auto* h = reinterpret_cast<uint16_t*>(uintptr_t{4096});
  auto* pos = reinterpret_cast<const int32_t*>(uintptr_t{8192});
  auto* table = reinterpret_cast<const float*>(uintptr_t{8192});
  auto* slots = reinterpret_cast<const int64_t*>(uintptr_t{8192});
  RopeParams rope{h, 3, 10, 64, 0, pos, table, table, 128};
  WriteKvCacheParams kv{h, h, 0, 0, 3, slots, {h, h, 4, 16, 2, 64}};
  rope.head_dim = 63;  // ApplyRope's own check
  absl::Status s = ApplyRopeAndWriteKvCache(rope, kv, Stream{});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cuda::ApplyRopeAndWriteKvCache"), absl::string_view::npos) << s;
  rope.head_dim = 64;
  kv.slots = nullptr;  // WriteKvCache's own check
  EXPECT_EQ(ApplyRopeAndWriteKvCache(rope, kv, Stream{}).code(),
            absl::StatusCode::kInvalidArgument);
  kv.slots = slots;
  kv.tokens = 2;  // the two halves disagree
  s = ApplyRopeAndWriteKvCache(rope, kv, Stream{});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kv.tokens = 2"), absl::string_view::npos) << s;
  rope.tokens = kv.tokens = 0;  // nothing to do, nothing enqueued
  EXPECT_TRUE(ApplyRopeAndWriteKvCache(rope, kv, Stream{}).ok());
}

}  // namespace

namespace gpu_test {
size_t RopeKvCaseCount() { return RopeKvCases().size(); }
}  // namespace gpu_test

}  // namespace tpserve::kernels::cuda
