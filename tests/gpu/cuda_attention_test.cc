// Backend-ops test of the paged attention ops (kernels::cuda::PagedPrefillAttention and
// PagedDecodeAttention) against kernels::ref::PagedAttention, part of cuda_ops_test
// (tests/gpu/cuda_ops_test.cc has the registry check and main()). Every prefill case runs
// through both prefill kernels (kernels/cuda/attention_internal.h: the tensor-core kernel the
// public op uses, whose output must equal the public op's bit for bit, and the CUDA-core
// kernel); cuda_attention_tc_test.cc adds cases at the tensor-core kernel's tile edges.
// Each case builds a batch of sequences (ragged lengths, chunked-prefill start positions,
// optional rows owned by no sequence between them) over a paged cache whose blocks are handed
// out in shuffled order. Inputs are bf16 on the device; the reference gets the same values
// widened to fp32 (q packed, cache as fp32) and kv_head_of_q[h] = h / (q_heads / kv_heads).
// Every cache position that no query of the batch may see (before each sequence's first
// window, past its context, unused blocks) holds NaN, so a kernel that reads or weighs one
// fails NaN parity; with free_old_blocks the block-table entries of blocks wholly before the
// window are -1 as well, so a kernel that even looks them up fails.
// Tolerance per element: |got - ref| <= 2^-8 * |ref| + 2^-12 * max|v| (max over the cache's
// real values), NaN/inf parity element by element. The output is a convex combination of V
// rows: the bf16 rounding of the output costs up to 2^-8 * |ref| (half an ulp), the fp32
// softmax and accumulation about 1e-6 * max|v|. The same band holds for both kernels: the
// tensor-core kernel carries P as P_hi + P_lo (two bf16, ~2^-16 relative per weight); P in one
// bf16 (up to 2^-8 per weight) moves outputs of short contexts by a few times 2^-12 * max|v|
// and fails it.
// One key wrongly included or dropped moves a row by about max|v| / keys,
// which the window-edge and short-context cases make far larger than the tolerance (long
// contexts rely on the NaN positions to catch off-by-one ranges exactly).
// Rows the op must not write keep the "unwritten" sentinel bit for bit; device-detected bad
// descriptors expect NaN rows (cuda_ops.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "kernels/cuda/attention_internal.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launch.h"
#include "kernels/ops.h"
#include "tests/gpu/cuda_attention_test.h"
#include "tests/gpu/cuda_test_util.h"

