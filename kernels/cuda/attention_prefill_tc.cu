// Prefill attention on tensor cores: internal::LaunchPagedPrefillAttentionTensorCore, the kernel
// behind the public PagedPrefillAttention (cuda_ops.h, whose contract it keeps to the letter;
// the CUDA-core kernel of attention_prefill.cu stays as the reference GPU version, and
// attention_internal.h names both). One version, templated on head_dim (64, 128), written with
// inline PTX for sm_80 and later: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, ldmatrix
// and cp.async, fragment layouts as documented in the PTX ISA ("Matrix Fragments for
// mma.m16n8k16 with floating point type", "ldmatrix").
//
// Grid and loop as attention_prefill.cu: x = query tiles of one sequence (the last first),
// y = query head, z = sequence; blocks loop over the sequence's remaining query tiles.
// A block of 4 warps owns kBlockM = 64 queries; warp w owns rows 16w .. 16w + 15, one m16 row
// block of every MMA. Key tiles of kBlockN = 64 keys are aligned to END at the last query's
// position (tile j covers [key_hi + 1 - 64 (n - j), key_hi - 64 (n - 1 - j)]), so a causal
// query tile has exactly one diagonal tile however start_pos falls. Per query tile:
//  1. Q (bf16, exact input) -> shared memory -> ldmatrix -> A fragments kept in registers
//     for the whole key loop (head_dim / 16 fragments of 4 registers);
//  2. per key tile, K and V rows are gathered through the block table into a double buffer
//     with cp.async (16-byte pieces; tile j + 1 is in flight while tile j is computed). Keys
//     outside [key_lo, key_hi] (the first key any query of the tile sees, the last query's
//     position) are not loaded but zero-filled, so block-table entries wholly before the
//     window are never read and keys no row sees hold finite zeros;
//  3. S = Q K^T on tensor cores (B fragments of K by ldmatrix), fp32 accumulation, then
//     S *= scale * log2(e) in fp32 (the inputs stay the exact bf16 q and k: no second rounding
//     of q * scale); causal / window mask only on tiles that need it (a block-uniform test);
//  4. online softmax in the log2 domain per row, exactly the steps of the CUDA-core kernel
//     (running max with fmaxf, m_use = 0 while the max is -inf, exp2f, alpha rescale). A row's
//     16 x 64 scores live in the mma accumulator layout: thread (g = lane / 4, t = lane % 4)
//     holds rows g and g + 8, keys 8 nb + 2t, 8 nb + 2t + 1 of each n8 block nb, so a row's
//     max is reduced over the 4 lanes of a quad (2 shuffles); the row sum l stays a
//     per-thread partial until the end;
//  5. O += P V on tensor cores, P straight from the S registers (the accumulator layout of two
//     n8 blocks is the A-fragment layout of one k16 chunk), V's B fragments by ldmatrix.trans;
//  6. O / l rounded once to bf16, as the CUDA-core kernel.
// Shared memory (bytes, D = head_dim): Q 64 x (D + 8) bf16 (its rows padded by 16 bytes so
// that ldmatrix's 8 row addresses hit distinct banks), K and V tiles 64 x (D + 8) bf16, two of
// each: 87,040 for D = 128 (two blocks per H100/H200 SM; one on A100), 54,272 for D = 64
// (whose Q region is widened to the 17,408 bytes of the exact path's fp32 P).
//
// Numerics. S: bf16 products are exact in fp32; the tensor core's fp32 accumulation differs
// from a sequential fmaf sum only in order and rounding of the partial sums. P: FlashAttention-2
// rounds P to bf16 for the P V product. That costs up to 2^-8 relative per weight, so an output
// of a short context, whose few weights are large, moves by up to ~2^-9 * max|v| (a few times
// 2^-12 * max|v| in practice): more than the test's band allows, whose 2^-8 * |ref| part is
// already spent on the output's own bf16 rounding. Here P is split instead: P_hi = bf16(p),
// P_lo = bf16(p - P_hi) (the difference is exact in fp32), and O += P_hi V + P_lo V (two MMAs
// sharing one B fragment), so each weight is represented to 2^-16 relative and the CUDA-core
// kernel's tolerance holds unchanged, for 1.5x the tensor work of a bf16-P kernel (S: 1 part,
// P V: 2). l is summed from the fp32 p, which P_hi + P_lo equal to 2^-16.
//
// NaN/inf exactly as the contract says (and as the CUDA-core kernel does):
//  - a NaN/inf in q or k reaches only the S entries of its row / its key (one output element
//    of an MMA depends on one row of A and one column of B); masked entries are overwritten
//    with -inf after S is computed, so a NaN key a row does not see never touches it, and a
//    NaN score a row sees makes its p NaN, hence l and the whole row NaN (fmaxf ignores NaN in
//    the max, as the CUDA-core kernel's does);
//  - V: a tensor-core P V multiplies every (row, key) pair of the tile, and 0 * NaN = NaN, 0 *
//    inf = NaN; also P_lo may be 0 or of the other sign where P_hi is not, so even a key a row
//    sees would turn +inf into NaN. Therefore every V tile is scanned once it is in shared
//    memory (each thread 16-byte pieces, one __syncthreads_or for the block); a tile holding a
//    non-finite element takes the exact path instead: each warp writes its fp32 P to shared
//    memory (the Q region, no longer read by then) and accumulates p * v with fmaf on CUDA
//    cores, skipping the (row, key) pairs the row does not see, like the CUDA-core kernel.
//    Keys outside [key_lo, key_hi] are zeros, so they need no such care. V without inf/NaN (the
//    normal case) never takes this path; on a partial tile a masked pair then adds p * v =
//    0 * finite = 0, exactly nothing.
//  - device-side descriptor checks, bad sequences' NaN rows, rows outside `tokens` skipped: as
//    attention_prefill.cu (same helpers from attention_common.cuh).
//
// Expected speed (unmeasured when written; no GPU was available): 2048-token causal prompt,
// 32 query heads, head_dim 128, one H200 (132 SMs). Useful work 4 * 128 * 32 * 2048 * 2049 / 2
// = 34.4 GFLOP per layer. mma.sync bf16 peaks near 2/3 of Hopper's wgmma rate (~650 of ~990
// TFLOP/s); this kernel issues 1.5x the useful MMAs (the split P) and one ldmatrix.x4 per two
// MMAs of the S part, with 8 warps per SM, a 2-stage cp.async pipeline, two block barriers per
// key tile and the softmax on CUDA cores between the MMAs. Expected 120-220 TFLOP/s of useful
// work (0.16-0.29 ms per layer), against ~15-25 TFLOP/s for the CUDA-core kernel (fp32 FMA peak
// 67 TFLOP/s, half of its issue slots spent on shared-memory loads): ~6-10x. At 120 TFLOP/s and
// ~700 TFLOP/s for the projections, attention adds ~15% to a 2048-token prefill step (vs
// ~120% on CUDA cores). Known headroom if needed: P in plain bf16 (2/3 of the MMAs, looser
// tolerance), query heads of one KV head sharing K/V tiles, a 3-stage pipeline, wgmma.
// Tested by tests/gpu/cuda_attention_test.cc and cuda_attention_tc_test.cc (every prefill
// case through both kernels) against kernels::ref::PagedAttention.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_utils.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "attention_prefill_tc.cu needs sm_80 or later (mma.sync bf16, ldmatrix, cp.async)"
#endif

