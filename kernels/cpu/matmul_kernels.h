// Interface between the MatMul driver (matmul.cc: dispatch, operand preparation, threading)
// and its per-instruction-set kernels (matmul_avx512.cc, matmul_avx2.cc). Internal to
// kernels/cpu. The kernels are single-threaded; the driver gives each thread disjoint rows
// of y, so no two threads ever write the same output.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace tpserve::kernels::cpu {

// MatMul takes the GEMV kernels up to this many tokens and the GEMM kernels above. The GEMV
// kernels too read each weight from DRAM once (token groups of four pass over a block of
// rows held in L2), and they skip the GEMM's widening and transposing of every weight into
// fp32 panels, which only pays for itself over more tokens. Crossover measured with
// bench/kernels/kernels_bench.cc on BF16 4096x4096 (AVX-512): near 32.
inline constexpr int64_t kGemvMaxTokens = 32;

// GEMM blocking, shared by the driver (scratch sizes) and the kernels.
// A packed weight panel holds kGemmMc rows x kGemmKc columns widened to fp32 (128 KiB): it
// is built once per row block and column chunk and then reused by every token tile, so the
// weights are read from memory once per MatMul whatever the token count.
inline constexpr int64_t kGemmKc = 256;
inline constexpr int64_t kGemmMc = 128;

// Rows per GEMV block: every group of four tokens passes over the block before the next one
// starts, so the block (up to ~256 KiB of weights) is read from DRAM once and then from L2.
inline int64_t GemvRowBlock(int64_t cols, int64_t element_bytes) {
  const int64_t rows = (int64_t{256} << 10) / (cols * element_bytes) / 4 * 4;
  return rows < 4 ? 4 : (rows > 64 ? 64 : rows);
}

struct MatMulIsaKernels {
  // --- Few tokens (decode): dot products along the columns, weights streamed once. ---
  // x is given to `gemv` prepared: `tokens` rows of `xs` floats, each zero-padded to a
  // multiple of `gemv_chunk`. When `gemv_split_bf16` and w is BF16, every chunk of x is
  // stored [even-indexed elements][odd-indexed elements], matching how the kernel widens a
  // register of BF16 pairs with a shift (even) and a mask (odd) instead of a shuffle.
  int64_t gemv_chunk;
  bool gemv_split_bf16;
  // y[t, r] for all t < tokens and r in [r0, r1); y row stride is w.rows.
  void (*gemv)(const float* xp, int64_t xs, int64_t tokens, const WeightMatrix& w, int64_t r0,
               int64_t r1, float* y);

  // --- Many tokens (prefill, batched decode): register-blocked GEMM. ---
  // x is given packed: for each tile of `gemm_tokens` tokens, [w.cols][gemm_tokens] fp32
  // (token-minor), tokens past the end zero. The kernel computes y[t, r] for t in [t0, t1)
  // and r in [r0, r1), where t0 is a multiple of gemm_tokens and r1 - r0 <= kGemmMc.
  // `panel` is caller-owned scratch of kGemmMc * kGemmKc floats, 64-byte aligned.
  int64_t gemm_tokens;
  void (*gemm)(const float* xpack, const WeightMatrix& w, int64_t r0, int64_t r1, int64_t t0,
               int64_t t1, float* y, float* panel);
};

// Kernel tables; call only when ActiveIsa() allows the level.
const MatMulIsaKernels& Avx512MatMulKernels();
const MatMulIsaKernels& Avx2MatMulKernels();

}  // namespace tpserve::kernels::cpu
