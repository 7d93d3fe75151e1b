// Writes safetensors files (layer: model). Used by tools that make random checkpoints and by
// tests that need files of a given shape; the serving path only reads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace tpserve {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// Fills `out` with the raw little-endian bytes of `spec` (already sized for it).
using TensorFiller = std::function<void(const TensorSpec& spec, std::vector<uint8_t>& out)>;

// Writes `specs` to `path` in order, asking `fill` for each tensor's bytes one at a time so
// that large files need not sit in memory. Internal if the file cannot be written.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                              const TensorFiller& fill);

}  // namespace tpserve
