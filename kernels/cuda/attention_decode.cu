// Decode attention on the GPU (PagedDecodeAttention in cuda_ops.h): one query token per
// sequence, memory-bound, so the design goal is to read each K/V byte once. One version,
// templated on head_dim (64, 128).
//
// DecodeAttentionKernel, grid x = split, y = KV head, z = sequence; 128 threads. A block
// handles all `group` = q_heads / kv_heads query heads of its KV head (they share every K/V
// load) over its split's share of the sequence's visible keys [first, pos], in chunks of
// kChunk keys:
//  1. the chunk's cache offsets (through the block table) into shared memory;
//  2. scores: kLanesPerKey = head_dim / 8 lanes read one key row as 16-byte pieces, each
//     dots its 8 elements with every query head's matching slice (queries in shared memory,
//     pre-multiplied by scale * log2(e)) and the lanes' partial sums meet by shuffles;
//  3. online softmax: warp w updates query heads w, w + 4, ... (running max m, running sum l,
//     rescale factor alpha), turning the chunk's scores into exp2(s - m);
//  4. O += P V: thread t owns dims (2 t) mod head_dim, +1 of every query head, for the keys
//     t / (head_dim / 2) + k * key_groups of the chunk (a bf16 pair per load); the key groups'
//     accumulators are summed through shared memory at the end.
// Only keys inside the split's range are ever loaded or multiplied, so K/V elements the
// query does not see never contribute (not even 0 * NaN).
// With one split the block writes O / l in bf16. With several, it writes its unnormalised O,
// m and l into the workspace and MergeSplitsKernel (grid x = query head, y = sequence,
// head_dim threads) combines them: out = sum_p O_p 2^(m_p - M) / sum_p l_p 2^(m_p - M) with
// M = max_p m_p. An empty split (more splits than keys) has m = -inf, l = 0, O = 0 and
// weighs nothing.
// Tested by tests/gpu/cuda_attention_test.cc against kernels::ref::PagedAttention.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 64;                       // keys per chunk
constexpr int kMaxGroup = static_cast<int>(kMaxDecodeGroup);
constexpr int kPStride = kMaxGroup + 1;          // p_s row: one key's scores, padded
static_assert(kChunk == 64, "the softmax step covers a chunk with two keys per lane");

struct DecodeArgs : AttentionArgs {
  int splits;
  // Workspace (splits > 1): partial O [num_seqs, q_heads, splits, D], m and l
  // [num_seqs, q_heads, splits], m in the log2 domain.
  float* part_o;
  float* part_m;
  float* part_l;
};

