// The CUDA emulator's grid runner (scheduler.cc), called by the runtime (runtime.cc) when a
// kernel's turn on its stream comes.
#pragma once

#include <functional>

#include "tests/cuda_emulator/device.h"

namespace tpserve::cuda_emulator {

// Runs every block of the grid, one after another, each thread of a block running `body`.
// The caller holds the runtime's execution lock; the shape was checked at launch.
void RunGrid(const LaunchShape& shape, const std::function<void()>& body);

}  // namespace tpserve::cuda_emulator
