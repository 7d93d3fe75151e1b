// The CUDA emulator's fiber switch (scheduler.cc runs one fiber per CUDA thread). On x86-64 a
// hand-written switch of the callee-saved registers (no system call: glibc's swapcontext saves
// the signal mask with one, which dominated the emulator's time); elsewhere ucontext.
#pragma once

#include <cstddef>

namespace tpserve::cuda_emulator {

struct FiberContext {
  void* state = nullptr;  // x86-64: the saved stack pointer; else a ucontext_t
};

// Prepares `context` to run `entry`, which must never return, on [stack, stack + bytes).
void MakeFiberContext(FiberContext* context, void* stack, size_t bytes, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void SwitchFiberContext(FiberContext* from, const FiberContext* to);

}  // namespace tpserve::cuda_emulator
