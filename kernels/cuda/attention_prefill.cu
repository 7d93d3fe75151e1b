// Prefill attention on CUDA cores: internal::LaunchPagedPrefillAttentionSimt, a flash-attention
// style kernel written to be checked by eye, with the public PagedPrefillAttention's contract
// (cuda_ops.h). The public op runs the tensor-core kernel of attention_prefill_tc.cu; this one
// stays as the GPU version that kernel is compared with (attention_internal.h names both: the
// backend-ops test runs every prefill case through each, the benchmark can time each). One
// version, templated on head_dim (64, 128).
//
// Grid: x = query tiles of kBlockM rows of one sequence (the last tile first: causal tiles at
// the end see the most keys), y = query head, z = sequence. A block of 128 threads:
//  1. loads its query tile into shared memory as fp32, pre-multiplied by scale * log2(e) (the
//     softmax then runs in the log2 domain with exp2f);
//  2. streams the keys its queries can see, [first visible key of the first query, position
//     of the last query], in tiles of kBlockN keys: K and V rows are gathered through the
//     block table with 16-byte loads and widened into shared memory;
//  3. per key tile: scores S = Q K^T (each thread a 4 x 4 register tile), causal / window mask
//     (only on tiles that need it), online softmax per row (running max m, running sum l,
//     accumulator rescaled by exp2(m_old - m_new)), P into shared memory (over the K tile,
//     which is no longer needed), then O += P V (each thread 4 rows x head_dim/8 columns);
//  4. writes O / l rounded once to bf16.
// Thread layout: tx = tid % 8, ty = tid / 8. A thread owns query rows ty + 16 i (i < 4) and,
// in S, keys tx + 8 j (j < 4); in O, columns 4 tx + 32 c + e (c < head_dim / 32, e < 4). The
// 8 threads of a row (same ty) are 8 consecutive lanes, so row reductions are 3 shuffles.
// Shared-memory strides (head_dim + 4 floats for Q/K/V, kBlockN + 8 for P) keep the float4
// reads of a warp on distinct banks.
// Tested by tests/gpu/cuda_attention_test.cc against kernels::ref::PagedAttention.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 128;
constexpr int kBlockM = 64;  // queries per tile
constexpr int kBlockN = 32;  // keys per tile
constexpr int kRows = 4;     // query rows per thread: ty + 16 i
constexpr int kKeys = 4;     // keys per thread in S: tx + 8 j
static_assert(kThreads == 128 && kBlockM == 16 * kRows && kBlockN == 8 * kKeys,
              "the thread layout above");

using PrefillArgs = AttentionArgs;

// Shared-memory layout for head dimension D, in floats.
template <int D>
struct PrefillSmem {
  static constexpr int kStride = D + 4;           // Q, K and V rows
  static constexpr int kPStride = kBlockN + 8;    // P rows
  static constexpr int kQ = kBlockM * kStride;
  static constexpr int kKP = kBlockN * kStride > kBlockM * kPStride ? kBlockN * kStride
                                                                    : kBlockM * kPStride;
  static constexpr int kV = kBlockN * kStride;
  static constexpr size_t kBytes = sizeof(float) * (kQ + kKP + kV);
  static_assert(kStride % 4 == 0 && kQ % 4 == 0 && kKP % 4 == 0, "float4-aligned rows");
};

// Whether key position `key` is visible from query position `pos`.
__device__ __forceinline__ bool Visible(int key, int pos, int64_t window) {
  return key <= pos && (window <= 0 || static_cast<int64_t>(key) > pos - window);
}

// O += P V over the first `keys` keys of the tile. With kMasked, pairs (row, key) the row does
// not see are skipped rather than multiplied by their zero probability, so that a NaN or inf
// in V never reaches a row that does not attend to it.
template <int D, bool kMasked>
__device__ __forceinline__ void AccumulatePV(const float* p_s, const float* v_s, int keys,
                                             int k0, const int* row_pos, int64_t window,
                                             int tx, int ty, float (&acc)[kRows][D / 8]) {
  using S = PrefillSmem<D>;
  for (int kk = 0; kk < keys; ++kk) {
    float4 v[D / 32];
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      v[c] = *reinterpret_cast<const float4*>(&v_s[kk * S::kStride + 4 * tx + 32 * c]);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (kMasked && !Visible(k0 + kk, row_pos[i], window)) continue;
      const float p = p_s[(ty + 16 * i) * S::kPStride + kk];
#pragma unroll
      for (int c = 0; c < D / 32; ++c) {
        acc[i][4 * c + 0] = fmaf(p, v[c].x, acc[i][4 * c + 0]);
        acc[i][4 * c + 1] = fmaf(p, v[c].y, acc[i][4 * c + 1]);
        acc[i][4 * c + 2] = fmaf(p, v[c].z, acc[i][4 * c + 2]);
        acc[i][4 * c + 3] = fmaf(p, v[c].w, acc[i][4 * c + 3]);
      }
    }
  }
}

