// Byte-level BPE from tokenizer.json; the contract and the supported subset are in the header.
#include "model/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

void AppendUtf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order, so every token is printable text.
std::array<char32_t, 256> ByteToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

// Inverse mapping of one byte-level token; characters outside the alphabet (only in malformed
// vocabularies) are kept as their UTF-8.
std::string ByteLevelToBytes(const std::string& token,
                             const std::unordered_map<char32_t, uint8_t>& unicode_to_byte) {
  std::string out;
  size_t i = 0;
  while (i < token.size()) {
    const auto b0 = static_cast<uint8_t>(token[i]);
    const size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : 4;
    char32_t c = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (size_t k = 1; k < len && i + k < token.size(); ++k) {
      c = (c << 6) | (static_cast<uint8_t>(token[i + k]) & 0x3F);
    }
    auto it = unicode_to_byte.find(c);
    if (it != unicode_to_byte.end()) {
      out += static_cast<char>(it->second);
    } else {
      out += token.substr(i, len);
    }
    i += len;
  }
  return out;
}

bool IsNullOrEmpty(const json& j, const char* key) {
  return !j.contains(key) || j[key].is_null() || (j[key].is_string() && j[key] == "");
}

// Accepts ByteLevel(use_regex=true, add_prefix_space=false).
bool IsGpt2ByteLevel(const json& p) {
  return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) &&
         !p.value("add_prefix_space", false);
}

// Llama 3's tokenizer.json: Split(Regex kLlama3Pattern, Isolated) then ByteLevel without regex.
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

bool IsLlama3Split(const json& seq) {
  if (!seq.is_array() || seq.size() != 2 || !seq[0].is_object() || !seq[1].is_object()) {
    return false;
  }
  const json& split = seq[0];
  const json& byte_level = seq[1];
  return split.value("type", "") == "Split" && split.contains("pattern") &&
         split["pattern"].is_object() && split["pattern"].value("Regex", "") == kLlama3Pattern &&
         split.value("behavior", "") == "Isolated" && !split.value("invert", false) &&
         byte_level.value("type", "") == "ByteLevel" && !byte_level.value("use_regex", true) &&
         !byte_level.value("add_prefix_space", false);
}

absl::Status ParsePreTokenizer(const std::string& path, const json& p,
                               internal::DigitSplit& digits, bool& llama3) {
  digits = internal::DigitSplit::kNone;
  llama3 = false;
  if (IsGpt2ByteLevel(p)) return absl::OkStatus();
  if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers")) {
    const json& seq = p["pretokenizers"];
    if (seq.is_array() && seq.size() == 2 && seq[0].is_object() &&
        seq[0].value("type", "") == "Digits" && IsGpt2ByteLevel(seq[1])) {
      digits = seq[0].value("individual_digits", false) ? internal::DigitSplit::kIndividual
                                                        : internal::DigitSplit::kRuns;
      return absl::OkStatus();
    }
    if (IsLlama3Split(seq)) {
      llama3 = true;
      return absl::OkStatus();
    }
  }
  return Invalid(path, absl::StrCat("unsupported pre_tokenizer ", p.dump()));
}

// The special tokens TemplateProcessing puts before $A in "single"; none for other processors.
absl::StatusOr<std::vector<int32_t>> PrefixIds(const std::string& path, const json& p) {
  std::vector<int32_t> ids;
  if (!p.is_object()) return ids;
  if (p.value("type", "") == "Sequence" && p.contains("processors")) {
    for (const json& sub : p["processors"]) {
      ASSIGN_OR_RETURN(std::vector<int32_t> sub_ids, PrefixIds(path, sub));
      ids.insert(ids.end(), sub_ids.begin(), sub_ids.end());
    }
    return ids;
  }
  if (p.value("type", "") != "TemplateProcessing") return ids;
  for (const json& piece : p.at("single")) {
    if (!piece.contains("SpecialToken")) break;  // $A reached
    const std::string name = piece["SpecialToken"].at("id").get<std::string>();
    const json& specials = p.at("special_tokens");
    if (!specials.contains(name)) {
      return Invalid(path, absl::StrCat("post_processor names unknown special token ", name));
    }
    for (const json& id : specials[name].at("ids")) ids.push_back(id.get<int32_t>());
  }
  return ids;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

// "left right" (the merge format of older tokenizer.json files and of GGUF).
absl::StatusOr<std::pair<std::string, std::string>> BpeTokenizer::SplitMerge(
    std::string_view source, const std::string& merge) {
  const size_t space = merge.find(' ');
  if (space == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": bad merge ", merge));
  }
  return std::make_pair(merge.substr(0, space), merge.substr(space + 1));
}

