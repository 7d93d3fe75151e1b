// Kernel benchmark: prints a table of MatMul throughput against what this machine can do.
//  - Memory roofline, measured in the same run: a streaming read of 512 MiB on all threads
//    (bench/common's baseline-ISA loop, and the same with 512-bit loads), and memcpy. As the
//    machine may be shared, each memory-bound row is compared with the larger of the best
//    read at start-up and one measured just before it (likewise GEMM rows and FMA peak).
//  - GEMV (one token, BF16/F16/F32 weights): GB/s of weights read. "cold" rotates through
//    enough copies of the matrix to defeat the caches (what decode sees: every layer's
//    weights come from DRAM); "hot" repeats one matrix that fits in L2/L3.
//  - GEMM (64 and 512 tokens): GFLOP/s, against a measured FMA peak when AVX-512 is present.
//  - PagedAttention decode, for scale.
// Every figure is the median of several repetitions after a warm-up; each instruction-set
// level the CPU supports gets its own rows. Usage: tpserve_kernels_bench [--quick]
// Threads: OMP_NUM_THREADS (default: all cores).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/common/memory_bandwidth.h"
#include "common/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/ops.h"

namespace tpserve::kernels {
namespace {

using cpu::Isa;
using Clock = std::chrono::steady_clock;

bool g_quick = false;
// Best read bandwidth and FMA peak seen at start-up; a row is compared with the larger of
// these and a fresh measurement, so a neighbour that was busy at either moment cannot make a
// kernel look better than the machine.
double g_read_gbs = 0;
double g_peak_gflops = 0;

// Median wall time in seconds of `reps` runs of fn, after one warm-up run.
double MedianSeconds(int reps, const std::function<void(int)>& fn) {
  fn(0);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    fn(i + 1);
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Row(const std::string& op, const std::string& shape, std::string_view isa, double ms,
         const std::string& rate, const std::string& vs) {
  std::printf("%-22s %-26s %-7s %10.3f  %-16s %s\n", op.c_str(), shape.c_str(),
              std::string(isa).c_str(), ms, rate.c_str(), vs.c_str());
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// ---------------------------- machine references ----------------------------

// The same streaming read with 512-bit loads (when the CPU has them): the most a kernel that
// reads each byte once can hope for. The baseline-ISA figure from bench/common is shown too.
__attribute__((target("avx512f"))) float ReadChunkAvx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

double WideReadGBs() {
  const size_t n = (size_t{512} << 20) / sizeof(float);
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = 1.0f;
  volatile float sink = 0;
  const double s = MedianSeconds(g_quick ? 3 : 7, [&](int) {
#pragma omp parallel
    {
      const size_t per = n / static_cast<size_t>(omp_get_num_threads()) / 64 * 64;
      const float r = ReadChunkAvx512(buf + per * static_cast<size_t>(omp_get_thread_num()), per);
#pragma omp critical
      sink = sink + r;
    }
  });
  std::free(buf);
  return static_cast<double>(n * sizeof(float)) / s / 1e9;
}

// Read bandwidth right now: the machine may be shared (other processes, noisy neighbours),
// so each memory-bound row is compared with a read measured just before it.
double ReadNowGBs() {
  static const size_t n = (size_t{256} << 20) / sizeof(float);
  static float* buf = [] {
    float* b = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) b[i] = 1.0f;
    return b;
  }();
  const bool wide = cpu::BestSupportedIsa() == Isa::kAvx512;
  volatile float sink = 0;
  const double s = MedianSeconds(3, [&](int) {
#pragma omp parallel
    {
      const size_t per = n / static_cast<size_t>(omp_get_num_threads()) / 64 * 64;
      const float* p = buf + per * static_cast<size_t>(omp_get_thread_num());
      float r = 0;
      if (wide) {
        r = ReadChunkAvx512(p, per);
      } else {
        uint32_t x = 0;
        const auto* u = reinterpret_cast<const uint32_t*>(p);
        for (size_t i = 0; i < per; ++i) x ^= u[i];
        r = static_cast<float>(x);
      }
#pragma omp critical
      sink = sink + r;
    }
  });
  return static_cast<double>(n * sizeof(float)) / s / 1e9;
}

double MemcpyGBs() {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  const double s = MedianSeconds(g_quick ? 3 : 5, [&](int) {
#pragma omp parallel
    {
      const size_t per = bytes / static_cast<size_t>(omp_get_num_threads());
      const size_t off = per * static_cast<size_t>(omp_get_thread_num());
      std::memcpy(b.data() + off, a.data() + off, per);
    }
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;  // bytes read + bytes written
}

// 24 independent FMA chains: the most one core can retire. (A separate function because an
// OpenMP region does not inherit its enclosing function's target attribute.)
__attribute__((target("avx512f,fma"))) float FmaChains(int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  __m512 a = _mm512_set1_ps(1e-3f), b = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
    __asm__("" : "+v"(a), "+v"(b));  // opaque operands: the loop cannot be folded
    // Accumulator as the addend, as in the GEMM micro-kernel.
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

double FmaPeakGflops() {
  constexpr int64_t kIters = 4'000'000;
  volatile float sink = 0;
  const double s = MedianSeconds(3, [&](int) {
#pragma omp parallel
    {
      const float r = FmaChains(kIters);
#pragma omp critical
      sink = sink + r;
    }
  });
  return static_cast<double>(omp_get_max_threads()) * kIters * 24 * 16 * 2 / s / 1e9;
}

// ---------------------------- MatMul ----------------------------

struct Matrix {
  std::vector<uint16_t> half;
  std::vector<float> f32;
  WeightMatrix view;
};

Matrix RandomMatrix(DType dt, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m;
  const size_t n = static_cast<size_t>(rows * cols);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  if (dt == DType::kF32) {
    m.f32.resize(n);
    for (float& v : m.f32) v = d(rng);
  } else {
    m.half.resize(n);
    for (uint16_t& v : m.half) v = dt == DType::kBF16 ? F32ToBf16(d(rng)) : F32ToF16(d(rng));
  }
  m.view = {dt == DType::kF32 ? static_cast<const void*>(m.f32.data()) : m.half.data(), dt, rows,
            cols};
  return m;
}

// Copies of one shape totalling at least `min_bytes`, so a rotation misses every cache.
std::vector<Matrix> Copies(DType dt, int64_t rows, int64_t cols, size_t min_bytes) {
  const size_t bytes = static_cast<size_t>(rows * cols) * DTypeSize(dt);
  const size_t count = std::max<size_t>(2, (min_bytes + bytes - 1) / bytes);
  std::vector<Matrix> out;
  for (size_t i = 0; i < count; ++i) out.push_back(RandomMatrix(dt, rows, cols, 17 + i));
  return out;
}

void BenchGemv(DType dt, int64_t rows, int64_t cols, bool cold) {
  const std::vector<Matrix> mats = Copies(dt, rows, cols, cold ? (size_t{256} << 20) : 0);
  std::vector<float> x(cols, 0.5f), y(rows);
  const double bytes = static_cast<double>(rows * cols) * DTypeSize(dt);
  const int reps = g_quick ? 20 : (bytes > 1e7 ? 41 : 301);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!cpu::ForceIsa(isa)) continue;
    const double read_gbs = std::max(g_read_gbs, ReadNowGBs());
    const double s = MedianSeconds(reps, [&](int i) {
      const Matrix& m = mats[cold ? static_cast<size_t>(i) % mats.size() : 0];
      MatMul(x.data(), 1, m.view, y.data());
    });
    const double gbs = bytes / s / 1e9;
    Row(std::string("GEMV ") + std::string(DTypeName(dt)) + (cold ? " cold" : " hot"),
        "[1," + std::to_string(cols) + "]x[" + std::to_string(rows) + "," + std::to_string(cols) +
            "]",
        cpu::IsaName(isa), s * 1e3, Fmt("%.1f GB/s", gbs),
        Fmt("%.0f%% of read ", 100 * gbs / read_gbs) + Fmt("(%.1f GB/s)", read_gbs));
  }
  cpu::ForceIsa(cpu::BestSupportedIsa());
}

void BenchGemm(DType dt, int64_t tokens, int64_t rows, int64_t cols, double peak_gflops,
               bool all_isas) {
  const Matrix m = RandomMatrix(dt, rows, cols, 5);
  std::vector<float> x(static_cast<size_t>(tokens * cols), 0.25f),
      y(static_cast<size_t>(tokens * rows));
  const double flops = 2.0 * static_cast<double>(tokens) * rows * cols;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!all_isas && isa != cpu::BestSupportedIsa()) continue;
    if (!cpu::ForceIsa(isa)) continue;
    if (peak_gflops > 0) peak_gflops = std::max(g_peak_gflops, FmaPeakGflops());
    const int reps = g_quick ? 3 : (flops > 2e10 ? 5 : 11);
    const double s = MedianSeconds(reps, [&](int) { MatMul(x.data(), tokens, m.view, y.data()); });
    const double gflops = flops / s / 1e9;
    Row(std::string("GEMM ") + std::string(DTypeName(dt)),
        "[" + std::to_string(tokens) + "," + std::to_string(cols) + "]x[" + std::to_string(rows) +
            "," + std::to_string(cols) + "]",
        cpu::IsaName(isa), s * 1e3, Fmt("%.1f GFLOP/s", gflops),
        peak_gflops > 0 ? Fmt("%.0f%% of FMA peak ", 100 * gflops / peak_gflops) +
                              Fmt("(%.0f GFLOP/s)", peak_gflops)
                        : "");
  }
  cpu::ForceIsa(cpu::BestSupportedIsa());
}

// Effective rate of one MatMul shape as the token count grows through the GEMV/GEMM switch.
void BenchTokenSweep(int64_t rows, int64_t cols) {
  const std::vector<Matrix> mats = Copies(DType::kBF16, rows, cols, size_t{256} << 20);
  for (int64_t tokens : {1, 2, 4, 8, 9, 12, 16, 32}) {
    std::vector<float> x(static_cast<size_t>(tokens * cols), 0.25f);
    std::vector<float> y(static_cast<size_t>(tokens * rows));
    const double s = MedianSeconds(g_quick ? 5 : 21, [&](int i) {
      MatMul(x.data(), tokens, mats[static_cast<size_t>(i) % mats.size()].view, y.data());
    });
    const double bytes = static_cast<double>(rows * cols) * 2;
    Row("MatMul BF16 sweep",
        "[" + std::to_string(tokens) + "," + std::to_string(cols) + "]x[" + std::to_string(rows) +
            "," + std::to_string(cols) + "]",
        cpu::IsaName(cpu::ActiveIsa()), s * 1e3, Fmt("%.1f GB/s", bytes / s / 1e9),
        Fmt("%.1f GFLOP/s", 2.0 * tokens * rows * cols / s / 1e9));
  }
}

// ---------------------------- attention ----------------------------

void BenchDecodeAttention(int64_t seqs, int64_t context) {
  constexpr int64_t kQHeads = 32, kKvHeads = 8, kDim = 128, kBlock = 16;
  const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
  const int64_t num_blocks = seqs * blocks_per_seq;
  std::vector<float> k(static_cast<size_t>(num_blocks * kBlock * kKvHeads * kDim), 0.01f);
  std::vector<float> v(k.size(), 0.02f);
  std::vector<float> q(static_cast<size_t>(seqs * kQHeads * kDim), 0.1f), out(q.size());
  std::vector<int32_t> tables(static_cast<size_t>(num_blocks));
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = static_cast<int32_t>(i);
  std::vector<AttentionSeq> sq;
  for (int64_t s = 0; s < seqs; ++s) {
    sq.push_back({s, 1, context - 1, tables.data() + s * blocks_per_seq, blocks_per_seq});
  }
  std::vector<int32_t> map(kQHeads);
  for (int64_t h = 0; h < kQHeads; ++h) map[h] = static_cast<int32_t>(h / (kQHeads / kKvHeads));
  AttentionParams p;
  p.q = q.data();
  p.out = out.data();
  p.q_heads = kQHeads;
  p.kv_head_of_q = map.data();
  p.scale = 0.088f;
  p.cache = {k.data(), v.data(), num_blocks, kBlock, kKvHeads, kDim};
  p.seqs = sq.data();
  p.num_seqs = seqs;
  const double read_gbs = std::max(g_read_gbs, ReadNowGBs());
  const double s = MedianSeconds(g_quick ? 5 : 21, [&](int) { PagedAttention(p); });
  const double bytes = 2.0 * static_cast<double>(seqs * context * kKvHeads * kDim) * sizeof(float);
  Row("PagedAttention decode",
      std::to_string(seqs) + " seq x ctx " + std::to_string(context) + ", 32q/8kv x128",
      cpu::IsaName(cpu::ActiveIsa()), s * 1e3, Fmt("%.1f GB/s KV", bytes / s / 1e9),
      Fmt("%.0f%% of read ", 100 * bytes / s / 1e9 / read_gbs) + Fmt("(%.1f GB/s)", read_gbs));
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) g_quick |= std::strcmp(argv[i], "--quick") == 0;
  std::printf("tpserve kernels bench: %d threads, best ISA %s%s\n", omp_get_max_threads(),
              std::string(cpu::IsaName(cpu::BestSupportedIsa())).c_str(),
              g_quick ? " (quick)" : "");
  const double base_read_gbs = bench::MeasureReadBandwidth(size_t{512} << 20, g_quick ? 3 : 7);
  const double copy_gbs = MemcpyGBs();
  double wide_read_gbs = 0, peak = 0;
  if (cpu::BestSupportedIsa() == Isa::kAvx512) {
    wide_read_gbs = WideReadGBs();
    peak = FmaPeakGflops();
  }
  g_read_gbs = std::max(base_read_gbs, wide_read_gbs);
  g_peak_gflops = peak;
  std::printf("\n%-22s %-26s %-7s %10s  %-16s %s\n", "op", "shape", "isa", "median ms", "rate",
              "vs machine");
  std::printf("%s\n", std::string(100, '-').c_str());
  Row("stream read", "512 MiB, all threads", "base", 0, Fmt("%.1f GB/s", base_read_gbs),
      "bench/common MeasureReadBandwidth");
  if (wide_read_gbs > 0) {
    Row("stream read", "512 MiB, all threads", "avx512", 0, Fmt("%.1f GB/s", wide_read_gbs),
        "512-bit loads");
  }
  Row("memcpy", "256 MiB, read+write", "-", 0, Fmt("%.1f GB/s", copy_gbs), "reference");
  if (peak > 0)
    Row("FMA peak", "24 zmm chains/thread", "avx512", 0, Fmt("%.1f GFLOP/s", peak), "reference");

  BenchGemv(DType::kBF16, 1792, 512, /*cold=*/false);
  BenchGemv(DType::kBF16, 1792, 512, /*cold=*/true);
  BenchGemv(DType::kBF16, 14336, 4096, /*cold=*/true);
  BenchGemv(DType::kF16, 14336, 4096, /*cold=*/true);
  BenchGemv(DType::kF32, 4096, 4096, /*cold=*/true);

  BenchGemm(DType::kBF16, 64, 1792, 512, peak, true);
  BenchGemm(DType::kBF16, 512, 1792, 512, peak, true);
  BenchGemm(DType::kBF16, 64, 14336, 4096, peak, false);
  BenchGemm(DType::kBF16, 512, 14336, 4096, peak, false);
  BenchGemm(DType::kF16, 512, 4096, 4096, peak, false);

  BenchTokenSweep(4096, 4096);

  BenchDecodeAttention(1, 4096);
  BenchDecodeAttention(16, 1024);
  return 0;
}

}  // namespace
}  // namespace tpserve::kernels

int main(int argc, char** argv) { return tpserve::kernels::Main(argc, argv); }
