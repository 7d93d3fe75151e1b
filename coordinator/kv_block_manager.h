// Accounting of one replica's paged KV cache (layer: coordinator; not thread-safe: the
// replica's scheduler owns it). Blocks are ids in [0, total); the workers only store what the
// block tables of each step name.
#pragma once

#include <cstdint>
#include <vector>

namespace tpserve {

class KvBlockManager {
 public:
  KvBlockManager(int32_t total_blocks, int32_t block_size);

  int32_t total() const { return total_; }
  int32_t free() const { return static_cast<int32_t>(free_.size()); }
  int32_t block_size() const { return block_size_; }
  // Blocks needed to hold `tokens` positions.
  int32_t BlocksFor(int64_t tokens) const;

  // Grows `table` until it covers `tokens` positions. False (and `table` unchanged) when
  // there are not enough free blocks.
  bool Reserve(std::vector<int32_t>& table, int64_t tokens);
  // Returns every block of `table` to the free list and clears it.
  void Release(std::vector<int32_t>& table);

 private:
  int32_t total_;
  int32_t block_size_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first
};

}  // namespace tpserve
