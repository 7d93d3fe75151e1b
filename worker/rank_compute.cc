#include "worker/rank_compute.h"

#include <vector>

#include "common/status.h"
#include "worker/sampler.h"

namespace tpserve {

absl::Status RankCompute::Sample(std::span<const SampleRow> rows, std::vector<SampledToken>* out) {
  std::vector<int64_t> indices;
  indices.reserve(rows.size());
  for (const SampleRow& r : rows) indices.push_back(r.row);
  std::vector<float> logits;
  RETURN_IF_ERROR(Logits(indices, &logits));
  out->assign(rows.size(), SampledToken());
  if (rows.empty()) return absl::OkStatus();
  const int64_t vocab = static_cast<int64_t>(logits.size() / rows.size());
  std::vector<float> scratch(vocab);
  for (size_t i = 0; i < rows.size(); ++i) {
    const SampleRow& r = rows[i];
    const float* row = logits.data() + i * vocab;
    scratch.assign(row, row + vocab);
    const std::vector<int32_t> seen(r.seen.begin(), r.seen.end());
    (*out)[i].token = SampleToken(scratch.data(), vocab, r.params, seen, r.position);
    if (r.top_logprobs > 0) {
      (*out)[i].logprob = ComputeLogprobs(row, vocab, (*out)[i].token, r.top_logprobs);
    }
  }
  return absl::OkStatus();
}

}  // namespace tpserve
