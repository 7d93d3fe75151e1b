// The batch runner against a fake cluster (a GenerateFn): resume, retries, failures, bounded
// concurrency and the output lock, with real files in a temporary directory.
#include "clients/cli/batch_runner.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tpserve::cli {
namespace {

using client::GenerateOptions;
using client::GenerateResult;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Write(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

// The ids of the output's lines, in order; every line must be complete JSON.
std::vector<std::string> OutputIds(const std::string& path) {
  std::vector<std::string> ids;
  std::istringstream in(Read(path));
  for (std::string line; std::getline(in, line);) ids.push_back(nlohmann::json::parse(line)["id"]);
  return ids;
}

class BatchRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("batch_runner_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    options_.input_path = (dir_ / "in.jsonl").string();
    options_.output_path = (dir_ / "out.jsonl").string();
    options_.backoff_base_ms = 1;
    options_.backoff_max_ms = 4;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteInput(int n) {
    std::string input;
    for (int i = 0; i < n; ++i) absl::StrAppend(&input, "{\"id\": \"p", i, "\", \"prompt\": \"x", i, "\"}\n");
    Write(options_.input_path, input);
  }

  // A fake cluster: answers with the prompt's text; counts calls per request id.
  GenerateFn Echo() {
    return [this](const GenerateOptions& o) -> absl::StatusOr<GenerateResult> {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++calls_[o.request_id];
      }
      GenerateResult r;
      r.text = "echo " + o.prompt;
      r.token_ids = {1, 2};
      r.finish_reason = client::FinishReason::kLength;
      r.prompt_tokens = 3;
      r.generated_tokens = 2;
      return r;
    };
  }

  std::filesystem::path dir_;
  BatchOptions options_;
  std::mutex mu_;
  std::map<std::string, int> calls_;
};

TEST_F(BatchRunnerTest, FreshRunAnswersEveryIdOnceWithItsResult) {
  WriteInput(20);
  options_.concurrency = 4;
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->complete());
  EXPECT_EQ(s->done, 20u);
  EXPECT_EQ(s->generated_tokens, 40u);
  std::vector<std::string> ids = OutputIds(options_.output_path);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  EXPECT_EQ(ids.size(), 20u);
  std::istringstream in(Read(options_.output_path));
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["text"], "echo x" + std::string(j["id"]).substr(1));
  }
}

TEST_F(BatchRunnerTest, ResumeCutsTheTornLineSkipsDoneIdsAndRunsOnlyTheRest) {
  WriteInput(5);
  const std::string kept =
      "{\"id\":\"p0\",\"text\":\"old\"}\n{\"id\":\"p3\",\"error\":\"INVALID_ARGUMENT: x\"}\n";
  Write(options_.output_path, kept + "{\"id\":\"p1\",\"te");
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->skipped, 2u);
  EXPECT_EQ(s->done, 3u);
  EXPECT_EQ(s->torn_bytes, 14u);
  EXPECT_TRUE(s->complete());
  EXPECT_EQ(calls_, (std::map<std::string, int>{{"p1", 1}, {"p2", 1}, {"p4", 1}}));
  const std::string out = Read(options_.output_path);
  EXPECT_EQ(out.rfind(kept, 0), 0u);  // earlier lines untouched
  std::vector<std::string> ids = OutputIds(options_.output_path);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"p0", "p1", "p2", "p3", "p4"}));
  // A third run has nothing to do.
  absl::StatusOr<BatchSummary> again = RunBatch(options_, Echo());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->skipped, 5u);
  EXPECT_EQ(again->done, 0u);
  EXPECT_EQ(Read(options_.output_path), out);
}

TEST_F(BatchRunnerTest, TransientErrorsAreRetriedUntilTheySucceed) {
  WriteInput(3);
  std::atomic<int> failures{0};
  GenerateFn echo = Echo();
  absl::StatusOr<BatchSummary> s =
      RunBatch(options_, [&](const GenerateOptions& o) -> absl::StatusOr<GenerateResult> {
        if (o.request_id == "p1" && failures < 3) {
          const absl::StatusCode codes[] = {absl::StatusCode::kUnavailable,
                                            absl::StatusCode::kResourceExhausted,
                                            absl::StatusCode::kDeadlineExceeded};
          return absl::Status(codes[failures++], "try later");
        }
        return echo(o);
      });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(failures, 3);
  EXPECT_EQ(s->retries, 3u);
  EXPECT_EQ(s->done, 3u);
  EXPECT_EQ(s->failed, 0u);
  EXPECT_EQ(OutputIds(options_.output_path).size(), 3u);
}