// Max and sum over the 8 threads of a row (8 consecutive lanes: tx = lane % 8).
__device__ __forceinline__ float RowMax(float v) {
  for (int off = 1; off < 8; off <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float RowSum(float v) {
  for (int off = 1; off < 8; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// One query tile (rows [row0, row0 + rows) of sequence `seq`, query head h).
template <int D>
__device__ void PrefillTile(const PrefillArgs& a, const SeqView& seq, int h, int row0,
                            int rows, float* q_s, float* kp_s, float* v_s) {
  using S = PrefillSmem<D>;
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 8, ty = tid / 8;
  const int64_t kv_head = h / a.group;
  const int p0 = seq.start_pos + row0;  // position of the tile's first query
  const int p1 = p0 + rows - 1;         // and of its last
  const int64_t out_row = a.q_heads * D;

  __syncthreads();  // the previous tile's readers of q_s are done
  for (int e = tid; e < kBlockM * D; e += kThreads) {
    const int r = e / D, d = e % D;
    float val = 0.0f;
    if (r < rows) {
      const int64_t t = seq.token_begin + row0 + r;
      val = Bf16ToF32(a.q[t * a.q_token_stride + h * D + d]) * a.log2_scale;
    }
    q_s[r * S::kStride + d] = val;
  }

  // Per-thread row state. Rows past the tile's end pretend to be its last query (their
  // results are never written), so that every row sees at least one key.
  int row_pos[kRows];
  float m[kRows], l[kRows], acc[kRows][D / 8];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    row_pos[i] = min(p0 + ty + 16 * i, p1);
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) acc[i][c] = 0.0f;
  }

  const int key_lo = FirstVisibleKey(p0, a.window);  // the first key any row sees
  const int key_hi = p1;                             // the last
  for (int k0 = key_lo; k0 <= key_hi; k0 += kBlockN) {
    __syncthreads();  // q_s is written; the previous key tile's readers of kp_s and v_s are done

    // ---- K and V tiles: kBlockN keys x D, as 16-byte pieces of 8 bf16 ----
    constexpr int kPieces = kBlockN * D / 8;
    constexpr int kPerThread = kPieces / kThreads;
    static_assert(kPieces % kThreads == 0, "whole pieces per thread");
    uint4 k_raw[kPerThread], v_raw[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int piece = tid + i * kThreads;
      const int kk = piece / (D / 8), part = piece % (D / 8);
      const int pos = k0 + kk;
      k_raw[i] = make_uint4(0, 0, 0, 0);  // keys past the context read as zeros
      v_raw[i] = make_uint4(0, 0, 0, 0);
      if (pos < seq.context) {
        const int64_t off = KeyOffset(seq.block_table, pos, a.block_size, a.kv_heads, kv_head, D) +
                            part * 8;
        k_raw[i] = *reinterpret_cast<const uint4*>(a.cache_k + off);
        v_raw[i] = *reinterpret_cast<const uint4*>(a.cache_v + off);
      }
    }
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int piece = tid + i * kThreads;
      const int kk = piece / (D / 8), part = piece % (D / 8);
      float f[8];
      Bf16x8ToF32(k_raw[i], f);
      float4* dst = reinterpret_cast<float4*>(&kp_s[kk * S::kStride + part * 8]);
      dst[0] = make_float4(f[0], f[1], f[2], f[3]);
      dst[1] = make_float4(f[4], f[5], f[6], f[7]);
      Bf16x8ToF32(v_raw[i], f);
      dst = reinterpret_cast<float4*>(&v_s[kk * S::kStride + part * 8]);
      dst[0] = make_float4(f[0], f[1], f[2], f[3]);
      dst[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
    __syncthreads();

    // ---- S = Q K^T (log2 domain) ----
    float s[kRows][kKeys];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kKeys; ++j) s[i][j] = 0.0f;
    }
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      float4 qv[kRows], kv[kKeys];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        qv[i] = *reinterpret_cast<const float4*>(&q_s[(ty + 16 * i) * S::kStride + d]);
      }
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        kv[j] = *reinterpret_cast<const float4*>(&kp_s[(tx + 8 * j) * S::kStride + d]);
      }
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
      }
    }

    // ---- mask: only tiles with a (row, key) pair out of sight need it ----
    const bool full = k0 + kBlockN - 1 <= p0 &&
                      (a.window <= 0 || static_cast<int64_t>(k0) > p1 - a.window);
    if (!full) {
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
          if (!Visible(k0 + tx + 8 * j, row_pos[i], a.window)) s[i][j] = -INFINITY;
        }
      }
    }

    // ---- online softmax per row ----
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      float mx = s[i][0];
#pragma unroll
      for (int j = 1; j < kKeys; ++j) mx = fmaxf(mx, s[i][j]);
      const float m_new = fmaxf(m[i], RowMax(mx));
      // A row that has seen no key yet keeps m = -inf; exp2 against 0 then gives zeros
      // instead of NaN (-inf - -inf).
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m[i] - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        s[i][j] = exp2f(s[i][j] - m_use);
        sum += s[i][j];
      }
      l[i] = l[i] * alpha + RowSum(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < D / 8; ++c) acc[i][c] *= alpha;
    }

    __syncthreads();  // every thread has read K: P may overwrite it
    float* p_s = kp_s;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kKeys; ++j) p_s[(ty + 16 * i) * S::kPStride + tx + 8 * j] = s[i][j];
    }
    __syncthreads();

    // ---- O += P V, over the keys up to the last query (later ones are seen by none) ----
    const int keys = min(kBlockN, key_hi - k0 + 1);
    if (full) {
      AccumulatePV<D, false>(p_s, v_s, keys, k0, row_pos, a.window, tx, ty, acc);
    } else {
      AccumulatePV<D, true>(p_s, v_s, keys, k0, row_pos, a.window, tx, ty, acc);
    }
  }

  // ---- out = O / l in bf16 ----
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int r = ty + 16 * i;
    if (r >= rows) continue;
    const float inv_l = 1.0f / l[i];
    uint16_t* dst = a.out + (seq.token_begin + row0 + r) * out_row + h * D;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[4 * tx + 32 * c + e] = F32ToBf16(acc[i][4 * c + e] * inv_l);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(const PrefillArgs a) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  float4* smem_f4 = DynamicShared<float4>();
  using S = PrefillSmem<D>;
  float* q_s = reinterpret_cast<float*>(smem_f4);
  float* kp_s = q_s + S::kQ;
  float* v_s = kp_s + S::kKP;

  ForEachPrefillTile<D, kBlockM>(a, [&](const SeqView& seq, int h, int row0, int rows) {
    PrefillTile<D>(a, seq, h, row0, rows, q_s, kp_s, v_s);
  });
}

