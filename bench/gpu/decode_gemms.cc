#include "bench/gpu/decode_gemms.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "bench/gpu/event_timing.h"
#include "bench/gpu/fill.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::bench::gpu {
namespace {

namespace kc = tpserve::kernels::cuda;

constexpr size_t kRotationBytes = size_t{256} << 20;  // a few times the 60 MB L2 of an H200

void Fail(const std::string& what) {
  std::fprintf(stderr, "tpserve_gpu_bench: decode GEMMs: %s\n", what.c_str());
  std::exit(1);
}
void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Fail(what + ": " + s.ToString());
}
kc::DeviceBuffer Allocate(size_t bytes, const std::string& what) {
  absl::StatusOr<kc::DeviceBuffer> b = kc::DeviceBuffer::Allocate(bytes);
  Check(b.status(), what);
  return std::move(b).value();
}

std::vector<float> Download(const kc::DeviceBuffer& y, size_t n, kc::GemmOutput output) {
  std::vector<float> out(n);
  if (output == kc::GemmOutput::kF32) {
    Check(y.CopyToHost(out.data(), n * 4), "download");
    return out;
  }
  std::vector<uint16_t> bits(n);
  Check(y.CopyToHost(bits.data(), n * 2), "download");
  for (size_t i = 0; i < n; ++i) out[i] = Bf16ToF32(bits[i]);
  return out;
}

}  // namespace

std::vector<DecodeGemmTime> TimeDecodeGemms(const ModelConfig& c,
                                            const std::vector<int64_t>& tokens, void* stream) {
  const int64_t h = c.hidden_size, d = c.head_dim;
  struct Shape {
    const char* name;
    int64_t rows, cols;
    kc::GemmOutput output;
    bool swiglu = false;  // GemmSwiGlu: fused kernel vs cuBLASLt + SwiGlu; y has rows / 2
  };
  const Shape shapes[] = {
      {"qkv", (c.num_heads + 2 * c.num_kv_heads) * d, h, kc::GemmOutput::kBf16},
      {"o", h, c.num_heads * d, kc::GemmOutput::kBf16},
      {"gate_up", 2 * int64_t{c.intermediate_size}, h, kc::GemmOutput::kBf16},
      {"gate_up+swiglu", 2 * int64_t{c.intermediate_size}, h, kc::GemmOutput::kBf16, true},
      {"down", h, c.intermediate_size, kc::GemmOutput::kBf16},
      {"lm_head", c.vocab_size, h, kc::GemmOutput::kF32},
  };
  absl::StatusOr<kc::GemmHandle> created = kc::GemmHandle::Create();
  Check(created.status(), "GemmHandle::Create");
  kc::GemmHandle gemm = std::move(created).value();
  const kc::Stream s{stream};
  const int64_t max_tokens = *std::max_element(tokens.begin(), tokens.end());
  std::vector<DecodeGemmTime> out;
  for (const Shape& shape : shapes) {
    const size_t bytes = static_cast<size_t>(shape.rows * shape.cols) * 2;
    // At most 64 copies: a --tiny model's matrices are too small to pass L2 at any count.
    const size_t copies = std::clamp<size_t>((kRotationBytes + bytes - 1) / bytes, 2, 64);
    std::vector<kc::DeviceBuffer> w;
    for (size_t i = 0; i < copies; ++i) {
      w.push_back(Allocate(bytes, std::string("weights of ") + shape.name));
      Check(kc::CudaErrorToStatus(
                FillRandomBf16(w.back().as<uint16_t>(), bytes / 2, 100 + i,
                               1.0f / std::sqrt(static_cast<float>(shape.cols)), stream),
                "fill"),
            "fill");
    }
    kc::DeviceBuffer x = Allocate(static_cast<size_t>(max_tokens * shape.cols) * 2, "x");
    Check(kc::CudaErrorToStatus(
              FillRandomBf16(x.as<uint16_t>(), max_tokens * shape.cols, 99, 1.0f, stream), "fill"),
          "fill");
    const size_t y_elem = shape.output == kc::GemmOutput::kF32 ? 4 : 2;
    const int64_t y_rows = shape.swiglu ? shape.rows / 2 : shape.rows;
    kc::DeviceBuffer y = Allocate(static_cast<size_t>(max_tokens * y_rows) * y_elem, "y");
    kc::DeviceBuffer gate_up;  // the two-op path's scratch
    if (shape.swiglu)
      gate_up = Allocate(static_cast<size_t>(max_tokens * shape.rows) * 2, "gate_up");
    for (const int64_t t : tokens) {
      DecodeGemmTime r;
      r.name = shape.name;
      r.tokens = t;
      r.rows = shape.rows;
      r.cols = shape.cols;
      r.weight_bytes = static_cast<double>(bytes);
      std::vector<float> results[2];
      for (const bool small : {true, false}) {
        gemm.set_small_batch_kernel(small);
        size_t next = 0;
        auto enqueue = [&] {
          const uint16_t* weights = w[next++ % copies].as<uint16_t>();
          if (shape.swiglu) {
            Check(gemm.GemmSwiGlu({x.as<uint16_t>(), weights, gate_up.as<uint16_t>(),
                                   y.as<uint16_t>(), t, shape.rows / 2, shape.cols},
                                  s),
                  std::string("GemmSwiGlu ") + shape.name);
            return;
          }
          const kc::GemmParams p{x.as<uint16_t>(), weights,   y.data(), shape.output, t,
                                 shape.rows,       shape.cols};
          Check(gemm.Gemm(p, s), std::string("GEMM ") + shape.name);
        };
        (small ? r.small_batch_ms : r.cublaslt_ms) = MedianEventMs(stream, 3, 20, enqueue);
        next = 0;  // the same weights for both outputs
        enqueue();
        Check(kc::SynchronizeStream(s), "sync");
        results[small ? 0 : 1] = Download(y, static_cast<size_t>(t * y_rows), shape.output);
      }
      for (size_t i = 0; i < results[0].size(); ++i) {
        r.max_abs_diff = std::max<double>(r.max_abs_diff, std::fabs(results[0][i] - results[1][i]));
      }
      out.push_back(r);
    }
  }
  gemm.set_small_batch_kernel(true);
  return out;
}

}  // namespace tpserve::bench::gpu
