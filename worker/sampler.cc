#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tpserve {
namespace {

uint32_t MulHi(uint32_t a, uint32_t b, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *lo = static_cast<uint32_t>(p);
  return static_cast<uint32_t>(p >> 32);
}

int32_t Argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace

float PhiloxUniform(uint64_t seed, uint64_t counter) {
  uint32_t c[4] = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0, 0};
  uint32_t k[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  for (int round = 0; round < 10; ++round) {
    uint32_t lo0, lo1;
    const uint32_t hi0 = MulHi(0xD2511F53u, c[0], &lo0);
    const uint32_t hi1 = MulHi(0xCD9E8D57u, c[2], &lo1);
    c[0] = hi1 ^ c[1] ^ k[0];
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k[1];
    c[3] = lo0;
    k[0] += 0x9E3779B9u;
    k[1] += 0xBB67AE85u;
  }
  return static_cast<float>(c[0] >> 8) * (1.0f / 16777216.0f);
}

int32_t SampleToken(float* logits, int64_t vocab, const SamplingParams& params,
                    const std::vector<int32_t>& seen, int64_t position) {
  if (params.repetition_penalty != 1.0f) {
    std::vector<int32_t> unique(seen);
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    for (int32_t t : unique) {
      if (t < 0 || t >= vocab) continue;
      float& l = logits[t];
      l = l > 0 ? l / params.repetition_penalty : l * params.repetition_penalty;
    }
  }
  if (params.temperature <= 0.0f || params.top_k == 1) return Argmax(logits, vocab);

  // Probabilities at temperature; `keep` marks the tokens that survive the filters.
  const float max_logit = *std::max_element(logits, logits + vocab);
  std::vector<float> prob(vocab);
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    // exp in double, rounded once to float: the GPU sampler (kernels/cuda/sampling.cu) does
    // the same, and both libraries' double exp are accurate enough that the floats agree,
    // where expf may differ by an ulp between them (and flip a token at a cut-off).
    prob[i] = static_cast<float>(
        std::exp(static_cast<double>((logits[i] - max_logit) / params.temperature)));
    total += prob[i];
  }
  for (float& p : prob) p = static_cast<float>(p / total);

  // The cut-off probability implied by top-k and top-p: keep tokens with prob >= cutoff.
  float cutoff = 0.0f;
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p < 1.0f;
  if (use_top_k || use_top_p) {
    std::vector<float> sorted(prob);
    const int64_t k = use_top_k ? params.top_k : vocab;
    std::partial_sort(sorted.begin(), sorted.begin() + k, sorted.end(), std::greater<float>());
    cutoff = sorted[k - 1];
    if (use_top_p) {
      double mass = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        mass += sorted[i];
        if (mass >= params.top_p) {
          cutoff = sorted[i];
          break;
        }
      }
    }
  }
  if (params.min_p > 0.0f) {
    const float max_prob = *std::max_element(prob.begin(), prob.end());
    cutoff = std::max(cutoff, params.min_p * max_prob);
  }

  double kept = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (prob[i] >= cutoff) kept += prob[i];
  }
  const double target = PhiloxUniform(params.seed, static_cast<uint64_t>(position)) * kept;
  double acc = 0.0;
  int32_t last = Argmax(prob.data(), vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    if (prob[i] < cutoff) continue;
    acc += prob[i];
    last = static_cast<int32_t>(i);
    if (acc > target) return last;
  }
  return last;  // rounding left target at the very top: the last kept token
}

TokenLogprob ComputeLogprobs(const float* logits, int64_t vocab, int32_t token, uint32_t top_n) {
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  const float log_z = max_logit + static_cast<float>(std::log(sum));

  TokenLogprob out;
  out.token = token;
  out.logprob = logits[token] - log_z;
  const int64_t n = std::min<int64_t>(top_n, vocab);
  if (n > 0) {
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < n; ++i) out.top.push_back({ids[i], logits[ids[i]] - log_z});
  }
  return out;
}

}  // namespace tpserve
