// Token sampling on the GPU: worker/sampler.cc's SampleToken and ComputeLogprobs for a batch of
// fp32 logit rows (cuda_ops.h: SampleTokens). One version, written to be obviously the CPU
// sampler's steps: one block of kThreads threads per row, each step a strided pass over the
// row followed by a block reduction whose result every thread receives (warp partials combined
// in a fixed order, so all threads agree bit for bit and branch alike).
//  - repetition penalty: the raw row is copied into the workspace, then every seen id is
//    penalised from its raw value (duplicates write the same value: each token once);
//  - greedy: the CPU's sequential argmax (logit 0 NaN -> 0, else the first maximum);
//  - probabilities: float(exp(double((l - max) / T))), summed in fp64, divided in fp64, as the
//    CPU (both sides' double exp round to the same float, where their expf may not);
//  - top-k / top-p cut-off: the CPU takes sorted[k - 1] and the first sorted prefix reaching
//    top_p. Here both are found by bisection over the bit patterns of the (non-negative)
//    probabilities: sorted[k - 1] is the largest value v with count(p >= v) >= k, and the top-p
//    cut-off is the largest v with mass(p >= v) >= top_p; the CPU's cut-off is the larger of the
//    two (the top-p walk stops at index k - 1). 31 passes, any top_k, no sort.
//  - the draw: inverse CDF of the kept tokens in token-id order at SamplingPhiloxUniform(seed,
//    position) * kept mass, by a block prefix sum in fp64, tile by tile.
// Tested by tests/gpu/cuda_sampling_test.cc against worker/sampler.cc.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kNoIndex = INT_MAX;

struct Scratch {
  float f[kWarps];
  int i[kWarps];
  double d[kWarps];
  long long n[kWarps];
};

// Whether (a, ia) ranks before (b, ib): NaN last, then larger values first, ties to the lower id.
// Without NaN this is ComputeLogprobs' order; it is a strict total order on distinct ids.
__device__ __forceinline__ bool Before(float a, int ia, float b, int ib) {
  const bool an = isnan(a), bn = isnan(b);
  if (an != bn) return bn;
  if (!an && a != b) return a > b;
  return ia < ib;
}

__device__ __forceinline__ int Lane() { return static_cast<int>(threadIdx.x) % 32; }
__device__ __forceinline__ int Warp() { return static_cast<int>(threadIdx.x) / 32; }

// The best (v, idx) of the block by Before(); every thread gets it.
__device__ void BlockBest(float* v, int* idx, Scratch& sh) {
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, *v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, *idx, off);
    if (Before(ov, oi, *v, *idx)) {
      *v = ov;
      *idx = oi;
    }
  }
  __syncthreads();  // earlier readers of sh are done
  if (Lane() == 0) {
    sh.f[Warp()] = *v;
    sh.i[Warp()] = *idx;
  }
  __syncthreads();
  *v = sh.f[0];
  *idx = sh.i[0];
  for (int w = 1; w < kWarps; ++w) {
    if (Before(sh.f[w], sh.i[w], *v, *idx)) {
      *v = sh.f[w];
      *idx = sh.i[w];
    }
  }
}

__device__ double BlockSumD(double v, Scratch& sh) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();
  if (Lane() == 0) sh.d[Warp()] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += sh.d[w];
  return total;
}

__device__ long long BlockSumI(long long v, Scratch& sh) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();
  if (Lane() == 0) sh.n[Warp()] = v;
  __syncthreads();
  long long total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.n[w];
  return total;
}

__device__ int BlockMinI(int v, Scratch& sh) {
  for (int off = 16; off > 0; off >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  if (Lane() == 0) sh.i[Warp()] = v;
  __syncthreads();
  int m = sh.i[0];
  for (int w = 1; w < kWarps; ++w) m = min(m, sh.i[w]);
  return m;
}

// Inclusive prefix sum of v over the block in thread order; *total gets the block's sum.
__device__ double BlockScanD(double v, double* total, Scratch& sh) {
  for (int off = 1; off < 32; off <<= 1) {
    const double o = __shfl_up_sync(0xffffffffu, v, off);
    if (Lane() >= off) v += o;
  }
  __syncthreads();
  if (Lane() == 31) sh.d[Warp()] = v;
  __syncthreads();
  double before = 0.0, all = 0.0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < Warp()) before += sh.d[w];
    all += sh.d[w];
  }
  *total = all;
  return before + v;
}

