// The CUDA emulator's block scheduler (device.h): one fiber (fiber_context.h) per CUDA thread,
// run one at a time on the host thread that executes the grid; barriers and warp collectives
// switch back to the scheduler until every participant has arrived.
#include "tests/cuda_emulator/scheduler.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "tests/cuda_emulator/device.h"
#include "tests/cuda_emulator/fiber_context.h"
#include "tests/cuda_emulator/warp_matrix.h"

// The bounds of the section holding every kernel's static __shared__ arrays
// (kernel_prelude.h), from the linker; weak: a program without kernels has no such section.
extern "C" unsigned char __start_tpserve_emulated_shared[] __attribute__((weak));
extern "C" unsigned char __stop_tpserve_emulated_shared[] __attribute__((weak));

namespace tpserve::cuda_emulator {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kWarpSize = 32;

enum class Wait { kRunnable, kBarrier, kWarp, kExited };
enum class Collective { kShuffle, kSyncWarp, kLdMatrix, kMma };

const char* CollectiveName(Collective c) {
  switch (c) {
    case Collective::kShuffle: return "a shuffle";
    case Collective::kSyncWarp: return "__syncwarp";
    case Collective::kLdMatrix: return "ldmatrix";
    case Collective::kMma: return "mma";
  }
  return "?";
}

struct PendingCopy {
  void* dst;
  const void* src;
};

struct Fiber {
  FiberContext context;
  void* stack = nullptr;  // mmap'd, with a guard page below
  bool started = false;
  int tid = 0;  // linear thread index in the block
  uint3 index{};
  Wait wait = Wait::kRunnable;
  int predicate = 0;  // __syncthreads_or: in, then the block's answer
  // The warp collective this lane waits in, its operands and its results.
  Collective collective = Collective::kShuffle;
  uint32_t mask = 0;
  uint64_t in[10] = {};
  uint64_t out[4] = {};
  std::vector<PendingCopy> copies;  // cp.async not yet waited for
  bool waited_for_prior_grids = false;
};

struct Block {
  const std::function<void()>* body = nullptr;
  uint3 index{};
  dim3 block_dim, grid_dim;
  int threads = 0;
  int live = 0;
  int at_barrier = 0;
  std::vector<Fiber*> by_tid;
  std::vector<Fiber*> order;  // the run order of this block
  unsigned char* shared = nullptr;
  size_t shared_bytes = 0;
  bool programmatic = false;
};

// One grid runs at a time per process (runtime.cc's Flush serialises them); these belong to it.
FiberContext scheduler_context;
Fiber* current = nullptr;
Block* block = nullptr;
std::vector<std::unique_ptr<Fiber>> fibers;  // reused across blocks and launches
std::vector<unsigned char> shared_memory;
// The run order's seed: fixed, so that a failure repeats; TPSERVE_CUDA_EMULATOR_SEED picks
// another order (a barrier bug that one order hides, another may show).
std::mt19937 order_rng([] {
  const char* env = std::getenv("TPSERVE_CUDA_EMULATOR_SEED");
  return env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 20261201u;
}());

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr,
               "CUDA emulator: %s (block %u,%u,%u thread %u,%u,%u)\n", what,
               block ? block->index.x : 0, block ? block->index.y : 0,
               block ? block->index.z : 0, current ? current->index.x : 0,
               current ? current->index.y : 0, current ? current->index.z : 0);
  std::abort();
}

Fiber& Current() {
  if (current == nullptr) Fail("a device function was called outside a kernel");
  return *current;
}

void Yield() {
  Fiber& f = Current();
  SwitchFiberContext(&f.context, &scheduler_context);
}

void FinishCopies(Fiber& f) {
  for (const PendingCopy& c : f.copies) std::memcpy(c.dst, c.src, 16);
  f.copies.clear();
}

void ReleaseBarrier() {
  int any = 0;
  for (Fiber* f : block->by_tid) {
    if (f->wait == Wait::kBarrier && f->predicate != 0) any = 1;
  }
  for (Fiber* f : block->by_tid) {
    if (f->wait != Wait::kBarrier) continue;
    f->predicate = any;
    f->wait = Wait::kRunnable;
  }
  block->at_barrier = 0;
}

