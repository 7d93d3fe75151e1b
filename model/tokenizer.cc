// Tokenizer::LoadForModel and IncrementalDetokenizer, whatever the tokenizer kind.
#include "model/tokenizer.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/bpe_tokenizer.h"
#include "model/gguf.h"
#include "model/gguf_config.h"

namespace tpserve {

#ifndef TPSERVE_HAS_SENTENCEPIECE
absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadSentencePiece(const std::string& path) {
  return absl::UnimplementedError(
      absl::StrCat(path, ": this build has no SentencePiece (libsentencepiece-dev was missing)"));
}
#endif

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadForModel(const std::string& model_dir,
                                                                   const ModelConfig& config) {
  std::unique_ptr<Tokenizer> tok;
  std::string source;
  std::error_code ec;
  if (source = model_dir + "/tokenizer.model"; std::filesystem::exists(source, ec)) {
    ASSIGN_OR_RETURN(tok, LoadSentencePiece(source));
  } else if (source = model_dir + "/tokenizer.json"; std::filesystem::exists(source, ec)) {
    const int32_t eos = config.eos_token_ids.empty() ? -1 : config.eos_token_ids.front();
    ASSIGN_OR_RETURN(tok, BpeTokenizer::LoadTokenizerJson(source, config.bos_token_id, eos));
  } else {
    ASSIGN_OR_RETURN(std::optional<std::string> gguf_path, FindModelGguf(model_dir));
    if (!gguf_path.has_value()) {
      return absl::NotFoundError(absl::StrCat(
          model_dir, ": no tokenizer.model, tokenizer.json or GGUF file"));
    }
    source = *gguf_path;
    ASSIGN_OR_RETURN(std::unique_ptr<GgufModel> gguf, GgufModel::Open(source));
    ASSIGN_OR_RETURN(tok, BpeTokenizer::LoadFromGguf(gguf->file(), source));
  }
  if (tok->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the tokenizer has ", tok->vocab_size(),
                     " ids but the model's vocab_size is ", config.vocab_size));
  }
  return tok;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::vector<int32_t> prompt_ids)
    : decoder_(tokenizer.NewStreamDecoder(std::move(prompt_ids))) {}
IncrementalDetokenizer::~IncrementalDetokenizer() = default;
IncrementalDetokenizer::IncrementalDetokenizer(IncrementalDetokenizer&&) noexcept = default;
IncrementalDetokenizer& IncrementalDetokenizer::operator=(IncrementalDetokenizer&&) noexcept =
    default;

std::string IncrementalDetokenizer::Push(int32_t token) { return decoder_->Push(token); }
std::string IncrementalDetokenizer::Flush() { return decoder_->Flush(); }

}  // namespace tpserve
