// `tpserve bench`: a serving load generator in the manner of vLLM's serving benchmark (layer:
// clients, CLI only). Closed loop: `concurrency` threads each stream one request after another
// until `requests` have finished; every request has the same shape (prompt_len token ids,
// new_tokens greedy tokens, EOS ignored), so levels compare like for like.
// Thread safety: RunLoadLevel runs its own threads and calls `stream` from them concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "clients/cpp/client.h"

namespace tpserve::cli {

struct LoadLevel {
  int concurrency = 1;
  int requests = 8;
  int prompt_len = 32;
  int new_tokens = 32;
  uint32_t vocab_size = 0;  // prompt ids are drawn below it (deterministic per request)
};

struct LoadResult {
  int concurrency = 0;
  int requests = 0;
  double ttft_ms = 0;  // median time to first token
  double itl_ms = 0;   // median inter-token latency (between chunks that carry tokens)
  double requests_per_s = 0;
  double output_tokens_per_s = 0;
};

using StreamFn = std::function<absl::Status(const client::GenerateOptions&,
                                            const std::function<bool(const client::StreamChunk&)>&)>;

// The prompt of request `i`: a fixed pseudo-random id sequence in [3, vocab_size).
std::vector<uint32_t> BenchPrompt(int i, int prompt_len, uint32_t vocab_size);

// Runs one level. Errors: InvalidArgument for a level that makes no sense (concurrency < 1,
// requests < concurrency, prompt_len < 1, new_tokens < 1, vocab_size < 4); the first failed
// request's status otherwise (the level is then not reported).
[[nodiscard]] absl::StatusOr<LoadResult> RunLoadLevel(const LoadLevel& level, const StreamFn& stream);

}  // namespace tpserve::cli
