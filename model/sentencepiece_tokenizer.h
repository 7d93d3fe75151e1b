// Internal to model/: the SentencePiece library behind Tokenizer (layer: model).
//
// Debian's sentencepiece_processor.h declares its own absl::string_view and cannot share a
// translation unit with real abseil, so this header and its .cc use std types only and the
// .cc is the one file that includes the library. tokenizer_impl.cc turns the plain error
// strings of this header into absl::Status. Nothing outside model/ includes it.
//
// Thread safety: immutable after Load; every const method may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tpserve::internal {

class SentencePieceModel {
 public:
  // Parses a serialized ModelProto (the bytes of a tokenizer.model file). On failure returns
  // nullptr and sets *error to the library's message (never throws).
  static std::unique_ptr<SentencePieceModel> Load(std::string_view serialized, std::string* error);

  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // Plain SentencePiece encoding (dummy prefix and byte fallback as the model says); no BOS.
  std::vector<int32_t> Encode(const std::string& text) const;

  // SentencePiece's DecodeIds on `ids`, where ids outside [0, vocab_size()) act as a control
  // piece: control pieces render as nothing (and end a run of byte pieces), the unknown piece
  // as the model's unk surface, runs of byte pieces as UTF-8 with each invalid byte replaced
  // by U+FFFD, and the leading "▁" (the dummy prefix) of the first piece is dropped if nothing
  // visible came before it.
  std::string Decode(std::span<const int32_t> ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(kinds_.size()); }
  int32_t bos_id() const { return bos_id_; }  // -1 when the model has none
  int32_t eos_id() const { return eos_id_; }  // -1 when the model has none

  // The byte a byte-fallback piece (<0x41>) stands for, or -1 for any other id.
  int ByteValue(int32_t id) const {
    return InRange(id) && kinds_[id] == Kind::kByte ? byte_values_[id] : -1;
  }
  // Whether the id renders as nothing (control pieces such as <s> and </s>, ids out of range).
  bool IsInvisible(int32_t id) const { return !InRange(id) || kinds_[id] == Kind::kControl; }

 private:
  enum class Kind : uint8_t { kText, kControl, kByte };
  struct Processor;  // wraps sentencepiece::SentencePieceProcessor

  SentencePieceModel();
  bool InRange(int32_t id) const { return id >= 0 && id < vocab_size(); }

  std::unique_ptr<Processor> processor_;
  std::vector<Kind> kinds_;           // per id
  std::vector<uint8_t> byte_values_;  // per id, meaningful for Kind::kByte
  int32_t control_id_ = -1;  // stands in for out-of-range ids; -1: the model has no control piece
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

}  // namespace tpserve::internal
