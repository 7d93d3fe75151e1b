// libFuzzer target: ParseModelConfig on arbitrary text. An accepted config must satisfy the
// invariants the rest of the engine relies on (checked here); a rejected one must be
// InvalidArgument.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "model/config.h"

namespace {

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckAccepted(const tpserve::ModelConfig& c) {
  Require(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0);
  Require(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0);
  Require(c.head_dim > 0 && c.vocab_size > 0 && c.max_position_embeddings > 0);
  Require(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0);
  Require(std::isfinite(c.rope_theta) && c.rope_theta > 0);
  Require(c.sliding_window >= 0);
  if (c.architecture == tpserve::Architecture::kLlama) Require(c.sliding_window == 0);
  Require(c.bos_token_id == -1 || (c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size));
  for (int id : c.eos_token_ids) Require(id >= 0 && id < c.vocab_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tpserve::ModelConfig> c = tpserve::ParseModelConfig(text, "fuzz/config.json");
  if (c.ok()) {
    CheckAccepted(*c);
  } else {
    Require(c.status().code() == absl::StatusCode::kInvalidArgument);
  }
  return 0;
}