namespace tpserve::kernels::cuda {
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

constexpr double kAttnRtol = 1.0 / 256;
constexpr double kAttnVTol = 1.0 / 4096;  // times max|v|
constexpr int kSpareBlocks = 3;           // unused cache blocks (all NaN)

const std::vector<AttnCase>& PrefillCases() {
  using P = AttnPoison;
  static const std::vector<AttnCase> cases = {
      {"1seq_7tok_d128_g4_bs16", 128, 32, 8, 16, 0, {{7, 0}}},
      {"ragged_1_7_33_100_d128_g4_bs16_gaps", 128, 32, 8, 16, 0,
       {{1, 0}, {7, 5}, {33, 0}, {100, 40}}, 0, true},
      {"513tok_d128_g1_bs32", 128, 8, 8, 32, 0, {{513, 0}}},
      {"chunk_513tok_at_1000_window_700_d128_g8_bs16_freed", 128, 16, 2, 16, 700,
       {{513, 1000}, {7, 3}}, 0, false, true},
      {"ragged_window_37_d64_g3_bs32", 64, 9, 3, 32, 37, {{100, 0}, {33, 70}, {1, 200}}, 0, true},
      {"window_16_equals_block_d128_g4_bs16", 128, 8, 2, 16, 16, {{70, 0}, {33, 50}}},
      {"window_larger_than_context_d64_g1_bs16", 64, 4, 4, 16, 5000, {{100, 20}}},
      {"one_token_seqs_d128_g4_bs16", 128, 8, 2, 16, 0, {{1, 0}, {1, 16}, {1, 299}}},
      {"fused_qkv_stride_d128_g4_bs32", 128, 16, 4, 32, 0, {{33, 10}, {7, 0}}, 2 * 4 * 128},
      {"hint_smaller_than_seqs_d64_g2_bs16", 64, 4, 2, 16, 0, {{100, 0}, {65, 3}}, 0, false,
       false, P::kNone, 1},
      {"nan_in_k_d128_g4_bs16", 128, 8, 2, 16, 0, {{40, 0}, {9, 3}}, 0, false, false, P::kNanInK},
      {"nan_in_v_d64_g2_window_24_bs16", 64, 4, 2, 16, 24, {{70, 0}}, 0, false, false,
       P::kNanInV},
      {"bad_block_entry_d128_g4_bs16", 128, 8, 2, 16, 0, {{20, 0}, {33, 4}}, 0, true, false,
       P::kBadBlockEntry},
      {"bad_descriptors_d64_g1_bs16", 64, 2, 2, 16, 0, {{9, 0}, {5, 2}}, 0, false, false,
       P::kBadDescriptor},
  };
  return cases;
}

const std::vector<AttnCase>& DecodeCases() {
  using P = AttnPoison;
  static const std::vector<AttnCase> cases = {
      {"batch1_ctx3000_d128_g4_bs16_auto_split", 128, 32, 8, 16, 0, {{1, 2999}}, 0, false, false,
       P::kNone, 0, 0, true, 2},
      {"batch5_ctx_1_7_33_100_513_d128_g4_bs32_gaps", 128, 32, 8, 32, 0,
       {{1, 0}, {1, 6}, {1, 32}, {1, 99}, {1, 512}}, 0, true},
      {"batch3_ctx3000_window_1000_d128_g8_bs16_split7_freed", 128, 16, 2, 16, 1000,
       {{1, 2999}, {1, 1500}, {1, 400}}, 0, false, true, P::kNone, 0, 7, true, 7},
      {"batch2_ctx20_32_splits_mostly_empty_d64_g4_bs16", 64, 8, 2, 16, 0, {{1, 19}, {1, 3}}, 0,
       false, false, P::kNone, 0, 32, true, 32},
      {"batch4_smollm_d64_g3_bs16", 64, 9, 3, 16, 0, {{1, 0}, {1, 17}, {1, 100}, {1, 700}}},
      {"batch2_g16_d64_bs32_split3", 64, 32, 2, 32, 0, {{1, 1000}, {1, 64}}, 0, false, false,
       P::kNone, 0, 3, true, 3},
      {"batch3_g1_d128_bs16", 128, 8, 8, 16, 0, {{1, 5}, {1, 255}, {1, 256}}},
      {"no_workspace_never_splits_ctx3000", 128, 8, 2, 16, 0, {{1, 2999}}, 0, false, false,
       P::kNone, 0, 8, false, 1},
      {"fused_qkv_stride_window_100_d128_g4_bs32_split4", 128, 16, 4, 32, 100,
       {{1, 300}, {1, 50}}, 2 * 4 * 128, true, false, P::kNone, 0, 4, true, 4},
      {"nan_in_k_split5_d128_g4_bs16", 128, 8, 2, 16, 0, {{1, 600}, {1, 40}}, 0, false, false,
       P::kNanInK, 0, 5, true, 5},
      {"nan_in_v_d64_g2_bs16", 64, 4, 2, 16, 0, {{1, 70}, {1, 10}}, 0, false, false,
       P::kNanInV},
      {"bad_block_entry_split3_d128_g4_bs16", 128, 8, 2, 16, 0, {{1, 100}, {1, 900}}, 0, true,
       false, P::kBadBlockEntry, 0, 3, true, 3},
      {"bad_descriptors_split2_d64_g1_bs16", 64, 2, 2, 16, 0, {{1, 9}, {1, 300}}, 0, false,
       false, P::kBadDescriptor, 0, 2, true, 2},
  };
  return cases;
}

// What a row of the output must hold.
enum class RowWant : uint8_t { kUntouched, kNan, kReference };

// A case's inputs on the host, the expected output and the device copies.
struct AttnProblem {
  int64_t tokens = 0, q_stride = 0, num_slots = 0, group = 0;
  std::vector<uint16_t> q, cache_k, cache_v;
  std::vector<AttentionSeq> dev_seqs;        // block_table: offsets into `tables` for now
  std::vector<int32_t> tables;               // every sequence's block table, concatenated
  std::vector<RowWant> row_want;             // [tokens]
  std::vector<float> want;                   // [tokens, q_heads, head_dim]
  float v_max = 0.0f;
  int64_t max_context = 0;
};

AttnProblem BuildProblem(const AttnCase& c, bool decode) {
  std::mt19937 rng(SeedOf(c.name));
  AttnProblem pb;
  const int64_t D = c.head_dim, row = c.kv_heads * D;
  pb.group = c.q_heads / c.kv_heads;
  pb.q_stride = c.q_heads * D + c.q_extra;

  // Rows and block tables of the real sequences.
  struct Seq {
    SeqSpec spec;
    int64_t token_begin, first_seen;
    std::vector<int32_t> table;
  };
  std::vector<Seq> seqs;
  int64_t blocks_needed = 0;
  for (const SeqSpec& s : c.seqs) {
    Seq q{s, pb.tokens, 0, {}};
    const int64_t ctx = s.start_pos + s.num_tokens;
    q.first_seen = c.window > 0 ? std::max<int64_t>(0, s.start_pos - c.window + 1) : 0;
    q.table.resize((ctx + c.block_size - 1) / c.block_size);
    blocks_needed += static_cast<int64_t>(q.table.size());
    pb.tokens += s.num_tokens + (c.gap_rows ? 1 : 0);
    pb.max_context = std::max(pb.max_context, ctx);
    seqs.push_back(std::move(q));
  }
  const int64_t num_blocks = blocks_needed + kSpareBlocks;
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  int64_t next = 0;
  for (Seq& s : seqs) {
    for (int32_t& b : s.table) b = ids[next++];
  }
  pb.num_slots = num_blocks * c.block_size;

  // Cache: NaN everywhere, random values where some query may look.
  pb.cache_k.assign(pb.num_slots * row, kBf16QNan);
  pb.cache_v.assign(pb.num_slots * row, kBf16QNan);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (const Seq& s : seqs) {
    const int64_t ctx = s.spec.start_pos + s.spec.num_tokens;
    for (int64_t pos = s.first_seen; pos < ctx; ++pos) {
      const int64_t slot = s.table[pos / c.block_size] * c.block_size + pos % c.block_size;
      for (int64_t e = 0; e < row; ++e) {
        pb.cache_k[slot * row + e] = F32ToBf16(unit(rng));
        pb.cache_v[slot * row + e] = F32ToBf16(unit(rng));
        pb.v_max = std::max(pb.v_max, std::fabs(Bf16ToF32(pb.cache_v[slot * row + e])));
      }
    }
  }
  pb.q = RandomBf16(pb.tokens * pb.q_stride, rng, c.q_range);  // 2: peaky enough softmaxes

  // Poisons that change inputs.
  Seq& s0 = seqs.front();
  const int64_t poison_pos = s0.spec.start_pos + s0.spec.num_tokens / 2;  // seen by some rows
  const int64_t poison_slot =
      s0.table[poison_pos / c.block_size] * c.block_size + poison_pos % c.block_size;
  if (c.poison == AttnPoison::kNanInK) pb.cache_k[poison_slot * row + 3] = kBf16QNan;
  if (c.poison == AttnPoison::kNanInV) pb.cache_v[poison_slot * row + 5] = kBf16QNan;
  if (c.poison == AttnPoison::kInfInV) {
    pb.cache_v[poison_slot * row + 5] = kBf16PosInf;
    pb.cache_v[poison_slot * row + 6] = kBf16NegInf;
  }

  // Expected rows of the real sequences: the reference over the cache as it is (it never reads
  // the NaN positions), or NaN for a sequence with a bad block entry.
  pb.row_want.assign(pb.tokens, RowWant::kUntouched);
  pb.want.assign(pb.tokens * c.q_heads * D, 0.0f);
  std::vector<float> qf(pb.tokens * c.q_heads * D);
  for (int64_t t = 0; t < pb.tokens; ++t) {
    for (int64_t i = 0; i < c.q_heads * D; ++i) {
      qf[t * c.q_heads * D + i] = Bf16ToF32(pb.q[t * pb.q_stride + i]);
    }
  }
  std::vector<float> kf = Widen(pb.cache_k), vf = Widen(pb.cache_v);
  std::vector<int32_t> kv_head_of_q(c.q_heads);
  for (int64_t h = 0; h < c.q_heads; ++h) kv_head_of_q[h] = static_cast<int32_t>(h / pb.group);
  std::vector<kernels::AttentionSeq> ref_seqs;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Seq& s = seqs[i];
    const bool bad_entry = c.poison == AttnPoison::kBadBlockEntry && i + 1 == seqs.size();
    for (int64_t r = 0; r < s.spec.num_tokens; ++r) {
      pb.row_want[s.token_begin + r] = bad_entry ? RowWant::kNan : RowWant::kReference;
    }
    if (bad_entry) continue;
    ref_seqs.push_back({s.token_begin, s.spec.num_tokens, s.spec.start_pos, s.table.data(),
                        static_cast<int64_t>(s.table.size())});
  }
  kernels::AttentionParams rp;
  rp.q = qf.data();
  rp.out = pb.want.data();
  rp.q_heads = c.q_heads;
  rp.kv_head_of_q = kv_head_of_q.data();
  rp.scale = 1.0f / std::sqrt(static_cast<float>(D));
  rp.sliding_window = c.window;
  rp.cache = {kf.data(), vf.data(), num_blocks, c.block_size, c.kv_heads, D};
  rp.seqs = ref_seqs.data();
  rp.num_seqs = static_cast<int64_t>(ref_seqs.size());
  ref::PagedAttention(rp);

