// Small helpers shared by the .cc files of worker/cuda (layer: worker, internal to worker/cuda;
// plain C++: device memory comes from kernels/cuda/cuda_status.h, never from CUDA headers).
// Threading: free functions, callable from any thread; a buffer is used by one at a time.
#pragma once

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::cuda_compute {

// `s` with "<what>: " before its message (OK stays OK), so that a runtime error names the
// step of the compute it broke.
inline absl::Status Prefixed(const absl::Status& s, absl::string_view what) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

// Makes buf.size() >= bytes (nothing for bytes <= 0 or a buffer already large enough);
// otherwise the old allocation is freed first, then exactly `bytes` are allocated
// (uninitialised, contents not kept). The caller must make sure no queued work still uses the
// old memory. Errors: the allocation's (ResourceExhausted when the device is out of memory),
// prefixed "allocating <what>"; the buffer is then empty.
[[nodiscard]] inline absl::Status Grow(kernels::cuda::DeviceBuffer& buf, int64_t bytes,
                                       absl::string_view what) {
  if (bytes <= 0 || buf.size() >= static_cast<size_t>(bytes)) return absl::OkStatus();
  buf = kernels::cuda::DeviceBuffer();
  absl::StatusOr<kernels::cuda::DeviceBuffer> b =
      kernels::cuda::DeviceBuffer::Allocate(static_cast<size_t>(bytes));
  if (!b.ok()) return Prefixed(b.status(), absl::StrCat("allocating ", what));
  buf = std::move(b).value();
  return absl::OkStatus();
}

}  // namespace tpserve::cuda_compute