void FiberMain() {
  for (;;) {
    Fiber& f = Current();
    (*block->body)();
    if (block->programmatic && !f.waited_for_prior_grids) {
      Fail("a kernel under a programmatic dependent launch never called WaitForPriorGrids");
    }
    FinishCopies(f);
    f.wait = Wait::kExited;
    --block->live;
    if (block->at_barrier > 0 && block->at_barrier == block->live) ReleaseBarrier();
    Yield();  // resumed for the next block this fiber runs
  }
}

Fiber* NewFiber() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) Fail("cannot map a fiber stack");
  if (mprotect(mem, page, PROT_NONE) != 0) Fail("cannot protect a fiber stack's guard page");
  auto f = std::make_unique<Fiber>();
  f->stack = static_cast<char*>(mem) + page;
  fibers.push_back(std::move(f));
  return fibers.back().get();
}

void StartFiber(Fiber& f) {
  MakeFiberContext(&f.context, f.stack, kStackBytes, FiberMain);  // FiberMain never returns
  f.started = true;
}

[[noreturn]] void Deadlock() {
  std::fprintf(stderr, "CUDA emulator: deadlock in block %u,%u,%u; threads waiting:\n",
               block->index.x, block->index.y, block->index.z);
  for (Fiber* f : block->by_tid) {
    if (f->wait == Wait::kExited) continue;
    std::fprintf(stderr, "  thread %d: %s\n", f->tid,
                 f->wait == Wait::kBarrier ? "__syncthreads" : CollectiveName(f->collective));
  }
  current = nullptr;
  Fail("no thread can proceed (a barrier or warp collective not reached by all)");
}

void RunBlock(Block& b) {
  block = &b;
  while (b.live > 0) {
    bool ran = false;
    for (Fiber* f : b.order) {
      if (f->wait != Wait::kRunnable) continue;
      current = f;
      if (!f->started) StartFiber(*f);
      SwitchFiberContext(&scheduler_context, &f->context);
      ran = true;
    }
    current = nullptr;
    if (!ran) Deadlock();
  }
  block = nullptr;
}

// ------------------------------- warp collectives -------------------------------

int Lane(const Fiber& f) { return f.tid % kWarpSize; }

void CompleteShuffle(Fiber* const lanes[kWarpSize], uint32_t mask) {
  for (int l = 0; l < kWarpSize; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    Fiber& f = *lanes[l];
    const auto kind = static_cast<ShuffleKind>(f.in[1]);
    const int arg = static_cast<int>(f.in[2]);
    const int width = static_cast<int>(f.in[3]);
    if (width != kWarpSize) Fail("shuffles of width other than 32 are not emulated");
    int src = l;
    switch (kind) {
      case ShuffleKind::kXor: src = l ^ arg; break;
      case ShuffleKind::kUp: src = l - arg >= 0 ? l - arg : l; break;
    }
    if (src < 0 || src >= kWarpSize || ((mask >> src) & 1u) == 0) {
      Fail("a shuffle reads a lane outside its mask");
    }
    f.out[0] = lanes[src]->in[0];
  }
}

void CompleteLdMatrix(Fiber* const lanes[kWarpSize]) {
  const void* rows[kWarpSize];
  const bool trans = lanes[0]->in[1] != 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if ((lanes[l]->in[1] != 0) != trans) Fail("ldmatrix lanes disagree on .trans");
    const auto address = static_cast<uint32_t>(lanes[l]->in[0]);
    if (address % 16 != 0) Fail("ldmatrix row address not 16-byte aligned");
    rows[l] = SharedPointer(address, 16);
  }
  uint32_t out[kWarpSize][4];
  LdMatrixX4(rows, trans, out);
  for (int l = 0; l < kWarpSize; ++l) {
    for (int i = 0; i < 4; ++i) lanes[l]->out[i] = out[l][i];
  }
}