// worker/sampler.cc's Argmax: the first maximum, or 0 when x[0] is NaN (NaNs never win).
__device__ int CpuArgmax(const float* x, int64_t n, Scratch& sh) {
  float bv = F32Nan();
  int bi = kNoIndex;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    if (Before(x[i], static_cast<int>(i), bv, bi)) {
      bv = x[i];
      bi = static_cast<int>(i);
    }
  }
  BlockBest(&bv, &bi, sh);
  return isnan(x[0]) ? 0 : bi;
}

// SampleToken's steps after the penalty for temperature > 0 (or NaN) and top_k != 1; `w`
// holds the penalised logits and is overwritten with the probabilities.
__device__ int SampleRow(float* w, int64_t vocab, const SamplingRow& prm, Scratch& sh) {
  const int tid = static_cast<int>(threadIdx.x);
  const float max_logit = w[CpuArgmax(w, vocab, sh)];
  __syncthreads();  // every thread has read max_logit before w changes
  double total = 0.0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    const float x = (w[i] - max_logit) / prm.temperature;
    const float e = static_cast<float>(exp(static_cast<double>(x)));
    w[i] = e;
    total += e;
  }
  total = BlockSumD(total, sh);
  // A NaN probability makes every probability NaN on the CPU; its inverse-CDF walk skips only
  // tokens with prob < cutoff (false for NaN) and never sees acc > target, so it ends on the
  // last token.
  if (isnan(total)) return static_cast<int>(vocab - 1);
  for (int64_t i = tid; i < vocab; i += kThreads) {
    w[i] = static_cast<float>(static_cast<double>(w[i]) / total);
  }
  float max_prob = F32Nan();
  int argmax_prob = kNoIndex;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    if (Before(w[i], static_cast<int>(i), max_prob, argmax_prob)) {
      max_prob = w[i];
      argmax_prob = static_cast<int>(i);
    }
  }
  BlockBest(&max_prob, &argmax_prob, sh);

  float cutoff = 0.0f;
  const bool use_top_k = prm.top_k > 0 && prm.top_k < vocab;
  const bool use_top_p = prm.top_p < 1.0f;
  if (use_top_k || use_top_p) {
    const long long k = use_top_k ? prm.top_k : vocab;
    // Invariants: pred(lo) holds, pred(hi) fails or lies above every probability (the search
    // stays at or below max_prob, so it ends on a probability even when top_p <= 0 makes the
    // mass predicate true everywhere).
    const uint32_t above_max = __float_as_uint(max_prob) + 1;
    uint32_t k_lo = 0, k_hi = above_max;
    uint32_t p_lo = 0, p_hi = above_max;
    bool p_any = false;  // whether mass(p >= 0) >= top_p, i.e. the top-p walk stops at all
    if (use_top_p) {
      double mass = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads) mass += w[i];
      p_any = BlockSumD(mass, sh) >= prm.top_p;
    }
    if (!p_any) p_hi = 1;
    while (k_hi - k_lo > 1 || p_hi - p_lo > 1) {
      const uint32_t k_mid = k_lo + (k_hi - k_lo) / 2;
      const uint32_t p_mid = p_lo + (p_hi - p_lo) / 2;
      long long count = 0;
      double mass = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const uint32_t bits = __float_as_uint(w[i]);
        count += bits >= k_mid ? 1 : 0;
        mass += bits >= p_mid ? static_cast<double>(w[i]) : 0.0;
      }
      count = BlockSumI(count, sh);
      mass = BlockSumD(mass, sh);
      if (k_hi - k_lo > 1) (count >= k ? k_lo : k_hi) = k_mid;
      if (p_hi - p_lo > 1) (mass >= prm.top_p ? p_lo : p_hi) = p_mid;
    }
    cutoff = __uint_as_float(k_lo);
    if (p_any && __uint_as_float(p_lo) > cutoff) cutoff = __uint_as_float(p_lo);
  }
  if (prm.min_p > 0.0f) {
    const float floor = prm.min_p * max_prob;
    cutoff = cutoff < floor ? floor : cutoff;  // std::max(cutoff, floor)
  }

  double kept = 0.0;
  int last_kept = -1;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    if (w[i] >= cutoff) {
      kept += w[i];
      last_kept = static_cast<int>(i);
    }
  }
  kept = BlockSumD(kept, sh);
  last_kept = -BlockMinI(-last_kept, sh);
  const double target =
      static_cast<double>(SamplingPhiloxUniform(prm.seed, static_cast<uint64_t>(prm.position))) *
      kept;
  double carry = 0.0;
  for (int64_t base = 0; base < vocab; base += kThreads) {
    const int64_t i = base + tid;
    const bool keep = i < vocab && w[i] >= cutoff;
    double tile_total = 0.0;
    const double acc = carry + BlockScanD(keep ? static_cast<double>(w[i]) : 0.0, &tile_total, sh);
    const int hit = BlockMinI(keep && acc > target ? static_cast<int>(i) : kNoIndex, sh);
    if (hit != kNoIndex) return hit;
    carry += tile_total;
  }
  // Rounding left the target at the very top (or nothing was kept): as the CPU.
  return last_kept >= 0 ? last_kept : argmax_prob;
}

