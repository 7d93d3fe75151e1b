// What a model folder is, read without loading weights (layer: model; plain functions,
// thread-safe). A folder is either a Hugging Face folder (config.json, safetensors,
// tokenizer.model or tokenizer.json, optional tokenizer_config.json) or a llama.cpp folder
// (no config.json, exactly one *.gguf; see FindModelGguf in model/gguf_config.h).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace tpserve {

struct ModelFolderInfo {
  ModelConfig config;
  std::optional<std::string> gguf_path;  // set for a llama.cpp folder
  // The Jinja chat template the model declares: GGUF tokenizer.chat_template, else
  // tokenizer_config.json's "chat_template" (a string); "" when it declares none.
  std::string chat_template;
};

// Reads config.json or the GGUF metadata, and the chat template. Errors: those of
// LoadModelConfig / FindModelGguf / ParseGguf / ModelConfigFromGguf; InvalidArgument naming
// the file when tokenizer_config.json is not JSON or its chat_template is not a string (a list
// of named templates is not supported).
[[nodiscard]] absl::StatusOr<ModelFolderInfo> InspectModelFolder(const std::string& model_dir);

}  // namespace tpserve
