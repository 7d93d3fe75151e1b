// Tokenizer: file handling and Status on top of the abseil-free SentencePiece wrapper.
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "model/sentencepiece_tokenizer.h"
#include "model/tokenizer.h"

namespace tpserve {

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePieceModel> model)
    : model_(std::move(model)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadSentencePiece(const std::string& path) {
  // MappedFile gives NotFound for a missing path and InvalidArgument for a directory.
  ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const std::string_view bytes(reinterpret_cast<const char*>(file.data()), file.size());
  // An empty buffer parses as an empty ModelProto; say what is wrong in plain words.
  if (bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (the file is empty)"));
  }
  std::string error;
  std::unique_ptr<internal::SentencePieceModel> model =
      internal::SentencePieceModel::Load(bytes, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (", error, ")"));
  }
  if (model->bos_id() < 0 || model->eos_id() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the SentencePiece model has no BOS or EOS piece (bos_id ",
                     model->bos_id(), ", eos_id ", model->eos_id(), ")"));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(model)));
}

std::vector<int32_t> Tokenizer::Encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> ids = model_->Encode(text);
  if (add_bos) ids.insert(ids.begin(), model_->bos_id());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const { return model_->Decode(ids); }

int32_t Tokenizer::bos_id() const { return model_->bos_id(); }
int32_t Tokenizer::eos_id() const { return model_->eos_id(); }
int32_t Tokenizer::vocab_size() const { return model_->vocab_size(); }

}  // namespace tpserve