TEST_F(BatchRunnerTest, PermanentErrorIsWrittenOnceAndNotRetried) {
  WriteInput(3);
  GenerateFn echo = Echo();
  absl::StatusOr<BatchSummary> s =
      RunBatch(options_, [&](const GenerateOptions& o) -> absl::StatusOr<GenerateResult> {
        if (o.request_id == "p2") {
          std::lock_guard<std::mutex> lock(mu_);
          ++calls_[o.request_id];
          return absl::InvalidArgumentError("max_new_tokens too large");
        }
        return echo(o);
      });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->done, 2u);
  EXPECT_EQ(s->failed, 1u);
  EXPECT_TRUE(s->complete());
  EXPECT_EQ(calls_["p2"], 1);
  std::istringstream in(Read(options_.output_path));
  int errors = 0;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["id"] == "p2") {
      EXPECT_EQ(j["error"], "INVALID_ARGUMENT: max_new_tokens too large");
      ++errors;
    }
  }
  EXPECT_EQ(errors, 1);
}

TEST_F(BatchRunnerTest, ExhaustedRetriesStopTheRunWithoutALineAndARerunFinishesIt) {
  WriteInput(4);
  options_.concurrency = 1;
  options_.max_retries = 2;
  std::atomic<int> attempts{0};
  absl::StatusOr<BatchSummary> s =
      RunBatch(options_, [&](const GenerateOptions&) -> absl::StatusOr<GenerateResult> {
        ++attempts;
        return absl::UnavailableError("no replica");
      });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(attempts, 3);  // the first request, then two retries; nothing else is started
  EXPECT_EQ(s->retries, 2u);
  EXPECT_EQ(s->done, 0u);
  EXPECT_EQ(s->unfinished, 4u);
  EXPECT_FALSE(s->complete());
  EXPECT_EQ(Read(options_.output_path), "");
  absl::StatusOr<BatchSummary> rerun = RunBatch(options_, Echo());
  ASSERT_TRUE(rerun.ok());
  EXPECT_TRUE(rerun->complete());
  EXPECT_EQ(OutputIds(options_.output_path).size(), 4u);
}

TEST_F(BatchRunnerTest, NeverMoreRequestsInFlightThanTheConcurrency) {
  WriteInput(40);
  options_.concurrency = 4;
  std::atomic<int> in_flight{0}, most{0};
  GenerateFn echo = Echo();
  absl::StatusOr<BatchSummary> s = RunBatch(options_, [&](const GenerateOptions& o) {
    const int now = ++in_flight;
    for (int seen = most; now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    --in_flight;
    return echo(o);
  });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->done, 40u);
  EXPECT_LE(most, 4);
  EXPECT_GE(most, 2);  // and it does run requests side by side
}

TEST_F(BatchRunnerTest, BadInputLineFailsBeforeAnythingIsSentOrWritten) {
  Write(options_.input_path, "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\"}\n");
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("in.jsonl:2: "), std::string::npos) << s.status();
  EXPECT_TRUE(calls_.empty());
  EXPECT_FALSE(std::filesystem::exists(options_.output_path));
}

TEST_F(BatchRunnerTest, MissingInputIsNotFound) {
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BatchRunnerTest, OutputThisToolDidNotWriteIsLeftAlone) {
  WriteInput(2);
  Write(options_.output_path, "id,text\np0,hello\n");
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Read(options_.output_path), "id,text\np0,hello\n");
  EXPECT_TRUE(calls_.empty());
}

TEST_F(BatchRunnerTest, SecondRunnerOnTheSameOutputIsRefused) {
  WriteInput(2);
  const int fd = ::open(options_.output_path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  absl::StatusOr<BatchSummary> s = RunBatch(options_, Echo());
  ::close(fd);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(calls_.empty());
}

TEST(FormatSummaryTest, NamesEveryCount) {
  BatchSummary s;
  s.done = 3;
  s.failed = 1;
  s.skipped = 2;
  s.generated_tokens = 40;
  s.prompt_tokens = 9;
  s.seconds = 1.25;
  EXPECT_EQ(FormatSummary(s),
            "done 3, failed 1, skipped 2, unfinished 0; 40 output tokens (9 prompt) in 1.2 s");
  s.retries = 4;
  s.torn_bytes = 17;
  EXPECT_EQ(FormatSummary(s),
            "done 3, failed 1, skipped 2, unfinished 0; 40 output tokens (9 prompt) in 1.2 s; "
            "4 retries; cut a torn last line of 17 bytes");
}

}  // namespace
}  // namespace tpserve::cli
