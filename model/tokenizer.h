// Text <-> token ids for SentencePiece models (Mistral/Llama tokenizer.model) (layer: model).
//
// The coordinator tokenises once; workers only ever see ids. Encoding matches Hugging Face's
// slow LlamaTokenizer with legacy=True (what Mistral and Llama-2 ship) on plain text: it is
// SentencePiece's own encoding (dummy prefix, byte fallback) plus an optional BOS.
// Deliberate difference: text is always text. HF turns the strings "<s>", "</s>" and "<unk>"
// inside the input into their control ids; here they are encoded as ordinary characters, so a
// prompt cannot smuggle in control tokens.
//
// Thread safety: a Tokenizer is immutable after loading; all its methods may be called
// concurrently. An IncrementalDetokenizer belongs to one sequence and one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

namespace internal {
class SentencePieceModel;
}  // namespace internal

class Tokenizer {
 public:
  // Loads a SentencePiece model file (tokenizer.model). Errors: NotFound when `path` does not
  // exist; InvalidArgument, naming the path, when it is not a regular file, is not a
  // SentencePiece model, or has no BOS or EOS piece.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(
      const std::string& path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` (UTF-8), with bos_id() in front when `add_bos`; never appends EOS.
  // Characters the vocabulary lacks become byte-fallback pieces, so every text is
  // representable; "" encodes to {} (or {bos_id()}). The character U+2581 ("▁") encodes
  // like a space, and each byte that is not valid UTF-8 like U+FFFD, as in SentencePiece.
  std::vector<int32_t> Encode(const std::string& text, bool add_bos) const;

  // Text of `ids` as SentencePiece's DecodeIds gives it: control ids (BOS, EOS) and ids
  // outside [0, vocab_size()) render as nothing, byte-fallback runs are decoded as UTF-8 with
  // each invalid byte replaced by U+FFFD, and the one leading space SentencePiece added when
  // encoding is removed, so Decode(Encode(s, b)) == s for every valid UTF-8 s without U+2581.
  // (HF's slow decode removes one more leading space when s starts with one.)
  std::string Decode(const std::vector<int32_t>& ids) const;

  int32_t bos_id() const;
  int32_t eos_id() const;
  // Number of pieces; every id Encode returns is below it. The model's vocab_size in
  // config.json may be larger (padding) but must not be smaller; the caller checks.
  int32_t vocab_size() const;

 private:
  friend class IncrementalDetokenizer;
  explicit Tokenizer(std::unique_ptr<internal::SentencePieceModel> model);

  std::unique_ptr<internal::SentencePieceModel> model_;
};

// Turns the tokens of one generated sequence into text as they arrive, for streaming.
// Each Push returns the text that the new token completes, so that
//   Push(t1) + ... + Push(tn) + Flush()
//     == Decode(prompt_ids + {t1..tn}) without its first Decode(prompt_ids).size() bytes,
// which is Decode({t1..tn}) exactly when the prompt renders no text (empty, or BOS only).
// After a prompt with text, the first generated token keeps its leading space (" Hello" after
// "ASSISTANT:"), as vLLM and TGI stream it, where Decode({t1..tn}) alone would drop it.
// (The equality holds whenever Decode(prompt_ids) is a prefix of the longer decode, i.e.
// unless the prompt ends inside a UTF-8 character; see the constructor.)
// How: it decodes a short window of earlier tokens with and without the new ones and emits the
// difference, so SentencePiece's leading-space rule and byte-fallback runs come out as in
// Decode; a run of byte-fallback tokens that ends inside a UTF-8 character (<0xF0><0x9F>...)
// is held until the character completes. Push output is always valid UTF-8.
// Cost: two decodes of a window of a few tokens per Push; the ids kept are trimmed as the
// window moves. Copyable and movable; one thread at a time.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `prompt_ids` are the ids the generation continues
  // (BOS included, as sent to the model); only their last few matter. When the prompt ends
  // inside a UTF-8 character (client-supplied ids), its incomplete bytes count as pending
  // output, so a generated continuation byte completes the character in the stream.
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids);

  // Appends one generated token and returns the text that became final: "" while a UTF-8
  // character is incomplete or for tokens that render as nothing (EOS, out-of-range ids).
  std::string Push(int32_t token);

  // Returns whatever is still held (an unfinished byte run, each byte as U+FFFD, exactly as
  // Decode renders it) and marks it emitted. Call once at the end of the sequence.
  std::string Flush();

 private:
  // Decode(ids_[prefix_:]) minus Decode(ids_[prefix_:read_]); advances the window when the
  // difference is not empty.
  std::string EmitPending();

  const internal::SentencePieceModel* model_;  // owned by the Tokenizer
  std::vector<int32_t> ids_;  // tail of prompt + generated ids; ids_[0] need not be the start
  size_t prefix_ = 0;         // window start: Decode starts here
  size_t read_ = 0;           // ids_[:read_] are accounted for (emitted or prompt)
};

}  // namespace tpserve
