// A model folder's weights: one model.safetensors or shards listed in
// model.safetensors.index.json, memory-mapped (layer: model; reads are thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/mapped_file.h"
#include "model/safetensors.h"

namespace tpserve {

// A rectangular block of a 1-D or 2-D tensor: rows [row_begin, row_end), cols [col_begin,
// col_end). For a 1-D tensor only rows are used (cols must be [0, 1)).
struct Slice2D {
  int64_t row_begin = 0, row_end = 0;
  int64_t col_begin = 0, col_end = 1;
};

class Checkpoint {
 public:
  // Opens `model_dir`: model.safetensors if present, else model.safetensors.index.json and
  // the shard files it names. NotFound if neither exists; InvalidArgument for a corrupt
  // index, shard or header (message names the file), or a tensor named twice.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  // Metadata of tensor `name`, or nullptr.
  const TensorInfo* Find(const std::string& name) const;
  // File that holds tensor `name` (for messages), or "" when absent.
  std::string FileOf(const std::string& name) const;

  // Checks tensor `name` exists with exactly `expected_shape` (NotFound / InvalidArgument
  // naming file and tensor otherwise) and copies `slice` of it into `dst`, row-major, in the
  // tensor's own dtype: (row_end-row_begin)*(col_end-col_begin)*DTypeSize bytes. Only the
  // bytes of the slice are read from the mapping.
  absl::Status ReadSlice(const std::string& name, const std::vector<int64_t>& expected_shape,
                         const Slice2D& slice, void* dst) const;

  // Releases the page cache of every mapping (after this rank copied what it owns).
  void ReleasePages() const;

  // Total bytes of all tensors in the checkpoint.
  uint64_t TotalTensorBytes() const;

 private:
  struct Entry {
    TensorInfo info;
    int file_index = 0;
    uint64_t data_offset = 0;
  };
  std::vector<MappedFile> files_;
  std::vector<Entry> entries_;  // sorted by name
  const Entry* FindEntry(const std::string& name) const;
};

}  // namespace tpserve