void CompleteMma(Fiber* const lanes[kWarpSize]) {
  uint32_t a[kWarpSize][4], b[kWarpSize][2];
  float c[kWarpSize][4], d[kWarpSize][4];
  for (int l = 0; l < kWarpSize; ++l) {
    for (int i = 0; i < 4; ++i) a[l][i] = static_cast<uint32_t>(lanes[l]->in[i]);
    for (int i = 0; i < 2; ++i) b[l][i] = static_cast<uint32_t>(lanes[l]->in[4 + i]);
    for (int i = 0; i < 4; ++i) c[l][i] = std::bit_cast<float>(static_cast<uint32_t>(lanes[l]->in[6 + i]));
  }
  MmaM16N8K16Bf16(a, b, c, d);
  for (int l = 0; l < kWarpSize; ++l) {
    for (int i = 0; i < 4; ++i) lanes[l]->out[i] = std::bit_cast<uint32_t>(d[l][i]);
  }
}

// The caller has filled its operands; returns once every lane of `mask` has arrived and the
// collective's results are in each lane's `out`.
void ArriveAtWarpCollective(Collective kind, uint32_t mask) {
  Fiber& self = Current();
  const int lane = Lane(self);
  if (((mask >> lane) & 1u) == 0) Fail("a warp collective whose mask leaves out the caller");
  if ((kind == Collective::kLdMatrix || kind == Collective::kMma) && mask != 0xffffffffu) {
    Fail("ldmatrix and mma need the whole warp");
  }
  self.collective = kind;
  self.mask = mask;
  self.wait = Wait::kWarp;
  const int base = self.tid - lane;
  Fiber* lanes[kWarpSize] = {};
  for (int l = 0; l < kWarpSize; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    if (base + l >= block->threads) Fail("a warp collective's mask names a lane past the block");
    Fiber* other = block->by_tid[base + l];
    if (other->wait == Wait::kExited) Fail("a warp collective's mask names a lane that exited");
    if (other->wait != Wait::kWarp) {
      Yield();  // not all here yet; the last lane to arrive completes it for everyone
      return;
    }
    if (other->collective != kind || other->mask != mask) {
      Fail("the lanes of a warp collective disagree on the operation or the mask");
    }
    lanes[l] = other;
  }
  switch (kind) {
    case Collective::kShuffle: CompleteShuffle(lanes, mask); break;
    case Collective::kSyncWarp: break;
    case Collective::kLdMatrix: CompleteLdMatrix(lanes); break;
    case Collective::kMma: CompleteMma(lanes); break;
  }
  for (Fiber* f : lanes) {
    if (f != nullptr) f->wait = Wait::kRunnable;
  }
}

}  // namespace

// ----------------------------------- device.h -----------------------------------

uint3 ThreadIdx() { return Current().index; }
uint3 BlockIdx() {
  Current();
  return block->index;
}
dim3 BlockDim() {
  Current();
  return block->block_dim;
}
dim3 GridDim() {
  Current();
  return block->grid_dim;
}

void SyncThreads() { (void)SyncThreadsOr(0); }

int SyncThreadsOr(int predicate) {
  Fiber& f = Current();
  f.predicate = predicate;
  f.wait = Wait::kBarrier;
  if (++block->at_barrier == block->live) {
    ReleaseBarrier();
  } else {
    Yield();
  }
  return f.predicate;
}

void SyncWarp(uint32_t mask) { ArriveAtWarpCollective(Collective::kSyncWarp, mask); }

uint64_t Shuffle(ShuffleKind kind, uint32_t mask, uint64_t bits, int lane_arg, int width) {
  Fiber& f = Current();
  f.in[0] = bits;
  f.in[1] = static_cast<uint64_t>(kind);
  f.in[2] = static_cast<uint64_t>(lane_arg);
  f.in[3] = static_cast<uint64_t>(width);
  ArriveAtWarpCollective(Collective::kShuffle, mask);
  return f.out[0];
}

void* DynamicShared() {
  Current();
  return block->shared;
}

uint32_t SharedAddress(const void* p) {
  Current();
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < block->shared || c >= block->shared + block->shared_bytes) {
    Fail("a shared-window address of memory outside the dynamic shared memory");
  }
  return static_cast<uint32_t>(c - block->shared);
}

