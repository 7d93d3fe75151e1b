#include "coordinator/cluster.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tpserve {
namespace {

bool Contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// The work item of one scheduled chunk, as the worker needs it.
SeqWork MakeWork(const ScheduledChunk& c) {
  const Sequence& s = *c.seq;
  SeqWork w;
  w.seq_id = s.id;
  w.start_pos = c.start;
  for (int32_t p = c.start; p < c.start + c.count; ++p) w.tokens.push_back(s.TokenAt(p));
  w.block_table = s.blocks;
  w.sample = c.sample;
  w.sampling = s.sampling;
  w.logprobs = s.logprobs;
  const int32_t prompt = static_cast<int32_t>(s.prompt.size());
  if (s.prompt_logprobs > 0 && c.start < prompt - 1 && s.prompt_logprobs_done < prompt - 1) {
    w.prompt_logprobs = s.prompt_logprobs;
    w.next_prompt_token = c.start + c.count < prompt ? s.prompt[c.start + c.count] : -1;
  }
  if (s.sampling.repetition_penalty != 1.0f) {
    for (int32_t p = 0; p < c.start; ++p) w.history.push_back(s.TokenAt(p));
  }
  return w;
}

}  // namespace

Cluster::Cluster(ModelConfig config, std::string fingerprint, ClusterOptions options)
    : config_(std::move(config)), fingerprint_(std::move(fingerprint)), options_(options) {}

absl::Status Cluster::AddReplica(const ReplicaInfo& info, std::shared_ptr<ReplicaLink> link) {
  if (info.fingerprint != fingerprint_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "replica \"", info.name, "\" serves model ", info.fingerprint, ", this coordinator ",
        fingerprint_, ": start the worker with the coordinator's model"));
  }
  if (info.kv_blocks < 1 || info.kv_block_size < 1 || info.tp < 1 || info.pp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("replica \"", info.name,
                                                   "\" reports an empty KV cache or layout"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (replicas_.count(info.name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("a replica named \"", info.name, "\" is registered"));
  }
  auto r = std::make_unique<Replica>();
  r->info = info;
  r->link = std::move(link);
  r->kv = std::make_unique<KvBlockManager>(info.kv_blocks, info.kv_block_size);
  r->last_seen = std::chrono::steady_clock::now();
  replicas_[info.name] = std::move(r);
  lost_.erase(info.name);
  AdmitPending();
  return absl::OkStatus();
}

Cluster::Replica* Cluster::PickReplica(const Request& request) {
  Replica* best = nullptr;
  int64_t best_score = 0;
  const int64_t need = request.seq_const().prompt.size() + request.seq_const().stop.max_new_tokens;
  for (auto& [name, r] : replicas_) {
    if (r->kv->BlocksFor(need) > r->kv->total()) continue;
    // Free KV capacity minus the tokens already queued for it.
    int64_t queued = 0;
    for (const Sequence* s : r->waiting) queued += s->known();
    const int64_t score = static_cast<int64_t>(r->kv->free()) * r->kv->block_size() - queued;
    if (best == nullptr || score > best_score) {
      best = r.get();
      best_score = score;
    }
  }
  return best;
}

void Cluster::Enqueue(Replica& r, std::shared_ptr<Request> request) {
  Sequence& s = request->seq();
  s.computed = 0;
  s.blocks.clear();
  s.in_flight = false;
  request->replica = r.info.name;
  r.waiting.push_back(&s);
  r.requests[s.id] = std::move(request);
}

void Cluster::AdmitPending() {
  std::deque<std::shared_ptr<Request>> still;
  for (auto& req : pending_) {
    Replica* r = PickReplica(*req);
    if (r == nullptr) {
      still.push_back(std::move(req));
    } else {
      Enqueue(*r, std::move(req));
    }
  }
  pending_ = std::move(still);
  for (auto& [name, r] : replicas_) Pump(*r);
}

absl::Status Cluster::Submit(std::shared_ptr<Request> request) {
  std::lock_guard<std::mutex> lock(mu_);
  int32_t queued = static_cast<int32_t>(pending_.size());
  for (auto& [name, r] : replicas_) queued += static_cast<int32_t>(r->waiting.size());
  if (queued >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat(queued, " requests are queued (max_queued ", options_.max_queued, "); retry later"));
  }
  Sequence& s = request->seq();
  s.id = s.arrival = next_arrival_++;
  Replica* r = PickReplica(*request);
  if (r == nullptr && !replicas_.empty()) {
    int64_t largest = 0;
    for (auto& [name, rep] : replicas_) {
      largest = std::max<int64_t>(largest, int64_t{rep->kv->total()} * rep->kv->block_size());
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", s.prompt.size(), " tokens) + max_new_tokens (", s.stop.max_new_tokens,
        ") exceed the KV capacity of every replica (largest: ", largest, " tokens)"));
  }
  if (r == nullptr) {
    request->replica.clear();
    pending_.push_back(std::move(request));
    return absl::OkStatus();
  }
  Enqueue(*r, std::move(request));
  Pump(*r);
  return absl::OkStatus();
}

