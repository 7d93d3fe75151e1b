#include "coordinator/kv_block_manager.h"

namespace tpserve {

KvBlockManager::KvBlockManager(int32_t total_blocks, int32_t block_size)
    : total_(total_blocks), block_size_(block_size) {
  free_.reserve(total_blocks);
  for (int32_t b = total_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int32_t KvBlockManager::BlocksFor(int64_t tokens) const {
  return static_cast<int32_t>((tokens + block_size_ - 1) / block_size_);
}

bool KvBlockManager::Reserve(std::vector<int32_t>& table, int64_t tokens) {
  const int32_t need = BlocksFor(tokens) - static_cast<int32_t>(table.size());
  if (need <= 0) return true;
  if (need > free()) return false;
  for (int32_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockManager::Release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) free_.push_back(*it);
  table.clear();
}

}  // namespace tpserve