void* SharedPointer(uint32_t address, size_t bytes) {
  Current();
  if (static_cast<size_t>(address) + bytes > block->shared_bytes) {
    Fail("a shared-memory access past the launch's dynamic shared memory");
  }
  return block->shared + address;
}

void CpAsync16(uint32_t shared_dst, const void* global_src) {
  Fiber& f = Current();
  if (shared_dst % 16 != 0 || reinterpret_cast<uintptr_t>(global_src) % 16 != 0) {
    Fail("cp.async of 16 bytes from or to an address not 16-byte aligned");
  }
  f.copies.push_back({SharedPointer(shared_dst, 16), global_src});
}

void CpAsyncWaitAll() { FinishCopies(Current()); }

void WaitForPriorGrids() { Current().waited_for_prior_grids = true; }

void LdMatrixX4(uint32_t (&r)[4], uint32_t shared_address, bool trans) {
  Fiber& f = Current();
  f.in[0] = shared_address;
  f.in[1] = trans ? 1 : 0;
  ArriveAtWarpCollective(Collective::kLdMatrix, 0xffffffffu);
  for (int i = 0; i < 4; ++i) r[i] = static_cast<uint32_t>(f.out[i]);
}

void MmaM16N8K16Bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Fiber& f = Current();
  for (int i = 0; i < 4; ++i) f.in[i] = a[i];
  f.in[4] = b0;
  f.in[5] = b1;
  for (int i = 0; i < 4; ++i) f.in[6 + i] = std::bit_cast<uint32_t>(d[i]);
  ArriveAtWarpCollective(Collective::kMma, 0xffffffffu);
  for (int i = 0; i < 4; ++i) d[i] = std::bit_cast<float>(static_cast<uint32_t>(f.out[i]));
}

// --------------------------------- scheduler.h ----------------------------------

void RunGrid(const LaunchShape& shape, const std::function<void()>& body) {
  if (block != nullptr) Fail("a kernel launched from inside a kernel");
  const int threads = static_cast<int>(shape.block.x * shape.block.y * shape.block.z);
  while (static_cast<int>(fibers.size()) < threads) NewFiber();
  shared_memory.assign(std::max<size_t>(shape.shared_bytes, 1), 0xff);
  Block b;
  b.body = &body;
  b.block_dim = shape.block;
  b.grid_dim = shape.grid;
  b.threads = threads;
  b.shared = shared_memory.data();
  b.shared_bytes = shape.shared_bytes;
  b.programmatic = shape.programmatic;
  for (int t = 0; t < threads; ++t) {
    Fiber* f = fibers[t].get();
    f->tid = t;
    f->index = {static_cast<unsigned>(t) % shape.block.x,
                static_cast<unsigned>(t) / shape.block.x % shape.block.y,
                static_cast<unsigned>(t) / (shape.block.x * shape.block.y)};
    b.by_tid.push_back(f);
  }
  b.order = b.by_tid;
  // Blocks in a shuffled order too: a kernel that relies on an order of its blocks fails here.
  const dim3 g = shape.grid;
  std::vector<uint64_t> blocks(uint64_t{g.x} * g.y * g.z);
  for (uint64_t i = 0; i < blocks.size(); ++i) blocks[i] = i;
  std::shuffle(blocks.begin(), blocks.end(), order_rng);
  for (const uint64_t i : blocks) {
    b.index = {static_cast<unsigned>(i % g.x), static_cast<unsigned>(i / g.x % g.y),
               static_cast<unsigned>(i / (uint64_t{g.x} * g.y))};
    b.live = threads;
    b.at_barrier = 0;
    for (Fiber* f : b.by_tid) {
      f->wait = Wait::kRunnable;
      f->copies.clear();
      f->waited_for_prior_grids = false;
    }
    std::shuffle(b.order.begin(), b.order.end(), order_rng);
    if (shape.shared_bytes > 0) std::memset(b.shared, 0xff, shape.shared_bytes);
    if (__start_tpserve_emulated_shared != nullptr) {
      std::memset(__start_tpserve_emulated_shared, 0xff,
                  __stop_tpserve_emulated_shared - __start_tpserve_emulated_shared);
    }
    RunBlock(b);
  }
}

}  // namespace tpserve::cuda_emulator