absl::Status BpeTokenizer::Build(
    std::string_view source, const std::vector<std::pair<std::string, int32_t>>& added,
    const std::vector<std::pair<std::string, std::string>>& merges) {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab_) max_id = std::max(max_id, id);
  for (const auto& [content, id] : added) max_id = std::max(max_id, id);

  const std::array<char32_t, 256> byte_to_unicode = ByteToUnicode();
  std::unordered_map<char32_t, uint8_t> unicode_to_byte;
  for (int b = 0; b < 256; ++b) {
    unicode_to_byte[byte_to_unicode[b]] = static_cast<uint8_t>(b);
    std::string spelled;
    AppendUtf8(byte_to_unicode[b], spelled);
    auto it = vocab_.find(spelled);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  id_to_bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : vocab_) id_to_bytes_[id] = ByteLevelToBytes(token, unicode_to_byte);
  for (const auto& [content, id] : added) {
    id_to_bytes_[id] = content;
    added_by_content_[content] = id;
    added_by_first_byte_[static_cast<uint8_t>(content[0])].emplace_back(content, id);
  }
  for (auto& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
      return a.first.size() > b.first.size();
    });
  }

  int32_t rank = 0;
  for (const auto& [left, right] : merges) {
    auto l = vocab_.find(left);
    auto r = vocab_.find(right);
    auto merged = vocab_.find(left + right);
    if (l == vocab_.end() || r == vocab_.end() || merged == vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(source), ": merge of tokens not in the vocabulary: ", left, " ", right));
    }
    // The first occurrence of a pair holds its rank, as in HF.
    merges_.try_emplace(PairKey(l->second, r->second), Merge{rank, merged->second});
    ++rank;
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::SetSpecialIds(std::string_view source, int32_t bos_id,
                                         int32_t eos_id) {
  for (int32_t id : {bos_id, eos_id}) {
    if (id < -1 || id >= vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(source), ": special token id ", id, " outside the vocabulary of ", vocab_size()));
    }
  }
  bos_id_ = bos_id;
  eos_id_ = eos_id;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::LoadTokenizerJson(
    const std::string& path, int32_t bos_id, int32_t eos_id) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (!std::filesystem::is_regular_file(st)) return Invalid(path, "not a regular file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (!in) return Invalid(path, "cannot read");

  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  try {
    const json j = json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Invalid(path, "not JSON");
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
      return Invalid(path, "not a tokenizer.json (no \"model\" object)");
    }
    const json& model = j["model"];
    const bool is_bpe = model.contains("type") ? model["type"] == "BPE" : model.contains("merges");
    if (!is_bpe || !model.contains("vocab") || !model["vocab"].is_object() ||
        !model.contains("merges") || !model["merges"].is_array()) {
      return Invalid(path, absl::StrCat("not a BPE model (model.type ",
                                        model.value("type", std::string("missing")), ")"));
    }
    if (!IsNullOrEmpty(model, "continuing_subword_prefix") ||
        !IsNullOrEmpty(model, "end_of_word_suffix")) {
      return Invalid(path, "unsupported: BPE subword prefix or suffix");
    }
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        model["dropout"].get<double>() != 0.0) {
      return Invalid(path, "unsupported: BPE dropout");
    }
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      return Invalid(path, absl::StrCat("unsupported normalizer ", j["normalizer"].dump()));
    }
    RETURN_IF_ERROR(ParsePreTokenizer(path, j.value("pre_tokenizer", json()), tok->digits_,
                                      tok->llama3_split_));
    if (j.contains("decoder") && !j["decoder"].is_null() &&
        j["decoder"].value("type", "") != "ByteLevel") {
      return Invalid(path, absl::StrCat("unsupported decoder ", j["decoder"].dump()));
    }
    if (model.value("ignore_merges", false)) return Invalid(path, "unsupported: ignore_merges");

    for (const auto& [token, id_json] : model["vocab"].items()) {
      const auto id = id_json.get<int32_t>();
      if (id < 0) return Invalid(path, absl::StrCat("negative id for token ", token));
      tok->vocab_[token] = id;
    }
    std::vector<std::pair<std::string, int32_t>> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        const auto id = a.at("id").get<int32_t>();
        const auto content = a.at("content").get<std::string>();
        if (id < 0 || content.empty()) return Invalid(path, "bad added token");
        if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false)) {
          return Invalid(path, absl::StrCat("unsupported: lstrip/rstrip/single_word on added "
                                            "token ",
                                            content));
        }
        added.emplace_back(content, id);
      }
    }
    std::vector<std::pair<std::string, std::string>> merges;
    for (const json& m : model["merges"]) {
      if (m.is_string()) {  // older format: "left right"
        ASSIGN_OR_RETURN(merges.emplace_back(), SplitMerge(path, m.get<std::string>()));
      } else if (m.is_array() && m.size() == 2) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return Invalid(path, absl::StrCat("bad merge ", m.dump()));
      }
    }
    RETURN_IF_ERROR(tok->Build(path, added, merges));
    ASSIGN_OR_RETURN(tok->prefix_ids_, PrefixIds(path, j.value("post_processor", json())));
    for (int32_t id : tok->prefix_ids_) {
      if (id < 0 || id >= tok->vocab_size()) return Invalid(path, "post_processor id out of range");
    }
    RETURN_IF_ERROR(tok->SetSpecialIds(path, bos_id, eos_id));
  } catch (const json::exception& e) {
    return Invalid(path, absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
  return tok;
}

int32_t BpeTokenizer::TokenId(const std::string& token) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
  if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
  return -1;
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> syms;
  syms.reserve(piece.size());
  for (char ch : piece) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(ch)];
    // A byte-level vocabulary has all 256 bytes; a byte it lacks cannot be encoded and is
    // dropped (HF would fail or emit unk; no byte-level model we know of lacks one).
    if (id >= 0) syms.push_back(id);
  }
  // Repeatedly merge the adjacent pair of lowest rank, leftmost among equals, as HF's BPE:
  // a heap of candidate pairs over a linked list of symbols, O(n log n) in the piece length
  // (a piece can be a whole 100 KB run of letters or spaces). Entries made stale by an earlier
  // merge are recognised by their ids no longer matching and skipped.
  if (syms.size() > 1) {
    struct Candidate {
      int32_t rank;
      int32_t pos;  // index of the left symbol
      int32_t left;
      int32_t right;
      int32_t merged;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    const auto n = static_cast<int32_t>(syms.size());
    std::vector<int32_t> next(n), prev(n);
    for (int32_t i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto push = [&](int32_t pos) {
      if (pos < 0 || next[pos] < 0) return;
      auto it = merges_.find(PairKey(syms[pos], syms[next[pos]]));
      if (it != merges_.end()) {
        heap.push({it->second.rank, pos, syms[pos], syms[next[pos]], it->second.merged_id});
      }
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const int32_t right = next[c.pos];
      if (syms[c.pos] != c.left || right < 0 || syms[right] != c.right) continue;  // stale
      syms[c.pos] = c.merged;
      syms[right] = -1;  // removed
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
    size_t kept = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) syms[kept++] = syms[i];
    syms.resize(kept);
  }
  out.insert(out.end(), syms.begin(), syms.end());
}

void BpeTokenizer::EncodeText(std::string_view text, std::vector<int32_t>& out) const {
  const std::vector<std::string_view> pieces =
      llama3_split_ ? internal::SplitLlama3(text) : internal::SplitGpt2(text, digits_);
  for (std::string_view piece : pieces) EncodePiece(piece, out);
}

std::vector<int32_t> BpeTokenizer::Encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out = prefix_ids_;
  // Byte-level vocabularies may lack bytes that never occur in UTF-8 (SmolLM2 has no 0xFE,
  // 0xFF), and HF only ever sees valid UTF-8, so invalid bytes become U+FFFD first.
  const std::string valid = internal::ToValidUtf8(text);
  const std::string_view view(valid);
  size_t start = 0;  // start of the text not yet encoded
  size_t i = 0;
  while (i < view.size()) {
    const auto& candidates = added_by_first_byte_[static_cast<uint8_t>(view[i])];
    const std::pair<std::string, int32_t>* match = nullptr;
    for (const auto& c : candidates) {  // longest first
      if (view.substr(i, c.first.size()) == c.first) {
        match = &c;
        break;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    EncodeText(view.substr(start, i - start), out);
    out.push_back(match->second);
    i += match->first.size();
    start = i;
  }
  EncodeText(view.substr(start), out);
  return out;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += TokenBytes(id);
  return out;
}

}  // namespace tpserve

namespace tpserve {
namespace {

// Byte-level decode is a concatenation, so streaming only has to hold back a tail that starts a
// UTF-8 character more bytes could still complete.
class ByteStreamDecoder final : public internal::StreamDecoder {
 public:
  ByteStreamDecoder(const BpeTokenizer& tok, std::string pending)
      : tok_(&tok), pending_(std::move(pending)) {}

  std::string Push(int32_t token) override {
    pending_ += tok_->TokenBytes(token);  // no allocation per streamed token
    const size_t keep = IncompleteTail(pending_);
    std::string out = internal::ToValidUtf8(std::string_view(pending_).substr(0, pending_.size() - keep));
    pending_.erase(0, pending_.size() - keep);
    return out;
  }
  std::string Flush() override {
    std::string out = internal::ToValidUtf8(pending_);
    pending_.clear();
    return out;
  }

  // Length of the longest suffix of `s` that is the start of a UTF-8 character still missing
  // bytes (a lead byte followed by fewer continuation bytes than it announces); 0 if none.
  static size_t IncompleteTail(const std::string& s) {
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
      const auto b = static_cast<uint8_t>(s[s.size() - back]);
      if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
      const size_t need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
      return need > back ? back : 0;
    }
    return 0;
  }

 private:
  const BpeTokenizer* tok_;
  std::string pending_;  // bytes not yet emitted
};

}  // namespace

std::unique_ptr<internal::StreamDecoder> BpeTokenizer::NewStreamDecoder(
    std::vector<int32_t> prompt_ids) const {
  // Only a prompt ending inside a character leaves bytes pending; four tokens are more than
  // any character needs.
  const size_t from = prompt_ids.size() > 4 ? prompt_ids.size() - 4 : 0;
  std::string tail = Decode(std::vector<int32_t>(prompt_ids.begin() + static_cast<std::ptrdiff_t>(from),
                                                 prompt_ids.end()));
  tail.erase(0, tail.size() - ByteStreamDecoder::IncompleteTail(tail));
  return std::make_unique<ByteStreamDecoder>(*this, std::move(tail));
}

}  // namespace tpserve