template <int D>
__global__ void __launch_bounds__(kThreads) DecodeAttentionKernel(const DecodeArgs a) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  constexpr int kLanesPerKey = D / 8;                 // 16-byte pieces per key row
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kKeysPerPass = kKeysPerWarp * kWarps;
  constexpr int kScorePasses = kChunk / kKeysPerPass;
  constexpr int kThreadsPerVRow = D / 2;              // a thread owns 2 dims of V
  constexpr int kKeyGroups = kThreads / kThreadsPerVRow;
  constexpr int kVPerThread = kChunk / kKeyGroups;
  static_assert(kChunk % kKeysPerPass == 0 && kChunk % kKeyGroups == 0, "whole passes");

  __shared__ float4 q_s4[kMaxGroup * D / 4];  // [group][D], float4 for alignment
  __shared__ float p_s[kChunk * kPStride];    // [key][group]: scores, then probabilities
  __shared__ int64_t off_s[kChunk];           // cache element offset of each key's head row
  __shared__ float m_s[kMaxGroup], l_s[kMaxGroup], alpha_s[kMaxGroup];
  __shared__ float2 red_s[kKeyGroups * kMaxGroup * D / 2];  // [key group][group][D / 2]
  float* q_s = reinterpret_cast<float*>(q_s4);

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32, warp = tid / 32;
  const int split = static_cast<int>(blockIdx.x);
  const int64_t kv_head = blockIdx.y;
  const int64_t s = blockIdx.z;
  const int group = static_cast<int>(a.group);  // <= kMaxGroup

  const SeqView seq = ReadSeq(a.seqs, s, a.tokens, a.block_size);
  if (!seq.rows_ok || seq.num_tokens == 0) return;  // the same for the whole block
  bool valid = seq.valid && seq.num_tokens == 1;
  const int pos = seq.start_pos;  // the query's position (meaningful when valid)
  const int first = FirstVisibleKey(pos, a.window);
  if (valid) {
    valid = BlockEntriesValid(seq.block_table, first, pos, a.block_size, a.cache_blocks);
  }

  // This split's keys: [key_begin, key_end), possibly empty.
  const int num_keys = pos - first + 1;
  const int per_split = (num_keys + a.splits - 1) / a.splits;
  const int key_begin = first + split * per_split;
  const int key_end = min(pos + 1, key_begin + per_split);

  const int64_t out_row = a.q_heads * D;
  const int64_t head0 = kv_head * group;  // first query head of this block
  if (!valid) {
    // Poison: directly, or through the merge (l = NaN makes the merged row NaN).
    for (int e = tid; e < group * D; e += kThreads) {
      const int g = e / D, d = e % D;
      if (a.splits == 1) {
        a.out[seq.token_begin * out_row + (head0 + g) * D + d] = kBf16Nan;
      } else {
        const int64_t part = (s * a.q_heads + head0 + g) * a.splits + split;
        a.part_o[part * D + d] = 0.0f;
        if (d == 0) {
          a.part_m[part] = 0.0f;
          a.part_l[part] = F32Nan();
        }
      }
    }
    return;
  }

  for (int e = tid; e < group * D; e += kThreads) {
    const int g = e / D, d = e % D;
    q_s[g * D + d] =
        Bf16ToF32(a.q[seq.token_begin * a.q_token_stride + (head0 + g) * D + d]) * a.log2_scale;
  }
  if (tid < group) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float acc[kMaxGroup][2];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) acc[g][0] = acc[g][1] = 0.0f;

  // Score role: lane group `seg` of a warp reads one key; `sl` is the lane's piece of it.
  const int seg = lane / kLanesPerKey, sl = lane % kLanesPerKey;
  // PV role: key group `kg`, dims d0 and d0 + 1.
  const int kg = tid / kThreadsPerVRow, d0 = 2 * (tid % kThreadsPerVRow);

  for (int c0 = key_begin; c0 < key_end; c0 += kChunk) {
    const int len = min(kChunk, key_end - c0);
    __syncthreads();  // q_s/m_s/l_s written; the previous chunk's readers are done
    if (tid < kChunk) {
      off_s[tid] = tid < len ? KeyOffset(seq.block_table, c0 + tid, a.block_size, a.kv_heads,
                                         kv_head, D)
                             : 0;
    }
    __syncthreads();

    // ---- scores: all of this thread's K pieces first (loads in flight together) ----
    uint4 k_raw[kScorePasses];
#pragma unroll
    for (int pass = 0; pass < kScorePasses; ++pass) {
      const int kc = pass * kKeysPerPass + warp * kKeysPerWarp + seg;
      k_raw[pass] = make_uint4(0, 0, 0, 0);
      if (kc < len) k_raw[pass] = *reinterpret_cast<const uint4*>(a.cache_k + off_s[kc] + sl * 8);
    }
#pragma unroll
    for (int pass = 0; pass < kScorePasses; ++pass) {
      const int kc = pass * kKeysPerPass + warp * kKeysPerWarp + seg;
      float k[8];
      Bf16x8ToF32(k_raw[pass], k);
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= group) break;  // the same for every lane: the shuffles stay converged
        const float4 qa = *reinterpret_cast<const float4*>(&q_s[g * D + sl * 8]);
        const float4 qb = *reinterpret_cast<const float4*>(&q_s[g * D + sl * 8 + 4]);
        float dot = qa.x * k[0];
        dot = fmaf(qa.y, k[1], dot);
        dot = fmaf(qa.z, k[2], dot);
        dot = fmaf(qa.w, k[3], dot);
        dot = fmaf(qb.x, k[4], dot);
        dot = fmaf(qb.y, k[5], dot);
        dot = fmaf(qb.z, k[6], dot);
        dot = fmaf(qb.w, k[7], dot);
        for (int off = kLanesPerKey / 2; off > 0; off >>= 1) {
          dot += __shfl_xor_sync(0xffffffffu, dot, off);
        }
        if (sl == 0 && kc < len) p_s[kc * kPStride + g] = dot;
      }
    }
    __syncthreads();

    // ---- online softmax: warp w owns query heads w, w + kWarps, ... ----
    for (int g = warp; g < group; g += kWarps) {
      const float s0 = lane < len ? p_s[lane * kPStride + g] : -INFINITY;
      const float s1 = lane + 32 < len ? p_s[(lane + 32) * kPStride + g] : -INFINITY;
      float mx = fmaxf(s0, s1);
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no NaN from -inf - -inf
      const float e0 = exp2f(s0 - m_use), e1 = exp2f(s1 - m_use);
      float sum = e0 + e1;
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane < len) p_s[lane * kPStride + g] = e0;
      if (lane + 32 < len) p_s[(lane + 32) * kPStride + g] = e1;
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_use);
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();

    // ---- O += P V: this thread's V pairs first ----
    uint32_t v_raw[kVPerThread];
