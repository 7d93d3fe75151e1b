// Step scheduling for one replica: continuous batching with chunked prefill under a token
// budget, admission by free KV blocks, preemption by recompute (layer: coordinator).
// A pure function of (sequences, free blocks, limits): no threads, no I/O, testable alone.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "coordinator/kv_block_manager.h"
#include "coordinator/sequence.h"

namespace tpserve {

struct SchedulerLimits {
  int32_t max_num_seqs = 64;        // sequences holding KV at once
  int32_t max_batch_tokens = 512;   // new tokens per step (prefill chunks + decodes)
};

// `count` new tokens of `seq` at positions [start, start + count).
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int32_t start = 0;
  int32_t count = 0;
  bool sample = false;  // the chunk reaches the last known token: sample the next one
};

struct Schedule {
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> preempted;  // lost their KV; now at the front of `waiting`
  bool empty() const { return chunks.empty(); }
};

// Plans the next step. `running` holds admitted sequences (they own blocks) in arrival order;
// `waiting` is the FCFS queue. Sequences in flight are left alone. Running sequences come
// first, oldest first, each getting min(remaining tokens, budget left). When one cannot get
// a block, the newest running sequence not in flight is preempted (blocks released,
// computed = 0, moved to the front of `waiting`), possibly itself. Then waiting sequences are
// admitted in order while the budget, max_num_seqs and free blocks allow; admission never
// skips ahead in the queue. Scheduled sequences are marked in flight.
Schedule ScheduleStep(const SchedulerLimits& limits, std::vector<Sequence*>& running,
                      std::deque<Sequence*>& waiting, KvBlockManager& kv);

// Removes `seq` from `running` and returns its blocks (finish, cancel, or preemption).
void Evict(Sequence* seq, std::vector<Sequence*>& running, KvBlockManager& kv);

}  // namespace tpserve
