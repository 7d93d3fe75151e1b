// The safetensors format: header parsing and slice reads (layer: model; no compute).
// A file is: u64 little-endian header length N, N bytes of JSON, then the data section.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace tpserve {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // byte offsets relative to the start of the data section
  uint64_t data_end = 0;
  int64_t NumElements() const;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // absolute offset of the data section in the file
  std::vector<TensorInfo> tensors;  // sorted by name
};

// Parses the framing and JSON header of a whole file held in memory (`file` is the file's
// full contents; `source` names it in errors). Checks: the length prefix fits the file, the
// header is a JSON object, each tensor has a known dtype, non-negative shape and
// data_offsets [begin, end] with begin <= end, end within the data section and
// end - begin == elements * dtype size, and no two tensors overlap. "__metadata__" is skipped.
// Errors are InvalidArgument naming the file and the tensor/field.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file, std::string_view source);

}  // namespace tpserve
