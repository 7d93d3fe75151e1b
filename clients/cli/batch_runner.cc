#include "clients/cli/batch_runner.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cli/batch_job.h"
#include "common/status.h"

namespace tpserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status ErrnoStatus(const std::string& what, const std::string& path) {
  const int e = errno;
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOENT) return absl::NotFoundError(message);
  if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  std::string content;
  char buffer[1 << 16];
  for (off_t offset = 0;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof(buffer), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot read", path);
    if (n == 0) return content;
    content.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("cannot open", path);
  return ReadAll(fd.get(), path);
}

// One write(2) per line, so a kill leaves either the whole line, nothing, or (on a short write)
// a torn tail that the next run cuts away; fdatasync makes it survive a machine crash too.
absl::Status AppendDurably(int fd, const std::string& line, const std::string& path) {
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot write", path);
    written += static_cast<size_t>(n);
  }
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return ErrnoStatus("cannot sync", path);
  }
  return absl::OkStatus();
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

// State shared by the worker threads and the progress thread.
struct Shared {
  std::mutex mu;  // guards the output file and everything below
  std::condition_variable wake;
  bool stop = false;  // no new requests: a request gave up, or the output failed
  absl::Status write_error;
  BatchSummary summary;
};

}  // namespace

std::string FormatSummary(const BatchSummary& s) {
  std::string out = absl::StrFormat(
      "done %d, failed %d, skipped %d, unfinished %d; %d output tokens (%d prompt) in %.1f s", s.done,
      s.failed, s.skipped, s.unfinished, s.generated_tokens, s.prompt_tokens, s.seconds);
  if (s.retries > 0) absl::StrAppend(&out, "; ", s.retries, " retries");
  if (s.torn_bytes > 0) absl::StrAppend(&out, "; cut a torn last line of ", s.torn_bytes, " bytes");
  if (s.unknown_ids > 0) absl::StrAppend(&out, "; ", s.unknown_ids, " output ids not in the input");
  return out;
}

