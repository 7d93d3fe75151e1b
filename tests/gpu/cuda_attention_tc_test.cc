// Cases at the tile edges of the tensor-core prefill kernel (kernels/cuda/attention_prefill_tc.cu:
// 64-query tiles, 16 rows per warp, 64-key tiles aligned to end at a query tile's last
// position), part of cuda_ops_test. Each case runs through both prefill kernels
// (kernels/cuda/attention_internal.h) with the runner, tolerance and checks of
// cuda_attention_test.cc: lengths around 16 and 64, start positions off the tile grid (so the
// first key tile starts before position 0 or before the window), windows of 1, 50, 63, 64 and
// 65 keys whose edges fall inside key tiles, block sizes 1 and 7, large scores (a running max
// that keeps moving, exp2 underflowing to 0), NaN/inf in V in full, diagonal and window-edge
// tiles (the kernel's exact CUDA-core P V path), 2-byte q loads, one block looping over tiles
// (also through the exact path).
// Also the host-side check that the internal entry points share the public op's checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/attention_internal.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/gpu/cuda_attention_test.h"
#include "tests/gpu/cuda_test_util.h"

namespace tpserve::kernels::cuda {
namespace {

using namespace gpu_test;  // NOLINT: the shared test helpers

const std::vector<AttnCase>& TensorCoreEdgeCases() {
  using P = AttnPoison;
  // Fields: name, head_dim, q_heads, kv_heads, block_size, window, seqs {num_tokens, start_pos},
  // q_extra, gap_rows, free_old_blocks, poison, max_seq_tokens, (3 decode-only fields), q_range.
  static const std::vector<AttnCase> cases = {
      {"tc_lengths_1_15_16_17_d128_g4_bs16_gaps", 128, 8, 2, 16, 0,
       {{1, 0}, {15, 0}, {16, 0}, {17, 0}}, 0, true},
      {"tc_lengths_63_64_65_d64_g2_bs16", 64, 4, 2, 16, 0, {{63, 0}, {64, 0}, {65, 0}}},
      {"tc_lengths_127_129_odd_starts_d128_g1_bs32", 128, 4, 4, 32, 0, {{127, 37}, {129, 5}}},
      {"tc_starts_off_the_tile_grid_d128_g8_bs16", 128, 16, 2, 16, 0,
       {{64, 100}, {65, 1}, {17, 63}, {1, 64}}},
      {"tc_window_50_inside_key_tiles_d128_g4_bs16_freed", 128, 8, 2, 16, 50,
       {{200, 0}, {70, 90}}, 0, false, true},
      {"tc_window_64_equals_tile_d64_g4_bs7_freed", 64, 8, 2, 7, 64, {{130, 0}, {65, 200}}, 0,
       false, true},
      {"tc_window_65_d128_g2_bs32_freed", 128, 4, 2, 32, 65, {{129, 300}, {16, 10}}, 0, false,
       true},
      {"tc_window_1_sees_only_itself_d64_g1_bs16", 64, 2, 2, 16, 1, {{70, 5}}},
      {"tc_window_63_start_37_d64_g3_bs1", 64, 6, 2, 1, 63, {{129, 37}}},
      {"tc_large_scores_d128_g4_bs16", 128, 8, 2, 16, 0, {{300, 0}, {65, 7}}, 0, false, false,
       P::kNone, 0, 0, true, 1, 12.0f},
      {"tc_large_scores_window_100_d64_g2_bs16", 64, 4, 2, 16, 100, {{257, 3}}, 0, false, false,
       P::kNone, 0, 0, true, 1, 12.0f},
      {"tc_nan_in_v_full_and_diagonal_tiles_d128_g4_bs16", 128, 8, 2, 16, 0, {{200, 0}}, 0,
       false, false, P::kNanInV},
      {"tc_inf_in_v_full_and_diagonal_tiles_d128_g4_bs16", 128, 8, 2, 16, 0,
       {{200, 0}, {9, 3}}, 0, false, false, P::kInfInV},
      {"tc_inf_in_v_window_40_d64_g2_bs16", 64, 4, 2, 16, 40, {{130, 10}}, 0, false, false,
       P::kInfInV},
      {"tc_nan_in_k_diagonal_tile_d64_g4_bs32", 64, 8, 2, 32, 0, {{100, 0}, {30, 2}}, 0, false,
       false, P::kNanInK},
      {"tc_odd_q_stride_2byte_loads_d128_g4_bs16", 128, 8, 2, 16, 0, {{33, 5}, {70, 0}}, 1},
      {"tc_hint_1_one_block_loops_over_tiles_d128_g4_bs16", 128, 8, 2, 16, 0,
       {{300, 0}, {129, 64}}, 0, false, false, P::kNone, 1},
      // One block runs every query tile in turn, and the exact path's P (written over the Q
      // region) precedes the next tile's Q load: the reuse of shared memory across query tiles.
      {"tc_hint_1_nan_in_v_exact_path_then_next_tile_d64_g2_bs16", 64, 4, 2, 16, 0,
       {{200, 0}, {70, 5}}, 0, false, false, P::kNanInV, 1},
      {"tc_bad_block_entry_window_30_d64_g2_bs16", 64, 4, 2, 16, 30, {{20, 0}, {100, 50}}, 0,
       true, false, P::kBadBlockEntry},
  };
  return cases;
}

using TensorCorePrefillAttentionTileEdges = GpuCase<AttnCase>;
TEST_P(TensorCorePrefillAttentionTileEdges, BothKernelsWithinBf16BandWithGuardsAndNanParity) {
  RunAttentionCase(GetParam(), {AttnOp::kPrefillTensorCore, AttnOp::kPrefillSimt});
}
INSTANTIATE_TEST_SUITE_P(CudaOps, TensorCorePrefillAttentionTileEdges,
                         ::testing::ValuesIn(TensorCoreEdgeCases()), NameOf<AttnCase>);

// ------------------------- host-side checks (no GPU needed) -------------------------

TEST(CudaHostChecks, PrefillKernelEntryPointsShareThePublicChecksAndLeaveTheChoiceAlone) {
  using internal::PrefillKernel;
  using internal::PrefillKernelOnThisThread;
  EXPECT_EQ(PrefillKernelOnThisThread(), PrefillKernel::kTensorCore);
  const PagedAttentionParams good = ValidAttentionParamsForChecks();
  using Entry = absl::Status (*)(const PagedAttentionParams&, Stream);
  const Entry entries[] = {&PagedPrefillAttention, &internal::PagedPrefillAttentionSimt,
                           &internal::PagedPrefillAttentionTensorCore};
  for (Entry entry : entries) {
    PagedAttentionParams p = good;
    p.cache.head_dim = 96;
    EXPECT_EQ(entry(p, Stream{}).code(), absl::StatusCode::kInvalidArgument);
    p = good;
    p.max_seq_tokens = 5;  // more than tokens
    EXPECT_EQ(entry(p, Stream{}).code(), absl::StatusCode::kInvalidArgument);
    p = good;
    p.num_seqs = 0;
    p.q = nullptr;
    EXPECT_TRUE(entry(p, Stream{}).ok()) << "nothing to do is OK";
    if (CudaDeviceCount() == 0) {
      // The checks pass, then the launch fails for want of a device: not InvalidArgument.
      const absl::Status s = entry(good, Stream{});
      EXPECT_FALSE(s.ok());
      EXPECT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
    }
    EXPECT_EQ(PrefillKernelOnThisThread(), PrefillKernel::kTensorCore)
        << "an internal entry point left its choice of kernel behind";
  }
}

}  // namespace
}  // namespace tpserve::kernels::cuda
