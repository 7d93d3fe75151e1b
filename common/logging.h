// Minimal leveled logging to stderr with a process tag (layer: common; thread-safe).
// Debian 12's abseil predates absl/log, so this stays deliberately tiny.
#pragma once

#include "absl/strings/string_view.h"

namespace tpserve {

// Sets the tag printed before every line, e.g. "worker r3". Call once at start-up.
void SetLogTag(absl::string_view tag);
// Writes one line "[tag] level: message" to stderr atomically.
void LogInfo(absl::string_view message);
void LogError(absl::string_view message);

}  // namespace tpserve