  // Poisons that change tables or descriptors (after the reference, which must not see them).
  if (c.poison == AttnPoison::kBadBlockEntry) {
    Seq& last = seqs.back();
    last.table[(last.spec.start_pos + last.spec.num_tokens - 1) / c.block_size] =
        static_cast<int32_t>(num_blocks);
  }
  if (c.free_old_blocks) {
    for (Seq& s : seqs) {
      for (int64_t i = 0; i < s.first_seen / c.block_size; ++i) s.table[i] = -1;
    }
  }
  // Device descriptors; block_table holds the table's offset in `tables` until the test
  // turns it into a device pointer.
  auto offset = [](size_t i) { return reinterpret_cast<const int32_t*>(i); };
  for (const Seq& s : seqs) {
    pb.dev_seqs.push_back({s.token_begin, s.spec.num_tokens, s.spec.start_pos,
                           offset(pb.tables.size()), static_cast<int64_t>(s.table.size())});
    pb.tables.insert(pb.tables.end(), s.table.begin(), s.table.end());
  }
  if (c.poison == AttnPoison::kBadDescriptor) {
    const size_t one_entry = pb.tables.size();
    pb.tables.push_back(0);
    const int64_t t0 = pb.tokens, n = decode ? 1 : 3;
    // A negative start_pos: its rows become NaN.
    pb.dev_seqs.push_back({t0, n, -5, offset(one_entry), 1});
    pb.tokens += n;
    if (decode) {
      // num_tokens = 2 in a decode call: NaN at its first row, the second untouched.
      pb.dev_seqs.push_back({pb.tokens, 2, 4, offset(one_entry), 1});
      pb.tokens += 2;
    }
    // Rows past the end (it names the last row, which keeps its own expectation): skipped.
    pb.dev_seqs.push_back({pb.tokens - 1, 5, 0, offset(one_entry), 1});
    pb.row_want.resize(pb.tokens, RowWant::kUntouched);
    for (int64_t r = t0; r < t0 + n; ++r) pb.row_want[r] = RowWant::kNan;
    if (decode) pb.row_want[t0 + 1] = RowWant::kNan;
    pb.want.resize(pb.tokens * c.q_heads * D, 0.0f);
    const std::vector<uint16_t> extra =
        RandomBf16(pb.tokens * pb.q_stride - static_cast<int64_t>(pb.q.size()), rng);
    pb.q.insert(pb.q.end(), extra.begin(), extra.end());
  }
  return pb;
}

