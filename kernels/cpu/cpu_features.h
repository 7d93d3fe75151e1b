// Run-time CPU dispatch for the fast CPU kernels (layer: kernels, internal to kernels/cpu,
// tests and bench). The library is built for baseline x86-64; each vectorised kernel lives in
// its own .cc whose functions carry a target attribute, and is only called once
// __builtin_cpu_supports confirms the CPU (and OS) support that instruction set.
// Thread-safe: the selected level is an atomic read on every call.
#pragma once

#include <string_view>

namespace tpserve::kernels::cpu {

// Instruction-set levels with a dedicated kernel, from most portable to fastest.
enum class Isa : int {
  kScalar = 0,  // portable C++, whatever the compiler's baseline allows
  kAvx2 = 1,    // AVX2 + FMA + F16C (Haswell, Zen 1 and later)
  kAvx512 = 2,  // AVX-512 F/BW/VL + FMA (Skylake-SP, Zen 4 and later)
};

// Lower-case name: "scalar", "avx2", "avx512".
std::string_view IsaName(Isa isa);

// The fastest level this CPU supports.
Isa BestSupportedIsa();

// The level the kernels use now: BestSupportedIsa() unless lowered by ForceIsa or by the
// environment variable TPSERVE_KERNELS_ISA=scalar|avx2|avx512 (read once, at first use).
Isa ActiveIsa();

// Makes every later kernel call use `isa`, for tests and benchmarks that compare levels.
// Returns false, and changes nothing, when the CPU lacks `isa`.
bool ForceIsa(Isa isa);

}  // namespace tpserve::kernels::cpu

// Function attributes for code reached only after the matching Isa check. A function with
// the attribute may inline plain (baseline) helpers; the reverse is refused by the compiler.
#define TPSERVE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define TPSERVE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TPSERVE_INLINE_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,fma"), always_inline)) inline
#define TPSERVE_INLINE_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) inline
// Fully unrolls a loop with a compile-time trip count: register tiles (arrays of vectors
// indexed by such loops) only stay in registers when every index is a constant.
#if defined(__clang__)
#define TPSERVE_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define TPSERVE_UNROLL _Pragma("GCC unroll 64")
#else
#define TPSERVE_UNROLL
#endif
// Requests the cache line `bytes` past `p` (include <immintrin.h>). The address is formed as
// an integer, so asking beyond the end of an array is well defined; a prefetch never faults.
#define TPSERVE_PREFETCH_AHEAD(p, bytes, hint) \
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + (bytes)), (hint))
// A body written once in plain C++ and instantiated under each target above, so that the
// compiler vectorises it at that width.
#define TPSERVE_ALWAYS_INLINE __attribute__((always_inline)) inline
