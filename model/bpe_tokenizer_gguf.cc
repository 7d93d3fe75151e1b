// BpeTokenizer::LoadFromGguf: the tokenizer.ggml.* metadata of a "gpt2" GGUF file.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/bpe_tokenizer.h"

namespace tpserve {
namespace {

absl::Status Invalid(std::string_view source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": ", key, ": ", what));
}

absl::StatusOr<const std::vector<GgufValue>*> StringArray(const GgufFile& file,
                                                           std::string_view source,
                                                           const std::string& key) {
  const GgufValue* v = file.FindMetadata(key);
  if (v == nullptr) return Invalid(source, key, "missing");
  const std::vector<GgufValue>* a = v->AsArray();
  if (a == nullptr || v->element_type() != GgufValue::Type::kString) {
    return Invalid(source, key, "not an array of strings");
  }
  return a;
}

// Optional integer id: -1 when absent.
absl::StatusOr<int32_t> OptionalId(const GgufFile& file, std::string_view source,
                                   const std::string& key) {
  const GgufValue* v = file.FindMetadata(key);
  if (v == nullptr) return -1;
  const std::optional<uint64_t> id = v->AsUint64();
  if (!id.has_value() || *id > 0x7fffffff) return Invalid(source, key, "not a token id");
  return static_cast<int32_t>(*id);
}

struct PreTokenizerChoice {
  internal::DigitSplit digits = internal::DigitSplit::kNone;
  bool llama3 = false;
};

absl::StatusOr<PreTokenizerChoice> PreTokenizer(const GgufFile& file, std::string_view source) {
  const std::string key = "tokenizer.ggml.pre";
  const GgufValue* v = file.FindMetadata(key);
  // Files converted before llama.cpp recorded the pre-tokenizer mean the GPT-2 default.
  if (v == nullptr) return PreTokenizerChoice{};
  const std::string* pre = v->AsString();
  if (pre == nullptr) return Invalid(source, key, "not a string");
  for (const char* name : {"gpt2", "default", "mpt", "olmo"}) {
    if (*pre == name) return PreTokenizerChoice{};
  }
  for (const char* name : {"smollm", "starcoder", "refact", "codeshell"}) {
    if (*pre == name) return PreTokenizerChoice{internal::DigitSplit::kIndividual, false};
  }
  for (const char* name : {"llama-bpe", "llama3", "llama-v3"}) {
    if (*pre == name) return PreTokenizerChoice{internal::DigitSplit::kNone, true};
  }
  return Invalid(source, key, absl::StrCat("unsupported pre-tokenizer \"", *pre, "\""));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::LoadFromGguf(const GgufFile& file,
                                                                         std::string_view source) {
  const GgufValue* model = file.FindMetadata("tokenizer.ggml.model");
  if (model == nullptr || model->AsString() == nullptr) {
    return Invalid(source, "tokenizer.ggml.model", "missing or not a string");
  }
  if (*model->AsString() != "gpt2") {
    return Invalid(source, "tokenizer.ggml.model",
                   absl::StrCat("\"", *model->AsString(), "\" is not a byte-level BPE (\"gpt2\") "
                                "tokenizer"));
  }
  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  ASSIGN_OR_RETURN(const PreTokenizerChoice pre, PreTokenizer(file, source));
  tok->digits_ = pre.digits;
  tok->llama3_split_ = pre.llama3;
  ASSIGN_OR_RETURN(const std::vector<GgufValue>* tokens,
                   StringArray(file, source, "tokenizer.ggml.tokens"));
  const std::vector<GgufValue>* types = nullptr;
  if (const GgufValue* t = file.FindMetadata("tokenizer.ggml.token_type"); t != nullptr) {
    types = t->AsArray();
    if (types == nullptr || types->size() != tokens->size()) {
      return Invalid(source, "tokenizer.ggml.token_type",
                     absl::StrCat("not an array of ", tokens->size(), " integers"));
    }
  }
  std::vector<std::pair<std::string, int32_t>> added;
  for (size_t id = 0; id < tokens->size(); ++id) {
    const std::string& token = *(*tokens)[id].AsString();
    if (token.empty()) continue;
    int64_t type = 1;  // normal
    if (types != nullptr) {
      const std::optional<int64_t> t = (*types)[id].AsInt64();
      if (!t.has_value()) return Invalid(source, "tokenizer.ggml.token_type", "not an integer");
      type = *t;
    }
    constexpr int64_t kControl = 3, kUserDefined = 4;
    if (type == kControl || type == kUserDefined) added.emplace_back(token, static_cast<int32_t>(id));
    tok->vocab_.try_emplace(token, static_cast<int32_t>(id));
  }
  ASSIGN_OR_RETURN(const std::vector<GgufValue>* merge_values,
                   StringArray(file, source, "tokenizer.ggml.merges"));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merge_values->size());
  for (const GgufValue& m : *merge_values) {
    ASSIGN_OR_RETURN(merges.emplace_back(), SplitMerge(source, *m.AsString()));
  }
  RETURN_IF_ERROR(tok->Build(source, added, merges));
  ASSIGN_OR_RETURN(const int32_t bos, OptionalId(file, source, "tokenizer.ggml.bos_token_id"));
  ASSIGN_OR_RETURN(const int32_t eos, OptionalId(file, source, "tokenizer.ggml.eos_token_id"));
  RETURN_IF_ERROR(tok->SetSpecialIds(source, bos, eos));
  bool add_bos = false;
  if (const GgufValue* v = file.FindMetadata("tokenizer.ggml.add_bos_token"); v != nullptr) {
    if (!v->AsBool().has_value()) return Invalid(source, "tokenizer.ggml.add_bos_token", "not a bool");
    add_bos = *v->AsBool();
  }
  if (add_bos) {
    if (bos < 0) return Invalid(source, "tokenizer.ggml.add_bos_token", "true but no bos_token_id");
    tok->prefix_ids_ = {bos};
  }
  return tok;
}

}  // namespace tpserve
