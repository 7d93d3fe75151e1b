#include "clients/cli/flags.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tpserve::cli {
namespace {

absl::Status CheckValue(const FlagSpec& spec, const std::string& value) {
  switch (spec.kind) {
    case FlagKind::kString:
      return absl::OkStatus();
    case FlagKind::kInt: {
      int64_t v = 0;
      if (absl::SimpleAtoi(value, &v)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec.name, ": expected a whole number, got '", value, "'"));
    }
    case FlagKind::kFloat: {
      double v = 0;
      if (absl::SimpleAtod(value, &v)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec.name, ": expected a number, got '", value, "'"));
    }
    case FlagKind::kBool: {
      bool v = false;
      if (absl::SimpleAtob(value, &v)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec.name, ": expected true or false, got '", value, "'"));
    }
  }
  return absl::InternalError("unknown flag kind");
}

}  // namespace

absl::StatusOr<Flags> Flags::Parse(const std::vector<FlagSpec>& specs, const std::vector<std::string>& args) {
  std::map<std::string, const FlagSpec*> by_name;
  Flags flags;
  for (const FlagSpec& spec : specs) {
    by_name[spec.name] = &spec;
    flags.kinds_[spec.name] = spec.kind;
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto it = by_name.find(name);
    if (it == by_name.end()) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    const FlagSpec& spec = *it->second;
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (spec.kind == FlagKind::kBool) {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    if (absl::Status s = CheckValue(spec, value); !s.ok()) return s;
    std::vector<std::string>& values = flags.values_[name];
    if (!values.empty() && !spec.repeated) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given more than once"));
    }
    values.push_back(std::move(value));
  }
  return flags;
}

bool Flags::Has(const std::string& name) const { return values_.count(name) > 0; }

const std::string* Flags::Last(const std::string& name, FlagKind kind) const {
  auto k = kinds_.find(name);
  if (k == kinds_.end() || k->second != kind) {
    absl::FPrintF(stderr, "internal error: flag --%s read as the wrong kind\n", name);
    std::abort();
  }
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second.back();
}

std::string Flags::String(const std::string& name, const std::string& fallback) const {
  const std::string* v = Last(name, FlagKind::kString);
  return v == nullptr ? fallback : *v;
}

int64_t Flags::Int(const std::string& name, int64_t fallback) const {
  const std::string* v = Last(name, FlagKind::kInt);
  int64_t out = fallback;
  if (v != nullptr) (void)absl::SimpleAtoi(*v, &out);  // checked by Parse
  return out;
}

double Flags::Float(const std::string& name, double fallback) const {
  const std::string* v = Last(name, FlagKind::kFloat);
  double out = fallback;
  if (v != nullptr) (void)absl::SimpleAtod(*v, &out);  // checked by Parse
  return out;
}

bool Flags::Bool(const std::string& name, bool fallback) const {
  const std::string* v = Last(name, FlagKind::kBool);
  bool out = fallback;
  if (v != nullptr) (void)absl::SimpleAtob(*v, &out);  // checked by Parse
  return out;
}

std::vector<std::string> Flags::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string FlagsUsage(const std::vector<FlagSpec>& specs) {
  std::string out;
  for (const FlagSpec& spec : specs) {
    const char* value = spec.kind == FlagKind::kBool ? "" : spec.kind == FlagKind::kString ? " TEXT" : " N";
    absl::StrAppendFormat(&out, "  %-24s %s\n", absl::StrCat("--", spec.name, value), spec.help);
  }
  return out;
}

}  // namespace tpserve::cli
