#include "clients/cli/batch_job.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tpserve::cli {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& message) { return absl::InvalidArgumentError(message); }

// nlohmann throws on bad input; no exception may escape, so parsing happens here only.
absl::StatusOr<json> ParseJson(std::string_view text) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return Bad(absl::StrCat("not valid JSON (", std::string(e.what()), ")"));
  }
}

absl::StatusOr<uint64_t> Unsigned(const json& v, const std::string& key, uint64_t max) {
  if (!v.is_number_unsigned()) {  // negative whole numbers parse as signed
    return Bad(absl::StrCat("\"", key, "\" must be a whole number >= 0"));
  }
  const uint64_t u = v.get<uint64_t>();
  if (u > max) return Bad(absl::StrCat("\"", key, "\" must be at most ", max));
  return u;
}

absl::StatusOr<float> Number(const json& v, const std::string& key) {
  if (!v.is_number()) return Bad(absl::StrCat("\"", key, "\" must be a number"));
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < 0) return Bad(absl::StrCat("\"", key, "\" must be >= 0"));
  return static_cast<float>(d);
}

}  // namespace

absl::StatusOr<BatchItem> ParseBatchLine(std::string_view line, const client::GenerateOptions& defaults) {
  absl::StatusOr<json> parsed = ParseJson(line);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return Bad("not a JSON object");
  BatchItem item;
  item.options = defaults;
  auto id = j.find("id");
  if (id == j.end() || !id->is_string()) return Bad("\"id\" must be a string");
  item.id = id->get<std::string>();
  if (item.id.empty()) return Bad("\"id\" is empty");
  item.options.request_id = item.id;
  const int given = j.contains("prompt") + j.contains("prompt_token_ids") + j.contains("messages");
  if (given != 1) {
    return Bad("needs exactly one of \"prompt\", \"prompt_token_ids\" and \"messages\"");
  }
  constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();
  for (const auto& [key, v] : j.items()) {
    if (key == "id") {
      continue;
    } else if (key == "prompt") {
      if (!v.is_string()) return Bad("\"prompt\" must be a string");
      item.options.prompt = v.get<std::string>();
      item.options.prompt_token_ids.clear();
    } else if (key == "prompt_token_ids") {
      if (!v.is_array() || v.empty()) return Bad("\"prompt_token_ids\" must be a non-empty list");
      item.options.prompt.clear();
      item.options.prompt_token_ids.clear();
      for (const json& t : v) {
        absl::StatusOr<uint64_t> id_value = Unsigned(t, "prompt_token_ids", kU32);
        if (!id_value.ok()) return id_value.status();
        item.options.prompt_token_ids.push_back(static_cast<uint32_t>(*id_value));
      }
    } else if (key == "messages") {
      // [{"role": "user", "content": "..."}, ...]; the server checks roles and order.
      if (!v.is_array() || v.empty()) return Bad("\"messages\" must be a non-empty list");
      item.options.prompt.clear();
      item.options.prompt_token_ids.clear();
      for (const json& m : v) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
            !m.contains("content") || !m["content"].is_string()) {
          return Bad("each of \"messages\" must be {\"role\": string, \"content\": string}");
        }
        item.options.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
    } else if (key == "max_new_tokens") {
      absl::StatusOr<uint64_t> n = Unsigned(v, key, kU32);
      if (!n.ok()) return n.status();
      if (*n == 0) return Bad("\"max_new_tokens\" must be >= 1");
      item.options.max_new_tokens = static_cast<uint32_t>(*n);
    } else if (key == "top_k") {
      absl::StatusOr<uint64_t> n = Unsigned(v, key, kU32);
      if (!n.ok()) return n.status();
      item.options.top_k = static_cast<uint32_t>(*n);
    } else if (key == "seed") {
      absl::StatusOr<uint64_t> n = Unsigned(v, key, std::numeric_limits<uint64_t>::max());
      if (!n.ok()) return n.status();
      item.options.seed = *n;
    } else if (key == "temperature" || key == "top_p") {
      absl::StatusOr<float> x = Number(v, key);
      if (!x.ok()) return x.status();
      (key == "temperature" ? item.options.temperature : item.options.top_p) = *x;
    } else if (key == "stop") {
      item.options.stop.clear();
      if (v.is_string()) {
        item.options.stop.push_back(v.get<std::string>());
      } else if (v.is_array()) {
        for (const json& s : v) {
          if (!s.is_string()) return Bad("\"stop\" must be a string or a list of strings");
          item.options.stop.push_back(s.get<std::string>());
        }
      } else {
        return Bad("\"stop\" must be a string or a list of strings");
      }
    } else {
      return Bad(absl::StrCat("unknown key \"", key, "\""));
    }
  }
  return item;
}

