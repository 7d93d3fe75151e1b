#include "common/logging.h"

#include <cstdio>
#include <mutex>
#include <string>

namespace tpserve {
namespace {
std::mutex g_mu;
std::string g_tag = "tpserve";

void Write(absl::string_view level, absl::string_view message) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(stderr, "[%s] %.*s: %.*s\n", g_tag.c_str(), static_cast<int>(level.size()),
               level.data(), static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}
}  // namespace

void SetLogTag(absl::string_view tag) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_tag = std::string(tag);
}
void LogInfo(absl::string_view message) { Write("info", message); }
void LogError(absl::string_view message) { Write("error", message); }

}  // namespace tpserve
