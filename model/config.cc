#include "model/config.h"

#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using Json = nlohmann::json;

// Reads typed fields of the config object; every error names the source and the field.
class FieldReader {
 public:
  FieldReader(const Json& root, absl::string_view source) : root_(root), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", field, "\" ", what));
  }

  // The field's value, or nullptr when it is absent or null (HF writes null for "unset").
  const Json* Find(const std::string& field) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  // An integer that must fit `int`; nullopt when absent or null.
  absl::StatusOr<std::optional<int>> OptionalInt(const std::string& field) const {
    const Json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    return ToInt(field, *v);
  }

  absl::StatusOr<int> ToInt(const std::string& field, const Json& v) const {
    if (!v.is_number_integer()) {
      return Error(field, absl::StrCat("must be an integer, got ", Describe(v)));
    }
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    constexpr int64_t kMin = std::numeric_limits<int>::min();
    // Non-negative literals are stored unsigned and may exceed int64.
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(kMax)
                               : v.get<int64_t>() < kMin || v.get<int64_t>() > kMax) {
      return Error(field, absl::StrCat("(", Describe(v), ") is out of range"));
    }
    return static_cast<int>(v.get<int64_t>());
  }

  absl::StatusOr<int> RequiredPositiveInt(const std::string& field) const {
    ASSIGN_OR_RETURN(std::optional<int> v, OptionalInt(field));
    if (!v.has_value()) return Error(field, "is missing");
    if (*v <= 0) return Error(field, absl::StrCat("(", *v, ") must be positive"));
    return *v;
  }

  // A positive finite number, `fallback` when absent or null.
  absl::StatusOr<double> PositiveNumber(const std::string& field, double fallback) const {
    const Json* v = Find(field);
    if (v == nullptr) return fallback;
    if (!v->is_number()) return Error(field, absl::StrCat("must be a number, got ", Describe(*v)));
    const double d = v->get<double>();
    if (!std::isfinite(d) || d <= 0) {
      return Error(field, absl::StrCat("(", Describe(*v), ") must be a positive finite number"));
    }
    return d;
  }

  absl::StatusOr<bool> Bool(const std::string& field, bool fallback) const {
    const Json* v = Find(field);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) {
      return Error(field, absl::StrCat("must be a boolean, got ", Describe(*v)));
    }
    return v->get<bool>();
  }

  absl::StatusOr<std::optional<std::string>> OptionalString(const std::string& field) const {
    const Json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return Error(field, absl::StrCat("must be a string, got ", Describe(*v)));
    return v->get<std::string>();
  }

  // Short rendering of a value for messages: scalars verbatim, containers by kind only, so a
  // hostile file cannot blow up the message.
  static std::string Describe(const Json& v) {
    if (v.is_structured()) return absl::StrCat("an ", v.type_name());
    std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
    constexpr size_t kMaxLen = 64;
    if (s.size() > kMaxLen) s = absl::StrCat(s.substr(0, kMaxLen), "...");
    return s;
  }

 private:
  const Json& root_;
  absl::string_view source_;
};

absl::StatusOr<Architecture> ReadArchitecture(const FieldReader& r) {
  if (const Json* archs = r.Find("architectures")) {
    if (!archs->is_array()) {
      return r.Error("architectures", absl::StrCat("must be a list of strings, got ",
                                                   FieldReader::Describe(*archs)));
    }
    std::string seen;
    for (const Json& a : *archs) {
      if (!a.is_string()) {
        return r.Error("architectures",
                       absl::StrCat("must hold strings, got ", FieldReader::Describe(a)));
      }
      const std::string& name = a.get_ref<const std::string&>();
      if (name == "MistralForCausalLM") return Architecture::kMistral;
      if (name == "LlamaForCausalLM") return Architecture::kLlama;
      if (seen.size() < 200) {  // enough to recognise the model; bounded for hostile input
        absl::StrAppend(&seen, seen.empty() ? "" : ", ", FieldReader::Describe(a));
      }
    }
    return r.Error("architectures",
                   absl::StrCat("([", seen,
                                "]) names no supported architecture (MistralForCausalLM, "
                                "LlamaForCausalLM)"));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> type, r.OptionalString("model_type"));
  if (!type.has_value()) {
    return r.Error("architectures", "is missing and so is model_type");
  }
  if (*type == "mistral") return Architecture::kMistral;
  if (*type == "llama") return Architecture::kLlama;
  return r.Error("model_type", absl::StrCat("(", FieldReader::Describe(Json(*type)),
                                            ") is not supported (mistral, llama)"));
}