void Cluster::Pump(Replica& r) {
  const int32_t depth = options_.max_in_flight > 0 ? std::min(options_.max_in_flight, r.info.pp) : r.info.pp;
  while (static_cast<int32_t>(r.in_flight.size()) < depth) {
    Schedule sched = ScheduleStep(options_.limits, r.running, r.waiting, *r.kv);
    if (sched.empty()) return;
    StepPlan plan;
    plan.step_id = next_step_++;
    for (const ScheduledChunk& c : sched.chunks) plan.seqs.push_back(MakeWork(c));
    r.in_flight[plan.step_id] = std::move(sched);
    // A broken link shows up as ReplicaLost from its handler, which re-queues everything.
    if (!r.link->Send(plan)) return;
  }
}

void Cluster::Finish(Replica& r, const std::shared_ptr<Request>& request, tpserve::Finish why,
                     RequestEvent event) {
  Sequence& s = request->seq();
  Evict(&s, r.running, *r.kv);
  r.waiting.erase(std::remove(r.waiting.begin(), r.waiting.end(), &s), r.waiting.end());
  // A stop string already cut the text; anything else releases what was held back.
  if (why != tpserve::Finish::kStop) event.text += request->TakeHeldText();
  event.finish = why;
  request->Post(std::move(event));
  r.requests.erase(s.id);
}

void Cluster::StepDone(const std::string& name, const StepResult& result, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(name);
  if (it == replicas_.end()) return;
  Replica& r = *it->second;
  r.last_seen = std::chrono::steady_clock::now();
  auto step = r.in_flight.find(result.step_id);
  if (step == r.in_flight.end()) return;
  const Schedule sched = std::move(step->second);
  r.in_flight.erase(step);

  for (size_t k = 0; k < sched.chunks.size(); ++k) {
    const ScheduledChunk& c = sched.chunks[k];
    auto req_it = r.requests.find(c.seq->id);
    if (req_it == r.requests.end()) continue;
    std::shared_ptr<Request> req = req_it->second;
    Sequence& s = req->seq();
    s.in_flight = false;
    s.computed = c.start + c.count;
    RequestEvent event;
    if (req->cancel_requested) {
      Finish(r, req, tpserve::Finish::kCancelled, std::move(event));
      continue;
    }
    if (!error.empty() || k >= result.seqs.size() || result.seqs[k].seq_id != s.id) {
      event.error = absl::InternalError(absl::StrCat("replica \"", name, "\" failed the step: ",
                                                     error.empty() ? "result does not match plan" : error));
      Finish(r, req, tpserve::Finish::kCancelled, std::move(event));
      continue;
    }
    const SeqResult& out = result.seqs[k];
    const int32_t prompt = static_cast<int32_t>(s.prompt.size());
    for (size_t i = 0; i < out.prompt_logprobs.size(); ++i) {
      const int32_t pos = c.start + static_cast<int32_t>(i) + 1;
      if (pos <= s.prompt_logprobs_done || pos >= prompt) continue;
      event.prompt_logprobs.push_back(out.prompt_logprobs[i]);
      s.prompt_logprobs_done = pos;
    }
    tpserve::Finish why = tpserve::Finish::kNone;
    if (c.sample && out.token >= 0) {
      why = req->AcceptToken(out.token, s.logprobs > 0 ? &out.sampled : nullptr,
                             Contains(s.stop.eos_token_ids, out.token),
                             Contains(s.stop.stop_token_ids, out.token),
                             config_.max_position_embeddings, &event);
    }
    if (why != tpserve::Finish::kNone) {
      Finish(r, req, why, std::move(event));
    } else if (!event.tokens.empty() || !event.prompt_logprobs.empty() || !event.text.empty()) {
      req->Post(std::move(event));
    }
  }
  Pump(r);
}

