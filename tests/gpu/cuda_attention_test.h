// The attention cases of cuda_ops_test, shared by cuda_attention_test.cc (the prefill and decode
// tables, the runner and its tolerance) and cuda_attention_tc_test.cc (the tile-edge cases of
// the tensor-core prefill kernel): the case type and the runner's entry point.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_types.h"

namespace tpserve::kernels::cuda::gpu_test {

// Parameters every attention check accepts, for the host-side checks (the pointers are never
// dereferenced): 4 tokens of 2 sequences, 8 query heads over a cache of 10 blocks of 16
// tokens, 2 KV heads of 128.
PagedAttentionParams ValidAttentionParamsForChecks();

enum class AttnPoison {
  kNone,
  kNanInK,          // one K element of seq 0: rows that see it are NaN
  kNanInV,          // one V element of seq 0: (row, dim) pairs that see it are NaN
  kInfInV,          // +inf and -inf in dims 5 and 6 of one V row of seq 0: the rows that see
                    // it get +inf / -inf there (every weight is > 0), the others stay finite
  kBadBlockEntry,   // a needed block-table entry of the last sequence is out of range
  kBadDescriptor,   // extra sequences: negative start_pos (NaN rows), rows past the end
                    // (skipped) and, for decode, num_tokens = 2 (NaN row at token_begin)
};
struct SeqSpec {
  int64_t num_tokens, start_pos;
};
struct AttnCase {
  std::string name;
  int64_t head_dim, q_heads, kv_heads, block_size, window;
  std::vector<SeqSpec> seqs;
  int64_t q_extra = 0;           // extra elements per q row (the k and v of a fused qkv row)
  bool gap_rows = false;         // a row owned by no sequence after each sequence
  bool free_old_blocks = false;  // entries of blocks before every query's window are -1
  AttnPoison poison = AttnPoison::kNone;
  int64_t max_seq_tokens = 0;    // prefill: the grid hint (0 = default)
  int64_t splits = 0;            // decode: requested splits (0 = automatic)
  bool workspace = true;         // decode: pass a workspace
  int64_t min_splits = 1;        // decode: the split path the case must take (on >= 100 SMs)
  float q_range = 2.0f;          // q ~ U(-q_range, q_range): larger means peakier softmaxes
};
inline void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name; }

// The entry points a case can run through.
enum class AttnOp {
  kPrefill,            // the public PagedPrefillAttention (the tensor-core kernel)
  kPrefillSimt,        // internal::PagedPrefillAttentionSimt (attention_internal.h)
  kPrefillTensorCore,  // internal::PagedPrefillAttentionTensorCore
  kDecode,             // PagedDecodeAttention
};

// Builds the case's inputs and its reference output once, then runs each op of `ops` (all
// prefill or all decode) on fresh device buffers and checks it against the reference
// (cuda_attention_test.cc states the tolerance), its guards and its untouched inputs. When
// `ops` holds both kPrefill and kPrefillTensorCore, their outputs must also be the same bits.
void RunAttentionCase(const AttnCase& c, const std::vector<AttnOp>& ops);

}  // namespace tpserve::kernels::cuda::gpu_test
