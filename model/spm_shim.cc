// The shim's implementation: the one translation unit that includes sentencepiece_processor.h
// (which also clashes with abseil's headers, so nothing here includes abseil).
#include "model/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

struct TpserveSpm {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

void SetError(char* error, size_t capacity, const std::string& message) {
  if (capacity == 0) return;
  const size_t n = std::min(message.size(), capacity - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

// "<0x4A>" -> 0x4A; -1 when the piece is not spelled as a byte piece.
int ParseBytePiece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

extern "C" {

// The library parses an untrusted file and allocates: nothing it throws may leave the shim.
__attribute__((visibility("default"))) TpserveSpm* tpserve_spm_load(const char* bytes, size_t size,
                                                                    char* error, size_t capacity) {
  try {
    auto* model = new TpserveSpm();
    const auto status = model->sp.LoadFromSerializedProto(std::string(bytes, size));
    if (!status.ok()) {
      SetError(error, capacity, status.ToString());
      delete model;
      return nullptr;
    }
    return model;
  } catch (const std::exception& e) {
    SetError(error, capacity, e.what());
  } catch (...) {
    SetError(error, capacity, "unknown exception from the SentencePiece library");
  }
  return nullptr;
}

__attribute__((visibility("default"))) void tpserve_spm_free(TpserveSpm* model) { delete model; }

__attribute__((visibility("default"))) int32_t tpserve_spm_size(const TpserveSpm* model) {
  return model->sp.GetPieceSize();
}
__attribute__((visibility("default"))) int32_t tpserve_spm_bos(const TpserveSpm* model) {
  return model->sp.bos_id();
}
__attribute__((visibility("default"))) int32_t tpserve_spm_eos(const TpserveSpm* model) {
  return model->sp.eos_id();
}

__attribute__((visibility("default"))) int32_t tpserve_spm_kind(const TpserveSpm* model,
                                                                int32_t id, int32_t* byte_value) {
  if (model->sp.IsControl(id)) return 1;
  if (!model->sp.IsByte(id)) return 0;
  *byte_value = ParseBytePiece(model->sp.IdToPiece(id));
  return *byte_value < 0 ? -1 : 2;
}

__attribute__((visibility("default"))) int64_t tpserve_spm_encode(const TpserveSpm* model,
                                                                  const char* text, size_t size,
                                                                  int32_t* out, size_t capacity) {
  try {
    std::vector<int> ids;
    if (!model->sp.Encode(std::string(text, size), &ids).ok()) return -1;
    for (size_t i = 0; i < ids.size() && i < capacity; ++i) out[i] = ids[i];
    return static_cast<int64_t>(ids.size());
  } catch (...) {
    return -1;
  }
}

__attribute__((visibility("default"))) int64_t tpserve_spm_decode(const TpserveSpm* model,
                                                                  const int32_t* ids, size_t count,
                                                                  char* out, size_t capacity) {
  try {
    std::string text;
    if (!model->sp.Decode(std::vector<int>(ids, ids + count), &text).ok()) return -1;
    std::memcpy(out, text.data(), std::min(text.size(), capacity));
    return static_cast<int64_t>(text.size());
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
