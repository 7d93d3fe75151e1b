#include "model/gguf_config.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpserve {
namespace {

class MetadataReader {
 public:
  MetadataReader(const GgufFile& file, std::string_view source) : file_(file), source_(source) {}

  absl::Status Error(std::string_view key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source_), ": GGUF metadata key \"", std::string(key), "\" ",
                     std::string(what)));
  }

  // A positive integer that fits int; nullopt when absent.
  absl::StatusOr<std::optional<int>> OptionalPositiveInt(std::string_view key) const {
    const GgufValue* v = file_.FindMetadata(std::string(key));
    if (v == nullptr) return std::optional<int>();
    std::optional<int64_t> n = v->AsInt64();
    if (!n.has_value()) return Error(key, "is not an integer");
    if (*n <= 0 || *n > std::numeric_limits<int>::max()) {
      return Error(key, absl::StrCat("(", *n, ") must be a positive int"));
    }
    return std::optional<int>(static_cast<int>(*n));
  }
  absl::StatusOr<int> PositiveInt(std::string_view key) const {
    absl::StatusOr<std::optional<int>> v = OptionalPositiveInt(key);
    if (!v.ok()) return v.status();
    if (!v->has_value()) return Error(key, "is missing");
    return **v;
  }
  // A non-negative token id; -1 when absent.
  absl::StatusOr<int> TokenId(std::string_view key) const {
    const GgufValue* v = file_.FindMetadata(std::string(key));
    if (v == nullptr) return -1;
    std::optional<int64_t> n = v->AsInt64();
    if (!n.has_value() || *n < 0 || *n > std::numeric_limits<int>::max()) {
      return Error(key, "is not a token id");
    }
    return static_cast<int>(*n);
  }
  absl::StatusOr<std::optional<double>> OptionalPositiveFloat(std::string_view key) const {
    const GgufValue* v = file_.FindMetadata(std::string(key));
    if (v == nullptr) return std::optional<double>();
    std::optional<double> x = v->AsDouble();
    if (!x.has_value()) return Error(key, "is not a float");
    if (!(*x > 0) || !std::isfinite(*x)) return Error(key, absl::StrCat("(", *x, ") must be positive"));
    return x;
  }

 private:
  const GgufFile& file_;
  std::string_view source_;
};

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file, std::string_view source) {
  MetadataReader r(file, source);
  const GgufValue* arch = file.FindMetadata("general.architecture");
  if (arch == nullptr) return r.Error("general.architecture", "is missing");
  if (arch->AsString() == nullptr) return r.Error("general.architecture", "is not a string");
  if (*arch->AsString() != "llama") {
    return r.Error("general.architecture",
                   absl::StrCat("is \"", *arch->AsString(), "\"; only \"llama\" is supported"));
  }
  ModelConfig c;
  c.architecture = Architecture::kLlama;
  c.torch_dtype = DType::kF32;
  absl::StatusOr<int> v = r.PositiveInt("llama.block_count");
  if (!v.ok()) return v.status();
  c.num_layers = *v;
  if (!(v = r.PositiveInt("llama.context_length")).ok()) return v.status();
  c.max_position_embeddings = *v;
  if (!(v = r.PositiveInt("llama.embedding_length")).ok()) return v.status();
  c.hidden_size = *v;
  if (!(v = r.PositiveInt("llama.feed_forward_length")).ok()) return v.status();
  c.intermediate_size = *v;
  if (!(v = r.PositiveInt("llama.attention.head_count")).ok()) return v.status();
  c.num_heads = *v;

  absl::StatusOr<std::optional<int>> opt = r.OptionalPositiveInt("llama.attention.head_count_kv");
  if (!opt.ok()) return opt.status();
  c.num_kv_heads = opt->value_or(c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error("llama.attention.head_count_kv",
                   absl::StrCat("(", c.num_kv_heads, ") does not divide llama.attention.head_count (",
                                c.num_heads, ")"));
  }
  if (!(opt = r.OptionalPositiveInt("llama.attention.key_length")).ok()) return opt.status();
  if (opt->has_value()) {
    c.head_dim = **opt;
  } else if (c.hidden_size % c.num_heads != 0) {
    return r.Error("llama.attention.head_count",
                   absl::StrCat("(", c.num_heads, ") does not divide llama.embedding_length (",
                                c.hidden_size, ") and llama.attention.key_length is absent"));
  } else {
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) {
    return r.Error("llama.attention.key_length", absl::StrCat("(", c.head_dim, ") must be even for RoPE"));
  }
  if (!(opt = r.OptionalPositiveInt("llama.attention.value_length")).ok()) return opt.status();
  if (opt->has_value() && **opt != c.head_dim) {
    return r.Error("llama.attention.value_length",
                   absl::StrCat("(", **opt, ") differs from the key length (", c.head_dim, ")"));
  }
  if (!(opt = r.OptionalPositiveInt("llama.rope.dimension_count")).ok()) return opt.status();
  if (opt->has_value() && **opt != c.head_dim) {
    return r.Error("llama.rope.dimension_count",
                   absl::StrCat("(", **opt, ") differs from the head size (", c.head_dim,
                                "); partial rotary embeddings are not supported"));
  }
  if (const GgufValue* s = file.FindMetadata("llama.rope.scaling.type");
      s != nullptr && (s->AsString() == nullptr || *s->AsString() != "none")) {
    return r.Error("llama.rope.scaling.type", "is set; RoPE scaling is not supported");
  }

  absl::StatusOr<std::optional<double>> f = r.OptionalPositiveFloat("llama.rope.freq_base");
  if (!f.ok()) return f.status();
  c.rope_theta = f->value_or(10000.0);
  if (!(f = r.OptionalPositiveFloat("llama.attention.layer_norm_rms_epsilon")).ok()) return f.status();
  if (!f->has_value()) return r.Error("llama.attention.layer_norm_rms_epsilon", "is missing");
  c.rms_norm_eps = static_cast<float>(**f);

  if (!(opt = r.OptionalPositiveInt("llama.vocab_size")).ok()) return opt.status();
  if (opt->has_value()) {
    c.vocab_size = **opt;
  } else if (const GgufTensorInfo* e = file.FindTensor("token_embd.weight");
             e != nullptr && e->dims.size() == 2 && e->dims[1] > 0 &&
             e->dims[1] <= std::numeric_limits<int>::max()) {
    c.vocab_size = static_cast<int>(e->dims[1]);
  } else {
    return r.Error("llama.vocab_size", "is missing and token_embd.weight gives no vocabulary size");
  }
  c.tie_word_embeddings = file.FindTensor("output.weight") == nullptr;
  // Mistral checkpoints convert to architecture "llama"; a sliding window, when the converter
  // recorded one, is what makes them Mistral for the engine.
  if (!(opt = r.OptionalPositiveInt("llama.attention.sliding_window")).ok()) return opt.status();
  if (opt->has_value()) {
    c.architecture = Architecture::kMistral;
    c.sliding_window = **opt;
  }

  if (!(v = r.TokenId("tokenizer.ggml.bos_token_id")).ok()) return v.status();
  c.bos_token_id = *v;
  if (!(v = r.TokenId("tokenizer.ggml.eos_token_id")).ok()) return v.status();
  if (*v >= 0) c.eos_token_ids = {*v};
  return c;
}

