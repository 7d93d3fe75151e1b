// Device helpers shared by the .cu files of kernels/cuda (internal; CUDA code only):
// bf16 <-> fp32 on raw uint16_t bits, rounding exactly as common/dtype.h's F32ToBf16 does
// (so GPU results can be compared bit for bit with bf16(CPU reference)), and a block sum.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/launch.h"

namespace tpserve::kernels::cuda::internal {

// A quiet NaN in bf16 and in fp32: what ops write for out-of-range ids or positions.
constexpr uint16_t kBf16Nan = 0x7fc0u;
__device__ __forceinline__ float F32Nan() { return __int_as_float(0x7fc00000); }

// bf16 bits -> fp32 (exact).
__device__ __forceinline__ float Bf16ToF32(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// fp32 -> bf16 bits, round to nearest even, NaN kept NaN (quiet, sign kept): the same bit
// manipulation as tpserve::F32ToBf16 on the host.
__device__ __forceinline__ uint16_t F32ToBf16(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// One SwiGLU output from bf16 gate and up values: torch's silu g / (1 + exp(-g)) in fp32 with
// the accurate expf (no fast-math), times u, one rounding to bf16 (swiglu.cu and the fused
// gate_up GEMM of gemm_skinny.cu, which must agree bit for bit).
__device__ __forceinline__ uint16_t SwiGluBf16(uint16_t gate, uint16_t up) {
  const float g = Bf16ToF32(gate);
  return F32ToBf16(g / (1.0f + expf(-g)) * Bf16ToF32(up));
}

// Sum of `v` over the kThreads threads of a one-dimensional block of exactly kThreads threads;
// every thread receives the total (all warps reduce the partials in the same order, so they
// agree bit for bit). `warp_sums` is __shared__ float[kThreads / 32]. Contains one
// __syncthreads(): every thread of the block must call it, once per kernel (a second call
// would need another barrier before it overwrites warp_sums).
template <int kThreads>
__device__ __forceinline__ float BlockSum(float v, float* warp_sums) {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "a block of whole warps");
  constexpr int kWarps = kThreads / 32;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < kWarps ? warp_sums[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// cudaFuncSetAttribute(kernel, attribute, value), its failure cleared here: it is returned,
// and must not be reported again by the next op's launch check.
template <typename Kernel>
cudaError_t SetKernelAttribute(Kernel* kernel, cudaFuncAttribute attribute, int value) {
  const cudaError_t err = cudaFuncSetAttribute(kernel, attribute, value);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err;
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), as a programmatic dependent launch
// where this thread asked for one (ScopedProgrammaticLaunch; every kernel then starts with
// WaitForPriorGrids). Every launch of kernels/cuda goes through here and every dynamic
// shared-memory array through DynamicShared, so that the CUDA emulator's build
// (TPSERVE_CUDA_EMULATION, tests/cuda_emulator: these files compiled as host C++ with its
// kernel_prelude.h force-included) can run the kernels on the host.
template <typename... Params, typename... Args>
void LaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                  cudaStream_t stream, Args&&... args) {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::Launch(kernel, grid, block, shared_bytes, stream,
                                   ProgrammaticLaunchRequested(), std::forward<Args>(args)...);
#else
  if (ProgrammaticLaunchRequested()) {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);  // cudaGetLastError
    return;
  }
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
#endif
}

// The first statement of every kernel: under a programmatic dependent launch, waits until the
// kernel before it in the stream has completed and its writes are visible; otherwise (or
// before sm_90) it does nothing.
__device__ __forceinline__ void WaitForPriorGrids() {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::WaitForPriorGrids();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The block's dynamic shared memory (the launch's shared_bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* DynamicShared() {
#ifdef TPSERVE_CUDA_EMULATION
  return static_cast<T*>(::tpserve::cuda_emulator::DynamicShared());
#else
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  return reinterpret_cast<T*>(dynamic_shared);
#endif
}

// The launch's stream from the opaque handle.
inline cudaStream_t ToCudaStream(Stream stream) { return static_cast<cudaStream_t>(stream.handle); }

}  // namespace tpserve::kernels::cuda::internal
