// The pure parts of `tpserve batch` (layer: clients; no I/O, no threads, thread-compatible):
// reading the JSONL input, reading what a previous run left in the output (resume), the
// result lines, and the retry policy. batch_runner.h does the files, threads and RPCs.
//
// Input, one JSON object per line (blank lines are skipped):
//   {"id": "a1", "prompt": "text"}   or   {"id": "a2", "prompt_token_ids": [1, 2, 3]}
//   or   {"id": "a3", "messages": [{"role": "user", "content": "hi"}]}
//   optional: "max_new_tokens" (int >= 1), "temperature" (>= 0), "top_p", "top_k" (int >= 0),
//   "seed" (int >= 0), "stop" (string or list of strings). Other keys are refused, so a typo
//   ("max_tokens") is not silently ignored.
// Output, one JSON object per line, each ending in '\n':
//   {"id", "text", "token_ids", "finish_reason", "prompt_tokens", "generated_tokens"}
//   {"id", "error"}   a permanent failure ("CODE: message")
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "clients/cpp/client.h"

namespace tpserve::cli {

// One request of the batch.
struct BatchItem {
  std::string id;
  size_t line = 0;  // 1-based line of the input it came from
  client::GenerateOptions options;
};

// Parses one input line (no trailing newline) into an item whose unset fields are those of
// `defaults`. InvalidArgument names the offending key: not an object, no string "id", an empty
// id, not exactly one of "prompt" / "prompt_token_ids" / "messages", a value of the wrong type or range, an
// unknown key. item.line is left 0.
[[nodiscard]] absl::StatusOr<BatchItem> ParseBatchLine(std::string_view line,
                                                       const client::GenerateOptions& defaults);

// Parses a whole input file. Errors are InvalidArgument "NAME:LINE: reason", where NAME is
// `source_name`; a duplicate id names both lines. Nothing is returned unless every line is good.
[[nodiscard]] absl::StatusOr<std::vector<BatchItem>> ParseBatchInput(std::string_view content,
                                                                     std::string_view source_name,
                                                                     const client::GenerateOptions& defaults);

// What an earlier run left in the output file.
struct ResumeState {
  std::set<std::string> done_ids;  // ids with a complete line: a result or a permanent error
  uint64_t keep_bytes = 0;         // bytes of the complete lines; anything after is torn
  uint64_t torn_bytes = 0;         // bytes of an unfinished last line (no '\n'), to cut away
  size_t duplicate_lines = 0;      // complete lines whose id was already seen (kept, counted)
};

// Reads an output file's content. Only the tail after the last '\n' may be damaged (a write cut
// short by a crash): it is reported as torn_bytes and its id is not done. A complete line that
// is not a JSON object with a string "id" is InvalidArgument "NAME:LINE: reason": the file is
// not ours, or damaged elsewhere, and resuming would be unsafe. Blank complete lines are skipped.
[[nodiscard]] absl::StatusOr<ResumeState> ScanOutput(std::string_view content, std::string_view source_name);

// The output line for a finished request, ending in '\n'. Invalid UTF-8 in the text is written
// as U+FFFD so the line stays valid JSON.
std::string ResultLine(const std::string& id, const client::GenerateResult& result);
// The output line for a request that failed for good: {"id", "error": "CODE: message"} + '\n'.
std::string ErrorLine(const std::string& id, const absl::Status& status);

// Whether a failed Generate may succeed when sent again: UNAVAILABLE (replica or coordinator
// down), RESOURCE_EXHAUSTED (queue or KV full), DEADLINE_EXCEEDED (the per-request deadline).
// Anything else (a bad request, for one) fails the same way every time.
bool IsTransient(absl::StatusCode code);

// Milliseconds to wait before retry number `attempt` (0 = the first retry): base_ms x 2^attempt,
// at most max_ms, then scaled into [1/2, 1] by `jitter` in [0, 1] so that clients that failed
// together do not retry together.
int64_t BackoffDelayMs(int attempt, int64_t base_ms, int64_t max_ms, double jitter);

}  // namespace tpserve::cli