absl::StatusOr<std::optional<std::string>> FindModelGguf(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(model_dir) / "config.json", ec)) return std::optional<std::string>();
  std::vector<std::string> found;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".gguf" && it->is_regular_file(ec)) {
      found.push_back(it->path().string());
    }
  }
  if (found.empty()) return std::optional<std::string>();
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, ": no config.json and ", found.size(),
        " GGUF files; a GGUF model folder must hold exactly one: ", absl::StrJoin(found, ", ")));
  }
  return std::optional<std::string>(found[0]);
}

void PermuteQkRowsToGguf(const float* in, int64_t num_heads, int64_t head_dim, int64_t cols,
                         float* out) {
  const int64_t half_dim = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    for (int64_t half = 0; half < 2; ++half) {
      for (int64_t i = 0; i < half_dim; ++i) {
        const int64_t hf_row = h * head_dim + half * half_dim + i;
        const int64_t gguf_row = h * head_dim + 2 * i + half;
        std::memcpy(out + gguf_row * cols, in + hf_row * cols, sizeof(float) * cols);
      }
    }
  }
}

void UnpermuteGgufQkRows(const float* in, int64_t num_heads, int64_t head_dim, int64_t cols,
                         float* out) {
  const int64_t half_dim = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    for (int64_t half = 0; half < 2; ++half) {
      for (int64_t i = 0; i < half_dim; ++i) {
        const int64_t hf_row = h * head_dim + half * half_dim + i;
        const int64_t gguf_row = h * head_dim + 2 * i + half;
        std::memcpy(out + hf_row * cols, in + gguf_row * cols, sizeof(float) * cols);
      }
    }
  }
}

}  // namespace tpserve
