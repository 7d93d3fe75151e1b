// Helpers shared by the CUDA backend-ops tests (tests/gpu/*_test.cc, one executable,
// cuda_ops_test): Status assertions, guarded device buffers (canary zones on both sides of an
// output, an "unwritten" NaN sentinel inside), exact and bf16-band comparisons, seeded inputs,
// and the parameterised-case base class that skips without a GPU. Also the case counts each
// test file reports to the op registry check in cuda_ops_test.cc.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve::kernels::cuda::gpu_test {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const absl::Status assert_ok_status_ = (expr);            \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr)                      \
  auto TPSERVE_TEST_CONCAT(statusor_, __LINE__) = (expr);    \
  ASSERT_TRUE(TPSERVE_TEST_CONCAT(statusor_, __LINE__).ok()) \
      << TPSERVE_TEST_CONCAT(statusor_, __LINE__).status();  \
  lhs = std::move(TPSERVE_TEST_CONCAT(statusor_, __LINE__)).value()
#define TPSERVE_TEST_CONCAT_INNER(a, b) a##b
#define TPSERVE_TEST_CONCAT(a, b) TPSERVE_TEST_CONCAT_INNER(a, b)

// ------------------------------- helpers -------------------------------

constexpr size_t kGuardBytes = 512;               // canary bytes on each side of an output
constexpr uint32_t kF32Canary = 0x7fa5a5a5u;      // a signalling-NaN pattern no op writes
constexpr uint16_t kBf16Canary = 0x7fa5u;         // likewise in bf16
constexpr uint32_t kF32Unwritten = 0x7fc0deadu;   // quiet NaN: "the op never wrote this"
constexpr uint16_t kBf16Unwritten = 0x7fdeu;      // likewise in bf16

template <typename T>
T Canary() {
  if constexpr (sizeof(T) == 4) return std::bit_cast<T>(kF32Canary);
  else return std::bit_cast<T>(kBf16Canary);
}

// Bits of an element, for exact comparisons and messages.
inline uint32_t Bits(float v) { return std::bit_cast<uint32_t>(v); }
inline uint32_t Bits(uint16_t v) { return v; }
inline bool IsNan(float v) { return std::isnan(v); }
inline bool IsNan(uint16_t v) { return std::isnan(Bf16ToF32(v)); }

// A device array of n elements of T (float or uint16_t bf16 bits) between two guard zones.
template <typename T>
class GuardedDevice {
 public:
  static constexpr size_t kGuard = kGuardBytes / sizeof(T);

  // Uploads `init` between canary-filled guards.
  static absl::StatusOr<GuardedDevice> Create(const std::vector<T>& init) {
    GuardedDevice g;
    g.n_ = init.size();
    std::vector<T> host(g.n_ + 2 * kGuard, Canary<T>());
    std::copy(init.begin(), init.end(), host.begin() + kGuard);
    absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(T));
    if (!buf.ok()) return buf.status();
    g.buf_ = std::move(buf).value();
    absl::Status s = g.buf_.CopyFromHost(host.data(), host.size() * sizeof(T));
    if (!s.ok()) return s;
    return g;
  }
  // n elements of the "unwritten" NaN sentinel.
  static absl::StatusOr<GuardedDevice> Unwritten(size_t n) {
    if constexpr (sizeof(T) == 4) {
      return Create(std::vector<T>(n, std::bit_cast<T>(kF32Unwritten)));
    } else {
      return Create(std::vector<T>(n, std::bit_cast<T>(kBf16Unwritten)));
    }
  }

  T* data() const { return buf_.as<T>() + kGuard; }

  // Downloads the array; the guards' state is kept for GuardsIntact().
  absl::StatusOr<std::vector<T>> Download() {
    std::vector<T> host(n_ + 2 * kGuard);
    absl::Status s = buf_.CopyToHost(host.data(), host.size() * sizeof(T));
    if (!s.ok()) return s;
    guard_error_.clear();
    for (size_t i = 0; i < host.size(); ++i) {
      if (i >= kGuard && i < kGuard + n_) continue;
      if (Bits(host[i]) != Bits(Canary<T>())) {
        const long off = i < kGuard ? static_cast<long>(i) - static_cast<long>(kGuard)
                                    : static_cast<long>(i - kGuard - n_);
        guard_error_ = (i < kGuard ? "underrun: element " : "overrun: element ") +
                       std::to_string(off) +
                       (i < kGuard ? " before the buffer was written"
                                   : " past the end was written");
        break;
      }
    }
    return std::vector<T>(host.begin() + kGuard, host.begin() + kGuard + n_);
  }
  // Whether the guards were intact at the last Download().
  ::testing::AssertionResult GuardsIntact() const {
    if (guard_error_.empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << guard_error_;
  }

 private:
  DeviceBuffer buf_;
  size_t n_ = 0;
  std::string guard_error_;
};

