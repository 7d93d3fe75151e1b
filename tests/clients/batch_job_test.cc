#include "clients/cli/batch_job.h"

#include <gtest/gtest.h>

#include <string>

#include "nlohmann/json.hpp"

namespace tpserve::cli {
namespace {

using client::GenerateOptions;

GenerateOptions Defaults() {
  GenerateOptions d;
  d.max_new_tokens = 7;
  d.temperature = 0.5f;
  return d;
}

TEST(ParseBatchLineTest, ReadsEveryFieldAndKeepsDefaultsForTheRest) {
  absl::StatusOr<BatchItem> item = ParseBatchLine(
      R"({"id": "a", "prompt": "hi", "top_k": 5, "seed": 18446744073709551615, "stop": ["x", "y"]})",
      Defaults());
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->id, "a");
  EXPECT_EQ(item->options.request_id, "a");
  EXPECT_EQ(item->options.prompt, "hi");
  EXPECT_EQ(item->options.top_k, 5u);
  EXPECT_EQ(item->options.seed, 18446744073709551615ull);
  EXPECT_EQ(item->options.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(item->options.max_new_tokens, 7u);  // default
  EXPECT_FLOAT_EQ(item->options.temperature, 0.5f);
}

TEST(ParseBatchLineTest, TokenIdsPromptAndOverridesAndStopAsOneString) {
  absl::StatusOr<BatchItem> item = ParseBatchLine(
      R"({"id": "b", "prompt_token_ids": [1, 4294967295], "max_new_tokens": 3, "temperature": 0,
          "top_p": 0.9, "stop": "END"})",
      Defaults());
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->options.prompt_token_ids, (std::vector<uint32_t>{1, 4294967295u}));
  EXPECT_TRUE(item->options.prompt.empty());
  EXPECT_EQ(item->options.max_new_tokens, 3u);
  EXPECT_FLOAT_EQ(item->options.temperature, 0.0f);
  EXPECT_FLOAT_EQ(item->options.top_p, 0.9f);
  EXPECT_FALSE(item->options.seed.has_value());
  EXPECT_EQ(item->options.stop, (std::vector<std::string>{"END"}));
}

TEST(ParseBatchLineTest, BadLinesAreRefusedWithTheOffendingKeyNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"id": "a", "prompt": "x")", "not valid JSON"},
      {R"(["id", "a"])", "not a JSON object"},
      {R"({"prompt": "x"})", "\"id\""},
      {R"({"id": 5, "prompt": "x"})", "\"id\""},
      {R"({"id": "", "prompt": "x"})", "\"id\" is empty"},
      {R"({"id": "a"})", "exactly one of"},
      {R"({"id": "a", "prompt": "x", "prompt_token_ids": [1]})", "exactly one of"},
      {R"({"id": "a", "prompt": 3})", "\"prompt\""},
      {R"({"id": "a", "prompt_token_ids": []})", "\"prompt_token_ids\""},
      {R"({"id": "a", "prompt_token_ids": [1, -2]})", "\"prompt_token_ids\""},
      {R"({"id": "a", "prompt_token_ids": [4294967296]})", "\"prompt_token_ids\""},
      {R"({"id": "a", "prompt_token_ids": [1.5]})", "\"prompt_token_ids\""},
      {R"({"id": "a", "prompt": "x", "max_new_tokens": 0})", "\"max_new_tokens\""},
      {R"({"id": "a", "prompt": "x", "max_new_tokens": "5"})", "\"max_new_tokens\""},
      {R"({"id": "a", "prompt": "x", "temperature": -1})", "\"temperature\""},
      {R"({"id": "a", "prompt": "x", "seed": -1})", "\"seed\""},
      {R"({"id": "a", "prompt": "x", "stop": [1]})", "\"stop\""},
      {R"({"id": "a", "prompt": "x", "max_tokens": 5})", "unknown key \"max_tokens\""},
  };
  for (const auto& [line, want] : cases) {
    absl::StatusOr<BatchItem> item = ParseBatchLine(line, Defaults());
    ASSERT_FALSE(item.ok()) << line;
    EXPECT_EQ(item.status().code(), absl::StatusCode::kInvalidArgument) << line;
    EXPECT_NE(item.status().message().find(want), std::string::npos)
        << line << " -> " << item.status().message();
  }
}

TEST(ParseBatchInputTest, SkipsBlankLinesAndNumbersLinesFromOne) {
  absl::StatusOr<std::vector<BatchItem>> items =
      ParseBatchInput("{\"id\": \"a\", \"prompt\": \"x\"}\n\n  \r\n{\"id\": \"b\", \"prompt\": \"y\"}\r\n",
                      "in.jsonl", Defaults());
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ((*items)[0].line, 1u);
  EXPECT_EQ((*items)[1].id, "b");
  EXPECT_EQ((*items)[1].line, 4u);
}

TEST(ParseBatchInputTest, MalformedLineIsAnErrorNamingFileAndLine) {
  absl::StatusOr<std::vector<BatchItem>> items =
      ParseBatchInput("{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\"}\n{oops\n",
                      "in.jsonl", Defaults());
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(items.status().message().rfind("in.jsonl:3: ", 0), 0u) << items.status();
}

TEST(ParseBatchInputTest, DuplicateIdIsAnErrorNamingBothLines) {
  absl::StatusOr<std::vector<BatchItem>> items = ParseBatchInput(
      "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\"}\n"
      "{\"id\": \"a\", \"prompt\": \"z\"}\n",
      "in.jsonl", Defaults());
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().message(), "in.jsonl:3: duplicate id \"a\" (first on line 1)");
}

