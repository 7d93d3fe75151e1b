// `tpserve batch`: runs every request of a JSONL file against a cluster with bounded concurrency
// and appends one result line per request to an output file (layer: clients). Formats and the
// pure rules are in batch_job.h.
//
// Durability: each line is written with one append and fdatasync'd before the next request of
// that worker starts, so a run killed at any moment (SIGKILL included) loses at most the lines of
// requests in flight and leaves at most one torn last line. The next run with the same output
// cuts the torn line away, skips every id that has a line, and runs the rest: every id ends up
// with exactly one line. An exclusive flock on the output keeps two runners off one file.
//
// Failures: transient errors (batch_job.h IsTransient) are retried with exponential backoff up to
// max_retries times; other errors are written as {"id", "error"} lines (permanent). When a request
// still fails transiently after its retries, the runner stops starting new requests, lets those
// in flight finish, and reports them as unfinished (no line: a later run retries them).
//
// Threading: RunBatch blocks; it calls `generate` from up to `concurrency` threads at once.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "clients/cpp/client.h"

namespace tpserve::cli {

struct BatchOptions {
  std::string input_path;
  std::string output_path;
  int concurrency = 16;              // requests in flight at most (>= 1)
  int max_retries = 5;               // retries of one request after transient errors (>= 0)
  int64_t backoff_base_ms = 500;     // first retry waits about this long, then doubling ...
  int64_t backoff_max_ms = 30000;    // ... up to this
  client::GenerateOptions defaults;  // fields a line does not set
  // Where the live progress line goes (nullptr = none). On a terminal it is redrawn in place a
  // few times a second; otherwise a full line is printed every progress_interval_ms.
  std::FILE* progress = nullptr;
  int64_t progress_interval_ms = 5000;
};

struct BatchSummary {
  size_t total = 0;               // requests in the input
  size_t skipped = 0;             // already in the output when this run started
  size_t done = 0;                // answered by this run
  size_t failed = 0;              // written as permanent errors by this run
  size_t unfinished = 0;          // left without a line (retries exhausted, or the run stopped)
  size_t retries = 0;             // requests sent again after a transient error
  uint64_t prompt_tokens = 0;     // of this run's answers
  uint64_t generated_tokens = 0;  // of this run's answers
  double seconds = 0;
  uint64_t torn_bytes = 0;  // cut from the end of the output before appending
  size_t unknown_ids = 0;   // lines of the output whose id is not in the input (kept)
  // True when every input id has a line in the output.
  bool complete() const { return unfinished == 0 && skipped + done + failed == total; }
};

// The call that answers one request; Client::Generate in the CLI, a fake in tests. Must be
// safe to call from many threads at once.
using GenerateFn = std::function<absl::StatusOr<client::GenerateResult>(const client::GenerateOptions&)>;

// Runs the batch. Errors (nothing has been sent when they come from the first three):
// InvalidArgument for a bad input line or an output file this tool did not write (the message
// names the file and line), NotFound / PermissionDenied / Internal for files that cannot be
// read or written, FailedPrecondition when another runner holds the output. A failed write of
// the output mid-run stops the run and returns its error (the lines written so far stand).
[[nodiscard]] absl::StatusOr<BatchSummary> RunBatch(const BatchOptions& options, const GenerateFn& generate);

// "done 30, failed 1, skipped 10, unfinished 0; 4096 output tokens (1200 prompt) in 12.3 s",
// then "; N retries" and the torn / unknown-id notes when there are any.
std::string FormatSummary(const BatchSummary& summary);

}  // namespace tpserve::cli