absl::StatusOr<std::vector<BatchItem>> ParseBatchInput(std::string_view content, std::string_view source_name,
                                                       const client::GenerateOptions& defaults) {
  std::vector<BatchItem> items;
  std::map<std::string, size_t> first_line;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    absl::StatusOr<BatchItem> item = ParseBatchLine(line, defaults);
    if (!item.ok()) {
      return Bad(
          absl::StrCat(std::string(source_name), ":", line_no, ": ", std::string(item.status().message())));
    }
    item->line = line_no;
    auto [it, inserted] = first_line.emplace(item->id, line_no);
    if (!inserted) {
      return Bad(absl::StrCat(std::string(source_name), ":", line_no, ": duplicate id \"", item->id,
                              "\" (first on line ", it->second, ")"));
    }
    items.push_back(*std::move(item));
  }
  return items;
}

absl::StatusOr<ResumeState> ScanOutput(std::string_view content, std::string_view source_name) {
  ResumeState state;
  const size_t last_newline = content.rfind('\n');
  state.keep_bytes = last_newline == std::string_view::npos ? 0 : last_newline + 1;
  state.torn_bytes = content.size() - state.keep_bytes;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < state.keep_bytes) {
    const size_t end = content.find('\n', pos);  // exists: pos < keep_bytes
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    absl::StatusOr<json> j = ParseJson(line);
    absl::Status problem;
    if (!j.ok()) {
      problem = j.status();
    } else if (!j->is_object() || !j->contains("id") || !(*j)["id"].is_string()) {
      problem = Bad("not a result line (no string \"id\")");
    }
    if (!problem.ok()) {
      return Bad(absl::StrCat(std::string(source_name), ":", line_no, ": ", std::string(problem.message()),
                              "; refusing to resume into a file this tool did not write"));
    }
    if (!state.done_ids.insert((*j)["id"].get<std::string>()).second) ++state.duplicate_lines;
  }
  return state;
}

// ordered_json keeps "id" first, as a reader of the file expects.
std::string ResultLine(const std::string& id, const client::GenerateResult& result) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["id"] = id;
  j["text"] = result.text;
  j["token_ids"] = result.token_ids;
  j["finish_reason"] = std::string(client::FinishReasonName(result.finish_reason));
  j["prompt_tokens"] = result.prompt_tokens;
  j["generated_tokens"] = result.generated_tokens;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string ErrorLine(const std::string& id, const absl::Status& status) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["id"] = id;
  j["error"] = status.ToString();
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

bool IsTransient(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kResourceExhausted ||
         code == absl::StatusCode::kDeadlineExceeded;
}

int64_t BackoffDelayMs(int attempt, int64_t base_ms, int64_t max_ms, double jitter) {
  int64_t delay = std::max<int64_t>(base_ms, 0);
  for (int i = 0; i < attempt && delay < max_ms; ++i) delay *= 2;
  delay = std::min(delay, max_ms);
  jitter = std::clamp(jitter, 0.0, 1.0);
  return static_cast<int64_t>(static_cast<double>(delay) * (0.5 + 0.5 * jitter));
}

}  // namespace tpserve::cli
