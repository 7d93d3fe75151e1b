// Llama-family models stored as GGUF (llama.cpp) files (layer: model; formats only, no compute;
// plain functions, thread-safe). Two things a GGUF file does differently from a Hugging Face
// folder: hyper-parameters live in metadata ("llama.block_count", ...) instead of config.json,
// and llama.cpp's converter permutes the rows of attn_q / attn_k per head for its RoPE, which
// rotates adjacent pairs (2i, 2i + 1); ours (like HF) rotates (i, i + head_dim / 2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/gguf.h"

namespace tpserve {

// Reads the hyper-parameters of a `general.architecture = "llama"` file. Keys (llama.cpp's):
// llama.block_count, .context_length, .embedding_length, .feed_forward_length,
// .attention.head_count, .attention.layer_norm_rms_epsilon (required);
// .attention.head_count_kv (default head_count), .attention.key_length (default
// embedding_length / head_count), .rope.freq_base (default 10000), .vocab_size (default: rows
// of token_embd.weight), .attention.sliding_window (optional: makes it a Mistral model with
// that window), tokenizer.ggml.bos_token_id / eos_token_id (optional).
// tie_word_embeddings is true when the file has no output.weight. torch_dtype is F32: the
// worker dequantises every weight to F32 at load.
// Errors are InvalidArgument naming `source` and the key: another architecture, a missing key,
// a value of the wrong type or out of range, sizes that disagree, RoPE scaling or a partial
// rotary dimension (not supported).
[[nodiscard]] absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file,
                                                              std::string_view source);

// How a model folder is read: nullopt when `model_dir` has a config.json (a Hugging Face
// folder, safetensors weights) or holds no *.gguf file; the path of the GGUF file when it has
// no config.json and exactly one *.gguf. InvalidArgument (listing them) for several *.gguf
// files without a config.json. A missing folder gives nullopt (the safetensors path reports it).
[[nodiscard]] absl::StatusOr<std::optional<std::string>> FindModelGguf(const std::string& model_dir);

// llama.cpp's convert_hf_to_gguf.py permutation of q/k projection rows, per head: within each
// head of `head_dim` (even) rows, HF row half * head_dim/2 + i becomes GGUF row 2 i + half.
// `in` and `out` are [num_heads * head_dim, cols] fp32 row-major and must not overlap.
void PermuteQkRowsToGguf(const float* in, int64_t num_heads, int64_t head_dim, int64_t cols,
                         float* out);
// The inverse: GGUF-ordered rows back to HF order (what the engine's RoPE expects). Because
// the permutation stays inside each head, any run of whole heads can be unpermuted alone.
void UnpermuteGgufQkRows(const float* in, int64_t num_heads, int64_t head_dim, int64_t cols,
                         float* out);

}  // namespace tpserve
