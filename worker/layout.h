// Where one rank sits in a replica's TP x PP grid and which slices of the model it owns
// (layer: worker; plain data). See DESIGN.md "Rank layout".
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace tpserve {

struct Layout {
  int tp = 1;
  int pp = 1;
  int rank = 0;     // world rank
  int stage = 0;    // rank / tp
  int tp_rank = 0;  // rank % tp
  std::vector<int> layers_per_stage;
  int layer_begin = 0, layer_end = 0;     // this stage's layers [begin, end)
  int q_head_begin = 0, q_head_end = 0;   // query heads of this tensor rank
  int kv_head_begin = 0, kv_head_end = 0; // KV heads its query heads read (replicated if TP > KV)
  int mlp_begin = 0, mlp_end = 0;         // MLP columns
  int vocab_begin = 0, vocab_end = 0;     // lm_head rows (vocab shard) on the last stage
  int vocab_shard = 0;                    // ceil(vocab / tp): padded shard size for gathers

  bool first_stage() const { return stage == 0; }
  bool last_stage() const { return stage == pp - 1; }
  int num_layers() const { return layer_end - layer_begin; }
  int q_heads() const { return q_head_end - q_head_begin; }
  int kv_heads() const { return kv_head_end - kv_head_begin; }
  // World rank of tensor rank `t` in stage `s`.
  int RankOf(int s, int t) const { return s * tp + t; }
  std::string Describe() const;
};

// Computes the layout of world rank `rank` of `world_size`. `layers_per_stage` is empty for
// an even split (first stages take the remainder) or lists each stage's layer count.
// InvalidArgument, with the same message on every rank, when: tp or pp < 1; tp * pp !=
// world_size; tp does not divide the query heads or the MLP columns; pp exceeds the layers;
// the explicit list has the wrong length, a zero entry or a sum other than the layer count.
absl::StatusOr<Layout> MakeLayout(const ModelConfig& config, int tp, int pp, int world_size,
                                  int rank, const std::vector<int>& layers_per_stage);

}  // namespace tpserve
