// MatMul driver: picks the instruction-set kernels (cpu_features.h), prepares x in the
// layout they read, and splits the rows of y across OpenMP threads. Also holds the portable
// scalar kernel used when the CPU has no AVX2. The vector kernels are in matmul_avx512.cc and
// matmul_avx2.cc; all of them are checked against ref::MatMul by tests/kernels/ops_test.cc.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {

using cpu::Isa;
using cpu::kGemmKc;
using cpu::kGemmMc;
using cpu::kGemvMaxTokens;
using cpu::MatMulIsaKernels;

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = int64_t{1} << 17;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// Grow-only 64-byte-aligned scratch, one per thread (OpenMP workers persist, so after the
// first call nothing is allocated and no page is faulted in again).
class Scratch {
 public:
  float* Get(int64_t n) {
    if (n > capacity_) {
      const size_t bytes = static_cast<size_t>(RoundUp(n * int64_t{sizeof(float)}, 64));
      data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      capacity_ = data_ ? n : 0;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  int64_t capacity_ = 0;
};

float* ThreadScratch(int slot, int64_t n) {
  thread_local Scratch scratch[2];
  return scratch[slot].Get(n);
}

int ThreadsFor(int64_t work) { return work < kMinParallelWork ? 1 : omp_get_max_threads(); }

// ------------------------------ scalar kernel ------------------------------

// F16 to F32 without branches (after F. Giesen), so the widening loop vectorises; common's
// F16ToF32 is exact too but calls ldexp for subnormals and is ~15x slower here.
inline float HalfToFloat(uint16_t h) {
  const uint32_t magic_bits = 113u << 23;  // 2^-14 as a float: rescales subnormals
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = (h & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  const uint32_t inf_nan = exp == shifted_exp ? (128u - 16u) << 23 : 0u;
  o += inf_nan;
  // Zero or subnormal: add one to the exponent and subtract 2^-14, exactly.
  const float sub = std::bit_cast<float>(o + (1u << 23)) - std::bit_cast<float>(magic_bits);
  const uint32_t sub_bits = std::bit_cast<uint32_t>(sub);
  o = exp == 0 ? sub_bits : o;
  return std::bit_cast<float>(o | (static_cast<uint32_t>(h & 0x8000u) << 16));
}

void WidenRows(DType dtype, const void* src, float* dst, int64_t n) {
  if (dtype == DType::kF16) {
    const auto* s = static_cast<const uint16_t*>(src);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(s[i]);
    return;
  }
  ConvertToF32(dtype, src, dst, static_cast<size_t>(n));
}

// Four rows are widened to fp32 once and then dotted with every token, so the weights are
// read once whatever the token count.
void ScalarRows(const float* x, int64_t tokens, const WeightMatrix& w, int64_t r0, int64_t r1,
                float* y, float* wide) {
  constexpr int64_t kRows = 4;
  const int64_t cols = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t esize = DTypeSize(w.dtype);
  for (int64_t r = r0; r < r1; r += kRows) {
    const int64_t nr = std::min(kRows, r1 - r);
    WidenRows(w.dtype, base + r * cols * esize, wide, nr * cols);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* xt = x + t * cols;
      for (int64_t i = 0; i < nr; ++i) {
        const float* wr = wide + i * cols;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < cols; ++c) s += xt[c] * wr[c];
        y[t * w.rows + r + i] = s;
      }
    }
  }
}

void ScalarMatMul(const float* x, int64_t tokens, const WeightMatrix& w, float* y) {
  const int64_t blocks = CeilDiv(w.rows, 4);
  const int threads = ThreadsFor(tokens * w.rows * w.cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    float* wide = ThreadScratch(0, 4 * w.cols);
    ScalarRows(x, tokens, w, b * 4, std::min(w.rows, b * 4 + 4), y, wide);
  }
}

// ------------------------------ GEMV driver ------------------------------

// Copies x into rows of `xs` floats zero-padded to the kernel's chunk; with `split` each
// chunk is reordered [even elements][odd elements] to match the BF16 pair widening.
void PrepareGemvX(const float* x, int64_t tokens, int64_t cols, int64_t chunk, bool split,
                  int64_t xs, float* xp) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = x + t * cols;
    float* dst = xp + t * xs;
    std::fill(dst, dst + xs, 0.0f);
    if (!split) {
      std::copy(src, src + cols, dst);
      continue;
    }
    const int64_t half = chunk / 2;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t base = c / chunk * chunk, i = c - base;
      dst[base + (i % 2) * half + i / 2] = src[c];
    }
  }
}

