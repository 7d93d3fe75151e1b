// The small-batch GEMM of GemmHandle (launch.h): y[tokens, rows] = x[tokens, cols] · w^T for
// 1 to kSkinnyGemmMaxTokens tokens, bf16 in, fp32 accumulation, bf16 or fp32 out. A decode
// step's GEMMs read every weight once for a handful of rows of x: the time is the weight
// stream, so the kernel is built to keep HBM busy rather than the tensor cores.
//  - Each warp owns kRowsPerWarp consecutive output rows; its lanes walk the columns in
//    16-byte vectors (8 bf16), Unroll(tokens) vectors per row in flight per lane (4 for one or
//    two tokens, where the registers allow it and batch-1 decode needs every byte in flight;
//    2 above), loaded with the streaming hint (the weights are read once per step and should
//    not evict x from L1).
//  - x (a few KB) is read through the read-only cache; each vector of it serves every row of
//    the warp, which keeps the L1 traffic of x at tokens / kRowsPerWarp times that of w.
//  - fp32 products summed per lane, then across the warp by xor shuffles: a fixed order, so
//    a row's result does not depend on the launch or the other rows (graph replays and eager
//    steps agree bit for bit). IEEE products and sums throughout: NaN and inf propagate as in
//    the reference.
//  - With the SwiGLU epilogue (GemmSwiGlu) a warp's rows are two gate rows and their two up
//    rows; it rounds each sum to bf16 as the GEMM's output would be and applies SwiGluBf16:
//    the result is the two-op path's bit for bit, without the gate_up round trip or a launch.
// Needs cols % 8 == 0 and 16-byte aligned x and w (GemmHandle checks, else uses cuBLASLt).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kWarps = 4;  // per block
constexpr int kRowsPerWarp = 4;
__host__ __device__ constexpr int Unroll(int tokens) { return tokens <= 2 ? 4 : 2; }

// The eight bf16 values of a 16-byte vector as fp32 (exact).
__device__ __forceinline__ void Widen(const uint4& v, float out[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void Store(float v, uint16_t* y) { *y = F32ToBf16(v); }
__device__ __forceinline__ void Store(float v, float* y) { *y = v; }

// Row r of warp w's kRowsPerWarp rows: consecutive rows, or (kSwiGlu) gate rows j, j + 1 then
// up rows inter + j, inter + j + 1 for j = 2 w; `rows` is then 2 inter.
template <bool kSwiGlu>
__device__ __forceinline__ int64_t WarpRow(int64_t warp_index, int r, int64_t rows) {
  if constexpr (kSwiGlu) {
    const int64_t inter = rows / 2, j = warp_index * 2 + r % 2;
    return (r < 2 ? 0 : inter) + (j < inter ? j : inter - 1);
  } else {
    const int64_t row = warp_index * kRowsPerWarp + r;
    return row < rows ? row : rows - 1;
  }
}

template <int kTokens, typename Out, bool kSwiGlu>
__global__ void __launch_bounds__(kWarps * 32)
    SkinnyGemmKernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w,
                     Out* __restrict__ y, int64_t rows, int64_t cols) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t warp_index = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  // The output rows of this warp start at row0 (of y: of `rows`, or of the inter SwiGLU ones).
  const int64_t out_rows = kSwiGlu ? rows / 2 : rows;
  const int64_t row0 = warp_index * (kSwiGlu ? 2 : kRowsPerWarp);
  if (row0 >= out_rows) return;
  const int64_t vecs = cols / 8;
  // Rows past the end re-read the last row (never written): no branch in the loop.
  const uint4* wv[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    wv[r] = reinterpret_cast<const uint4*>(w + WarpRow<kSwiGlu>(warp_index, r, rows) * cols);
  }
  const uint4* xv = reinterpret_cast<const uint4*>(x);

  float acc[kRowsPerWarp][kTokens];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[r][t] = 0.0f;
  }

  constexpr int kUnroll = Unroll(kTokens);
  for (int64_t v0 = lane; v0 < vecs; v0 += 32 * kUnroll) {
    uint4 wt[kUnroll][kRowsPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = v0 + 32 * u;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        wt[u][r] = v < vecs ? __ldcs(wv[r] + v) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = v0 + 32 * u;
      if (v < vecs) {
        float wf[kRowsPerWarp][8];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) Widen(wt[u][r], wf[r]);
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          float xf[8];
          Widen(__ldg(xv + t * vecs + v), xf);
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
            for (int k = 0; k < 8; ++k) acc[r][t] = fmaf(wf[r][k], xf[k], acc[r][t]);
          }
        }
      }
    }
  }

  // Every lane ends with every sum.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], offset);
      }
    }
  }
  // Lane (r * kTokens + t) % 32 writes output row row0 + r of token t.
  constexpr int kOutRows = kSwiGlu ? 2 : kRowsPerWarp;
#pragma unroll
  for (int r = 0; r < kOutRows; ++r) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (lane != (r * kTokens + t) % 32 || row0 + r >= out_rows) continue;
      if constexpr (kSwiGlu) {
        y[t * out_rows + row0 + r] = SwiGluBf16(F32ToBf16(acc[r][t]), F32ToBf16(acc[2 + r][t]));
      } else {
        Store(acc[r][t], y + t * rows + row0 + r);
      }
    }
  }
}

template <int kTokens, typename Out, bool kSwiGlu>
int Launch(const uint16_t* x, const uint16_t* w, void* y, int64_t rows, int64_t cols,
           Stream stream) {
  const int64_t out_rows_per_block = kWarps * (kSwiGlu ? 2 : kRowsPerWarp);
  const int64_t out_rows = kSwiGlu ? rows / 2 : rows;
  const int64_t blocks = (out_rows + out_rows_per_block - 1) / out_rows_per_block;
  LaunchKernel(SkinnyGemmKernel<kTokens, Out, kSwiGlu>, static_cast<unsigned>(blocks),
               kWarps * 32, 0, ToCudaStream(stream), x, w, static_cast<Out*>(y), rows, cols);
  return static_cast<int>(cudaGetLastError());
}

template <typename Out, bool kSwiGlu>
int LaunchFor(int64_t tokens, const uint16_t* x, const uint16_t* w, void* y, int64_t rows,
              int64_t cols, Stream stream) {
  switch (tokens) {
    case 1: return Launch<1, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 2: return Launch<2, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 3: return Launch<3, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 4: return Launch<4, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 5: return Launch<5, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 6: return Launch<6, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 7: return Launch<7, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    case 8: return Launch<8, Out, kSwiGlu>(x, w, y, rows, cols, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

static_assert(kSkinnyGemmMaxTokens == 8, "LaunchFor has a case per token count");

}  // namespace

int LaunchSkinnyGemm(const GemmParams& p, Stream stream) {
  return p.output == GemmOutput::kF32
             ? LaunchFor<float, false>(p.tokens, p.x, p.w, p.y, p.rows, p.cols, stream)
             : LaunchFor<uint16_t, false>(p.tokens, p.x, p.w, p.y, p.rows, p.cols, stream);
}

int LaunchSkinnyGemmSwiGlu(const GemmSwiGluParams& p, Stream stream) {
  return LaunchFor<uint16_t, true>(p.tokens, p.x, p.w, p.out, 2 * p.inter, p.cols, stream);
}

}  // namespace tpserve::kernels::cuda::internal
