#include "coordinator/request.h"

#include <algorithm>
#include <chrono>

namespace tpserve {

Request::Request(std::string id, Sequence seq, std::vector<std::string> stop,
                 const Tokenizer* tokenizer)
    : id_(std::move(id)), seq_(std::move(seq)), stop_(std::move(stop)) {
  if (tokenizer != nullptr) detok_ = std::make_unique<IncrementalDetokenizer>(*tokenizer, seq_.prompt);
}

Finish Request::AcceptToken(int32_t token, const TokenLogprob* logprob, bool is_eos,
                            bool is_stop_token, int32_t max_context, RequestEvent* event) {
  seq_.generated.push_back(token);
  event->tokens.push_back(token);
  if (logprob != nullptr) event->logprobs.push_back(*logprob);
  if (detok_ != nullptr && !is_eos) text_ += detok_->Push(token);

  // A stop string ends the text before it; text that may still grow into one is held back.
  size_t longest = 0;
  for (const std::string& s : stop_) longest = std::max(longest, s.size());
  const size_t search_from = emitted_ >= longest ? emitted_ - longest + 1 : 0;
  size_t cut = std::string::npos;
  for (const std::string& s : stop_) {
    if (s.empty()) continue;
    const size_t at = text_.find(s, search_from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    event->text += text_.substr(emitted_, cut > emitted_ ? cut - emitted_ : 0);
    emitted_ = text_.size();
    return Finish::kStop;
  }
  size_t hold = 0;
  for (const std::string& s : stop_) {
    if (s.empty()) continue;
    for (size_t k = std::min(s.size() - 1, text_.size() - emitted_); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  event->text += text_.substr(emitted_, text_.size() - emitted_ - hold);
  emitted_ = text_.size() - hold;

  if (is_stop_token) return Finish::kStop;
  if (is_eos) return Finish::kEos;
  if (static_cast<int32_t>(seq_.generated.size()) >= seq_.stop.max_new_tokens ||
      seq_.known() >= max_context) {
    return Finish::kLength;
  }
  return Finish::kNone;
}

std::string Request::TakeHeldText() {
  if (detok_ != nullptr) text_ += detok_->Flush();
  std::string rest = text_.substr(std::min(emitted_, text_.size()));
  emitted_ = text_.size();
  return rest;
}

void Request::Post(RequestEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  if (final_posted_) return;
  if (event.finish != Finish::kNone) final_posted_ = true;
  events_.push_back(std::move(event));
  cv_.notify_all();
}

std::vector<RequestEvent> Request::Wait(int timeout_ms, bool* done) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty(); });
  std::vector<RequestEvent> out(std::make_move_iterator(events_.begin()),
                                std::make_move_iterator(events_.end()));
  events_.clear();
  for (const RequestEvent& e : out) {
    if (e.finish != Finish::kNone) final_taken_ = true;
  }
  *done = final_taken_;
  return out;
}

}  // namespace tpserve