absl::Status CheckTokenId(const FieldReader& r, absl::string_view field, int id, int vocab_size) {
  if (id < 0 || id >= vocab_size) {
    return r.Error(field, absl::StrCat("(", id, ") must be in [0, vocab_size ", vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ReadEosTokenIds(const FieldReader& r, int vocab_size) {
  std::vector<int> ids;
  const Json* v = r.Find("eos_token_id");
  if (v == nullptr) return ids;
  if (v->is_array()) {
    for (const Json& e : *v) {
      ASSIGN_OR_RETURN(int id, r.ToInt("eos_token_id", e));
      ids.push_back(id);
    }
  } else {
    ASSIGN_OR_RETURN(int id, r.ToInt("eos_token_id", *v));
    ids.push_back(id);
  }
  for (int id : ids) RETURN_IF_ERROR(CheckTokenId(r, "eos_token_id", id, vocab_size));
  return ids;
}

absl::StatusOr<DType> ReadTorchDtype(const FieldReader& r) {
  // Recent transformers write "dtype"; older ones "torch_dtype". Prefer the older key, which
  // is the one the engine documents.
  std::string field = "torch_dtype";
  if (r.Find(field) == nullptr && r.Find("dtype") != nullptr) field = "dtype";
  ASSIGN_OR_RETURN(std::optional<std::string> name, r.OptionalString(field));
  if (!name.has_value() || *name == "float32") return DType::kF32;
  if (*name == "bfloat16") return DType::kBF16;
  if (*name == "float16") return DType::kF16;
  return r.Error(field, absl::StrCat("(", FieldReader::Describe(Json(*name)),
                                     ") is not one of float32, bfloat16, float16"));
}

// rope_theta sits at the top level in most configs; transformers 5 writes it inside
// rope_parameters. Only plain RoPE is implemented: any scaling type is refused, not ignored.
absl::StatusOr<double> ReadRopeTheta(const FieldReader& r) {
  for (const char* field : {"rope_scaling", "rope_parameters"}) {
    const Json* p = r.Find(field);
    if (p == nullptr || p->is_null()) continue;
    if (!p->is_object()) return r.Error(field, "must be an object or null");
    for (const char* key : {"rope_type", "type"}) {
      auto it = p->find(key);
      if (it != p->end() && !(it->is_string() && it->get<std::string>() == "default")) {
        return r.Error(field, absl::StrCat("has ", key, " ", it->dump(),
                                           "; only default RoPE (no scaling) is supported"));
      }
    }
  }
  const Json* params = r.Find("rope_parameters");
  if (r.Find("rope_theta") == nullptr && params != nullptr && params->is_object()) {
    auto it = params->find("rope_theta");
    if (it != params->end()) {
      if (!it->is_number() || !(it->get<double>() > 0)) {
        return r.Error("rope_parameters", "rope_theta must be a positive number");
      }
      return it->get<double>();
    }
  }
  return r.PositiveNumber("rope_theta", 10000.0);
}

absl::StatusOr<ModelConfig> ParseObject(const Json& root, absl::string_view source) {
  const FieldReader r(root, source);
  ModelConfig c;
  ASSIGN_OR_RETURN(c.architecture, ReadArchitecture(r));
  ASSIGN_OR_RETURN(c.hidden_size, r.RequiredPositiveInt("hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, r.RequiredPositiveInt("intermediate_size"));
  ASSIGN_OR_RETURN(c.num_layers, r.RequiredPositiveInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, r.RequiredPositiveInt("num_attention_heads"));
  ASSIGN_OR_RETURN(c.vocab_size, r.RequiredPositiveInt("vocab_size"));
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.RequiredPositiveInt("max_position_embeddings"));

  ASSIGN_OR_RETURN(std::optional<int> kv_heads, r.OptionalInt("num_key_value_heads"));
  c.num_kv_heads = kv_heads.value_or(c.num_heads);
  if (c.num_kv_heads <= 0) {
    return r.Error("num_key_value_heads", absl::StrCat("(", c.num_kv_heads, ") must be positive"));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error(
        "num_key_value_heads",
        absl::StrCat("(", c.num_kv_heads, ") must divide num_attention_heads (", c.num_heads, ")"));
  }

  ASSIGN_OR_RETURN(std::optional<int> head_dim, r.OptionalInt("head_dim"));
  if (head_dim.has_value()) {
    // Some models (e.g. Mistral Nemo) have head_dim != hidden_size / heads, so it wins.
    if (*head_dim <= 0) {
      return r.Error("head_dim", absl::StrCat("(", *head_dim, ") must be positive"));
    }
    c.head_dim = *head_dim;
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return r.Error("num_attention_heads",
                     absl::StrCat("(", c.num_heads, ") must divide hidden_size (", c.hidden_size,
                                  ") when head_dim is not given"));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }

  ASSIGN_OR_RETURN(const double eps, r.PositiveNumber("rms_norm_eps", 1e-6));
  c.rms_norm_eps = static_cast<float>(eps);
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return r.Error("rms_norm_eps", absl::StrCat("(", eps, ") does not fit a positive float"));
  }
  ASSIGN_OR_RETURN(c.rope_theta, ReadRopeTheta(r));

  if (c.architecture == Architecture::kMistral) {
    ASSIGN_OR_RETURN(std::optional<int> window, r.OptionalInt("sliding_window"));
    c.sliding_window = window.value_or(0);
    if (c.sliding_window < 0) {
      return r.Error("sliding_window",
                     absl::StrCat("(", c.sliding_window, ") must be null or non-negative"));
    }
  }
  // Llama has no sliding window: the field is ignored there, whatever it holds.

  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(std::optional<int> bos, r.OptionalInt("bos_token_id"));
  if (bos.has_value()) {
    RETURN_IF_ERROR(CheckTokenId(r, "bos_token_id", *bos, c.vocab_size));
    c.bos_token_id = *bos;
  }
  ASSIGN_OR_RETURN(c.eos_token_ids, ReadEosTokenIds(r, c.vocab_size));
  ASSIGN_OR_RETURN(c.torch_dtype, ReadTorchDtype(r));
  return c;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source_name) {
  // Debian's abseil has its own string_view, which StrCat needs; convert once here.
  const absl::string_view source(source_name.data(), source_name.size());
  // nlohmann throws on malformed text (parse_error, or out_of_range for a number like 1e400);
  // this is the edge where that becomes a Status. Field reads check types before converting.
  try {
    const Json root = Json::parse(json_text);
    if (!root.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": top level must be a JSON object, got ", root.type_name()));
    }
    return ParseObject(root, source);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(source, ": out of memory while parsing"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = absl::StrCat(model_dir, "/config.json");
  ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  return ParseModelConfig(text, path);
}

}  // namespace tpserve
