// Tokenizer over SentencePiece: file handling and Status on top of the abseil-free wrapper.
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "model/sentencepiece_stream_decoder.h"
#include "model/sentencepiece_tokenizer.h"
#include "model/tokenizer.h"

namespace tpserve {
namespace {

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(std::unique_ptr<internal::SentencePieceModel> model)
      : model_(std::move(model)) {}

  std::vector<int32_t> Encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids = model_->Encode(text);
    if (add_bos) ids.insert(ids.begin(), model_->bos_id());
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override { return model_->Decode(ids); }
  int32_t bos_id() const override { return model_->bos_id(); }
  int32_t eos_id() const override { return model_->eos_id(); }
  int32_t vocab_size() const override { return model_->vocab_size(); }

 private:
  std::unique_ptr<internal::StreamDecoder> NewStreamDecoder(
      std::vector<int32_t> prompt_ids) const override {
    return internal::NewSentencePieceStreamDecoder(*model_, std::move(prompt_ids));
  }

  std::unique_ptr<internal::SentencePieceModel> model_;
};

}  // namespace

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
  return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(model)));
}

}  // namespace tpserve
