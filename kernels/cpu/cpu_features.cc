// CPU feature detection and the process-wide choice of kernel instruction set.
#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace tpserve::kernels::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// clang 14's __builtin_cpu_supports does not know "f16c": read CPUID leaf 1, ECX bit 29.
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

Isa Detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0), so a
  // kernel or hypervisor that disabled AVX-512 state is honoured.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c()) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kScalar;
}

Isa InitialIsa() {
  const Isa best = BestSupportedIsa();
  const char* env = std::getenv("TPSERVE_KERNELS_ISA");
  if (env == nullptr) return best;
  const std::string_view want(env);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    // An unsupported request falls back to the best level rather than crashing later.
    if (want == IsaName(isa) && isa <= best) return isa;
  }
  return best;
}

std::atomic<int>& Active() {
  static std::atomic<int> active{static_cast<int>(InitialIsa())};
  return active;
}

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

Isa BestSupportedIsa() {
  static const Isa best = Detect();
  return best;
}

Isa ActiveIsa() { return static_cast<Isa>(Active().load(std::memory_order_relaxed)); }

bool ForceIsa(Isa isa) {
  if (isa > BestSupportedIsa()) return false;
  Active().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace tpserve::kernels::cpu