// A plain device copy of an input (no guards).
template <typename T>
absl::StatusOr<DeviceBuffer> Upload(const std::vector<T>& v) {
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(v.size() * sizeof(T));
  if (!buf.ok()) return buf.status();
  absl::Status s = buf->CopyFromHost(v.data(), v.size() * sizeof(T));
  if (!s.ok()) return s;
  return buf;
}

// Exact comparison: equal bits, or NaN on both sides.
template <typename T>
::testing::AssertionResult SameBits(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  for (size_t i = 0; i < got.size(); ++i) {
    if (IsNan(got[i]) && IsNan(want[i])) continue;
    if (Bits(got[i]) != Bits(want[i])) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "element %zu: got bits 0x%08x, want 0x%08x", i,
                    Bits(got[i]), Bits(want[i]));
      return ::testing::AssertionFailure() << msg;
    }
  }
  return ::testing::AssertionSuccess();
}

// bf16 output against an fp32 reference: NaN and inf parity element by element, then
// |got - want| <= rtol * |want| + atol * max|want|. Reports the normalised error
// max|got - want| / max|want| on failure.
constexpr double kBf16Rtol = 1.0 / 128;  // one bf16 ulp, relative
constexpr double kBf16Atol = 1e-6;       // times max|want|: fp32 noise near zero
inline ::testing::AssertionResult WithinBf16(const std::vector<uint16_t>& got,
                                      const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  double max_ref = 0.0;
  for (float w : want) {
    if (std::isfinite(w)) max_ref = std::max(max_ref, std::fabs(static_cast<double>(w)));
  }
  double max_err = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float g = Bf16ToF32(got[i]), w = want[i];
    if (std::isnan(g) != std::isnan(w)) {
      return ::testing::AssertionFailure()
             << "NaN parity broken at " << i << ": got " << g << ", want " << w;
    }
    if (std::isnan(w)) continue;
    if (std::isinf(g) || std::isinf(w)) {
      if (g != w) {
        return ::testing::AssertionFailure()
               << "inf parity broken at " << i << ": got " << g << ", want " << w;
      }
      continue;
    }
    const double err = std::fabs(static_cast<double>(g) - w);
    max_err = std::max(max_err, err);
    if (err > kBf16Rtol * std::fabs(static_cast<double>(w)) + kBf16Atol * max_ref) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << g << ", want " << w << " (error " << err
             << ", more than one bf16 ulp; normalised error so far "
             << (max_ref > 0 ? max_err / max_ref : max_err) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Seeds from the case name (FNV-1a), so each case has its own fixed inputs.
inline uint32_t SeedOf(std::string_view name) {
  uint32_t h = 2166136261u;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  return h;
}

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}
inline std::vector<uint16_t> RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::vector<uint16_t> v(n);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (uint16_t& b : v) b = F32ToBf16(dist(rng));
  return v;
}
inline std::vector<float> Widen(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToF32(v[i]);
  return out;
}
inline std::vector<uint16_t> Narrow(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return out;
}

constexpr uint16_t kBf16PosInf = 0x7f80u, kBf16NegInf = 0xff80u, kBf16QNan = 0x7fc0u;

// GPU cases skip without a device; main() does not even run them then.
template <typename Case>
class GpuCase : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// Names cases in gtest output (gtest accepts only letters, digits and '_').
template <typename Case>
std::string NameOf(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.name;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

// Case counts of the tables in cuda_gemm_test.cc and cuda_attention_test.cc, for the registry
// check in cuda_ops_test.cc.
size_t GemmCaseCount();
size_t GemmSwiGluCaseCount();
size_t RopeKvCaseCount();
size_t PrefillAttentionCaseCount();
size_t DecodeAttentionCaseCount();

}  // namespace tpserve::kernels::cuda::gpu_test
