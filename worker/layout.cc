#include "worker/layout.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpserve {

std::string Layout::Describe() const {
  return absl::StrCat("rank ", rank, " = stage ", stage, "/", pp, " tensor rank ", tp_rank, "/",
                      tp, ": layers [", layer_begin, ", ", layer_end, "), q heads [", q_head_begin,
                      ", ", q_head_end, "), kv heads [", kv_head_begin, ", ", kv_head_end,
                      "), mlp [", mlp_begin, ", ", mlp_end, ")");
}

absl::StatusOr<Layout> MakeLayout(const ModelConfig& c, int tp, int pp, int world_size, int rank,
                                  const std::vector<int>& layers_per_stage) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("layout: ", parts...));
  };
  if (tp < 1 || pp < 1) return bad("tensor and pipeline sizes must be >= 1 (tp=", tp, ", pp=", pp, ")");
  if (tp * pp != world_size) {
    return bad("tp x pp = ", tp, " x ", pp, " = ", tp * pp, " but the job has ", world_size,
               " ranks; launch exactly tp x pp ranks");
  }
  if (c.num_heads % tp != 0) {
    return bad("tp=", tp, " does not divide the ", c.num_heads, " query heads");
  }
  if (c.intermediate_size % tp != 0) {
    return bad("tp=", tp, " does not divide the ", c.intermediate_size, " MLP columns");
  }
  if (pp > c.num_layers) return bad("pp=", pp, " exceeds the model's ", c.num_layers, " layers");

  Layout l;
  l.tp = tp;
  l.pp = pp;
  l.rank = rank;
  l.stage = rank / tp;
  l.tp_rank = rank % tp;
  if (layers_per_stage.empty()) {
    for (int s = 0; s < pp; ++s) {
      l.layers_per_stage.push_back(c.num_layers / pp + (s < c.num_layers % pp ? 1 : 0));
    }
  } else {
    if (static_cast<int>(layers_per_stage.size()) != pp) {
      return bad("layers_per_stage has ", layers_per_stage.size(), " entries for pp=", pp);
    }
    for (int n : layers_per_stage) {
      if (n < 1) return bad("layers_per_stage [", absl::StrJoin(layers_per_stage, ","), "] has an entry < 1");
    }
    const int sum = std::accumulate(layers_per_stage.begin(), layers_per_stage.end(), 0);
    if (sum != c.num_layers) {
      return bad("layers_per_stage [", absl::StrJoin(layers_per_stage, ","), "] sums to ", sum,
                 ", the model has ", c.num_layers, " layers");
    }
    l.layers_per_stage = layers_per_stage;
  }
  l.layer_begin = std::accumulate(l.layers_per_stage.begin(), l.layers_per_stage.begin() + l.stage, 0);
  l.layer_end = l.layer_begin + l.layers_per_stage[l.stage];

  const int q_per_rank = c.num_heads / tp;
  const int group = c.num_heads / c.num_kv_heads;
  l.q_head_begin = l.tp_rank * q_per_rank;
  l.q_head_end = l.q_head_begin + q_per_rank;
  l.kv_head_begin = l.q_head_begin / group;
  l.kv_head_end = (l.q_head_end - 1) / group + 1;

  const int mlp_per_rank = c.intermediate_size / tp;
  l.mlp_begin = l.tp_rank * mlp_per_rank;
  l.mlp_end = l.mlp_begin + mlp_per_rank;

  l.vocab_shard = (c.vocab_size + tp - 1) / tp;
  l.vocab_begin = std::min(c.vocab_size, l.tp_rank * l.vocab_shard);
  l.vocab_end = std::min(c.vocab_size, l.vocab_begin + l.vocab_shard);
  return l;
}

}  // namespace tpserve
