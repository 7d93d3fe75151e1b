// The paged KV cache of one rank: for each of its layers, K and V blocks for its KV heads
// (layer: worker). Which blocks a sequence uses is the coordinator's decision, carried in
// each step's block tables; the cache itself only stores. Not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace tpserve {

class KvCache {
 public:
  KvCache(int num_layers, int64_t num_blocks, int64_t block_size, int64_t kv_heads,
          int64_t head_dim);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  uint64_t bytes() const;
  // View of local layer `layer` (0-based within this stage).
  kernels::KvCacheView View(int layer);

 private:
  int64_t num_blocks_, block_size_, kv_heads_, head_dim_;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace tpserve
