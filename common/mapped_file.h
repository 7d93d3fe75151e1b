// Read-only memory-mapped file (layer: common). Movable, not copyable; reading is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tpserve {

class MappedFile {
 public:
  // Maps `path` read-only. NotFound when absent; InvalidArgument when it is not a regular
  // file; Internal when mmap fails. An empty file maps to size() == 0, data() == nullptr.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Tells the kernel the pages read so far are no longer needed (they stay readable and
  // are paged in again on the next access). Used after a rank copied out its slices.
  void ReleasePages() const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tpserve
