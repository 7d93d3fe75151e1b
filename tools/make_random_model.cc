// tpserve-make-model: writes a Mistral- or Llama-shaped checkpoint with seeded random weights
// (config.json + model.safetensors), for demos, benchmarks and tests that need a model of a
// given size. Weights are N(0, 1/fan_in) so activations keep their scale through the layers.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "model/safetensors_writer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, out, "", "output folder (created)");
ABSL_FLAG(std::string, arch, "mistral", "mistral or llama");
ABSL_FLAG(int, hidden, 512, "hidden size");
ABSL_FLAG(int, intermediate, 1792, "MLP columns");
ABSL_FLAG(int, layers, 48, "decoder layers");
ABSL_FLAG(int, heads, 8, "query heads");
ABSL_FLAG(int, kv_heads, 2, "key/value heads");
ABSL_FLAG(int, vocab, 32000, "vocabulary size");
ABSL_FLAG(int, max_positions, 4096, "context length");
ABSL_FLAG(int, sliding_window, 4096, "Mistral sliding window (0 = none)");
ABSL_FLAG(std::string, dtype, "bf16", "bf16, f16 or f32");
ABSL_FLAG(uint64_t, seed, 1, "random seed");

namespace tpserve {
namespace {

// splitmix64: a fast, seedable stream for filling hundreds of MB of weights.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float Uniform() { return static_cast<float>((Next() >> 40) + 1) * (1.0f / 16777217.0f); }
  float Normal() {
    return std::sqrt(-2.0f * std::log(Uniform())) * std::cos(6.2831853f * Uniform());
  }
};

int Run() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "tpserve-make-model: --out is required\n");
    return 2;
  }
  const bool mistral = absl::GetFlag(FLAGS_arch) == "mistral";
  if (!mistral && absl::GetFlag(FLAGS_arch) != "llama") {
    std::fprintf(stderr, "tpserve-make-model: --arch must be mistral or llama\n");
    return 2;
  }
  const std::string dt = absl::GetFlag(FLAGS_dtype);
  const DType dtype = dt == "f32" ? DType::kF32 : dt == "f16" ? DType::kF16 : DType::kBF16;
  if (dt != "f32" && dt != "f16" && dt != "bf16") {
    std::fprintf(stderr, "tpserve-make-model: --dtype must be bf16, f16 or f32\n");
    return 2;
  }
  const int64_t h = absl::GetFlag(FLAGS_hidden), inter = absl::GetFlag(FLAGS_intermediate);
  const int64_t heads = absl::GetFlag(FLAGS_heads), kv = absl::GetFlag(FLAGS_kv_heads);
  const int64_t vocab = absl::GetFlag(FLAGS_vocab), layers = absl::GetFlag(FLAGS_layers);
  if (h <= 0 || inter <= 0 || heads <= 0 || kv <= 0 || vocab <= 0 || layers <= 0 ||
      h % heads != 0 || heads % kv != 0) {
    std::fprintf(stderr, "tpserve-make-model: sizes must be positive, heads | hidden, kv_heads | heads\n");
    return 2;
  }
  const int64_t d = h / heads;
  std::filesystem::create_directories(out);

  nlohmann::json config = {
      {"architectures", {mistral ? "MistralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", mistral ? "mistral" : "llama"},
      {"hidden_size", h}, {"intermediate_size", inter}, {"num_hidden_layers", layers},
      {"num_attention_heads", heads}, {"num_key_value_heads", kv}, {"head_dim", d},
      {"vocab_size", vocab}, {"max_position_embeddings", absl::GetFlag(FLAGS_max_positions)},
      {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false},
      {"bos_token_id", 1}, {"eos_token_id", 2}, {"hidden_act", "silu"},
      {"torch_dtype", dt == "f32" ? "float32" : dt == "f16" ? "float16" : "bfloat16"}};
  config["sliding_window"] = nullptr;
  if (mistral && absl::GetFlag(FLAGS_sliding_window) > 0) {
    config["sliding_window"] = absl::GetFlag(FLAGS_sliding_window);
  }
  std::ofstream(out + "/config.json") << config.dump(2) << "\n";

  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", dtype, {vocab, h}}};
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", dtype, {h}});
    specs.push_back({p + "self_attn.q_proj.weight", dtype, {heads * d, h}});
    specs.push_back({p + "self_attn.k_proj.weight", dtype, {kv * d, h}});
    specs.push_back({p + "self_attn.v_proj.weight", dtype, {kv * d, h}});
    specs.push_back({p + "self_attn.o_proj.weight", dtype, {h, heads * d}});
    specs.push_back({p + "post_attention_layernorm.weight", dtype, {h}});
    specs.push_back({p + "mlp.gate_proj.weight", dtype, {inter, h}});
    specs.push_back({p + "mlp.up_proj.weight", dtype, {inter, h}});
    specs.push_back({p + "mlp.down_proj.weight", dtype, {h, inter}});
  }
  specs.push_back({"model.norm.weight", dtype, {h}});
  specs.push_back({"lm_head.weight", dtype, {vocab, h}});

  Rng rng{absl::GetFlag(FLAGS_seed)};
  auto fill = [&](const TensorSpec& s, std::vector<uint8_t>& bytes) {
    const int64_t n = static_cast<int64_t>(bytes.size() / DTypeSize(s.dtype));
    const bool norm = s.shape.size() == 1;
    const float scale = norm ? 0.0f
                        : s.name == "model.embed_tokens.weight"
                            ? 1.0f
                            : 1.0f / std::sqrt(static_cast<float>(s.shape[1]));
    for (int64_t i = 0; i < n; ++i) {
      const float v = norm ? 1.0f : scale * rng.Normal();
      if (s.dtype == DType::kF32) {
        reinterpret_cast<float*>(bytes.data())[i] = v;
      } else {
        reinterpret_cast<uint16_t*>(bytes.data())[i] = s.dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
      }
    }
  };
  absl::Status st = WriteSafetensors(out + "/model.safetensors", specs, fill);
  if (!st.ok()) {
    std::fprintf(stderr, "tpserve-make-model: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::printf("wrote %s (%s, %lld layers, hidden %lld, vocab %lld, %s)\n", out.c_str(),
              mistral ? "mistral" : "llama", static_cast<long long>(layers),
              static_cast<long long>(h), static_cast<long long>(vocab), dt.c_str());
  return 0;
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes a random Mistral/Llama-shaped checkpoint.");
  absl::ParseCommandLine(argc, argv);
  return tpserve::Run();
}
