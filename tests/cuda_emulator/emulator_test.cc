// The CUDA emulator's own checks (compiled with kernel_prelude.h, like the kernels): barriers
// and warp collectives give CUDA's results, the mistakes a GPU punishes are caught (a missing
// barrier reads unwritten memory, a collective a lane never reaches aborts, an oversized launch
// fails), work waits for the host's synchronisation, cp.async lands at its wait, and a captured
// graph replays with its baked arguments and the current contents of pinned memory.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr uint32_t kPoison = 0xffffffffu;  // what unwritten shared and device memory holds

template <typename T>
T* DeviceArray(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

template <typename T>
std::vector<T> ToHost(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// ------------------------------------ kernels ------------------------------------

__global__ void BlockSumKernel(const int* in, int* out) {
  __shared__ int partial[256];
  const int t = static_cast<int>(threadIdx.x);
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (int stride = static_cast<int>(blockDim.x) / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// Reads its neighbour's slot with no barrier in between: a race on a GPU.
__global__ void MissingBarrierKernel(uint32_t* out) {
  uint32_t* slots = static_cast<uint32_t*>(::tpserve::cuda_emulator::DynamicShared());
  const unsigned t = threadIdx.x;
  slots[t] = t;
  out[t] = slots[(t + 1) % blockDim.x];
}

// Reads its static shared array before writing it: every block must see unwritten memory,
// not the previous block's values.
__global__ void StaticSharedReadBeforeWriteKernel(uint32_t* out) {
  __shared__ uint32_t slots[32];
  out[blockIdx.x * 32 + threadIdx.x] = slots[threadIdx.x];
  __syncthreads();
  slots[threadIdx.x] = 5;
}

__global__ void ShuffleKernel(int* xor_out, int* up_out, int* any_out) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  int v = lane * 10;
  xor_out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 5);
  up_out[threadIdx.x] = __shfl_up_sync(0xffffffffu, v, 3);
  any_out[threadIdx.x] = __syncthreads_or(threadIdx.x == 37);
}

__global__ void LaneSkipsShuffleKernel(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void BarrierAgainstShuffleKernel(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 2);
  }
}

__global__ void WriteKernel(float* out, float value) { out[threadIdx.x] = value; }

__global__ void WaitingWriteKernel(float* out, float value) {
  ::tpserve::cuda_emulator::WaitForPriorGrids();
  out[threadIdx.x] = value;
}

__global__ void AddOneKernel(const float* in, float* out) {
  out[threadIdx.x] = in[threadIdx.x] + 1;
}

__global__ void CpAsyncKernel(const uint32_t* src, uint32_t* before, uint32_t* after) {
  uint8_t* smem = static_cast<uint8_t*>(::tpserve::cuda_emulator::DynamicShared());
  const uint32_t at = ::tpserve::cuda_emulator::SharedAddress(smem + 16 * threadIdx.x);
  ::tpserve::cuda_emulator::CpAsync16(at, src + 4 * threadIdx.x);
  const auto* mine = reinterpret_cast<const uint32_t*>(smem + 16 * threadIdx.x);
  before[threadIdx.x] = mine[0];
  ::tpserve::cuda_emulator::CpAsyncWaitAll();
  after[threadIdx.x] = mine[0];
}

// ------------------------------------- tests -------------------------------------

TEST(CudaEmulatorTest, BarriersGiveTheBlockReduction) {
  std::vector<int> in(4 * 256);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 97);
  int* d_in = DeviceArray<int>(in.size());
  int* d_out = DeviceArray<int>(4);
  ASSERT_EQ(cudaMemcpy(d_in, in.data(), in.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ::tpserve::cuda_emulator::Launch(BlockSumKernel, dim3(4), dim3(256), 0, nullptr, false, d_in,
                                   d_out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> out = ToHost(d_out, 4);
  for (int b = 0; b < 4; ++b) {
    int want = 0;
    for (int i = 0; i < 256; ++i) want += in[b * 256 + i];
    EXPECT_EQ(out[b], want) << "block " << b;
  }
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmulatorTest, AMissingBarrierReadsUnwrittenSharedMemory) {
  uint32_t* d_out = DeviceArray<uint32_t>(64);
  ::tpserve::cuda_emulator::Launch(MissingBarrierKernel, dim3(1), dim3(64), 64 * 4, nullptr, false,
                                   d_out);
  const std::vector<uint32_t> out = ToHost(d_out, 64);
  int unwritten = 0;
  for (uint32_t v : out) unwritten += v == kPoison;
  EXPECT_GT(unwritten, 0) << "threads ran in lockstep: a missing barrier would go unseen";
  cudaFree(d_out);
}

TEST(CudaEmulatorTest, EveryBlockStartsWithUnwrittenStaticSharedMemory) {
  uint32_t* d_out = DeviceArray<uint32_t>(3 * 32);
  ::tpserve::cuda_emulator::Launch(StaticSharedReadBeforeWriteKernel, dim3(3), dim3(32), 0, nullptr,
                                   false, d_out);
  for (uint32_t v : ToHost(d_out, 3 * 32)) EXPECT_EQ(v, kPoison);
  cudaFree(d_out);
}

TEST(CudaEmulatorTest, ShufflesAndSyncthreadsOrFollowCuda) {
  int* d_xor = DeviceArray<int>(64);
  int* d_up = DeviceArray<int>(64);
  int* d_any = DeviceArray<int>(64);
  ::tpserve::cuda_emulator::Launch(ShuffleKernel, dim3(1), dim3(64), 0, nullptr, false, d_xor, d_up,
                                   d_any);
  const std::vector<int> x = ToHost(d_xor, 64), up = ToHost(d_up, 64), any = ToHost(d_any, 64);
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    EXPECT_EQ(x[t], (lane ^ 5) * 10) << t;
    EXPECT_EQ(up[t], (lane >= 3 ? lane - 3 : lane) * 10) << t;
    EXPECT_EQ(any[t], 1) << t;
  }
  cudaFree(d_xor);
  cudaFree(d_up);
  cudaFree(d_any);
}

TEST(CudaEmulatorDeathTest, AShuffleWithAnExitedLaneAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  int* d_out = DeviceArray<int>(32);
  EXPECT_DEATH(
      {
        ::tpserve::cuda_emulator::Launch(LaneSkipsShuffleKernel, dim3(1), dim3(32), 0, nullptr,
                                         false, d_out);
        cudaDeviceSynchronize();
      },
      "names a lane that exited");
  cudaFree(d_out);
}

TEST(CudaEmulatorDeathTest, ABarrierNotReachedByAllAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  int* d_out = DeviceArray<int>(32);
  EXPECT_DEATH(
      {
        ::tpserve::cuda_emulator::Launch(BarrierAgainstShuffleKernel, dim3(1), dim3(32), 0, nullptr,
                                         false, d_out);
        cudaDeviceSynchronize();
      },
      "deadlock");
  cudaFree(d_out);
}

TEST(CudaEmulatorDeathTest, AProgrammaticLaunchOfAKernelThatNeverWaitsAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  float* d = DeviceArray<float>(32);
  ::tpserve::cuda_emulator::Launch(WaitingWriteKernel, dim3(2), dim3(32), 0, nullptr, true, d,
                                   3.0f);
  EXPECT_EQ(ToHost(d, 32)[31], 3.0f);
  EXPECT_DEATH(
      {
        ::tpserve::cuda_emulator::Launch(WriteKernel, dim3(1), dim3(32), 0, nullptr, true, d, 1.0f);
        cudaDeviceSynchronize();
      },
      "never called WaitForPriorGrids");
  cudaFree(d);
}

TEST(CudaEmulatorTest, LaunchConfigurationsAreCheckedAsCudaDoes) {
  float* d = DeviceArray<float>(1024);
  ::tpserve::cuda_emulator::Launch(WriteKernel, dim3(1), dim3(1025), 0, nullptr, false, d, 1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  ::tpserve::cuda_emulator::Launch(WriteKernel, dim3(1), dim3(32), 64 * 1024, nullptr, false, d,
                                   1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue) << "over 48 KiB without the opt-in";
  ASSERT_EQ(cudaFuncSetAttribute(reinterpret_cast<const void*>(WriteKernel),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
            cudaSuccess);
  ::tpserve::cuda_emulator::Launch(WriteKernel, dim3(1), dim3(32), 64 * 1024, nullptr, false, d,
                                   1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(reinterpret_cast<const void*>(WriteKernel),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmulatorTest, WorkWaitsForTheHostsSynchronisation) {
  float* d = DeviceArray<float>(32);
  void* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, 32 * 4, cudaHostAllocDefault), cudaSuccess);
  auto* h = static_cast<float*>(pinned);
  std::fill(h, h + 32, 0.0f);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ::tpserve::cuda_emulator::Launch(WriteKernel, dim3(1), dim3(32), 0, s, false, d, 7.0f);
  ASSERT_EQ(cudaMemcpyAsync(h, d, 32 * 4, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(h[0], 0.0f) << "a pinned copy landed before the host synchronised";
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(h[31], 7.0f);
  cudaStreamDestroy(s);
  cudaFreeHost(pinned);
  cudaFree(d);
}

TEST(CudaEmulatorTest, CpAsyncLandsAtTheWait) {
  std::vector<uint32_t> src(32 * 4);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint32_t>(i);
  uint32_t* d_src = DeviceArray<uint32_t>(src.size());
  uint32_t* d_before = DeviceArray<uint32_t>(32);
  uint32_t* d_after = DeviceArray<uint32_t>(32);
  ASSERT_EQ(cudaMemcpy(d_src, src.data(), src.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ::tpserve::cuda_emulator::Launch(CpAsyncKernel, dim3(1), dim3(32), 32 * 16, nullptr, false, d_src,
                                   d_before, d_after);
  const std::vector<uint32_t> before = ToHost(d_before, 32), after = ToHost(d_after, 32);
  for (uint32_t t = 0; t < 32; ++t) {
    EXPECT_EQ(before[t], kPoison) << t;
    EXPECT_EQ(after[t], 4 * t) << t;
  }
  cudaFree(d_src);
  cudaFree(d_before);
  cudaFree(d_after);
}

TEST(CudaEmulatorTest, AGraphReplaysItsArgumentsWithThePinnedMemorysCurrentContents) {
  float* d_in = DeviceArray<float>(32);
  float* d_out = DeviceArray<float>(32);
  void* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, 2 * 32 * 4, cudaHostAllocDefault), cudaSuccess);
  auto* h_in = static_cast<float*>(pinned);
  float* h_out = h_in + 32;
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(d_in, h_in, 32 * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
  ::tpserve::cuda_emulator::Launch(AddOneKernel, dim3(1), dim3(32), 0, s, false, d_in, d_out);
  ASSERT_EQ(cudaMemcpyAsync(h_out, d_out, 32 * 4, cudaMemcpyDeviceToHost, s), cudaSuccess);
  void* refused = nullptr;
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (float base : {10.0f, 20.0f}) {
    std::fill(h_in, h_in + 32, base);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(h_out[5], base + 1) << "replay with input " << base;
  }

  // Calls CUDA refuses while capturing invalidate the capture.
  std::vector<float> pageable(32);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(d_in, pageable.data(), 32 * 4, cudaMemcpyHostToDevice, s),
            cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaMalloc(&refused, 16), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t failed = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &failed), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(failed, nullptr);
  (void)cudaGetLastError();

  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  cudaFreeHost(pinned);
  cudaFree(d_in);
  cudaFree(d_out);
}

}  // namespace
