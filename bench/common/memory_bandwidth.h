// Measures this machine's memory read bandwidth the way a GEMV sees it: every thread streams
// its share of a buffer much larger than the caches (layer: bench).
#pragma once

#include <cstddef>

namespace tpserve::bench {

// Median GB/s (1e9 bytes/s) over `repeats` passes of reading `bytes` with all OpenMP threads.
double MeasureReadBandwidth(size_t bytes = size_t{1} << 30, int repeats = 7);

}  // namespace tpserve::bench
