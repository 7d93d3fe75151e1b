// tpserve C++ SDK: a blocking client of a tpserve coordinator's public API (tpserve.v1.Inference
// and grpc.health.v1.Health), layer clients. Plain structs only: no gRPC or protobuf type appears
// in this header, so callers need neither.
//
// Threading: a Client may be used from many threads at once; each call is independent (one
// gRPC channel, shared). Callbacks passed to Stream run on the calling thread.
//
// Errors: every method returns the server's gRPC status as an absl::Status with the same code and
// message. The codes a coordinator uses: InvalidArgument = bad request (the message names the
// field); ResourceExhausted = queue or KV capacity full (retryable); Unavailable = no replica, or
// the coordinator is unreachable (retryable); DeadlineExceeded = the call's deadline passed
// (the server cancels the generation); FailedPrecondition = replicas disagree on the model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tpserve::client {

// Why a generation ended.
enum class FinishReason {
  kUnspecified,  // not finished (stream chunks before the last), or a reason newer than this SDK
  kLength,       // reached max_new_tokens or the model's context
  kStop,         // matched a stop string or stop token
  kEos,          // the model produced its EOS token
  kCancelled,    // the client cancelled or its deadline passed
};

// "length", "stop", "eos", "cancelled", or "" for kUnspecified (the Python SDK's names).
std::string_view FinishReasonName(FinishReason reason);

// One generation request. Defaults are the Python SDK's.
// One turn of a conversation (GenerateOptions::messages).
struct ChatMessage {
  std::string role;     // "system" (first only), "user" or "assistant"
  std::string content;  // UTF-8
};

struct GenerateOptions {
  // Echoed in every response; the server makes one when empty.
  std::string request_id;
  // Prompt text; the server adds BOS as the model's tokenizer config says.
  std::string prompt;
  // Prompt as token ids, used as is (no BOS added); when non-empty `prompt` is ignored.
  std::vector<uint32_t> prompt_token_ids;
  // A conversation rendered with the model's chat template (ModelInfo::chat_template); not
  // together with prompt or prompt_token_ids. Roles alternate user, assistant, ... after an
  // optional first system message, and the last is "user".
  std::vector<ChatMessage> messages;
  // Most tokens to generate (>= 1); prompt + max_new_tokens must fit the context.
  uint32_t max_new_tokens = 16;
  // Softmax temperature (>= 0); 0 = greedy.
  float temperature = 1.0f;
  // Nucleus probability mass in (0, 1]; 1 = off.
  float top_p = 1.0f;
  // Keep the k most probable tokens; 0 = off.
  uint32_t top_k = 0;
  // Drop tokens below min_p x the top probability, in [0, 1]; 0 = off.
  float min_p = 0.0f;
  // Hugging Face repetition penalty over prompt and output; 1 = off.
  float repetition_penalty = 1.0f;
  // Sampler seed: same seed and prompt give the same tokens. nullopt = random (unset on the
  // wire); 0 is a seed like any other.
  std::optional<uint64_t> seed;
  // Strings that end generation (not included in the text).
  std::vector<std::string> stop;
  // Token ids that end generation (included in token_ids).
  std::vector<uint32_t> stop_token_ids;
  // Keep generating past the model's EOS token.
  bool ignore_eos = false;
  // Top alternatives returned with each generated token; 0 = no logprobs.
  uint32_t logprobs = 0;
  // Same for every prompt token after the first; 0 = none.
  uint32_t prompt_logprobs = 0;
  // Deadline of this call in milliseconds (the whole stream for Stream); 0 = the client's
  // default (Connect's timeout_ms).
  int64_t timeout_ms = 0;
};

// One of the most probable tokens at a position.
struct TopLogprob {
  uint32_t token_id = 0;
  float logprob = 0.0f;  // natural log probability under the model's raw distribution
};

// The logprob of the token at a position and the best alternatives there, best first.
struct TokenLogprob {
  uint32_t token_id = 0;
  float logprob = 0.0f;  // natural log probability of token_id
  std::vector<TopLogprob> top;
};

// A finished generation (Client::Generate).
struct GenerateResult {
  std::string request_id;
  std::vector<uint32_t> token_ids;            // every generated token
  std::string text;                           // text of token_ids (stop strings removed)
  std::vector<TokenLogprob> logprobs;         // one per generated token when logprobs > 0
  std::vector<TokenLogprob> prompt_logprobs;  // one per prompt token after the first, if asked
  FinishReason finish_reason = FinishReason::kUnspecified;
  uint32_t prompt_tokens = 0;     // tokens in the prompt after tokenisation
  uint32_t generated_tokens = 0;  // tokens generated
};

