#include "bench/gpu/event_timing.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace tpserve::bench::gpu {
namespace {

void CheckCuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "tpserve_gpu_bench: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

}  // namespace

double MedianEventMs(void* stream_handle, int warmup, int reps,
                     absl::FunctionRef<void()> enqueue) {
  auto stream = static_cast<cudaStream_t>(stream_handle);
  for (int i = 0; i < warmup; ++i) enqueue();
  cudaEvent_t start, stop;
  CheckCuda(cudaEventCreate(&start), "cudaEventCreate");
  CheckCuda(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CheckCuda(cudaEventRecord(start, stream), "cudaEventRecord");
    enqueue();
    CheckCuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    CheckCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    CheckCuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  CheckCuda(cudaEventDestroy(start), "cudaEventDestroy");
  CheckCuda(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace tpserve::bench::gpu