#pragma unroll
    for (int n = 0; n < kVPerThread; ++n) {
      const int kc = kg + n * kKeyGroups;
      v_raw[n] = 0;
      if (kc < len) v_raw[n] = *reinterpret_cast<const uint32_t*>(a.cache_v + off_s[kc] + d0);
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) break;
      acc[g][0] *= alpha_s[g];
      acc[g][1] *= alpha_s[g];
    }
#pragma unroll
    for (int n = 0; n < kVPerThread; ++n) {
      const int kc = kg + n * kKeyGroups;
      if (kc >= len) break;
      const float v0 = __uint_as_float(v_raw[n] << 16);          // element d0
      const float v1 = __uint_as_float(v_raw[n] & 0xffff0000u);  // element d0 + 1
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= group) break;
        const float p = p_s[kc * kPStride + g];
        acc[g][0] = fmaf(p, v0, acc[g][0]);
        acc[g][1] = fmaf(p, v1, acc[g][1]);
      }
    }
  }

  // ---- sum the key groups' accumulators, then write ----
  // (red_s is used by nothing else, so the barrier below alone orders both these writes and
  // the final m_s/l_s, also for a split without keys, before the reads.)
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= group) break;
    red_s[(kg * kMaxGroup + g) * (D / 2) + d0 / 2] = make_float2(acc[g][0], acc[g][1]);
  }
  __syncthreads();
  const float* red = reinterpret_cast<const float*>(red_s);
  for (int e = tid; e < group * D; e += kThreads) {
    const int g = e / D, d = e % D;
    float o = 0.0f;
#pragma unroll
    for (int k = 0; k < kKeyGroups; ++k) o += red[(k * kMaxGroup + g) * D + d];
    if (a.splits == 1) {
      a.out[seq.token_begin * out_row + (head0 + g) * D + d] = F32ToBf16(o / l_s[g]);
    } else {
      const int64_t part = (s * a.q_heads + head0 + g) * a.splits + split;
      a.part_o[part * D + d] = o;
      if (d == 0) {
        a.part_m[part] = m_s[g];
        a.part_l[part] = l_s[g];
      }
    }
  }
}

template <int D>
__global__ void __launch_bounds__(D) MergeSplitsKernel(const DecodeArgs a) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  const int64_t h = blockIdx.x;
  const int64_t s = blockIdx.y;
  const int d = static_cast<int>(threadIdx.x);
  const SeqView seq = ReadSeq(a.seqs, s, a.tokens, a.block_size);
  if (!seq.rows_ok || seq.num_tokens == 0) return;  // the split kernel skipped it too
  const int64_t base = (s * a.q_heads + h) * a.splits;
  float m_max = -INFINITY;
  for (int p = 0; p < a.splits; ++p) m_max = fmaxf(m_max, a.part_m[base + p]);
  const float m_use = m_max == -INFINITY ? 0.0f : m_max;
  float l = 0.0f, o = 0.0f;
  for (int p = 0; p < a.splits; ++p) {
    const float w = exp2f(a.part_m[base + p] - m_use);
    l = fmaf(a.part_l[base + p], w, l);
    o = fmaf(a.part_o[(base + p) * D + d], w, o);
  }
  a.out[seq.token_begin * a.q_heads * D + h * D + d] = F32ToBf16(o / l);
}

template <int D>
int Launch(const DecodeArgs& args, int64_t num_seqs, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.splits), static_cast<unsigned>(args.kv_heads),
                  static_cast<unsigned>(num_seqs));
  LaunchKernel(DecodeAttentionKernel<D>, grid, kThreads, 0, stream, args);
  if (args.splits > 1) {
    const dim3 merge_grid(static_cast<unsigned>(args.q_heads), static_cast<unsigned>(num_seqs));
    LaunchKernel(MergeSplitsKernel<D>, merge_grid, D, 0, stream, args);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int LaunchPagedDecodeAttention(const DecodeAttentionParams& p, int splits, Stream stream) {
  const PagedAttentionParams& attn = p.attn;
  const PagedKvCache& c = attn.cache;
  DecodeArgs args{};
  static_cast<AttentionArgs&>(args) = AttentionArgsOf(attn);
  args.splits = splits;
  if (splits > 1) {
    const int64_t parts = attn.num_seqs * attn.q_heads * splits;
    args.part_o = static_cast<float*>(p.workspace);
    args.part_m = args.part_o + parts * c.head_dim;
    args.part_l = args.part_m + parts;
  }
  const cudaStream_t s = ToCudaStream(stream);
  if (c.head_dim == 64) return Launch<64>(args, attn.num_seqs, s);
  return Launch<128>(args, attn.num_seqs, s);
}

}  // namespace tpserve::kernels::cuda::internal
