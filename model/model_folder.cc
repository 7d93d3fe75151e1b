#include "model/model_folder.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/gguf.h"
#include "model/gguf_config.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

absl::StatusOr<std::string> ChatTemplateFromTokenizerConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::string();
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (!j.contains("chat_template") || j["chat_template"].is_null()) return std::string();
  if (!j["chat_template"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": chat_template is not a string (named template lists are not supported)"));
  }
  return j["chat_template"].get<std::string>();
}

}  // namespace

absl::StatusOr<ModelFolderInfo> InspectModelFolder(const std::string& model_dir) {
  ModelFolderInfo info;
  ASSIGN_OR_RETURN(info.gguf_path, FindModelGguf(model_dir));
  if (!info.gguf_path.has_value()) {
    ASSIGN_OR_RETURN(info.config, LoadModelConfig(model_dir));
    ASSIGN_OR_RETURN(info.chat_template, ChatTemplateFromTokenizerConfig(model_dir));
    return info;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<GgufModel> gguf, GgufModel::Open(*info.gguf_path));
  ASSIGN_OR_RETURN(info.config, ModelConfigFromGguf(gguf->file(), *info.gguf_path));
  if (const GgufValue* t = gguf->file().FindMetadata("tokenizer.chat_template"); t != nullptr) {
    if (t->AsString() == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(*info.gguf_path, ": tokenizer.chat_template is not a string"));
    }
    info.chat_template = *t->AsString();
  }
  return info;
}

}  // namespace tpserve
