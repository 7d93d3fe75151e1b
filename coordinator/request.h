// One client request inside the coordinator (layer: coordinator). The RPC thread that owns
// the call waits on its event queue; the replica that runs it posts events. Everything in
// `seq` and the text state is guarded by the Cluster's mutex; the event queue has its own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/sequence.h"
#include "model/tokenizer.h"

namespace tpserve {

enum class Finish { kNone, kLength, kStop, kEos, kCancelled };

// What changed since the last event: new tokens with their text, or the end.
struct RequestEvent {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::vector<TokenLogprob> prompt_logprobs;
  Finish finish = Finish::kNone;
  absl::Status error;  // set with finish when the request failed
};

class Request {
 public:
  Request(std::string id, Sequence seq, std::vector<std::string> stop, const Tokenizer* tokenizer);

  const std::string& id() const { return id_; }
  Sequence& seq() { return seq_; }
  const Sequence& seq_const() const { return seq_; }

  // Cluster side (under the cluster lock): turns a sampled token into an event, applying
  // stop strings to the text. Returns the finish reason the token caused, if any.
  Finish AcceptToken(int32_t token, const TokenLogprob* logprob, bool is_eos, bool is_stop_token,
                     int32_t max_context, RequestEvent* event);
  // Text still held back (a possible stop-string prefix), released at the end.
  std::string TakeHeldText();

  // Event queue, thread-safe. Post after the final event is ignored.
  void Post(RequestEvent event);
  // Waits up to `timeout_ms` for events; returns them (possibly none). `done` is set once
  // the final event has been taken.
  std::vector<RequestEvent> Wait(int timeout_ms, bool* done);

  bool cancel_requested = false;  // guarded by the cluster lock
  std::string replica;            // name of the replica it runs on ("" = pending)

 private:
  std::string id_;
  Sequence seq_;
  std::vector<std::string> stop_;
  std::unique_ptr<IncrementalDetokenizer> detok_;
  std::string text_;        // generated text so far
  size_t emitted_ = 0;      // bytes of text_ already sent

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestEvent> events_;
  bool final_posted_ = false;
  bool final_taken_ = false;
};

}  // namespace tpserve