__global__ void __launch_bounds__(kThreads) SampleTokensKernel(SampleTokensParams p) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  __shared__ Scratch sh;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t r = blockIdx.x;
  const int64_t vocab = p.vocab;
  const float* raw = p.logits + r * vocab;
  float* w = p.workspace + r * vocab;
  const SamplingRow prm = p.params[r];

  for (int64_t i = tid; i < vocab; i += kThreads) w[i] = raw[i];
  if (prm.repetition_penalty != 1.0f && p.num_seen > 0) {
    __syncthreads();  // the copy is complete before penalised values overwrite it
    long long b = p.seen_offsets[r], e = p.seen_offsets[r + 1];
    b = b < 0 ? 0 : (b > p.num_seen ? p.num_seen : b);
    e = e < 0 ? 0 : (e > p.num_seen ? p.num_seen : e);
    for (long long j = b + tid; j < e; j += kThreads) {
      const int32_t t = p.seen_ids[j];
      if (t < 0 || t >= vocab) continue;
      const float l = raw[t];
      w[t] = l > 0 ? l / prm.repetition_penalty : l * prm.repetition_penalty;
    }
  }
  __syncthreads();

  int token;
  if (prm.temperature <= 0.0f || prm.top_k == 1) {
    token = CpuArgmax(w, vocab, sh);
  } else {
    token = SampleRow(w, vocab, prm, sh);
  }
  if (tid == 0) p.tokens[r] = token;
  if (p.token_logprobs == nullptr && p.top_n == 0) return;

  // ComputeLogprobs on the raw row.
  const float max_logit = raw[CpuArgmax(raw, vocab, sh)];
  double sum = 0.0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    sum += exp(static_cast<double>(raw[i] - max_logit));
  }
  sum = BlockSumD(sum, sh);
  const float log_z = max_logit + static_cast<float>(log(sum));
  if (tid == 0 && p.token_logprobs != nullptr) p.token_logprobs[r] = raw[token] - log_z;

  float prev_v = 0.0f;
  int prev_i = -1;
  for (int64_t n = 0; n < p.top_n; ++n) {
    const int64_t out = r * p.top_n + n;
    if (n >= vocab) {
      if (tid == 0) {
        p.top_ids[out] = -1;
        p.top_logprobs[out] = -INFINITY;
      }
      continue;
    }
    float bv = F32Nan();
    int bi = kNoIndex;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float v = raw[i];
      const int id = static_cast<int>(i);
      if ((prev_i < 0 || Before(prev_v, prev_i, v, id)) && Before(v, id, bv, bi)) {
        bv = v;
        bi = id;
      }
    }
    BlockBest(&bv, &bi, sh);
    if (tid == 0) {
      p.top_ids[out] = bi;
      p.top_logprobs[out] = bv - log_z;
    }
    prev_v = bv;
    prev_i = bi;
  }
}

}  // namespace

int LaunchSampleTokens(const SampleTokensParams& p, Stream stream) {
  LaunchKernel(SampleTokensKernel, static_cast<unsigned>(p.rows), kThreads, 0, ToCudaStream(stream),
               p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpserve::kernels::cuda::internal
