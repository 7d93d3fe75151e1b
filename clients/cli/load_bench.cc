#include "clients/cli/load_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

namespace tpserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

std::vector<uint32_t> BenchPrompt(int i, int prompt_len, uint32_t vocab_size) {
  std::vector<uint32_t> ids;
  ids.reserve(static_cast<size_t>(prompt_len));
  for (int k = 0; k < prompt_len; ++k) {
    const uint64_t x = static_cast<uint64_t>(i) * 7919u + static_cast<uint64_t>(k) * 104729u;
    ids.push_back(static_cast<uint32_t>(3 + x % (vocab_size - 3)));
  }
  return ids;
}

absl::StatusOr<LoadResult> RunLoadLevel(const LoadLevel& level, const StreamFn& stream) {
  if (level.concurrency < 1 || level.requests < level.concurrency || level.prompt_len < 1 ||
      level.new_tokens < 1 || level.vocab_size < 4) {
    return absl::InvalidArgumentError(
        "bench: need concurrency >= 1, requests >= concurrency, prompt_len >= 1, "
        "new_tokens >= 1 and a vocabulary of at least 4 ids");
  }
  std::mutex mu;
  std::vector<double> ttft, itl;
  absl::Status first_error;
  std::atomic<int> next{0};
  std::atomic<int64_t> tokens{0};
  const Clock::time_point t0 = Clock::now();
  auto worker = [&] {
    for (int i = next++; i < level.requests; i = next++) {
      client::GenerateOptions o;
      o.prompt_token_ids = BenchPrompt(i, level.prompt_len, level.vocab_size);
      o.max_new_tokens = static_cast<uint32_t>(level.new_tokens);
      o.temperature = 0;
      o.ignore_eos = true;
      std::vector<double> my_itl;
      double my_ttft = -1;
      const Clock::time_point start = Clock::now();
      Clock::time_point last = start;
      absl::Status s = stream(o, [&](const client::StreamChunk& chunk) {
        if (chunk.token_ids.empty()) return true;
        const Clock::time_point now = Clock::now();
        if (my_ttft < 0) {
          my_ttft = Ms(now - start);
        } else {
          my_itl.push_back(Ms(now - last));
        }
        last = now;
        tokens += static_cast<int64_t>(chunk.token_ids.size());
        return true;
      });
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok()) {
        if (first_error.ok()) first_error = s;
        next = level.requests;  // stop handing out work
        return;
      }
      if (my_ttft >= 0) ttft.push_back(my_ttft);
      itl.insert(itl.end(), my_itl.begin(), my_itl.end());
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < level.concurrency; ++t) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  const double seconds = Ms(Clock::now() - t0) / 1000.0;
  LoadResult r;
  r.concurrency = level.concurrency;
  r.requests = level.requests;
  r.ttft_ms = Median(ttft);
  r.itl_ms = Median(itl);
  r.requests_per_s = level.requests / seconds;
  r.output_tokens_per_s = static_cast<double>(tokens.load()) / seconds;
  return r;
}

}  // namespace tpserve::cli
