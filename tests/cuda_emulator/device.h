// The CUDA emulator's device side: what kernels/cuda's kernels, compiled as host C++ (see
// kernel_prelude.h), call instead of the hardware. Each CUDA thread of a block is a fiber on
// the calling host thread; the block's fibers run one at a time, each until it reaches a
// barrier, a warp collective or its end, in a shuffled order per block (so a missing
// __syncthreads shows up as a wrong result rather than passing by luck). Warp collectives
// (shuffles, __syncwarp, ldmatrix, mma) complete when every lane of their mask has arrived;
// a lane of the mask that has exited or waits elsewhere is a deadlock, reported and aborted.
// Blocks of a grid run one after another, in a shuffled order. Only for tests: no speed, no
// concurrency.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tpserve::cuda_emulator {

// Built-in variables of the running thread.
uint3 ThreadIdx();
uint3 BlockIdx();
dim3 BlockDim();
dim3 GridDim();

// Block barrier; SyncThreadsOr also returns whether any thread's predicate was non-zero.
void SyncThreads();
int SyncThreadsOr(int predicate);

// Warp collectives over the lanes of `mask` (which must include the caller).
void SyncWarp(uint32_t mask);
enum class ShuffleKind { kXor, kUp };
uint64_t Shuffle(ShuffleKind kind, uint32_t mask, uint64_t bits, int lane_arg, int width);

// Dynamic shared memory of the running block (the launch's bytes, filled with 0xff bytes: NaN
// in fp32 and bf16, so a read before a write shows), and its 32-bit shared-window addresses.
void* DynamicShared();
uint32_t SharedAddress(const void* p);  // p must lie in the dynamic shared memory
void* SharedPointer(uint32_t address, size_t bytes);

// cp.async: a copy of 16 bytes that lands when this thread waits for it (not before).
void CpAsync16(uint32_t shared_dst, const void* global_src);
void CpAsyncWaitAll();
// griddepcontrol.wait: the emulator runs grids in turn, so it only notes that the thread
// waited (a programmatic launch checks that every thread of its kernel did).
void WaitForPriorGrids();
// ldmatrix .m8n8.x4 (.trans) and mma .m16n8k16 bf16 -> f32 of the calling lane's warp.
void LdMatrixX4(uint32_t (&r)[4], uint32_t shared_address, bool trans);
void MmaM16N8K16Bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

// A kernel launch: checks the configuration as CUDA does (the error is also the thread's last
// error) and enqueues `body`, which every thread of every block runs, on `stream`.
struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  const void* kernel = nullptr;
  bool programmatic = false;  // a programmatic dependent launch: every thread must wait first
};
cudaError_t EnqueueKernel(const LaunchShape& shape, cudaStream_t stream,
                          std::function<void()> body);

// kernel<<<grid, block, shared_bytes, stream>>>(args...): the arguments are converted to the
// kernel's parameter types and kept by value, as a launch (and a graph's kernel node) does.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, bool programmatic, Args&&... args) {
  std::tuple<std::decay_t<Params>...> bound(std::forward<Args>(args)...);
  std::function<void()> body = [kernel, bound] { std::apply(kernel, bound); };
  (void)EnqueueKernel(
      {grid, block, shared_bytes, reinterpret_cast<const void*>(kernel), programmatic}, stream,
      std::move(body));
}

}  // namespace tpserve::cuda_emulator