// Compares the downloaded output with the expectation, row by row.
::testing::AssertionResult AttentionOutputMatches(const AttnCase& c, const AttnProblem& pb,
                                                  const std::vector<uint16_t>& got) {
  const int64_t width = c.q_heads * c.head_dim;
  for (int64_t t = 0; t < pb.tokens; ++t) {
    for (int64_t i = 0; i < width; ++i) {
      const uint16_t g_bits = got[t * width + i];
      const float g = Bf16ToF32(g_bits), w = pb.want[t * width + i];
      const int64_t h = i / c.head_dim, d = i % c.head_dim;
      auto fail = [&]() {
        return ::testing::AssertionFailure()
               << "row " << t << ", head " << h << ", dim " << d << ": got " << g << " (bits 0x"
               << std::hex << g_bits << std::dec << "), want ";
      };
      switch (pb.row_want[t]) {
        case RowWant::kUntouched:
          if (g_bits != kBf16Unwritten) return fail() << "untouched";
          break;
        case RowWant::kNan:
          if (!std::isnan(g)) return fail() << "NaN (bad descriptor or block entry)";
          break;
        case RowWant::kReference: {
          if (std::isnan(g) != std::isnan(w)) return fail() << w << " (NaN parity)";
          if (std::isnan(w)) break;
          if (std::isinf(g) || std::isinf(w)) {
            if (g != w) return fail() << w << " (inf parity)";
            break;
          }
          const double tol = kAttnRtol * std::fabs(w) + kAttnVTol * pb.v_max;
          if (std::fabs(static_cast<double>(g) - w) > tol) {
            return fail() << w << " (error " << std::fabs(static_cast<double>(g) - w)
                          << " > tolerance " << tol << ")";
          }
          break;
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs `op` over the problem on fresh device buffers and checks its output, guards and inputs;
// the output comes back in *got.
void RunAttentionOp(const AttnCase& c, const AttnProblem& pb, AttnOp op,
                    std::vector<uint16_t>* got) {
  const int64_t D = c.head_dim;
  ASSERT_OK_AND_ASSIGN(auto d_q, GuardedDevice<uint16_t>::Create(pb.q));
  ASSERT_OK_AND_ASSIGN(auto d_k, GuardedDevice<uint16_t>::Create(pb.cache_k));
  ASSERT_OK_AND_ASSIGN(auto d_v, GuardedDevice<uint16_t>::Create(pb.cache_v));
  ASSERT_OK_AND_ASSIGN(auto d_out,
                       GuardedDevice<uint16_t>::Unwritten(pb.tokens * c.q_heads * D));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_tables, Upload(pb.tables));
  std::vector<AttentionSeq> seqs = pb.dev_seqs;
  for (AttentionSeq& s : seqs) {  // offsets -> device pointers
    s.block_table = d_tables.as<int32_t>() + reinterpret_cast<uintptr_t>(s.block_table);
  }
  ASSERT_OK_AND_ASSIGN(DeviceBuffer d_seqs, Upload(seqs));

  PagedAttentionParams p;
  p.q = d_q.data();
  p.q_token_stride = c.q_extra == 0 ? 0 : pb.q_stride;
  p.out = d_out.data();
  p.tokens = pb.tokens;
  p.q_heads = c.q_heads;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  p.sliding_window = c.window;
  p.cache = {d_k.data(), d_v.data(), pb.num_slots / c.block_size, c.block_size, c.kv_heads, D};
  p.seqs = d_seqs.as<AttentionSeq>();
  p.num_seqs = static_cast<int64_t>(seqs.size());
  if (op == AttnOp::kDecode) {
    DecodeAttentionParams dp;
    dp.attn = p;
    dp.max_context = pb.max_context;
    dp.splits = c.splits;
    const int64_t ws_bytes =
        DecodeAttentionWorkspaceBytes(p.num_seqs, c.q_heads, D, kMaxDecodeSplits);
    ASSERT_OK_AND_ASSIGN(DeviceBuffer ws, DeviceBuffer::Allocate(c.workspace ? ws_bytes : 0));
    dp.workspace = ws.data();
    dp.workspace_bytes = c.workspace ? ws_bytes : 0;
    const int sms = internal::CurrentDeviceMultiprocessors();
    const int splits = internal::ChooseDecodeSplits(
        p.num_seqs, c.q_heads, c.kv_heads, D, dp.max_context, c.window, c.splits,
        dp.workspace_bytes, sms);
    if (sms >= 100) {
      EXPECT_GE(splits, c.min_splits) << "the case does not take the split path it tests";
    }
    if (!c.workspace) {
      EXPECT_EQ(splits, 1);
    }
    ASSERT_OK(PagedDecodeAttention(dp, Stream{}));
    ASSERT_OK(SynchronizeStream(Stream{}));
  } else {
    p.max_seq_tokens = c.max_seq_tokens;
    if (op == AttnOp::kPrefillSimt) {
      ASSERT_OK(internal::PagedPrefillAttentionSimt(p, Stream{}));
    } else if (op == AttnOp::kPrefillTensorCore) {
      ASSERT_OK(internal::PagedPrefillAttentionTensorCore(p, Stream{}));
    } else {
      ASSERT_OK(PagedPrefillAttention(p, Stream{}));
    }
    ASSERT_OK(SynchronizeStream(Stream{}));
  }
  ASSERT_OK_AND_ASSIGN(*got, d_out.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> q_after, d_q.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> k_after, d_k.Download());
  ASSERT_OK_AND_ASSIGN(std::vector<uint16_t> v_after, d_v.Download());
  EXPECT_TRUE(d_out.GuardsIntact());
  EXPECT_TRUE(d_q.GuardsIntact());
  EXPECT_TRUE(d_k.GuardsIntact());
  EXPECT_TRUE(d_v.GuardsIntact());
  EXPECT_TRUE(SameBits(q_after, pb.q)) << "q was modified";
  EXPECT_TRUE(SameBits(k_after, pb.cache_k)) << "the K cache was modified";
  EXPECT_TRUE(SameBits(v_after, pb.cache_v)) << "the V cache was modified";
  EXPECT_TRUE(AttentionOutputMatches(c, pb, *got));
}

// The poisons must have mattered: the reference has rows that see them and rows that do not.
void ExpectPoisonsMattered(const AttnCase& c, const AttnProblem& pb) {
  const int64_t width = c.q_heads * c.head_dim;
  if (c.poison == AttnPoison::kNanInK || c.poison == AttnPoison::kNanInV) {
    int64_t nan_rows = 0, clean_rows = 0;
    for (int64_t t = 0; t < pb.tokens; ++t) {
      if (pb.row_want[t] != RowWant::kReference) continue;
      (std::isnan(pb.want[t * width + (c.poison == AttnPoison::kNanInV ? 5 : 0)]) ? nan_rows
                                                                                  : clean_rows)++;
    }
    EXPECT_GT(nan_rows, 0) << "the NaN reached no row";
    EXPECT_GT(clean_rows, 0) << "the NaN reached every row";
    if (c.poison == AttnPoison::kNanInV) {  // only dim 5 of the heads of KV head 0
      for (int64_t t = 0; t < pb.tokens; ++t) {
        if (pb.row_want[t] != RowWant::kReference) continue;
        EXPECT_FALSE(std::isnan(pb.want[t * width + 4])) << "row " << t;
        EXPECT_FALSE(std::isnan(pb.want[t * width + pb.group * c.head_dim + 5])) << "row " << t;
      }
    }
  }
  if (c.poison == AttnPoison::kInfInV) {  // +inf in dim 5, -inf in dim 6 of the rows that see it
    int64_t inf_rows = 0, clean_rows = 0;
    for (int64_t t = 0; t < pb.tokens; ++t) {
      if (pb.row_want[t] != RowWant::kReference) continue;
      const float d5 = pb.want[t * width + 5], d6 = pb.want[t * width + 6];
      if (d5 == INFINITY && d6 == -INFINITY) ++inf_rows;
      if (std::isfinite(d5) && std::isfinite(d6)) ++clean_rows;
    }
    EXPECT_GT(inf_rows, 0) << "the infs reached no row";
    EXPECT_GT(clean_rows, 0) << "the infs reached every row";
  }
}

}  // namespace

void gpu_test::RunAttentionCase(const AttnCase& c, const std::vector<AttnOp>& ops) {
  const bool decode = !ops.empty() && ops.front() == AttnOp::kDecode;
  const AttnProblem pb = BuildProblem(c, decode);
  ExpectPoisonsMattered(c, pb);
  std::vector<uint16_t> public_out, tensor_core_out;
  for (AttnOp op : ops) {
    ASSERT_EQ(op == AttnOp::kDecode, decode) << "prefill and decode ops in one call";
    static constexpr const char* kNames[] = {"public PagedPrefillAttention",
                                             "PagedPrefillAttentionSimt",
                                             "PagedPrefillAttentionTensorCore",
                                             "PagedDecodeAttention"};
    SCOPED_TRACE(kNames[static_cast<int>(op)]);
    std::vector<uint16_t> got;
    RunAttentionOp(c, pb, op, &got);
    if (::testing::Test::HasFatalFailure()) return;
    if (op == AttnOp::kPrefill) public_out = std::move(got);
    if (op == AttnOp::kPrefillTensorCore) tensor_core_out = std::move(got);
  }
  if (!public_out.empty() && !tensor_core_out.empty()) {
    EXPECT_TRUE(SameBits(public_out, tensor_core_out))
        << "the public op does not run the tensor-core kernel";
  }
}

PagedAttentionParams gpu_test::ValidAttentionParamsForChecks() {
  auto* h = reinterpret_cast<uint16_t*>(uintptr_t{256});
  PagedAttentionParams p;
  p.q = h;
  p.out = h;
  p.tokens = 4;
  p.q_heads = 8;
  p.scale = 0.125f;
  p.cache = {h, h, 10, 16, 2, 128};
  p.seqs = reinterpret_cast<const AttentionSeq*>(uintptr_t{512});
  p.num_seqs = 2;
  return p;
}

namespace {

using PrefillAttentionMatchesReference = GpuCase<AttnCase>;
TEST_P(PrefillAttentionMatchesReference, BothKernelsWithinBf16BandWithGuardsAndNanParity) {
  RunAttentionCase(GetParam(),
                   {AttnOp::kPrefill, AttnOp::kPrefillTensorCore, AttnOp::kPrefillSimt});
}
INSTANTIATE_TEST_SUITE_P(CudaOps, PrefillAttentionMatchesReference,
                         ::testing::ValuesIn(PrefillCases()), NameOf<AttnCase>);

using DecodeAttentionMatchesReference = GpuCase<AttnCase>;
TEST_P(DecodeAttentionMatchesReference, WithinBf16BandWithGuardsAndNanParity) {
  RunAttentionCase(GetParam(), {AttnOp::kDecode});
}
INSTANTIATE_TEST_SUITE_P(CudaOps, DecodeAttentionMatchesReference,
                         ::testing::ValuesIn(DecodeCases()), NameOf<AttnCase>);

// ------------------------- host-side checks (no GPU needed) -------------------------

TEST(CudaHostChecks, AttentionArgumentsAreInvalidArgumentAndEmptyBatchesAreNoOps) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const PagedAttentionParams good = ValidAttentionParamsForChecks();
  // Each mutation alone must be refused by both ops, before any launch.
  struct Bad {
    const char* what;
    void (*mutate)(PagedAttentionParams&);
  };
  const Bad bad[] = {
      {"negative tokens", [](PagedAttentionParams& p) { p.tokens = -1; }},
      {"2^31 tokens", [](PagedAttentionParams& p) { p.tokens = int64_t{1} << 31; }},
      {"head_dim 96", [](PagedAttentionParams& p) { p.cache.head_dim = 96; }},
      {"head_dim 0", [](PagedAttentionParams& p) { p.cache.head_dim = 0; }},
      {"q_heads 0", [](PagedAttentionParams& p) { p.q_heads = 0; }},
      {"q_heads 65536", [](PagedAttentionParams& p) {
         p.q_heads = 65536;
         p.cache.kv_heads = 1;
       }},
      {"q_heads not a multiple", [](PagedAttentionParams& p) { p.q_heads = 7; }},
      {"kv_heads 0", [](PagedAttentionParams& p) { p.cache.kv_heads = 0; }},
      {"num_blocks 0", [](PagedAttentionParams& p) { p.cache.num_blocks = 0; }},
      {"block_size 0", [](PagedAttentionParams& p) { p.cache.block_size = 0; }},
      {"cache overflows", [](PagedAttentionParams& p) {
         p.cache.num_blocks = int64_t{1} << 30;
         p.cache.block_size = int64_t{1} << 30;
       }},
      {"num_seqs -1", [](PagedAttentionParams& p) { p.num_seqs = -1; }},
      {"num_seqs 65536", [](PagedAttentionParams& p) { p.num_seqs = 65536; }},
      {"scale NaN", [](PagedAttentionParams& p) { p.scale = NAN; }},
      {"scale inf", [](PagedAttentionParams& p) { p.scale = INFINITY; }},
      {"negative window", [](PagedAttentionParams& p) { p.sliding_window = -1; }},
      {"q stride too small", [](PagedAttentionParams& p) { p.q_token_stride = 8 * 128 - 1; }},
      {"q null", [](PagedAttentionParams& p) { p.q = nullptr; }},
      {"out null", [](PagedAttentionParams& p) { p.out = nullptr; }},
      {"seqs null", [](PagedAttentionParams& p) { p.seqs = nullptr; }},
      {"cache.k null", [](PagedAttentionParams& p) { p.cache.k = nullptr; }},
      {"cache.v null", [](PagedAttentionParams& p) { p.cache.v = nullptr; }},
      {"cache.k misaligned", [](PagedAttentionParams& p) { p.cache.k = p.cache.k + 1; }},
      {"cache.v misaligned", [](PagedAttentionParams& p) { p.cache.v = p.cache.v + 4; }},
  };
  if (CudaDeviceCount() == 0) {
    // The unmutated arguments pass every check (then the launch fails for want of a device),
    // so each refusal below is the mutation's doing.
    EXPECT_NE(PagedPrefillAttention(good, Stream{}).code(), kInvalid);
    DecodeAttentionParams dp;
    dp.attn = good;
    EXPECT_NE(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);
  }
  for (const Bad& b : bad) {
    PagedAttentionParams p = good;
    b.mutate(p);
    EXPECT_EQ(PagedPrefillAttention(p, Stream{}).code(), kInvalid) << "prefill: " << b.what;
    DecodeAttentionParams dp;
    dp.attn = p;
    EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid) << "decode: " << b.what;
  }
  // Prefill only: the grid hint.
  PagedAttentionParams p = good;
  p.max_seq_tokens = 5;  // more than tokens
  EXPECT_EQ(PagedPrefillAttention(p, Stream{}).code(), kInvalid);
  p.max_seq_tokens = -1;
  EXPECT_EQ(PagedPrefillAttention(p, Stream{}).code(), kInvalid);
  // Decode only: group size, hints, workspace.
  DecodeAttentionParams dp;
  dp.attn = good;
  dp.attn.q_heads = 34;  // group 17
  EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);
  dp.attn = good;
  dp.max_context = -1;
  EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);
  dp.max_context = 0;
  dp.splits = -2;
  EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);
  dp.splits = 0;
  dp.workspace_bytes = -1;
  EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);
  dp.workspace_bytes = 1024;
  dp.workspace = reinterpret_cast<void*>(uintptr_t{260});  // 4-byte aligned only
  EXPECT_EQ(PagedDecodeAttention(dp, Stream{}).code(), kInvalid);

  // Nothing to do: OK without launching (null pointers are fine then).
  PagedAttentionParams empty = good;
  empty.num_seqs = 0;
  empty.q = nullptr;
  EXPECT_TRUE(PagedPrefillAttention(empty, Stream{}).ok());
  dp = DecodeAttentionParams{};
  dp.attn = empty;
  EXPECT_TRUE(PagedDecodeAttention(dp, Stream{}).ok());
  empty = good;
  empty.tokens = 0;
  empty.out = nullptr;
  EXPECT_TRUE(PagedPrefillAttention(empty, Stream{}).ok());
  dp.attn = empty;
  EXPECT_TRUE(PagedDecodeAttention(dp, Stream{}).ok());
  // head_dim 64 and a window are accepted (then refused only for the empty batch's sake: OK).
  empty.cache.head_dim = 64;
  empty.sliding_window = 4096;
  EXPECT_TRUE(PagedPrefillAttention(empty, Stream{}).ok());
}

