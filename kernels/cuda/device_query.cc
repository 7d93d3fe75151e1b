// Per-device facts the launchers need (launch.h), cached, and the thread's programmatic-launch
// request (ScopedProgrammaticLaunch, cuda_ops.h).
#include <cuda_runtime_api.h>

#include <atomic>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda {
namespace {

thread_local bool programmatic_launch = false;

// `kAttr` of the current device, cached per device (cheap to query but not free, and asked per
// launch), or 0 when it cannot be read.
template <cudaDeviceAttr kAttr>
int CachedDeviceAttribute() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};  // 0 = not read yet
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int value = cached[device].load(std::memory_order_relaxed);
    if (value > 0) return value;
  }
  int value = 0;
  if (cudaDeviceGetAttribute(&value, kAttr, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (cacheable) cached[device].store(value, std::memory_order_relaxed);
  return value;
}

}  // namespace

ScopedProgrammaticLaunch::ScopedProgrammaticLaunch(bool on) : previous_(programmatic_launch) {
  programmatic_launch = on;
}
ScopedProgrammaticLaunch::~ScopedProgrammaticLaunch() { programmatic_launch = previous_; }

namespace internal {

int CurrentDeviceMultiprocessors() {
  return CachedDeviceAttribute<cudaDevAttrMultiProcessorCount>();
}

bool ProgrammaticLaunchRequested() {
  // griddepcontrol and the launch attribute are Hopper's (sm_90) and later.
  return programmatic_launch && CachedDeviceAttribute<cudaDevAttrComputeCapabilityMajor>() >= 9;
}

}  // namespace internal
}  // namespace tpserve::kernels::cuda