void GemvMatMul(const MatMulIsaKernels& k, const float* x, int64_t tokens, const WeightMatrix& w,
                float* y) {
  const int64_t xs = RoundUp(w.cols, k.gemv_chunk);
  float* xp = ThreadScratch(1, tokens * xs);
  PrepareGemvX(x, tokens, w.cols, k.gemv_chunk, k.gemv_split_bf16 && w.dtype == DType::kBF16, xs,
               xp);
  // Each thread owns one contiguous slice of rows, so it streams its weights sequentially.
  const int threads = ThreadsFor(tokens * w.rows * w.cols);
#pragma omp parallel num_threads(threads)
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = RoundUp(CeilDiv(w.rows, nt), 16);
    const int64_t r0 = std::min(w.rows, id * per), r1 = std::min(w.rows, r0 + per);
    if (r0 < r1) k.gemv(xp, xs, tokens, w, r0, r1, y);
  }
}

// ------------------------------ GEMM driver ------------------------------

void GemmMatMul(const MatMulIsaKernels& k, const float* x, int64_t tokens, const WeightMatrix& w,
                float* y) {
  const int64_t mt = k.gemm_tokens, cols = w.cols;
  const int64_t tiles = CeilDiv(tokens, mt);
  float* xpack = ThreadScratch(1, tiles * cols * mt);
  const int nthreads = ThreadsFor(tokens * w.rows * cols);

  // Row blocks are the unit of work; when there are too few of them for the threads the
  // tokens are split too (the weight panel is then packed once per token group).
  const int64_t row_blocks = CeilDiv(w.rows, kGemmMc);
  const int64_t token_groups =
      row_blocks >= 2 * nthreads ? 1 : std::min<int64_t>(tiles, CeilDiv(2 * nthreads, row_blocks));
  const int64_t tiles_per_group = CeilDiv(tiles, token_groups);

#pragma omp parallel num_threads(nthreads)
  {
    // Token-minor packing: the micro-kernel broadcasts x[t, k] for consecutive t.
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      float* dst = xpack + tile * cols * mt;
      for (int64_t j = 0; j < mt; ++j) {
        const int64_t t = tile * mt + j;
        if (t < tokens) {
          const float* src = x + t * cols;
          for (int64_t c = 0; c < cols; ++c) dst[c * mt + j] = src[c];
        } else {
          for (int64_t c = 0; c < cols; ++c) dst[c * mt + j] = 0.0f;
        }
      }
    }
    float* panel = ThreadScratch(0, kGemmMc * kGemmKc);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < row_blocks * token_groups; ++item) {
      const int64_t rb = item / token_groups, tg = item % token_groups;
      const int64_t r0 = rb * kGemmMc, r1 = std::min(w.rows, r0 + kGemmMc);
      const int64_t t0 = tg * tiles_per_group * mt;
      const int64_t t1 = std::min(tokens, t0 + tiles_per_group * mt);
      if (t0 < t1) k.gemm(xpack, w, r0, r1, t0, t1, y, panel);
    }
  }
}

}  // namespace

void MatMul(const float* x, int64_t tokens, const WeightMatrix& w, float* y) {
  if (tokens <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {
    std::fill(y, y + tokens * w.rows, 0.0f);
    return;
  }
  const Isa isa = cpu::ActiveIsa();
  if (isa == Isa::kScalar) {
    ScalarMatMul(x, tokens, w, y);
    return;
  }
  const MatMulIsaKernels& k =
      isa == Isa::kAvx512 ? cpu::Avx512MatMulKernels() : cpu::Avx2MatMulKernels();
  if (tokens <= kGemvMaxTokens) {
    GemvMatMul(k, x, tokens, w, y);
  } else {
    GemmMatMul(k, x, tokens, w, y);
  }
}

}  // namespace tpserve::kernels
