// IncrementalDetokenizer's decoder for SentencePiece (contract in tokenizer.h).
//
// Why the window is safe. The stream is Decode(window + new) minus Decode(window), and
// SentencePiece's decode is a concatenation of per-piece surfaces with two context effects
// that the window keeps as in the full decode:
// - the dummy-prefix "▁" is dropped from the first piece only while nothing visible has been
//   decoded. The window starts at the true start, at a visible non-byte piece (constructor),
//   or at the previous read_, whose pieces up to read_ rendered visible text; so before read_
//   the window has, like the full decode, left that state, and whatever the rule did to the
//   window's own first piece is in both decodes we subtract;
// - a run of byte pieces is decoded as UTF-8 from its start, one character or one invalid
//   byte (U+FFFD) at a time. read_ only ever stops where that scan is between steps (no
//   unfinished character at the end, see IncompleteTail), and the window starts at a
//   non-byte piece or at an old read_, so a window's scan and the full one agree.
// Ids out of range act as control pieces in both (SentencePieceModel::Decode).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/sentencepiece_stream_decoder.h"

namespace tpserve::internal {
namespace {

bool IsTrail(int b) { return (b & 0xC0) == 0x80; }

// Length of the UTF-8 sequence a lead byte announces; 1 for ASCII and for bytes that cannot
// start one (SentencePiece then renders the byte alone as U+FFFD).
int SequenceLength(int lead) {
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// How many of the last ids are byte pieces that start a UTF-8 character more bytes could
// still complete; 0 if none. SentencePiece's DecodeUTF8 (util.cc) steps over a lead byte and
// its trail bytes, or over one byte it renders as U+FFFD, so every non-trail byte starts a
// step: only the last one of the run can be unfinished, and only if too few trail bytes follow
// it. (Whether a complete sequence is valid does not matter: an overlong form or a surrogate
// becomes one U+FFFD per byte and ends at the same place.)
size_t IncompleteTail(const SentencePieceModel& model, const std::vector<int32_t>& ids) {
  for (size_t after = 0; after < 4 && after < ids.size(); ++after) {
    const int byte = model.ByteValue(ids[ids.size() - 1 - after]);
    if (byte < 0) return 0;  // the run ended before any lead byte
    if (!IsTrail(byte)) {
      return static_cast<size_t>(SequenceLength(byte)) > after + 1 ? after + 1 : 0;
    }
  }
  return 0;  // four trail bytes: nothing unfinished can end here
}

// Length of the longest common prefix of a and b that ends on a UTF-8 character boundary.
size_t CommonPrefix(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  while (n > 0 && n < b.size() && IsTrail(static_cast<uint8_t>(b[n]))) --n;
  return n;
}

// Keeps ids_ short: once the window has moved this far, the ids before it are dropped.
constexpr size_t kCompactAt = 256;

}  // namespace

class SentencePieceStreamDecoder final : public StreamDecoder {
 public:
  SentencePieceStreamDecoder(const SentencePieceModel& model, std::vector<int32_t> prompt_ids);
  std::string Push(int32_t token) override;
  std::string Flush() override;

 private:
  // Decode(ids_[prefix_:]) minus Decode(ids_[prefix_:read_]); advances the window when the
  // difference is not empty.
  std::string EmitPending();

  const SentencePieceModel* model_;  // owned by the Tokenizer
  std::vector<int32_t> ids_;  // tail of prompt + generated ids; ids_[0] need not be the start
  size_t prefix_ = 0;         // window start: Decode starts here
  size_t read_ = 0;           // ids_[:read_] are accounted for (emitted or prompt)
};

SentencePieceStreamDecoder::SentencePieceStreamDecoder(const SentencePieceModel& model,
                                                       std::vector<int32_t> prompt_ids)
    : model_(&model), ids_(std::move(prompt_ids)) {
  read_ = ids_.size() - IncompleteTail(*model_, ids_);
  // Window start: the last visible non-byte piece before read_ (see the top of the file);
  // with none, the start of the sequence, which then holds nothing visible but bytes.
  prefix_ = 0;
  for (size_t i = read_; i > 0; --i) {
    const int32_t id = ids_[i - 1];
    if (!model_->IsInvisible(id) && model_->ByteValue(id) < 0) {
      prefix_ = i - 1;
      break;
    }
  }
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_));
  read_ -= prefix_;
  prefix_ = 0;
}

std::string SentencePieceStreamDecoder::Push(int32_t token) {
  ids_.push_back(token);
  if (IncompleteTail(*model_, ids_) > 0) return "";
  return EmitPending();
}

std::string SentencePieceStreamDecoder::Flush() {
  if (read_ == ids_.size()) return "";
  return EmitPending();
}

std::string SentencePieceStreamDecoder::EmitPending() {
  const std::span<const int32_t> all(ids_);
  const std::string before = model_->Decode(all.subspan(prefix_, read_ - prefix_));
  std::string after = model_->Decode(all.subspan(prefix_));
  // `before` is a prefix of `after` by the argument at the top of the file; should that ever
  // fail, emit from the first difference rather than repeat or drop text mid-character.
  const size_t common =
      after.compare(0, before.size(), before) == 0 ? before.size() : CommonPrefix(before, after);
  if (after.size() == common) return "";  // nothing visible yet (EOS, a stripped "▁")
  prefix_ = read_;
  read_ = ids_.size();
  if (prefix_ >= kCompactAt) {
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_));
    read_ -= prefix_;
    prefix_ = 0;
  }
  return after.substr(common);
}

std::unique_ptr<StreamDecoder> NewSentencePieceStreamDecoder(const SentencePieceModel& model,
                                                             std::vector<int32_t> prompt_ids) {
  return std::make_unique<SentencePieceStreamDecoder>(model, std::move(prompt_ids));
}

}  // namespace tpserve::internal
