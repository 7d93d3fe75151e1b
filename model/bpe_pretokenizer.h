// GPT-2 and Llama 3 pre-tokenizers for byte-level BPE, hand-written (layer: model; pure
// functions, thread-safe).
//
// Implements the split Hugging Face's ByteLevel pre-tokenizer (use_regex = true) applies,
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with Oniguruma's semantics (leftmost match, alternatives tried in order, greedy), optionally
// preceded by HF's Digits pre-tokenizer (each \p{N} character its own piece, or runs of them).
//
// Unicode limits: \p{L} and \p{N} are the general categories L* and N* of Unicode 14.0 (tables
// generated from Python 3.11's unicodedata, see bpe_pretokenizer.cc); Oniguruma in a newer
// `tokenizers` may know characters assigned after 14.0, which are treated here as punctuation.
// \s is the White_Space property (as Oniguruma's \s in Unicode mode). Bytes that are not valid
// UTF-8 are each treated as one punctuation character, so every byte lands in exactly one piece.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tpserve::internal {

bool IsUnicodeLetter(char32_t c);      // \p{L}
bool IsUnicodeNumber(char32_t c);      // \p{N}
bool IsUnicodeWhitespace(char32_t c);  // \s (White_Space)

enum class DigitSplit {
  kNone,        // no Digits pre-tokenizer
  kIndividual,  // Digits(individual_digits = true): each \p{N} alone
  kRuns,        // Digits(individual_digits = false): runs of \p{N}
};

// `text` with each byte that is not part of valid UTF-8 (stray continuation bytes, truncated or
// overlong sequences, surrogates, 0xF8..0xFF) replaced by U+FFFD; `text` itself when valid.
std::string ToValidUtf8(std::string_view text);

// Splits `text` into consecutive non-empty pieces that concatenate back to `text`. The views
// point into `text`.
std::vector<std::string_view> SplitGpt2(std::string_view text, DigitSplit digits);

// The same with the pattern of Llama 3 (tiktoken's cl100k family, HF Split + ByteLevel without
// regex; llama.cpp's "llama-bpe"):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// (?i) folds ASCII letters and U+017F only (Unicode's other folds to s, t, r, v, m, l, d, e
// are not letters that occur after an apostrophe in practice).
std::vector<std::string_view> SplitLlama3(std::string_view text);

}  // namespace tpserve::internal