template <int D>
int Launch(const PrefillArgs& args, int64_t max_seq_tokens, int64_t num_seqs,
           cudaStream_t stream) {
  using S = PrefillSmem<D>;
  // More than 48 KB of dynamic shared memory needs an opt-in; it is per function and cheap,
  // so it is set on every launch (also right for every device of a multi-GPU process).
  const cudaError_t err = SetKernelAttribute(PrefillAttentionKernel<D>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(S::kBytes));
  if (err != cudaSuccess) return static_cast<int>(err);
  LaunchKernel(PrefillAttentionKernel<D>,
               PrefillGrid(max_seq_tokens, kBlockM, args.q_heads, num_seqs), kThreads, S::kBytes,
               stream, args);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

// q_token_stride and max_seq_tokens resolved (non-zero), as LaunchPagedPrefillAttention.
int LaunchPagedPrefillAttentionSimt(const PagedAttentionParams& p, Stream stream) {
  const PagedKvCache& c = p.cache;
  const PrefillArgs args = AttentionArgsOf(p);
  const cudaStream_t s = ToCudaStream(stream);
  if (c.head_dim == 64) return Launch<64>(args, p.max_seq_tokens, p.num_seqs, s);
  return Launch<128>(args, p.max_seq_tokens, p.num_seqs, s);
}

}  // namespace tpserve::kernels::cuda::internal