namespace tpserve::kernels::cuda::internal {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockM = 16 * kWarps;  // queries per tile: one m16 row block per warp
constexpr int kBlockN = 64;           // keys per K/V tile
constexpr int kNBlocks = kBlockN / 8;   // n8 blocks of S per key tile
constexpr int kKChunks = kBlockN / 16;  // k16 chunks of P V per key tile
constexpr unsigned kFullMask = 0xffffffffu;

using TcArgs = AttentionArgs;

// Shared-memory layout for head dimension D, in bytes: [Q or P | K0 | K1 | V0 | V1].
template <int D>
struct TcSmem {
  static constexpr int kRow = D + 8;          // bf16 per Q/K/V row (16 bytes of padding)
  static constexpr int kPRow = kBlockN + 4;   // floats per row of P on the exact path
  static constexpr int kTileBytes = kBlockN * kRow * 2;
  static constexpr int kQBytes = kBlockM * kRow * 2;
  static constexpr int kPBytes = kBlockM * kPRow * 4;
  static constexpr int kQPBytes = kQBytes > kPBytes ? kQBytes : kPBytes;
  static constexpr size_t kBytes = static_cast<size_t>(kQPBytes) + 4 * kTileBytes;
  static_assert(kRow % 8 == 0 && kPRow % 4 == 0 && kQPBytes % 16 == 0 && kTileBytes % 16 == 0,
                "16-byte aligned rows and regions (cp.async, ldmatrix, uint4 accesses)");
  static_assert((kRow * 2 / 16) % 2 == 1, "an odd number of 16-byte units per row: the 8 rows "
                                          "of an ldmatrix phase fall on distinct banks");
};

// ------------------------------------ PTX wrappers ------------------------------------------

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous (L2 only); src 16-byte aligned.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::CpAsync16(dst, src);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void CpAsyncCommit() {
#ifndef TPSERVE_CUDA_EMULATION  // the emulator's copies land at the wait
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until every cp.async group this thread committed has landed (its own copies only; a
// barrier afterwards makes all threads' copies visible to the block).
__device__ __forceinline__ void CpAsyncWaitAll() {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::CpAsyncWaitAll();
#else
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

// Four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8 and receives in
// r[i] matrix i's elements (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1), lower column in the
// lower half. With .trans it receives (rows 2 (l % 4), 2 (l % 4) + 1, column l / 4) instead.
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::LdMatrixX4(r, addr, /*trans=*/false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::LdMatrixX4(r, addr, /*trans=*/true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}

// d += A B for one 16x8x16 block. With g = lane / 4, t = lane % 4:
//   a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
//   a[3] = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g];
//   d[0], d[1] = D[g][2t, 2t+1]; d[2], d[3] = D[g+8][2t, 2t+1]
// (pairs in one register: the lower index in the lower 16 bits).
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
#ifdef TPSERVE_CUDA_EMULATION
  ::tpserve::cuda_emulator::MmaM16N8K16Bf16(d, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// bf16x2 of (lo, hi), each rounded to nearest even: lo in the lower 16 bits. (cvt puts its
// first source in the upper half.)
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
#ifdef TPSERVE_CUDA_EMULATION
  return static_cast<uint32_t>(F32ToBf16(lo)) | static_cast<uint32_t>(F32ToBf16(hi)) << 16;
#else
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

// p = (x, y) as P_hi + P_lo: hi = bf16x2(x, y), lo = bf16x2 of the exact fp32 remainders.
__device__ __forceinline__ void SplitBf16x2(float x, float y, uint32_t* hi, uint32_t* lo) {
  *hi = PackBf16x2(x, y);
  const float x_hi = __uint_as_float(*hi << 16), y_hi = __uint_as_float(*hi & 0xffff0000u);
  *lo = PackBf16x2(x - x_hi, y - y_hi);
}

// ------------------------------------ helpers -----------------------------------------------

// Whether the query at position `pos` sees key position `key` (negative keys are the padding
// of a first tile that starts before position 0).
__device__ __forceinline__ bool KeyVisible(int key, int pos, int64_t window) {
  return key >= 0 && key <= pos && (window <= 0 || static_cast<int64_t>(key) > pos - window);
}

// Whether either bf16 of a pair is inf or NaN (all exponent bits set).
__device__ __forceinline__ bool Bf16PairNonFinite(uint32_t w) {
  return (w & 0x7f80u) == 0x7f80u || (w & 0x7f800000u) == 0x7f800000u;
}

// Loads the query tile (rows [row0, row0 + rows) of the sequence, head h) into q_s as bf16;
// rows past `rows` are zeros. 16-byte loads when q's rows allow them, else 2-byte loads.
template <int D>
__device__ __forceinline__ void LoadQTile(const TcArgs& a, const SeqView& seq, int h, int row0,
                                          int rows, uint16_t* q_s) {
  using S = TcSmem<D>;
  const int tid = static_cast<int>(threadIdx.x);
  const uint16_t* q0 = a.q + (seq.token_begin + row0) * a.q_token_stride + h * D;
  const bool vec = reinterpret_cast<uintptr_t>(a.q) % 16 == 0 && a.q_token_stride % 8 == 0;
  if (vec) {
    constexpr int kParts = D / 8;
    for (int piece = tid; piece < kBlockM * kParts; piece += kThreads) {
      const int r = piece / kParts, part = piece % kParts;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (r < rows) v = *reinterpret_cast<const uint4*>(q0 + r * a.q_token_stride + part * 8);
      *reinterpret_cast<uint4*>(q_s + r * S::kRow + part * 8) = v;
    }
  } else {
    for (int e = tid; e < kBlockM * D; e += kThreads) {
      const int r = e / D, d = e % D;
      q_s[r * S::kRow + d] = r < rows ? q0[r * a.q_token_stride + d] : uint16_t{0};
    }
  }
}

// Starts the copy of key tile [k0, k0 + kBlockN) into k_s / v_s: keys in [key_lo, key_hi] by
// cp.async through the block table (whose entries for them were checked), the others as
// zeros (plain stores). The caller commits the group.
template <int D>
__device__ __forceinline__ void LoadKvTile(const TcArgs& a, const int32_t* table,
                                           int64_t kv_head, int k0, int key_lo, int key_hi,
                                           uint16_t* k_s, uint16_t* v_s) {
  using S = TcSmem<D>;
  constexpr int kParts = D / 8;                 // 16-byte pieces per key row
  constexpr int kKeyStep = kThreads / kParts;   // keys per pass of the block
  static_assert(kThreads % kParts == 0 && kBlockN % kKeyStep == 0, "whole passes");
  const int tid = static_cast<int>(threadIdx.x);
  const int part = tid % kParts;
  const int block_size = static_cast<int>(a.block_size);  // 32-bit division below
#pragma unroll
  for (int i = 0; i < kBlockN / kKeyStep; ++i) {
    const int kk = tid / kParts + i * kKeyStep;
    const int key = k0 + kk;
    const int e = kk * S::kRow + part * 8;
    if (key >= key_lo && key <= key_hi) {
      const int64_t block = table[key / block_size];
      const int64_t slot = block * block_size + key % block_size;
      const int64_t off = (slot * a.kv_heads + kv_head) * D + part * 8;
      CpAsync16(SmemAddr(k_s + e), a.cache_k + off);
      CpAsync16(SmemAddr(v_s + e), a.cache_v + off);
    } else {
      *reinterpret_cast<uint4*>(k_s + e) = make_uint4(0u, 0u, 0u, 0u);
      *reinterpret_cast<uint4*>(v_s + e) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// Whether this thread's share of the V tile holds an inf or NaN (the block ORs the answers).
template <int D>
__device__ __forceinline__ bool VTileNonFinite(const uint16_t* v_s) {
  using S = TcSmem<D>;
  constexpr int kParts = D / 8;
  static_assert(kBlockN * kParts % kThreads == 0, "whole pieces per thread");
  bool bad = false;
#pragma unroll
  for (int i = 0; i < kBlockN * kParts / kThreads; ++i) {
    const int piece = static_cast<int>(threadIdx.x) + i * kThreads;
    const uint4 w =
        *reinterpret_cast<const uint4*>(v_s + (piece / kParts) * S::kRow + (piece % kParts) * 8);
    bad = bad || Bf16PairNonFinite(w.x) || Bf16PairNonFinite(w.y) || Bf16PairNonFinite(w.z) ||
          Bf16PairNonFinite(w.w);
  }
  return bad;
}

// The exact P V of one warp for a key tile whose V holds an inf or NaN: p * v with fmaf on
// CUDA cores over the pairs (row, key) the row sees, nothing for the others (the CUDA-core
// kernel's AccumulatePV). s holds this thread's fp32 p (accumulator layout); p_w is the warp's
// 16 rows of P in shared memory (only this warp touches them); o is the accumulator layout of
// O (o[db] = rows g, g + 8 x columns 8 db + 2t, 8 db + 2t + 1).
template <int D>
__device__ __forceinline__ void AccumulatePVExact(const float (&s)[kNBlocks][4], float* p_w,
                                                  const uint16_t* v_s, int k0, int pos0,
                                                  int pos1, int64_t window, int g, int t,
                                                  float (&o)[D / 8][4]) {
  using S = TcSmem<D>;
  __syncwarp();
#pragma unroll
  for (int nb = 0; nb < kNBlocks; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      p_w[(g + 8 * (e / 2)) * S::kPRow + 8 * nb + 2 * t + e % 2] = s[nb][e];
    }
  }
  __syncwarp();
#pragma unroll 1
  for (int kk = 0; kk < kBlockN; ++kk) {
    const bool see0 = KeyVisible(k0 + kk, pos0, window);
    const bool see1 = KeyVisible(k0 + kk, pos1, window);
    if (!see0 && !see1) continue;
    const float p0 = p_w[g * S::kPRow + kk], p1 = p_w[(g + 8) * S::kPRow + kk];
    const uint32_t* v_row = reinterpret_cast<const uint32_t*>(v_s + kk * S::kRow + 2 * t);
#pragma unroll
    for (int db = 0; db < D / 8; ++db) {
      const uint32_t v2 = v_row[4 * db];  // elements 8 db + 2t and 8 db + 2t + 1
      const float v_even = __uint_as_float(v2 << 16), v_odd = __uint_as_float(v2 & 0xffff0000u);
      if (see0) {
        o[db][0] = fmaf(p0, v_even, o[db][0]);
        o[db][1] = fmaf(p0, v_odd, o[db][1]);
      }
      if (see1) {
        o[db][2] = fmaf(p1, v_even, o[db][2]);
        o[db][3] = fmaf(p1, v_odd, o[db][3]);
      }
    }
  }
}

// One query tile (rows [row0, row0 + rows) of sequence `seq`, query head h).
template <int D>
__device__ void PrefillTileTc(const TcArgs& a, const SeqView& seq, int h, int row0, int rows,
                              uint8_t* smem) {
  using S = TcSmem<D>;
  constexpr int kDChunks = D / 16;  // k16 chunks of Q K^T
  constexpr int kDBlocks = D / 8;   // n8 blocks of O
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem);
  float* p_s = reinterpret_cast<float*>(smem);  // the same region, once Q is in registers
  auto k_buf = [smem](int b) {
    return reinterpret_cast<uint16_t*>(smem + S::kQPBytes + b * S::kTileBytes);
  };
  auto v_buf = [smem](int b) {
    return reinterpret_cast<uint16_t*>(smem + S::kQPBytes + (2 + b) * S::kTileBytes);
  };

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t kv_head = h / a.group;
  const int p0 = seq.start_pos + row0;  // position of the tile's first query
  const int p1 = p0 + rows - 1;         // and of its last
  const int key_lo = FirstVisibleKey(p0, a.window);  // the first key any row sees
  const int key_hi = p1;                             // the last
  const int num_kv_tiles = (key_hi - key_lo + kBlockN) / kBlockN;
  // Key tile j starts here; the last one ends at key_hi, the first may start before key_lo.
  auto tile_start = [=](int j) { return key_hi + 1 - (num_kv_tiles - j) * kBlockN; };

  __syncthreads();  // the previous query tile's readers of shared memory are done
  LoadQTile<D>(a, seq, h, row0, rows, q_s);
  LoadKvTile<D>(a, seq.block_table, kv_head, tile_start(0), key_lo, key_hi, k_buf(0), v_buf(0));
  CpAsyncCommit();
  __syncthreads();  // q_s is written

  // This thread's two rows (16 warp + g and + 8); rows past the tile's end pretend to be its
  // last query (their results are never written), so every row sees at least one key.
  const int pos0 = min(p0 + 16 * warp + g, p1);
  const int pos1 = min(p0 + 16 * warp + g + 8, p1);
  const bool warp_active = 16 * warp < rows;  // some row of this warp is real

  // Q fragments: matrices (rows 0-7 | 8-15) x (columns 16 kc + 0-7 | + 8-15) of the warp's rows.
  uint32_t qf[kDChunks][4];
#pragma unroll
  for (int kc = 0; kc < kDChunks; ++kc) {
    LdMatrixX4(qf[kc], SmemAddr(q_s + (16 * warp + lane % 16) * S::kRow + 16 * kc +
                                8 * (lane / 16)));
  }

  float o[kDBlocks][4];
#pragma unroll
  for (int db = 0; db < kDBlocks; ++db) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[db][e] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g, g + 8 (log2 domain)
  float l[2] = {0.0f, 0.0f};            // this thread's share of their running sums

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int buf = j & 1;
    const int k0 = tile_start(j);
    CpAsyncWaitAll();
    // Tile j is visible to every thread; every thread is done with tile j - 1 (whose buffers
    // the next load reuses) and with Q in shared memory (whose region the exact path reuses).
    __syncthreads();
    if (j + 1 < num_kv_tiles) {
      LoadKvTile<D>(a, seq.block_table, kv_head, tile_start(j + 1), key_lo, key_hi,
                    k_buf(buf ^ 1), v_buf(buf ^ 1));
      CpAsyncCommit();
    }
    const bool v_nonfinite = __syncthreads_or(VTileNonFinite<D>(v_buf(buf)) ? 1 : 0) != 0;
    if (!warp_active) continue;  // warp-uniform; no barrier below

    // ---- S = Q K^T: B fragments of n8 blocks 2np, 2np + 1 from matrices (keys 16 np + 0-7 |
    // + 8-15) x (columns 16 kc + 0-7 | + 8-15) ----
    const uint16_t* k_s = k_buf(buf);
    float s[kNBlocks][4];
#pragma unroll
    for (int nb = 0; nb < kNBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] = 0.0f;
    }
#pragma unroll
    for (int kc = 0; kc < kDChunks; ++kc) {
#pragma unroll
      for (int np = 0; np < kNBlocks / 2; ++np) {
        uint32_t b[4];
        LdMatrixX4(b, SmemAddr(k_s + (16 * np + lane % 8 + 8 * (lane / 16)) * S::kRow +
                               16 * kc + 8 * ((lane / 8) % 2)));
        Mma(s[2 * np], qf[kc], b[0], b[1]);
        Mma(s[2 * np + 1], qf[kc], b[2], b[3]);
      }
    }

    // ---- scale into the log2 domain; mask only tiles with a (row, key) pair out of sight ----
    const bool full = k0 >= 0 && k0 + kBlockN - 1 <= p0 &&
                      (a.window <= 0 || static_cast<int64_t>(k0) > p1 - a.window);
#pragma unroll
    for (int nb = 0; nb < kNBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nb][e] *= a.log2_scale;
        if (!full && !KeyVisible(k0 + 8 * nb + 2 * t + e % 2, e < 2 ? pos0 : pos1, a.window)) {
          s[nb][e] = -INFINITY;
        }
      }
    }

    // ---- online softmax per row (half 0: row g, elements 0-1; half 1: row g + 8, 2-3) ----
    float alpha[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < kNBlocks; ++nb) {
        mx = fmaxf(mx, fmaxf(s[nb][2 * half], s[nb][2 * half + 1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));  // the quad of lanes sharing the row
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float m_new = fmaxf(m[half], mx);
      // A row that has seen no key yet keeps m = -inf; exp2 against 0 then gives zeros
      // instead of NaN (-inf - -inf).
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      alpha[half] = exp2f(m[half] - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int nb = 0; nb < kNBlocks; ++nb) {
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[nb][e] = exp2f(s[nb][e] - m_use);
          sum += s[nb][e];
        }
      }
      l[half] = l[half] * alpha[half] + sum;
      m[half] = m_new;
    }
#pragma unroll
    for (int db = 0; db < kDBlocks; ++db) {
      o[db][0] *= alpha[0];
      o[db][1] *= alpha[0];
      o[db][2] *= alpha[1];
      o[db][3] *= alpha[1];
    }

    // ---- O += P V ----
    const uint16_t* v_s = v_buf(buf);
    if (v_nonfinite) {
      AccumulatePVExact<D>(s, p_s + 16 * warp * S::kPRow, v_s, k0, pos0, pos1, a.window, g, t,
                           o);
      continue;
    }
#pragma unroll
    for (int kc = 0; kc < kKChunks; ++kc) {
      // A fragments of keys 16 kc .. 16 kc + 15: n8 blocks 2kc (columns 0-7) and 2kc + 1.
      uint32_t a_hi[4], a_lo[4];
      SplitBf16x2(s[2 * kc][0], s[2 * kc][1], &a_hi[0], &a_lo[0]);
      SplitBf16x2(s[2 * kc][2], s[2 * kc][3], &a_hi[1], &a_lo[1]);
      SplitBf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1], &a_hi[2], &a_lo[2]);
      SplitBf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3], &a_hi[3], &a_lo[3]);
#pragma unroll
      for (int dp = 0; dp < kDBlocks / 2; ++dp) {
        // B fragments of n8 blocks 2dp, 2dp + 1 (columns of O) from matrices (keys 16 kc +
        // 0-7 | + 8-15) x (columns 16 dp + 0-7 | + 8-15), transposed.
        uint32_t b[4];
        LdMatrixX4Trans(b, SmemAddr(v_s + (16 * kc + lane % 8 + 8 * ((lane / 8) % 2)) * S::kRow +
                                    16 * dp + 8 * (lane / 16)));
        Mma(o[2 * dp], a_hi, b[0], b[1]);
        Mma(o[2 * dp], a_lo, b[0], b[1]);
        Mma(o[2 * dp + 1], a_hi, b[2], b[3]);
        Mma(o[2 * dp + 1], a_lo, b[2], b[3]);
      }
    }
  }

  // ---- out = O / l in bf16 ----
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += __shfl_xor_sync(kFullMask, l[half], 1);
    l[half] += __shfl_xor_sync(kFullMask, l[half], 2);
  }
  if (!warp_active) return;
  const int64_t out_row = a.q_heads * D;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = 16 * warp + g + 8 * half;
    if (r >= rows) continue;
    const float inv_l = 1.0f / l[half];
    uint16_t* dst = a.out + (seq.token_begin + row0 + r) * out_row + h * D + 2 * t;
