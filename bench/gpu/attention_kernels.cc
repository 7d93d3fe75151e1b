#include "bench/gpu/attention_kernels.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "bench/gpu/event_timing.h"
#include "bench/gpu/fill.h"
#include "common/dtype.h"
#include "kernels/cuda/attention_internal.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::bench::gpu {
namespace {

namespace kc = tpserve::kernels::cuda;

void Fail(const std::string& what) {
  std::fprintf(stderr, "tpserve_gpu_bench: attention kernels: %s\n", what.c_str());
  std::exit(1);
}
void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Fail(std::string(what) + ": " + s.ToString());
}
void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Fail(std::string(what) + ": " + cudaGetErrorString(e));
}
kc::DeviceBuffer Allocate(size_t bytes, const char* what) {
  absl::StatusOr<kc::DeviceBuffer> b = kc::DeviceBuffer::Allocate(bytes);
  Check(b.status(), what);
  return std::move(b).value();
}

std::vector<float> Download(const kc::DeviceBuffer& b, size_t elems) {
  std::vector<uint16_t> bits(elems);
  Check(b.CopyToHost(bits.data(), elems * 2), "download");
  std::vector<float> out(elems);
  for (size_t i = 0; i < elems; ++i) out[i] = Bf16ToF32(bits[i]);
  return out;
}

}  // namespace

AttentionKernelTimes TimePrefillAttentionKernels(const ModelConfig& config, int64_t tokens,
                                                 void* stream_handle) {
  auto stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t qh = config.num_heads, kvh = config.num_kv_heads, d = config.head_dim;
  const int64_t block_size = 16, blocks = (tokens + block_size - 1) / block_size;
  const size_t q_elems = static_cast<size_t>(tokens * qh * d);
  const size_t cache_elems = static_cast<size_t>(blocks * block_size * kvh * d);
  kc::DeviceBuffer q = Allocate(q_elems * 2, "q");
  kc::DeviceBuffer out_tc = Allocate(q_elems * 2, "out");
  kc::DeviceBuffer out_simt = Allocate(q_elems * 2, "out");
  kc::DeviceBuffer k = Allocate(cache_elems * 2, "K cache");
  kc::DeviceBuffer v = Allocate(cache_elems * 2, "V cache");
  CheckCuda(static_cast<cudaError_t>(FillRandomBf16(q.as<uint16_t>(), q_elems, 91, 1.0f, stream)),
            "fill q");
  CheckCuda(static_cast<cudaError_t>(
                FillRandomBf16(k.as<uint16_t>(), cache_elems, 92, 1.0f, stream)),
            "fill K");
  CheckCuda(static_cast<cudaError_t>(
                FillRandomBf16(v.as<uint16_t>(), cache_elems, 93, 1.0f, stream)),
            "fill V");
  // Blocks in reverse order, so the table is not the identity.
  std::vector<int32_t> table(blocks);
  std::iota(table.rbegin(), table.rend(), 0);
  kc::DeviceBuffer table_dev = Allocate(table.size() * 4, "block table");
  Check(table_dev.CopyFromHost(table.data(), table.size() * 4), "upload block table");
  const kc::AttentionSeq seq{0, tokens, 0, table_dev.as<int32_t>(), blocks};
  kc::DeviceBuffer seq_dev = Allocate(sizeof seq, "sequence");
  Check(seq_dev.CopyFromHost(&seq, sizeof seq), "upload sequence");

  kc::PagedAttentionParams p;
  p.q = q.as<uint16_t>();
  p.tokens = tokens;
  p.q_heads = qh;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  p.sliding_window = config.sliding_window;
  p.cache = {k.as<uint16_t>(), v.as<uint16_t>(), blocks, block_size, kvh, d};
  p.seqs = seq_dev.as<kc::AttentionSeq>();
  p.num_seqs = 1;
  p.max_seq_tokens = tokens;
  const kc::Stream s{stream};

  AttentionKernelTimes t;
  t.tokens = tokens;
  const double pairs = static_cast<double>(tokens) * static_cast<double>(tokens + 1) / 2;
  t.flops = 4.0 * static_cast<double>(qh * d) * pairs;
  p.out = out_tc.as<uint16_t>();
  t.tensor_core_ms = MedianEventMs(stream, 2, 10, [&] {
    Check(kc::internal::PagedPrefillAttentionTensorCore(p, s), "tensor-core kernel");
  });
  p.out = out_simt.as<uint16_t>();
  t.simt_ms = MedianEventMs(stream, 1, 5, [&] {
    Check(kc::internal::PagedPrefillAttentionSimt(p, s), "CUDA-core kernel");
  });
  CheckCuda(cudaStreamSynchronize(stream), "sync");
  const std::vector<float> a = Download(out_tc, q_elems), b = Download(out_simt, q_elems);
  for (size_t i = 0; i < q_elems; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) Fail("non-finite attention output");
    t.max_abs_diff = std::max(t.max_abs_diff, static_cast<double>(std::fabs(a[i] - b[i])));
  }
  return t;
}

}  // namespace tpserve::bench::gpu