void Cluster::Touch(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(name);
  if (it != replicas_.end()) it->second->last_seen = std::chrono::steady_clock::now();
}

void Cluster::ReplicaLost(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(name);
  if (it == replicas_.end()) return;
  std::unique_ptr<Replica> lost = std::move(it->second);
  replicas_.erase(it);
  lost_[name] = lost->info;
  // Oldest first, so the re-queued requests keep their order.
  std::vector<std::shared_ptr<Request>> moved;
  for (auto& [id, req] : lost->requests) moved.push_back(req);
  std::sort(moved.begin(), moved.end(), [](const auto& a, const auto& b) {
    return a->seq().arrival < b->seq().arrival;
  });
  for (auto& req : moved) {
    if (req->cancel_requested) {
      RequestEvent event;
      event.finish = tpserve::Finish::kCancelled;
      req->Post(std::move(event));
      continue;
    }
    req->seq().blocks.clear();
    req->seq().computed = 0;
    req->seq().in_flight = false;
    req->replica.clear();
    pending_.push_back(req);
  }
  AdmitPending();
}

void Cluster::CheckHeartbeats() {
  std::vector<std::shared_ptr<ReplicaLink>> silent, alive;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    for (auto& [name, r] : replicas_) {
      (now - r->last_seen > options_.heartbeat_timeout ? silent : alive).push_back(r->link);
    }
  }
  for (auto& link : alive) link->SendHeartbeat();
  for (auto& link : silent) link->Close();
}

void Cluster::Cancel(const std::shared_ptr<Request>& request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (request->replica.empty()) {
    auto it = std::find(pending_.begin(), pending_.end(), request);
    if (it == pending_.end()) return;
    pending_.erase(it);
    RequestEvent event;
    event.finish = tpserve::Finish::kCancelled;
    request->Post(std::move(event));
    return;
  }
  auto it = replicas_.find(request->replica);
  if (it == replicas_.end()) return;
  Replica& r = *it->second;
  if (r.requests.count(request->seq().id) == 0) return;  // already finished
  if (request->seq().in_flight) {
    request->cancel_requested = true;  // finished when its step comes back
    return;
  }
  Finish(r, request, tpserve::Finish::kCancelled, RequestEvent());
  Pump(r);
}

int32_t Cluster::live_replicas() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(replicas_.size());
}

int32_t Cluster::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(pending_.size());
}

std::vector<ReplicaSnapshot> Cluster::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReplicaSnapshot> out;
  for (const auto& [name, r] : replicas_) {
    out.push_back({r->info, true, r->kv->free(), static_cast<int32_t>(r->running.size()),
                   static_cast<int32_t>(r->waiting.size())});
  }
  for (const auto& [name, info] : lost_) out.push_back({info, false, 0, 0, 0});
  return out;
}

}  // namespace tpserve