// One message of a streamed generation (Client::Stream): what is new since the previous one.
struct StreamChunk {
  std::string request_id;
  std::vector<uint32_t> token_ids;                          // tokens new in this chunk
  std::string text;                                         // their text (whole UTF-8 characters only)
  std::vector<TokenLogprob> logprobs;                       // one per token in token_ids when logprobs > 0
  std::vector<TokenLogprob> prompt_logprobs;                // first chunk only, when prompt_logprobs > 0
  FinishReason finish_reason = FinishReason::kUnspecified;  // set on the last chunk only
  uint32_t prompt_tokens = 0;                               // tokens in the prompt
  uint32_t generated_tokens = 0;                            // tokens generated so far
};

// The model a cluster serves.
struct ModelInfo {
  std::string name;          // model folder name
  std::string architecture;  // "MistralForCausalLM" or "LlamaForCausalLM"
  uint32_t num_layers = 0;
  uint32_t hidden_size = 0;
  uint32_t num_heads = 0;
  uint32_t num_kv_heads = 0;
  uint32_t vocab_size = 0;
  uint32_t max_context = 0;     // tokens
  uint32_t sliding_window = 0;  // tokens; 0 = none
  uint32_t bos_token_id = 0;
  std::vector<uint32_t> eos_token_ids;
  std::string fingerprint;  // hash of config and weight index; replicas must match
  std::string chat_template;          // "chatml", "airomnimix" or "" (messages refused)
  std::string default_system_prompt;  // put first when a conversation has no system message
};

// One model replica (one mpirun job of TP x PP ranks).
struct ReplicaStatus {
  std::string name;
  std::string state;  // "SERVING", "NOT_SERVING" or "UNSPECIFIED"
  uint32_t tensor_parallel = 0;
  uint32_t pipeline_parallel = 0;
  uint32_t kv_blocks_total = 0;
  uint32_t kv_blocks_free = 0;
  uint32_t kv_block_size = 0;  // tokens per block
  uint32_t running_requests = 0;
  uint32_t queued_requests = 0;
  std::string backend;  // "cpu" or "cuda"
  uint64_t kv_cache_bytes = 0;  // KV cache memory of the replica's leader rank
  uint64_t weight_bytes = 0;    // weights held by the replica's leader rank
};

// The replicas of a cluster and its queue.
struct ClusterStatus {
  std::vector<ReplicaStatus> replicas;
  uint32_t queued_requests = 0;  // waiting for any replica
};

class Client {
 public:
  // Opens a plaintext channel to `address` ("host:port"). Connection happens lazily on the first
  // call, so an unreachable server shows up there as Unavailable, not here. timeout_ms is the
  // default deadline of every call (0 = none; a whole Generate or stream counts as one call).
  // Errors: InvalidArgument for an empty address or a negative timeout.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                                       int64_t timeout_ms = 0);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Generates a completion and returns it once it has finished.
  [[nodiscard]] absl::StatusOr<GenerateResult> Generate(const GenerateOptions& options);

  // Streams a completion: calls on_chunk once per server message, in order, on this thread; the
  // last chunk carries finish_reason. When on_chunk returns false the call is cancelled on the
  // server and Stream returns OK at once (the caller chose to stop). Returns the RPC's status
  // otherwise (OK after the last chunk).
  [[nodiscard]] absl::Status Stream(const GenerateOptions& options,
                                    const std::function<bool(const StreamChunk&)>& on_chunk);

  // The model's token ids for `text`; add_bos prepends the BOS token.
  [[nodiscard]] absl::StatusOr<std::vector<uint32_t>> Tokenize(const std::string& text, bool add_bos = false);

  // grpc.health.v1 status of `service` ("" = the whole server, "tpserve.v1.Inference" = the
  // API): "SERVING", "NOT_SERVING", "UNKNOWN", or "SERVICE_UNKNOWN" when the server does not know
  // the service. An unreachable server is Unavailable.
  [[nodiscard]] absl::StatusOr<std::string> Health(const std::string& service = "");

  // Describes the model being served.
  [[nodiscard]] absl::StatusOr<ModelInfo> GetModelInfo();

  // The replicas with their health, KV capacity and load, and the cluster's queue.
  [[nodiscard]] absl::StatusOr<ClusterStatus> GetClusterStatus();

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpserve::client
