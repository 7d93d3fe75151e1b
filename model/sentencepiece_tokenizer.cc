// The one translation unit that includes sentencepiece_processor.h: it must include no abseil
// or gRPC header (Debian's SentencePiece declares its own absl::string_view).
#include "model/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <exception>
#include <utility>

namespace tpserve::internal {
namespace {

// "<0x4A>" -> 0x4A; -1 when the piece is not spelled as a byte piece.
int ParseBytePiece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

struct SentencePieceModel::Processor {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceModel::SentencePieceModel() = default;
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(std::string_view serialized,
                                                             std::string* error) {
  // The library reports errors by status, but it parses an untrusted file with protobuf and
  // allocates: nothing it throws may leave this function.
  try {
    std::unique_ptr<SentencePieceModel> model(new SentencePieceModel());
    model->processor_ = std::make_unique<Processor>();
    sentencepiece::SentencePieceProcessor& sp = model->processor_->sp;
    const sentencepiece::util::Status status = sp.LoadFromSerializedProto(serialized);
    if (!status.ok()) {
      *error = status.ToString();
      return nullptr;
    }
    const int size = sp.GetPieceSize();
    if (size <= 0) {
      *error = "the model has no pieces";
      return nullptr;
    }
    model->kinds_.assign(size, Kind::kText);
    model->byte_values_.assign(size, 0);
    for (int id = 0; id < size; ++id) {
      if (sp.IsControl(id)) {
        model->kinds_[id] = Kind::kControl;
        if (model->control_id_ < 0) model->control_id_ = id;
      } else if (sp.IsByte(id)) {
        const int value = ParseBytePiece(sp.IdToPiece(id));
        if (value < 0) {
          *error = "byte piece " + std::to_string(id) + " is not spelled <0xNN>";
          return nullptr;
        }
        model->kinds_[id] = Kind::kByte;
        model->byte_values_[id] = static_cast<uint8_t>(value);
      }
    }
    model->bos_id_ = sp.bos_id();
    model->eos_id_ = sp.eos_id();
    return model;
  } catch (const std::exception& e) {
    *error = e.what();
  } catch (...) {
    *error = "unknown exception from the SentencePiece library";
  }
  return nullptr;
}

std::vector<int32_t> SentencePieceModel::Encode(const std::string& text) const {
  std::vector<int> ids;
  // Encoding with a loaded model fails only on allocation; leave ids as they are then.
  (void)processor_->sp.Encode(text, &ids);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceModel::Decode(std::span<const int32_t> ids) const {
  std::vector<int> valid;
  valid.reserve(ids.size());
  for (int32_t id : ids) {
    if (InRange(id)) {
      valid.push_back(id);
    } else if (control_id_ >= 0) {
      valid.push_back(control_id_);  // the library rejects the whole call for one bad id
    }
  }
  std::string text;
  // With every id in range the library has no error left to report.
  (void)processor_->sp.Decode(valid, &text);
  return text;
}

}  // namespace tpserve::internal
