// A model's identity for matching replicas to a coordinator (layer: model; thread-safe).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tpserve {

// Hex FNV-1a 64 of config.json and of every safetensors header (tensor names, dtypes,
// shapes, offsets) in `model_dir`: equal when two folders hold the same architecture and
// weight layout. For a GGUF folder (FindModelGguf), the FNV-1a 64 of the GGUF file up to its
// data section (metadata and tensor infos). Reads headers only. Errors as Checkpoint::Open,
// LoadModelConfig and GgufModel::Open.
absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir);

}  // namespace tpserve
