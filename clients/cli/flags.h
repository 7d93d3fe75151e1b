// Flags of one `tpserve` subcommand (layer: clients, CLI only; pure, no I/O; not thread-safe).
// absl flags are per process, and every subcommand has its own set, so the CLI dispatches on
// argv[1] and parses the rest here against that subcommand's table.
//
// Accepted forms: --name=value, --name value; a bool flag also takes the bare --name (true).
// A repeated flag may be given several times (values kept in order); any other flag at most once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve::cli {

enum class FlagKind { kString, kInt, kFloat, kBool };

struct FlagSpec {
  std::string name;  // without the leading "--"
  FlagKind kind = FlagKind::kString;
  std::string help;  // one line for the usage text, with the default if there is one
  bool repeated = false;
};

class Flags {
 public:
  // Parses `args` (the words after the subcommand) against `specs`. Values of kInt flags must be
  // whole numbers (int64), of kFloat numbers, of kBool true/false/1/0. Errors (InvalidArgument,
  // the message names the flag): an unknown flag, a positional word, a missing or ill-typed
  // value, a non-repeated flag given twice.
  [[nodiscard]] static absl::StatusOr<Flags> Parse(const std::vector<FlagSpec>& specs,
                                                   const std::vector<std::string>& args);

  // Whether the flag was given.
  bool Has(const std::string& name) const;
  // The value given, or `fallback` when absent. Int/Float/Bool read values Parse checked; asking
  // for a flag under a kind it was not declared with is a programming error and aborts.
  std::string String(const std::string& name, const std::string& fallback = "") const;
  int64_t Int(const std::string& name, int64_t fallback) const;
  double Float(const std::string& name, double fallback) const;
  bool Bool(const std::string& name, bool fallback = false) const;
  // Every value of a repeated flag, in order (empty when absent).
  std::vector<std::string> All(const std::string& name) const;

 private:
  const std::string* Last(const std::string& name, FlagKind kind) const;
  std::map<std::string, FlagKind> kinds_;
  std::map<std::string, std::vector<std::string>> values_;
};

// The usage lines of `specs`: "  --name VALUE   help" (no VALUE for bool flags).
std::string FlagsUsage(const std::vector<FlagSpec>& specs);

}  // namespace tpserve::cli
