// Text <-> token ids for byte-level BPE models (GPT-2 style: SmolLM2, StarCoder, GPT-2) loaded
// from a Hugging Face tokenizer.json or from GGUF metadata (layer: model).
//
// Encoding is that of HF `tokenizers` with add_special_tokens=False:
//   1. added tokens (tokenizer.json "added_tokens", special or not) are matched in the raw text
//      first, leftmost, longest at a position, and become their ids; unlike Tokenizer
//      (SentencePiece), "<|im_start|>" typed inside a prompt therefore IS the control token;
//   2. the text between them is split by the GPT-2 pattern (model/bpe_pretokenizer.h), after
//      an optional Digits pre-tokenizer;
//   3. each piece's bytes are mapped to GPT-2's byte-to-unicode alphabet and merged by BPE,
//      lowest merge rank first (leftmost on ties), then looked up in the vocabulary.
// Supported tokenizer.json subset (anything else is refused with InvalidArgument rather than
// encoded differently from HF): model.type "BPE" without subword prefix/suffix, dropout or
// ignore_merges; normalizer null; decoder ByteLevel or null; pre_tokenizer
// ByteLevel(use_regex=true, add_prefix_space=false), alone or in a Sequence after Digits, or
// Llama 3's Sequence[Split(its Regex, Isolated), ByteLevel(use_regex=false)]; added tokens
// without lstrip/rstrip/single_word. Unicode limits: see model/bpe_pretokenizer.h.
// From GGUF (llama.cpp's tokenizer.ggml.model "gpt2"), the same steps: tokens of type control
// (3) or user-defined (4) are the added tokens, as llama.cpp matches them with parse_special;
// tokenizer.ggml.pre names the pre-tokenizer (see LoadFromGguf).
//
// Thread safety: immutable after loading; all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/bpe_pretokenizer.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace tpserve {

class BpeTokenizer final : public Tokenizer {
 public:
  // Loads a tokenizer.json; tokenizer.json does not say which ids are BOS and EOS, so the
  // caller passes them (from config.json; -1 = none). Errors: NotFound when `path` does not
  // exist; InvalidArgument, naming the path, when it is not a regular file, not JSON, not a
  // BPE model, inconsistent (a merge whose tokens are not in the vocabulary, a special id out
  // of range) or uses an unsupported feature.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizerJson(
      const std::string& path, int32_t bos_id = -1, int32_t eos_id = -1);

  // Loads the tokenizer of a GGUF file: tokenizer.ggml.model "gpt2", .tokens, .merges
  // ("left right"), .token_type (optional; default normal), .bos_token_id / .eos_token_id
  // (optional), .add_bos_token (optional, default false: Encode's prefix is [bos] when true),
  // .pre: "gpt2", "default", "mpt", "olmo" (GPT-2 pattern), "smollm", "starcoder", "refact",
  // "codeshell" (each digit alone, then the GPT-2 pattern) or "llama-bpe", "llama3", "llama-v3"
  // (the Llama 3 pattern). InvalidArgument naming `source` and
  // the key for another tokenizer model or pre-tokenizer, missing or mistyped keys,
  // inconsistent merges and ids out of range.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadFromGguf(
      const GgufFile& file, std::string_view source);

  // Ids of `text` as HF gives them with add_special_tokens=False. `text` is UTF-8; each byte
  // that is not valid UTF-8 is encoded as U+FFFD (as Tokenizer does), so such text does not
  // round-trip through Decode. With `add_bos`, the special tokens that the post_processor's
  // TemplateProcessing puts before the text ("single": [<bos>, $A]) come first, as with HF's
  // add_special_tokens=True (SmolLM2 declares none, so nothing is added), or for GGUF [bos]
  // when add_bos_token says so; tokens after the text (EOS) are never added. "" encodes to {}
  // (or just those tokens).
  std::vector<int32_t> Encode(const std::string& text, bool add_bos) const override;

  // Bytes of `ids`: vocabulary tokens through the byte decoder, added tokens as their content.
  // Ids outside [0, vocab_size()) or without a token render as nothing. Decode(Encode(s, false))
  // == s for every valid UTF-8 s. The result is not valid UTF-8 when `ids` stops inside a
  // character (streaming callers must hold back such tails).
  std::string Decode(const std::vector<int32_t>& ids) const override;
  // The bytes of one id ("" outside the vocabulary): Decode({id}) without building anything.
  std::string_view TokenBytes(int32_t id) const {
    return id >= 0 && id < vocab_size() ? std::string_view(id_to_bytes_[id]) : std::string_view();
  }

  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_bytes_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

  // Id of the token spelled `token` exactly: an added token's content (e.g. "<|im_start|>",
  // "<|endoftext|>"), else a vocabulary entry in the byte-level alphabet ("Ġthe"); -1 if none.
  int32_t TokenId(const std::string& token) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };

  BpeTokenizer() = default;
  std::unique_ptr<internal::StreamDecoder> NewStreamDecoder(
      std::vector<int32_t> prompt_ids) const override;
  // Fills everything else from vocab_ (already set), the added tokens and the merges.
  absl::Status Build(std::string_view source,
                     const std::vector<std::pair<std::string, int32_t>>& added,
                     const std::vector<std::pair<std::string, std::string>>& merges);
  // "left right" (the merge format of older tokenizer.json files and of GGUF).
  static absl::StatusOr<std::pair<std::string, std::string>> SplitMerge(std::string_view source,
                                                                        const std::string& merge);
  absl::Status SetSpecialIds(std::string_view source, int32_t bos_id, int32_t eos_id);
  // Appends the BPE ids of one pre-tokenized piece.
  void EncodePiece(std::string_view piece, std::vector<int32_t>& out) const;
  void EncodeText(std::string_view text, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;  // byte-level spelling -> id
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id)
  // Added tokens by first byte, longest content first, for leftmost-longest matching.
  std::vector<std::pair<std::string, int32_t>> added_by_first_byte_[256];
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::vector<std::string> id_to_bytes_;  // decoded bytes of each id
  int32_t byte_ids_[256] = {};            // id of each single byte, or -1
  std::vector<int32_t> prefix_ids_;       // added by add_special_bos
  internal::DigitSplit digits_ = internal::DigitSplit::kNone;
  bool llama3_split_ = false;  // the Llama 3 pattern instead of GPT-2's
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

}  // namespace tpserve