absl::StatusOr<BatchSummary> RunBatch(const BatchOptions& options, const GenerateFn& generate) {
  if (options.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (options.max_retries < 0) return absl::InvalidArgumentError("--max_retries must be >= 0");
  const Clock::time_point start = Clock::now();
  ASSIGN_OR_RETURN(const std::string input, ReadFile(options.input_path));
  ASSIGN_OR_RETURN(const std::vector<BatchItem> items,
                   ParseBatchInput(input, options.input_path, options.defaults));

  const std::string& out_path = options.output_path;
  const bool existed = std::filesystem::exists(out_path);
  Fd out(::open(out_path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (out.get() < 0) return ErrnoStatus("cannot open", out_path);
  if (::flock(out.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat("another batch runner is writing ", out_path));
    }
    return ErrnoStatus("cannot lock", out_path);
  }
  ASSIGN_OR_RETURN(const std::string previous, ReadAll(out.get(), out_path));
  ASSIGN_OR_RETURN(const ResumeState resume, ScanOutput(previous, out_path));
  if (resume.torn_bytes > 0) {
    if (::ftruncate(out.get(), static_cast<off_t>(resume.keep_bytes)) != 0 || ::fsync(out.get()) != 0) {
      return ErrnoStatus("cannot cut the torn last line of", out_path);
    }
  }
  if (!existed) {
    // A new file's name must survive a crash too: sync the directory entry once.
    std::filesystem::path dir = std::filesystem::absolute(out_path).parent_path();
    Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() >= 0) (void)::fsync(dir_fd.get());
  }

  Shared shared;
  BatchSummary& summary = shared.summary;
  summary.total = items.size();
  summary.torn_bytes = resume.torn_bytes;
  std::vector<const BatchItem*> pending;
  std::set<std::string> input_ids;
  for (const BatchItem& item : items) {
    input_ids.insert(item.id);
    if (resume.done_ids.count(item.id) > 0) {
      ++summary.skipped;
    } else {
      pending.push_back(&item);
    }
  }
  for (const std::string& id : resume.done_ids) summary.unknown_ids += input_ids.count(id) == 0;

  const bool tty = options.progress != nullptr && ::isatty(::fileno(options.progress)) == 1;
  std::atomic<size_t> next{0};
  auto worker = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        if (shared.stop) return;
      }
      const size_t i = next.fetch_add(1);
      if (i >= pending.size()) return;
      const BatchItem& item = *pending[i];
      absl::StatusOr<client::GenerateResult> result = generate(item.options);
      bool gave_up = false;
      for (int attempt = 0; !result.ok() && IsTransient(result.status().code()); ++attempt) {
        if (attempt >= options.max_retries) {
          gave_up = true;
          break;
        }
        const auto delay = std::chrono::milliseconds(
            BackoffDelayMs(attempt, options.backoff_base_ms, options.backoff_max_ms, unit(rng)));
        std::unique_lock<std::mutex> lock(shared.mu);
        if (shared.wake.wait_for(lock, delay, [&] { return shared.stop; })) {
          gave_up = true;  // the run is stopping: leave this one for the next run
          break;
        }
        ++summary.retries;
        lock.unlock();
        result = generate(item.options);
      }
      std::lock_guard<std::mutex> lock(shared.mu);
      if (gave_up || !shared.write_error.ok()) {
        ++summary.unfinished;
        if (gave_up && !shared.stop) {
          shared.stop = true;
          shared.wake.notify_all();
          if (options.progress != nullptr) {
            absl::FPrintF(options.progress, "%sbatch: giving up on id \"%s\" after %d retries: %s\n",
                          tty ? "\r\033[K" : "", item.id, options.max_retries, result.status().ToString());
          }
        }
        continue;
      }
      const std::string line =
          result.ok() ? ResultLine(item.id, *result) : ErrorLine(item.id, result.status());
      if (absl::Status s = AppendDurably(out.get(), line, out_path); !s.ok()) {
        shared.write_error = s;
        shared.stop = true;
        shared.wake.notify_all();
        ++summary.unfinished;
        continue;
      }
      if (result.ok()) {
        ++summary.done;
        summary.prompt_tokens += result->prompt_tokens;
        summary.generated_tokens += result->generated_tokens;
      } else {
        ++summary.failed;
      }
    }
  };

  const auto interval =
      std::chrono::milliseconds(tty ? 200 : std::max<int64_t>(options.progress_interval_ms, 1));
  bool finished = false;        // guarded by shared.mu
  auto progress_line = [&]() {  // caller holds shared.mu
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const size_t finished_now = summary.done + summary.failed;
    const size_t remaining = pending.size() - std::min(pending.size(), finished_now + summary.unfinished);
    std::string eta = "--";
    if (finished_now > 0) eta = FormatDuration(elapsed * static_cast<double>(remaining) / finished_now);
    std::string line =
        absl::StrFormat("batch: %d/%d done (%d skipped, %d failed) | %.1f tok/s | ETA %s",
                        summary.skipped + finished_now, summary.total, summary.skipped, summary.failed,
                        elapsed > 0 ? summary.generated_tokens / elapsed : 0.0, eta);
    if (summary.retries > 0) absl::StrAppend(&line, " | ", summary.retries, " retries");
    return line;
  };
  std::thread progress;
  if (options.progress != nullptr) {
    progress = std::thread([&] {
      std::unique_lock<std::mutex> lock(shared.mu);
      while (!shared.wake.wait_for(lock, interval, [&] { return finished; })) {
        if (tty) {
          absl::FPrintF(options.progress, "\r%s\033[K", progress_line());
        } else {
          absl::FPrintF(options.progress, "%s\n", progress_line());
        }
        std::fflush(options.progress);
      }
      if (tty) {
        absl::FPrintF(options.progress, "\r%s\033[K\n", progress_line());
      } else {
        absl::FPrintF(options.progress, "%s\n", progress_line());
      }
      std::fflush(options.progress);
    });
  }

  const size_t threads = std::min<size_t>(static_cast<size_t>(options.concurrency), pending.size());
  std::vector<std::thread> workers;
  std::random_device seeds;
  for (size_t t = 0; t < threads; ++t) workers.emplace_back(worker, (uint64_t{seeds()} << 32) | seeds());
  for (std::thread& t : workers) t.join();
  {
    std::lock_guard<std::mutex> lock(shared.mu);
    // Requests never started because the run stopped early have no line either.
    summary.unfinished = pending.size() - summary.done - summary.failed;
    finished = true;
    shared.wake.notify_all();
  }
  if (progress.joinable()) progress.join();
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!shared.write_error.ok()) return shared.write_error;
  return summary;
}

}  // namespace tpserve::cli
