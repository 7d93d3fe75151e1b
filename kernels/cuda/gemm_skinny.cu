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
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;

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

template <int kTokens, typename Out>
__global__ void __launch_bounds__(kWarps * 32)
    SkinnyGemmKernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ w,
                     Out* __restrict__ y, int64_t rows, int64_t cols) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (row0 >= rows) return;
  const int64_t vecs = cols / 8;
  // Rows past the end re-read the last row (never written): no branch in the loop.
  const uint4* wv[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r < rows ? row0 + r : rows - 1;
    wv[r] = reinterpret_cast<const uint4*>(w + row * cols);
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

  // Every lane ends with every sum; lane (r * kTokens + t) % 32 writes (row0 + r, t).
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float s = acc[r][t];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, offset);
      }
      if (lane == (r * kTokens + t) % 32 && row0 + r < rows) Store(s, y + t * rows + row0 + r);
    }
  }
}

template <int kTokens, typename Out>
int Launch(const GemmParams& p, Stream stream) {
  const int64_t blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  LaunchKernel(SkinnyGemmKernel<kTokens, Out>, static_cast<unsigned>(blocks), kWarps * 32, 0,
               ToCudaStream(stream), p.x, p.w, static_cast<Out*>(p.y), p.rows, p.cols);
  return static_cast<int>(cudaGetLastError());
}

template <typename Out>
int LaunchFor(const GemmParams& p, Stream stream) {
  switch (p.tokens) {
    case 1: return Launch<1, Out>(p, stream);
    case 2: return Launch<2, Out>(p, stream);
    case 3: return Launch<3, Out>(p, stream);
    case 4: return Launch<4, Out>(p, stream);
    case 5: return Launch<5, Out>(p, stream);
    case 6: return Launch<6, Out>(p, stream);
    case 7: return Launch<7, Out>(p, stream);
    case 8: return Launch<8, Out>(p, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

static_assert(kSkinnyGemmMaxTokens == 8, "LaunchFor has a case per token count");

}  // namespace

int LaunchSkinnyGemm(const GemmParams& p, Stream stream) {
  return p.output == GemmOutput::kF32 ? LaunchFor<float>(p, stream)
                                      : LaunchFor<uint16_t>(p, stream);
}

}  // namespace tpserve::kernels::cuda::internal