TEST(ScanOutputTest, EmptyFileHasNothingDone) {
  absl::StatusOr<ResumeState> s = ScanOutput("", "out.jsonl");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->done_ids.empty());
  EXPECT_EQ(s->keep_bytes, 0u);
  EXPECT_EQ(s->torn_bytes, 0u);
}

TEST(ScanOutputTest, TornLastLineIsCutAndItsIdIsNotDone) {
  const std::string complete = "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"error\": \"E\"}\n";
  const std::string torn = "{\"id\": \"c\", \"te";
  absl::StatusOr<ResumeState> s = ScanOutput(complete + torn, "out.jsonl");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->done_ids, (std::set<std::string>{"a", "b"}));  // an error line counts as done
  EXPECT_EQ(s->keep_bytes, complete.size());
  EXPECT_EQ(s->torn_bytes, torn.size());
}

TEST(ScanOutputTest, CompleteJsonWithoutItsNewlineIsStillTorn) {
  // The write was cut just before '\n': the line is redone, never half-trusted.
  const std::string complete = "{\"id\": \"a\"}\n";
  absl::StatusOr<ResumeState> s = ScanOutput(complete + "{\"id\": \"b\"}", "out.jsonl");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->done_ids, (std::set<std::string>{"a"}));
  EXPECT_EQ(s->keep_bytes, complete.size());
}

TEST(ScanOutputTest, FileWithOnlyATornLineKeepsNothing) {
  absl::StatusOr<ResumeState> s = ScanOutput("{\"id\": \"a\", \"t", "out.jsonl");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->done_ids.empty());
  EXPECT_EQ(s->keep_bytes, 0u);
  EXPECT_EQ(s->torn_bytes, 14u);
}

TEST(ScanOutputTest, DamagedCompleteLineRefusesToResume) {
  absl::StatusOr<ResumeState> s = ScanOutput("{\"id\": \"a\"}\nnot json\n{\"id\": \"b\"}\n", "out.jsonl");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message().rfind("out.jsonl:2: ", 0), 0u) << s.status();
  EXPECT_FALSE(ScanOutput("{\"text\": \"no id\"}\n", "out.jsonl").ok());
}

TEST(ScanOutputTest, DuplicateLinesAreCountedNotFatal) {
  absl::StatusOr<ResumeState> s = ScanOutput("{\"id\": \"a\"}\n{\"id\": \"a\"}\n", "out.jsonl");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->done_ids.size(), 1u);
  EXPECT_EQ(s->duplicate_lines, 1u);
}

TEST(ResultLineTest, IsOneJsonLineWithTheDocumentedFields) {
  client::GenerateResult r;
  r.text = "hello \"world\"\n";
  r.token_ids = {5, 6};
  r.finish_reason = client::FinishReason::kLength;
  r.prompt_tokens = 3;
  r.generated_tokens = 2;
  const std::string line = ResultLine("id-1", r);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // the text's newline is escaped
  EXPECT_EQ(line.rfind("{\"id\":\"id-1\",", 0), 0u) << line;
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["text"], r.text);
  EXPECT_EQ(j["token_ids"], nlohmann::json({5, 6}));
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["prompt_tokens"], 3);
  EXPECT_EQ(j["generated_tokens"], 2);
  // What ScanOutput reads back is the id written.
  absl::StatusOr<ResumeState> s = ScanOutput(line, "out.jsonl");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->done_ids, (std::set<std::string>{"id-1"}));
}

TEST(ResultLineTest, InvalidUtf8TextStillMakesValidJson) {
  client::GenerateResult r;
  r.text = "ok \xff\xfe end";
  const std::string line = ResultLine("x", r);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["text"], "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
}

TEST(ErrorLineTest, CarriesCodeAndMessage) {
  nlohmann::json j = nlohmann::json::parse(ErrorLine("q", absl::InvalidArgumentError("prompt is empty")));
  EXPECT_EQ(j["id"], "q");
  EXPECT_EQ(j["error"], "INVALID_ARGUMENT: prompt is empty");
  EXPECT_FALSE(j.contains("text"));
}

TEST(RetryTest, OnlyUnavailableResourceExhaustedAndDeadlineAreTransient) {
  EXPECT_TRUE(IsTransient(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(IsTransient(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(IsTransient(absl::StatusCode::kDeadlineExceeded));
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument, absl::StatusCode::kInternal,
        absl::StatusCode::kFailedPrecondition, absl::StatusCode::kNotFound, absl::StatusCode::kCancelled,
        absl::StatusCode::kUnknown, absl::StatusCode::kPermissionDenied, absl::StatusCode::kUnimplemented}) {
    EXPECT_FALSE(IsTransient(code)) << absl::StatusCodeToString(code);
  }
}

TEST(RetryTest, BackoffDoublesUpToTheCapWithJitterInTheUpperHalf) {
  EXPECT_EQ(BackoffDelayMs(0, 500, 30000, 1.0), 500);
  EXPECT_EQ(BackoffDelayMs(1, 500, 30000, 1.0), 1000);
  EXPECT_EQ(BackoffDelayMs(3, 500, 30000, 1.0), 4000);
  EXPECT_EQ(BackoffDelayMs(10, 500, 30000, 1.0), 30000);
  EXPECT_EQ(BackoffDelayMs(1000, 500, 30000, 1.0), 30000);  // no overflow
  EXPECT_EQ(BackoffDelayMs(3, 500, 30000, 0.0), 2000);
  EXPECT_EQ(BackoffDelayMs(0, 0, 30000, 0.7), 0);
}

}  // namespace
}  // namespace tpserve::cli
