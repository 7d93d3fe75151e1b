// Text <-> token ids (layer: model): the Tokenizer interface, its SentencePiece implementation
// (Mistral/Llama tokenizer.model) and streaming detokenisation. BpeTokenizer
// (model/bpe_tokenizer.h) is the byte-level BPE implementation (tokenizer.json, GGUF "gpt2").
//
// The coordinator tokenises once; workers only ever see ids. SentencePiece encoding matches
// Hugging Face's slow LlamaTokenizer with legacy=True (what Mistral and Llama-2 ship) on plain
// text: SentencePiece's own encoding (dummy prefix, byte fallback) plus an optional BOS.
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
#include "model/config.h"

namespace tpserve {

namespace internal {
// Streaming decoder of one sequence (see IncrementalDetokenizer); one per implementation.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  virtual std::string Push(int32_t token) = 0;
  virtual std::string Flush() = 0;
};
}  // namespace internal

class Tokenizer {
 public:
  // Loads a SentencePiece model file (tokenizer.model). Errors: NotFound when `path` does not
  // exist; InvalidArgument, naming the path, when it is not a regular file, is not a
  // SentencePiece model, or has no BOS or EOS piece; Unimplemented in a build without
  // libsentencepiece.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(
      const std::string& path);

  // The tokenizer of a model folder, first found of: tokenizer.model (SentencePiece),
  // tokenizer.json (byte-level BPE; BOS/EOS ids from `config`), the metadata of the folder's
  // GGUF file (model/gguf_config.h FindModelGguf). NotFound when the folder has none; the
  // loader's error otherwise; InvalidArgument when the tokenizer has more ids than
  // config.vocab_size.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadForModel(
      const std::string& model_dir, const ModelConfig& config);

  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` (UTF-8). With `add_bos`, the ids the model's tokenizer puts in front of a
  // prompt come first (SentencePiece: BOS; BPE: what tokenizer.json's post-processor or the
  // GGUF's add_bos_token says, possibly nothing); never appends EOS. Every text is
  // representable; "" encodes to {} (or just that prefix).
  virtual std::vector<int32_t> Encode(const std::string& text, bool add_bos) const = 0;

  // Text of `ids`. Ids outside [0, vocab_size()) render as nothing. May end inside a UTF-8
  // character for BPE (streaming goes through IncrementalDetokenizer instead).
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;

  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  // One past the largest id; every id Encode returns is below it. The model's vocab_size may
  // be larger (padding) but must not be smaller; LoadForModel checks.
  virtual int32_t vocab_size() const = 0;

 protected:
  Tokenizer() = default;

 private:
  friend class IncrementalDetokenizer;
  // A decoder for IncrementalDetokenizer; `prompt_ids` as its constructor takes them.
  virtual std::unique_ptr<internal::StreamDecoder> NewStreamDecoder(
      std::vector<int32_t> prompt_ids) const = 0;
};

// SentencePiece semantics of the Tokenizer methods (besides the above):
// - Encode: characters the vocabulary lacks become byte-fallback pieces; U+2581 ("▁") encodes
//   like a space, and each byte that is not valid UTF-8 like U+FFFD, as in SentencePiece.
// - Decode is SentencePiece's DecodeIds: control ids render as nothing, byte-fallback runs are
//   decoded as UTF-8 with each invalid byte replaced by U+FFFD, and the one leading space
//   SentencePiece added when encoding is removed, so Decode(Encode(s, b)) == s for every valid
//   UTF-8 s without U+2581. (HF's slow decode removes one more leading space when s starts
//   with one.)

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
// window moves. For byte-level BPE, whose decode is a plain concatenation of token bytes, the
// same contract holds with the bytes of Decode made valid UTF-8 (each invalid byte as U+FFFD). Movable; one
// thread at a time.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `prompt_ids` are the ids the generation continues
  // (BOS included, as sent to the model); only their last few matter. When the prompt ends
  // inside a UTF-8 character (client-supplied ids), its incomplete bytes count as pending
  // output, so a generated continuation byte completes the character in the stream.
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids);
  ~IncrementalDetokenizer();
  IncrementalDetokenizer(IncrementalDetokenizer&&) noexcept;
  IncrementalDetokenizer& operator=(IncrementalDetokenizer&&) noexcept;

  // Appends one generated token and returns the text that became final: "" while a UTF-8
  // character is incomplete or for tokens that render as nothing (EOS, out-of-range ids).
  std::string Push(int32_t token);

  // Returns whatever is still held (an unfinished byte run, each byte as U+FFFD, exactly as
  // Decode renders it) and marks it emitted. Call once at the end of the sequence.
  std::string Flush();

 private:
  std::unique_ptr<internal::StreamDecoder> decoder_;
};

}  // namespace tpserve