#pragma unroll
    for (int db = 0; db < kDBlocks; ++db) {
      dst[8 * db] = F32ToBf16(o[db][2 * half] * inv_l);
      dst[8 * db + 1] = F32ToBf16(o[db][2 * half + 1] * inv_l);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) PrefillAttentionTcKernel(const TcArgs a) {
  WaitForPriorGrids();  // first: before any memory access (LaunchKernel)
  uint8_t* smem = DynamicShared<uint8_t>();

  ForEachPrefillTile<D, kBlockM>(a, [&](const SeqView& seq, int h, int row0, int rows) {
    PrefillTileTc<D>(a, seq, h, row0, rows, smem);
  });
}

template <int D>
int LaunchTc(const TcArgs& args, int64_t max_seq_tokens, int64_t num_seqs, cudaStream_t stream) {
  using S = TcSmem<D>;
  // More than 48 KB of dynamic shared memory needs an opt-in (per function, cheap: set on every
  // launch, which is also right for every device of a multi-GPU process). The carveout asks
  // for the largest shared-memory split so that two blocks fit on an SM.
  cudaError_t err = SetKernelAttribute(PrefillAttentionTcKernel<D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(S::kBytes));
  if (err == cudaSuccess) {
    err = SetKernelAttribute(PrefillAttentionTcKernel<D>,
                             cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
  }
  if (err != cudaSuccess) return static_cast<int>(err);
  LaunchKernel(PrefillAttentionTcKernel<D>,
               PrefillGrid(max_seq_tokens, kBlockM, args.q_heads, num_seqs), kThreads, S::kBytes,
               stream, args);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

// q_token_stride and max_seq_tokens resolved (non-zero), as LaunchPagedPrefillAttention.
int LaunchPagedPrefillAttentionTensorCore(const PagedAttentionParams& p, Stream stream) {
  const PagedKvCache& c = p.cache;
  const TcArgs args = AttentionArgsOf(p);
  const cudaStream_t s = ToCudaStream(stream);
  if (c.head_dim == 64) return LaunchTc<64>(args, p.max_seq_tokens, p.num_seqs, s);
  return LaunchTc<128>(args, p.max_seq_tokens, p.num_seqs, s);
}

}  // namespace tpserve::kernels::cuda::internal
