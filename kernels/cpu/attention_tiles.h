// Prefill attention over query tiles (layer: kernels, internal to kernels/cpu): the part of
// PagedAttention (kernels/ops.h) for sequences with several new tokens this step.
//
// Per-token attention (attention.cc) takes one dot product per (key, head), each ending in a
// horizontal sum, and reads every key once per query. A tile of up to kQueryTile consecutive
// queries of one sequence shares each block of keys instead: the block's K rows are transposed
// once so that scores are FMAs along the keys, and each V row is reused by every query of the
// tile while the accumulators stay in registers. Online softmax in fp32 as elsewhere.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace tpserve::kernels::cpu {

constexpr int64_t kQueryTile = 16;     // queries per tile
constexpr int64_t kMinTileTokens = 4;  // sequences with fewer new tokens go per token

// Queries [first, first + count) of `seq`'s new tokens (count <= kQueryTile).
struct QueryTile {
  const AttentionSeq* seq;
  int64_t first;
  int64_t count;
};

// Floats of scratch one thread needs for AttendTile with these parameters.
int64_t TileScratchFloats(const AttentionParams& p);

// Computes `tile`'s rows of p.out for every query head; `scratch` holds TileScratchFloats(p)
// floats. Chooses the instruction set as the rest of kernels/cpu does.
void AttendTile(const AttentionParams& p, const QueryTile& tile, float* scratch);

}  // namespace tpserve::kernels::cpu
