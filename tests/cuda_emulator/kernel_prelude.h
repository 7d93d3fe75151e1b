// Force-included (-include) before each kernels/cuda .cu file compiled as host C++ for the
// CUDA emulator (tests/cuda_emulator/CMakeLists.txt): the CUDA keywords, built-in variables and
// intrinsics those files use (only those: a new one fails to compile here until it is added),
// mapped onto the emulator's device side (device.h). Arithmetic intrinsics keep their CUDA
// meaning (round to nearest, no contraction).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tests/cuda_emulator/device.h"

#ifndef TPSERVE_CUDA_EMULATION
#error "kernel_prelude.h is for the CUDA emulator's build (TPSERVE_CUDA_EMULATION)"
#endif

// The host compiler's view of CUDA's execution-space keywords.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static storage: the blocks of a grid run one after another on one host thread, so one copy
// per kernel instantiation is the block's. All of them share one section, which the scheduler
// fills with 0xff bytes before each block (a read before the block's write shows as a NaN).
// (Dynamic shared memory: DynamicShared().)
#define __shared__ static __attribute__((section("tpserve_emulated_shared")))

#define threadIdx (::tpserve::cuda_emulator::ThreadIdx())
#define blockIdx (::tpserve::cuda_emulator::BlockIdx())
#define blockDim (::tpserve::cuda_emulator::BlockDim())
#define gridDim (::tpserve::cuda_emulator::GridDim())

inline void __syncthreads() { ::tpserve::cuda_emulator::SyncThreads(); }
inline int __syncthreads_or(int predicate) {
  return ::tpserve::cuda_emulator::SyncThreadsOr(predicate);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::tpserve::cuda_emulator::SyncWarp(mask); }

namespace tpserve::cuda_emulator::prelude {
template <typename T>
T Shuffled(ShuffleKind kind, unsigned mask, T v, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a register-sized value");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = Shuffle(kind, mask, bits, arg, width);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
}  // namespace tpserve::cuda_emulator::prelude

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::tpserve::cuda_emulator::prelude::Shuffled(::tpserve::cuda_emulator::ShuffleKind::kXor,
                                                     mask, v, lane_mask, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::tpserve::cuda_emulator::prelude::Shuffled(::tpserve::cuda_emulator::ShuffleKind::kUp,
                                                     mask, v, static_cast<int>(delta), width);
}

inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
// volatile: the host compiler may neither contract these into an FMA nor reassociate them,
// which is what the _rn intrinsics promise on the device.
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcs(const T* p) {
  return *p;
}
inline size_t __cvta_generic_to_shared(const void* p) {
  return ::tpserve::cuda_emulator::SharedAddress(p);
}

// The runtime's template overload for kernels, which the toolkit declares for nvcc only.
template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// Device min/max on mixed integer widths, as CUDA's math headers overload them.
using std::isnan;
using std::max;
using std::min;
