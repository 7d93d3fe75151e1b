// The CUDA emulator's fiber switch (fiber_context.h).
#include "tests/cuda_emulator/fiber_context.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)

// System V x86-64: pushes the callee-saved registers and the SSE/x87 control words on the
// running stack, stores the stack pointer in *from, loads `to` and pops the same frame there.
extern "C" void tpserve_emulator_switch(void** from, void* to);
asm(R"(
  .text
  .globl tpserve_emulator_switch
  .type tpserve_emulator_switch, @function
tpserve_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tpserve_emulator_switch, .-tpserve_emulator_switch
)");

namespace tpserve::cuda_emulator {

void MakeFiberContext(FiberContext* context, void* stack, size_t bytes, void (*entry)()) {
  // From the top: a zero where entry's return address would be (so that entry starts with
  // the stack alignment of a call), entry itself for the switch's ret, six zeroed registers,
  // and the default MXCSR and x87 control word.
  auto top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;
  *--slot = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--slot = 0;
  const uint32_t control[2] = {0x1f80u, 0x037fu};
  std::memcpy(--slot, control, sizeof control);
  context->state = slot;
}

void SwitchFiberContext(FiberContext* from, const FiberContext* to) {
  tpserve_emulator_switch(&from->state, to->state);
}

}  // namespace tpserve::cuda_emulator

#else  // not x86-64: ucontext

#include <ucontext.h>

namespace tpserve::cuda_emulator {
namespace {
ucontext_t* Ucontext(FiberContext* c) {
  if (c->state == nullptr) c->state = new ucontext_t;  // lives as long as the process
  return static_cast<ucontext_t*>(c->state);
}
}  // namespace

void MakeFiberContext(FiberContext* context, void* stack, size_t bytes, void (*entry)()) {
  ucontext_t* u = Ucontext(context);
  if (getcontext(u) != 0) {
    std::fprintf(stderr, "CUDA emulator: getcontext failed\n");
    std::abort();
  }
  u->uc_stack.ss_sp = stack;
  u->uc_stack.ss_size = bytes;
  u->uc_link = nullptr;
  makecontext(u, entry, 0);
}

void SwitchFiberContext(FiberContext* from, const FiberContext* to) {
  if (swapcontext(Ucontext(from), static_cast<ucontext_t*>(to->state)) != 0) {
    std::fprintf(stderr, "CUDA emulator: swapcontext failed\n");
    std::abort();
  }
}

}  // namespace tpserve::cuda_emulator

#endif