TEST(CudaHostChecks, DecodeWorkspaceAndSplitChoice) {
  // Workspace: num_seqs * q_heads * splits * (head_dim + 2) floats; nothing for one split.
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(3, 32, 128, 7), 3 * 32 * 7 * 130 * 4);
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(3, 32, 128, 1), 0);
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(-3, 32, 128, 4), 0);
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(1, 1, 64, 2), 2 * 66 * 4);
  EXPECT_GT(DecodeAttentionWorkspaceBytes(int64_t{1} << 40, int64_t{1} << 40, 128, 32), 0);

  const int64_t ws = DecodeAttentionWorkspaceBytes(1, 32, 128, kMaxDecodeSplits);
  using internal::ChooseDecodeSplits;
  // Batch 1, 8 KV heads on 132 SMs: 33 splits would fill two waves, 3000 keys allow 24
  // (at least kMinKeysPerDecodeSplit = 128 keys each).
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 3000, 0, 0, ws, 132), 24);
  // A window caps the visible keys: 1000 keys -> 8 splits; batch 4 fills faster: 9.
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 3000, 1000, 0, ws, 132), 8);
  EXPECT_EQ(ChooseDecodeSplits(4, 32, 8, 128, 3000, 0, 0,
                               DecodeAttentionWorkspaceBytes(4, 32, 128, 32), 132),
            9);
  // Short contexts never split; neither do batches that fill the GPU.
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 100, 0, 0, ws, 132), 1);
  EXPECT_EQ(ChooseDecodeSplits(64, 32, 8, 128, 3000, 0, 0,
                               DecodeAttentionWorkspaceBytes(64, 32, 128, 32), 132),
            1);
  // Unknown context and no window: the fill rule alone, capped at kMaxDecodeSplits.
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 0, 0, 0, ws, 132), kMaxDecodeSplits);
  // Requests are honoured up to the cap and the workspace.
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 10, 0, 7, ws, 132), 7);
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 10, 0, 1000, ws, 132), kMaxDecodeSplits);
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 3000, 0, 7,
                               DecodeAttentionWorkspaceBytes(1, 32, 128, 5), 132),
            5);
  // No workspace or an unknown device: one split.
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 3000, 0, 0, 0, 132), 1);
  EXPECT_EQ(ChooseDecodeSplits(1, 32, 8, 128, 3000, 0, 0, ws, 0), 1);
  EXPECT_EQ(ChooseDecodeSplits(0, 32, 8, 128, 3000, 0, 0, ws, 132), 1);
}

}  // namespace

namespace gpu_test {
size_t PrefillAttentionCaseCount() { return PrefillCases().size(); }
size_t DecodeAttentionCaseCount() { return DecodeCases().size(); }
}  // namespace gpu_test

}  // namespace tpserve::kernels::cuda
