// Exit codes of the `tpserve` command line for mistakes caught before any RPC (no server).
#include "clients/cli/commands.h"

#include <gtest/gtest.h>

namespace tpserve::cli {
namespace {

TEST(RunCliTest, UsageMistakesExitWithTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"generate", "--bogus", "1"},
      {"generate", "positional"},
      {"generate", "--server", "127.0.0.1:1"},  // no prompt
      {"generate", "--prompt", "x", "--max_new_tokens", "0"},
      {"generate", "--prompt", "x", "--max_new_tokens", "ten"},
      {"generate", "--prompt", "x", "--seed", "-1"},
      {"generate", "--prompt_token_ids", "1,x"},
      {"tokenize"},                      // no text
      {"batch", "--input", "in.jsonl"},  // no output
      {"batch", "--input", "a", "--output", "b", "--concurrency", "0"},
      {"status", "--prompt", "x"},  // not a status flag
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const std::string& a : args) joined += a + " ";
    EXPECT_EQ(RunCli(args), kExitUsage) << joined;
  }
}

TEST(RunCliTest, HelpExitsWithZero) {
  EXPECT_EQ(RunCli({"help"}), kExitOk);
  EXPECT_EQ(RunCli({"--help"}), kExitOk);
  EXPECT_EQ(RunCli({"batch", "--help"}), kExitOk);
}

TEST(RunCliTest, UnreachableServerIsAFailureNotAUsageError) {
  EXPECT_EQ(RunCli({"health", "--server", "127.0.0.1:1", "--timeout_ms", "2000"}), kExitFailure);
}

}  // namespace
}  // namespace tpserve::cli
