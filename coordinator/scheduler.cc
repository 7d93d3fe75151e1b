#include "coordinator/scheduler.h"

#include <algorithm>

namespace tpserve {
namespace {

// Newest running sequence that may lose its KV: not in flight and not yet in this step.
Sequence* PickVictim(const std::vector<Sequence*>& running, const std::vector<Sequence*>& taken) {
  for (auto it = running.rbegin(); it != running.rend(); ++it) {
    Sequence* s = *it;
    if (s->in_flight || std::find(taken.begin(), taken.end(), s) != taken.end()) continue;
    return s;
  }
  return nullptr;
}

}  // namespace

void Evict(Sequence* seq, std::vector<Sequence*>& running, KvBlockManager& kv) {
  running.erase(std::remove(running.begin(), running.end(), seq), running.end());
  kv.Release(seq->blocks);
}

Schedule ScheduleStep(const SchedulerLimits& limits, std::vector<Sequence*>& running,
                      std::deque<Sequence*>& waiting, KvBlockManager& kv) {
  Schedule out;
  std::vector<Sequence*> taken;
  int32_t budget = limits.max_batch_tokens;

  // Iterate over a snapshot: preemption edits `running`.
  const std::vector<Sequence*> snapshot = running;
  for (Sequence* seq : snapshot) {
    if (budget == 0) break;
    if (seq->in_flight || std::find(running.begin(), running.end(), seq) == running.end()) continue;
    const int32_t n = std::min(seq->known() - seq->computed, budget);
    if (n <= 0) continue;
    bool preempted_self = false;
    while (!kv.Reserve(seq->blocks, static_cast<int64_t>(seq->computed) + n)) {
      Sequence* victim = PickVictim(running, taken);
      if (victim == nullptr) break;  // everything else is in flight: try again next step
      Evict(victim, running, kv);
      victim->computed = 0;
      ++victim->preemptions;
      waiting.push_front(victim);
      out.preempted.push_back(victim);
      if (victim == seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self || seq->blocks.size() < static_cast<size_t>(kv.BlocksFor(seq->computed + n))) {
      continue;
    }
    out.chunks.push_back({seq, seq->computed, n, seq->computed + n == seq->known()});
    taken.push_back(seq);
    budget -= n;
  }

  // Admit from the queue; a sequence preempted in this very step waits for the next one.
  while (budget > 0 && !waiting.empty() &&
         static_cast<int32_t>(running.size()) < limits.max_num_seqs) {
    Sequence* seq = waiting.front();
    if (std::find(out.preempted.begin(), out.preempted.end(), seq) != out.preempted.end()) break;
    const int32_t n = std::min(seq->known() - seq->computed, budget);
    if (!kv.Reserve(seq->blocks, static_cast<int64_t>(seq->computed) + n)) break;
    waiting.pop_front();
    running.insert(std::upper_bound(running.begin(), running.end(), seq,
                                    [](const Sequence* a, const Sequence* b) {
                                      return a->arrival < b->arrival;
                                    }),
                   seq);
    out.chunks.push_back({seq, seq->computed, n, seq->computed + n == seq->known()});
    budget -= n;
  }
  for (ScheduledChunk& c : out.chunks) c.seq->in_flight = true;
  return out;
}

}  // namespace tpserve
