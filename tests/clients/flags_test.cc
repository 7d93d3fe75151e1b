#include "clients/cli/flags.h"

#include <gtest/gtest.h>

namespace tpserve::cli {
namespace {

const std::vector<FlagSpec> kSpecs = {
    {"server", FlagKind::kString, ""},     {"n", FlagKind::kInt, ""},
    {"t", FlagKind::kFloat, ""},           {"json", FlagKind::kBool, ""},
    {"stop", FlagKind::kString, "", true},
};

TEST(FlagsTest, BothFormsAndBareBoolsAndRepeatedFlagsParse) {
  absl::StatusOr<Flags> f = Flags::Parse(
      kSpecs, {"--server", "h:1", "--n=-3", "--t", "0.5", "--json", "--stop", "a", "--stop=--b"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->String("server"), "h:1");
  EXPECT_EQ(f->Int("n", 0), -3);
  EXPECT_DOUBLE_EQ(f->Float("t", 0), 0.5);
  EXPECT_TRUE(f->Bool("json"));
  EXPECT_EQ(f->All("stop"), (std::vector<std::string>{"a", "--b"}));
}

TEST(FlagsTest, AbsentFlagsGiveTheFallback) {
  absl::StatusOr<Flags> f = Flags::Parse(kSpecs, {});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->Has("n"));
  EXPECT_EQ(f->Int("n", 16), 16);
  EXPECT_EQ(f->String("server", "x"), "x");
  EXPECT_FALSE(f->Bool("json"));
  EXPECT_TRUE(f->All("stop").empty());
}

TEST(FlagsTest, AValueMayStartWithDashes) {
  absl::StatusOr<Flags> f = Flags::Parse(kSpecs, {"--server", "--json"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->String("server"), "--json");
  EXPECT_FALSE(f->Bool("json"));
}

TEST(FlagsTest, MistakesAreInvalidArgumentNamingTheFlag) {
  const std::pair<std::vector<std::string>, const char*> cases[] = {
      {{"--nope", "1"}, "unknown flag --nope"},
      {{"positional"}, "unexpected argument 'positional'"},
      {{"-n", "1"}, "unexpected argument '-n'"},
      {{"--n"}, "--n needs a value"},
      {{"--n", "x"}, "--n: expected a whole number"},
      {{"--n", "1.5"}, "--n: expected a whole number"},
      {{"--t", "fast"}, "--t: expected a number"},
      {{"--json=maybe"}, "--json: expected true or false"},
      {{"--n", "1", "--n", "2"}, "--n given more than once"},
  };
  for (const auto& [args, want] : cases) {
    absl::StatusOr<Flags> f = Flags::Parse(kSpecs, args);
    ASSERT_FALSE(f.ok()) << want;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(want), std::string::npos) << f.status();
  }
}

TEST(FlagsTest, BoolAcceptsExplicitFalse) {
  absl::StatusOr<Flags> f = Flags::Parse(kSpecs, {"--json=false"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Has("json"));
  EXPECT_FALSE(f->Bool("json", true));
}

TEST(FlagsUsageTest, ListsEveryFlag) {
  const std::string usage = FlagsUsage(kSpecs);
  for (const FlagSpec& spec : kSpecs) EXPECT_NE(usage.find("--" + spec.name), std::string::npos);
}

}  // namespace
}  // namespace tpserve::cli
