// Model hyper-parameters read from a Hugging Face config.json (layer: model; plain data, thread-safe).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace tpserve {

// Architectures the engine runs. Both are the same decoder; Mistral adds a sliding window.
enum class Architecture { kMistral, kLlama };

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;          // num_hidden_layers
  int num_heads = 0;           // num_attention_heads (query heads)
  int num_kv_heads = 0;        // num_key_value_heads (defaults to num_heads)
  int head_dim = 0;            // head_dim when present, else hidden_size / num_heads
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  int sliding_window = 0;      // 0 = none (null or absent in config.json)
  int max_position_embeddings = 0;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;       // -1 = none
  std::vector<int> eos_token_ids;  // config may give an int or a list
  DType torch_dtype = DType::kF32;
};

// Parses config.json text. `source` names the file in error messages. Errors are
// InvalidArgument naming the field: not JSON, unsupported architecture, a missing or
// non-positive size, or sizes that disagree (e.g. heads not dividing hidden_size without
// head_dim, num_heads not a multiple of num_kv_heads).
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);

// Reads and parses `model_dir`/config.json. NotFound when the file is absent.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace tpserve
