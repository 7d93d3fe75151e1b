#include "worker/kv_cache.h"

namespace tpserve {

KvCache::KvCache(int num_layers, int64_t num_blocks, int64_t block_size, int64_t kv_heads,
                 int64_t head_dim)
    : num_blocks_(num_blocks), block_size_(block_size), kv_heads_(kv_heads), head_dim_(head_dim) {
  const size_t per_layer = static_cast<size_t>(num_blocks * block_size * kv_heads * head_dim);
  k_.assign(num_layers, std::vector<float>(per_layer));
  v_.assign(num_layers, std::vector<float>(per_layer));
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (const auto& k : k_) total += 2 * k.size() * sizeof(float);
  return total;
}

kernels::KvCacheView KvCache::View(int layer) {
  return {k_[layer].data(), v_[layer].data(), num_blocks_, block_size_, kv_heads_, head_dim_};
}

}  // namespace tpserve
