#include "clients/cli/commands.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/cli/batch_runner.h"
#include "clients/cli/flags.h"
#include "clients/cli/load_bench.h"
#include "clients/cpp/client.h"
#include "nlohmann/json.hpp"

namespace tpserve::cli {
namespace {

using client::Client;
using client::GenerateOptions;
using Json = nlohmann::ordered_json;

constexpr char kDefaultServer[] = "127.0.0.1:50051";  // tpserve-coordinator's default --listen

struct Command {
  std::string name;
  std::string synopsis;
  std::string summary;
  std::vector<FlagSpec> flags;
  int (*run)(const Flags&);
};

// A bad flag value found by a subcommand: the message and a hint, exit 2. (Unknown flags are
// caught before, in RunCli, which prints the whole usage of the command.)
int BadUsage(const absl::Status& status) {
  absl::FPrintF(stderr, "tpserve: %s (see --help)\n", status.message());
  return kExitUsage;
}

std::vector<FlagSpec> ServerFlags() {
  return {
      {"server", FlagKind::kString,
       "coordinator address host:port (default $TPSERVE_SERVER or 127.0.0.1:50051)"},
      {"timeout_ms", FlagKind::kInt, "deadline of each call in ms (default 0 = none)"},
  };
}

std::vector<FlagSpec> SamplingFlags() {
  return {
      {"max_new_tokens", FlagKind::kInt, "most tokens to generate (default 16)"},
      {"temperature", FlagKind::kFloat, "softmax temperature, 0 = greedy (default 1)"},
      {"top_p", FlagKind::kFloat, "nucleus probability mass in (0, 1] (default 1 = off)"},
      {"top_k", FlagKind::kInt, "keep the k most probable tokens (default 0 = off)"},
      {"seed", FlagKind::kString, "sampler seed, a whole number >= 0 (default random)"},
  };
}

std::vector<FlagSpec> GenerateFlags() {
  std::vector<FlagSpec> flags = ServerFlags();
  const std::vector<FlagSpec> prompt = {
      {"prompt", FlagKind::kString, "prompt text (BOS added as the model's tokenizer says)"},
      {"prompt_token_ids", FlagKind::kString, "prompt as comma-separated token ids, used as is"},
      {"message", FlagKind::kString,
       "a chat turn, rendered with the model's chat template (repeatable: user, assistant, user, ...)",
       true},
      {"system", FlagKind::kString, "system prompt of the chat given by --message"},
  };
  const std::vector<FlagSpec> sampling = SamplingFlags();
  const std::vector<FlagSpec> more = {
      {"min_p", FlagKind::kFloat, "drop tokens below min_p x the top probability (default 0)"},
      {"repetition_penalty", FlagKind::kFloat, "repetition penalty (default 1 = off)"},
      {"stop", FlagKind::kString, "stop string, not included in the text (repeatable)", true},
      {"stop_token_ids", FlagKind::kString, "comma-separated token ids that end generation"},
      {"ignore_eos", FlagKind::kBool, "keep generating past the EOS token"},
      {"logprobs", FlagKind::kInt, "top alternatives returned per generated token (default 0)"},
      {"prompt_logprobs", FlagKind::kInt, "top alternatives per prompt token (default 0)"},
      {"json", FlagKind::kBool, "print JSON instead of text"},
  };
  for (const auto* part : {&prompt, &sampling, &more}) flags.insert(flags.end(), part->begin(), part->end());
  return flags;
}

absl::StatusOr<uint32_t> U32Flag(const Flags& flags, const std::string& name, uint32_t fallback,
                                 uint32_t min) {
  const int64_t v = flags.Int(name, fallback);
  if (v < min || v > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be in [", min, ", ", std::numeric_limits<uint32_t>::max(), "]"));
  }
  return static_cast<uint32_t>(v);
}

absl::StatusOr<std::vector<uint32_t>> IdList(const Flags& flags, const std::string& name) {
  std::vector<uint32_t> ids;
  if (!flags.Has(name)) return ids;
  for (absl::string_view part : absl::StrSplit(flags.String(name), ',', absl::SkipWhitespace())) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", std::string(part), "' is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

// Fills the sampling fields that every generating command shares (batch: the defaults of lines).
absl::Status ReadSampling(const Flags& flags, GenerateOptions& o) {
  absl::StatusOr<uint32_t> max_new = U32Flag(flags, "max_new_tokens", o.max_new_tokens, 1);
  if (!max_new.ok()) return max_new.status();
  o.max_new_tokens = *max_new;
  absl::StatusOr<uint32_t> top_k = U32Flag(flags, "top_k", o.top_k, 0);
  if (!top_k.ok()) return top_k.status();
  o.top_k = *top_k;
  o.temperature = static_cast<float>(flags.Float("temperature", o.temperature));
  o.top_p = static_cast<float>(flags.Float("top_p", o.top_p));
  if (flags.Has("seed")) {
    uint64_t seed = 0;
    if (!absl::SimpleAtoi(flags.String("seed"), &seed)) {
      return absl::InvalidArgumentError("--seed must be a whole number >= 0");
    }
    o.seed = seed;
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateOptions> ReadGenerateOptions(const Flags& flags) {
  GenerateOptions o;
  o.prompt = flags.String("prompt");
  absl::StatusOr<std::vector<uint32_t>> ids = IdList(flags, "prompt_token_ids");
  if (!ids.ok()) return ids.status();
  o.prompt_token_ids = *std::move(ids);
  const std::vector<std::string> turns = flags.All("message");
  if (flags.Has("system")) {
    if (turns.empty()) return absl::InvalidArgumentError("--system needs --message");
    o.messages.push_back({"system", flags.String("system")});
  }
  for (size_t i = 0; i < turns.size(); ++i) {
    o.messages.push_back({i % 2 == 0 ? "user" : "assistant", turns[i]});
  }
  const int given = flags.Has("prompt") + !o.prompt_token_ids.empty() + !turns.empty();
  if (given != 1) {
    return absl::InvalidArgumentError("give one of --prompt, --prompt_token_ids or --message");
  }
  if (absl::Status s = ReadSampling(flags, o); !s.ok()) return s;
  o.min_p = static_cast<float>(flags.Float("min_p", o.min_p));
  o.repetition_penalty = static_cast<float>(flags.Float("repetition_penalty", o.repetition_penalty));
  o.stop = flags.All("stop");
  absl::StatusOr<std::vector<uint32_t>> stop_ids = IdList(flags, "stop_token_ids");
  if (!stop_ids.ok()) return stop_ids.status();
  o.stop_token_ids = *std::move(stop_ids);
  o.ignore_eos = flags.Bool("ignore_eos");
  absl::StatusOr<uint32_t> logprobs = U32Flag(flags, "logprobs", 0, 0);
  if (!logprobs.ok()) return logprobs.status();
  o.logprobs = *logprobs;
  absl::StatusOr<uint32_t> prompt_logprobs = U32Flag(flags, "prompt_logprobs", 0, 0);
  if (!prompt_logprobs.ok()) return prompt_logprobs.status();
  o.prompt_logprobs = *prompt_logprobs;
  return o;
}

// Connects with --server (or $TPSERVE_SERVER) and --timeout_ms; exits through the caller on
// an error (only a bad flag value can fail here: connection is lazy).
absl::StatusOr<std::unique_ptr<Client>> ConnectFromFlags(const Flags& flags) {
  const char* env = std::getenv("TPSERVE_SERVER");
  const std::string fallback = env != nullptr && env[0] != '\0' ? env : kDefaultServer;
  const int64_t timeout_ms = flags.Int("timeout_ms", 0);
  if (timeout_ms < 0) return absl::InvalidArgumentError("--timeout_ms must be >= 0");
  return Client::Connect(flags.String("server", fallback), timeout_ms);
}

int Fail(const absl::Status& status) {
  absl::FPrintF(stderr, "tpserve: %s\n", status.ToString());
  return kExitFailure;
}

Json LogprobsJson(const std::vector<client::TokenLogprob>& items) {
  Json out = Json::array();
  for (const client::TokenLogprob& lp : items) {
    Json top = Json::array();
    for (const client::TopLogprob& t : lp.top)
      top.push_back({{"token_id", t.token_id}, {"logprob", t.logprob}});
    out.push_back({{"token_id", lp.token_id}, {"logprob", lp.logprob}, {"top", top}});
  }
  return out;
}

// The JSON of a result or a chunk (same fields).
template <typename R>
Json ResultJson(const R& r, const GenerateOptions& o) {
  Json j = Json::object();
  j["request_id"] = r.request_id;
  j["text"] = r.text;
  j["token_ids"] = r.token_ids;
  j["finish_reason"] = std::string(client::FinishReasonName(r.finish_reason));
  j["prompt_tokens"] = r.prompt_tokens;
  j["generated_tokens"] = r.generated_tokens;
  if (o.logprobs > 0) j["logprobs"] = LogprobsJson(r.logprobs);
  if (o.prompt_logprobs > 0) j["prompt_logprobs"] = LogprobsJson(r.prompt_logprobs);
  return j;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void PrintLogprobTable(const char* title, const std::vector<client::TokenLogprob>& items) {
  if (items.empty()) return;
  absl::PrintF("%s\n%10s %10s  top\n", title, "token_id", "logprob");
  for (const client::TokenLogprob& lp : items) {
    std::string top;
    for (const client::TopLogprob& t : lp.top) absl::StrAppendFormat(&top, " %d:%.4f", t.token_id, t.logprob);
    absl::PrintF("%10d %10.4f %s\n", lp.token_id, lp.logprob, top);
  }
}

template <typename R>
void PrintFinish(const R& r) {
  absl::FPrintF(stderr, "[finish_reason=%s prompt_tokens=%d generated_tokens=%d]\n",
                client::FinishReasonName(r.finish_reason), r.prompt_tokens, r.generated_tokens);
}

int RunGenerate(const Flags& flags) {
  absl::StatusOr<GenerateOptions> options = ReadGenerateOptions(flags);
  if (!options.ok()) return BadUsage(options.status());
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<client::GenerateResult> result = (*client)->Generate(*options);
  if (!result.ok()) return Fail(result.status());
  if (flags.Bool("json")) {
    absl::PrintF("%s\n", Dump(ResultJson(*result, *options)));
    return kExitOk;
  }
  absl::PrintF("%s\n", result->text);
  PrintLogprobTable("prompt logprobs:", result->prompt_logprobs);
  PrintLogprobTable("logprobs:", result->logprobs);
  PrintFinish(*result);
  return kExitOk;
}

int RunStream(const Flags& flags) {
  absl::StatusOr<GenerateOptions> options = ReadGenerateOptions(flags);
  if (!options.ok()) return BadUsage(options.status());
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  const bool json = flags.Bool("json");
  client::StreamChunk last;
  bool any = false;
  absl::Status status = (*client)->Stream(*options, [&](const client::StreamChunk& chunk) {
    if (json) {
      absl::PrintF("%s\n", Dump(ResultJson(chunk, *options)));
    } else {
      absl::PrintF("%s", chunk.text);
    }
    std::fflush(stdout);
    last = chunk;
    any = true;
    return true;
  });
  if (!json && any) absl::PrintF("\n");
  if (!status.ok()) return Fail(status);
  if (!json) PrintFinish(last);
  return kExitOk;
}

int RunTokenize(const Flags& flags) {
  if (!flags.Has("text")) return BadUsage(absl::InvalidArgumentError("--text is required"));
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<std::vector<uint32_t>> ids =
      (*client)->Tokenize(flags.String("text"), flags.Bool("add_bos"));
  if (!ids.ok()) return Fail(ids.status());
  if (flags.Bool("json")) {
    absl::PrintF("%s\n", Json(*ids).dump());
  } else {
    absl::PrintF("%s\n", absl::StrJoin(*ids, " "));
  }
  return kExitOk;
}

int RunHealth(const Flags& flags) {
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<std::string> health = (*client)->Health(flags.String("service"));
  if (!health.ok()) return Fail(health.status());
  absl::PrintF("%s\n", *health);
  return *health == "SERVING" ? kExitOk : kExitFailure;
}

int RunStatus(const Flags& flags) {
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<client::ClusterStatus> status = (*client)->GetClusterStatus();
  if (!status.ok()) return Fail(status.status());
  if (flags.Bool("json")) {
    Json replicas = Json::array();
    for (const client::ReplicaStatus& r : status->replicas) {
      replicas.push_back({{"name", r.name},
                          {"state", r.state},
                          {"backend", r.backend},
                          {"tensor_parallel", r.tensor_parallel},
                          {"pipeline_parallel", r.pipeline_parallel},
                          {"kv_blocks_total", r.kv_blocks_total},
                          {"kv_blocks_free", r.kv_blocks_free},
                          {"kv_block_size", r.kv_block_size},
                          {"running_requests", r.running_requests},
                          {"queued_requests", r.queued_requests},
                          {"kv_cache_bytes", r.kv_cache_bytes},
                          {"weight_bytes", r.weight_bytes}});
    }
    Json j = {{"replicas", replicas}, {"queued_requests", status->queued_requests}};
    absl::PrintF("%s\n", Dump(j));
    return kExitOk;
  }
  constexpr char kRow[] = "%-16s %-12s %-8s %3s %3s %15s %11s %8s %7s\n";
  absl::PrintF(kRow, "NAME", "STATE", "BACKEND", "TP", "PP", "KV_FREE/TOTAL", "BLOCK_TOKENS", "RUNNING",
               "QUEUED");
  for (const client::ReplicaStatus& r : status->replicas) {
    absl::PrintF(kRow, r.name, r.state, r.backend, absl::StrCat(r.tensor_parallel),
                 absl::StrCat(r.pipeline_parallel), absl::StrCat(r.kv_blocks_free, "/", r.kv_blocks_total),
                 absl::StrCat(r.kv_block_size), absl::StrCat(r.running_requests),
                 absl::StrCat(r.queued_requests));
  }
  absl::PrintF("%d replica(s), %d request(s) queued for any replica\n", status->replicas.size(),
               status->queued_requests);
  return kExitOk;
}

int RunModel(const Flags& flags) {
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<client::ModelInfo> m = (*client)->GetModelInfo();
  if (!m.ok()) return Fail(m.status());
  Json j = {{"name", m->name},
            {"architecture", m->architecture},
            {"num_layers", m->num_layers},
            {"hidden_size", m->hidden_size},
            {"num_heads", m->num_heads},
            {"num_kv_heads", m->num_kv_heads},
            {"vocab_size", m->vocab_size},
            {"max_context", m->max_context},
            {"sliding_window", m->sliding_window},
            {"bos_token_id", m->bos_token_id},
            {"eos_token_ids", m->eos_token_ids},
            {"fingerprint", m->fingerprint},
            {"chat_template", m->chat_template},
            {"default_system_prompt", m->default_system_prompt}};
  if (flags.Bool("json")) {
    absl::PrintF("%s\n", Dump(j));
  } else {
    for (const auto& [key, value] : j.items()) {
      absl::PrintF("%-16s %s\n", key, value.is_string() ? value.get<std::string>() : value.dump());
    }
  }
  return kExitOk;
}

int RunBatchCommand(const Flags& flags) {
  BatchOptions options;
  options.input_path = flags.String("input");
  options.output_path = flags.String("output");
  if (options.input_path.empty() || options.output_path.empty()) {
    return BadUsage(absl::InvalidArgumentError("--input and --output are required"));
  }
  const int64_t concurrency = flags.Int("concurrency", 16);
  const int64_t max_retries = flags.Int("max_retries", 5);
  if (concurrency < 1 || concurrency > 4096)
    return BadUsage(absl::InvalidArgumentError("--concurrency must be in [1, 4096]"));
  if (max_retries < 0 || max_retries > 100)
    return BadUsage(absl::InvalidArgumentError("--max_retries must be in [0, 100]"));
  options.concurrency = static_cast<int>(concurrency);
  options.max_retries = static_cast<int>(max_retries);
  options.backoff_base_ms = flags.Int("backoff_ms", 500);
  if (options.backoff_base_ms < 0) return BadUsage(absl::InvalidArgumentError("--backoff_ms must be >= 0"));
  if (absl::Status s = ReadSampling(flags, options.defaults); !s.ok()) {
    return BadUsage(s);
  }
  if (flags.Bool("progress", true)) options.progress = stderr;
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  Client* c = client->get();
  absl::StatusOr<BatchSummary> summary =
      RunBatch(options, [c](const GenerateOptions& o) { return c->Generate(o); });
  if (!summary.ok()) return Fail(summary.status());
  absl::FPrintF(stderr, "batch: %s\n", FormatSummary(*summary));
  if (!summary->complete()) {
    absl::FPrintF(stderr, "batch: %d request(s) have no result yet; run the same command again to resume\n",
                  summary->unfinished);
    return kExitFailure;
  }
  return kExitOk;
}

int RunBench(const Flags& flags) {
  std::vector<int> levels;
  for (absl::string_view part : absl::StrSplit(flags.String("concurrency", "1,4,16,64"), ',')) {
    int c = 0;
    if (!absl::SimpleAtoi(part, &c) || c < 1 || c > 4096) {
      return BadUsage(absl::InvalidArgumentError("--concurrency: a comma-separated list of 1..4096"));
    }
    levels.push_back(c);
  }
  const int64_t requests = flags.Int("requests", 0);
  const int64_t prompt_len = flags.Int("prompt_len", 32);
  const int64_t new_tokens = flags.Int("new_tokens", 32);
  if (requests < 0 || prompt_len < 1 || prompt_len > 100000 || new_tokens < 1 || new_tokens > 100000) {
    return BadUsage(absl::InvalidArgumentError(
        "--requests >= 0, --prompt_len and --new_tokens in [1, 100000]"));
  }
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) return BadUsage(client.status());
  absl::StatusOr<client::ModelInfo> model = (*client)->GetModelInfo();
  if (!model.ok()) return Fail(model.status());
  Client* c = client->get();
  const StreamFn stream = [c](const GenerateOptions& o,
                              const std::function<bool(const client::StreamChunk&)>& on_chunk) {
    return c->Stream(o, on_chunk);
  };
  LoadLevel level;
  level.prompt_len = static_cast<int>(prompt_len);
  level.vocab_size = model->vocab_size;
  // Warm-up: first-touch of KV blocks, thread pools and channels stays out of the figures.
  level.concurrency = 4;
  level.requests = 8;
  level.new_tokens = 4;
  if (absl::StatusOr<LoadResult> warm = RunLoadLevel(level, stream); !warm.ok()) {
    return Fail(warm.status());
  }
  level.new_tokens = static_cast<int>(new_tokens);
  absl::PrintF("| concurrency | requests | TTFT median ms | ITL median ms | requests/s | output tokens/s |\n");
  absl::PrintF("|---|---|---|---|---|---|\n");
  for (int conc : levels) {
    level.concurrency = conc;
    level.requests = requests > 0 ? static_cast<int>(std::max<int64_t>(requests, conc))
                                  : std::max(2 * conc, 8);
    absl::StatusOr<LoadResult> r = RunLoadLevel(level, stream);
    if (!r.ok()) return Fail(r.status());
    absl::PrintF("| %d | %d | %.1f | %.1f | %.2f | %.1f |\n", r->concurrency, r->requests,
                 r->ttft_ms, r->itl_ms, r->requests_per_s, r->output_tokens_per_s);
    std::fflush(stdout);
  }
  return kExitOk;
}

std::vector<Command> Commands() {
  std::vector<FlagSpec> server = ServerFlags();
  auto with = [&server](std::vector<FlagSpec> more) {
    std::vector<FlagSpec> flags = server;
    flags.insert(flags.end(), more.begin(), more.end());
    return flags;
  };
  std::vector<FlagSpec> batch = with({
      {"input", FlagKind::kString, "JSONL requests: {\"id\", \"prompt\" | \"prompt_token_ids\", ...}"},
      {"output", FlagKind::kString, "JSONL results, appended; ids already there are skipped"},
      {"concurrency", FlagKind::kInt, "requests in flight at most (default 16)"},
      {"max_retries", FlagKind::kInt,
       "retries after UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (default 5)"},
      {"backoff_ms", FlagKind::kInt, "first retry delay, doubling per retry up to 30 s (default 500)"},
      {"progress", FlagKind::kBool, "live progress line on stderr (default true; --progress=false)"},
  });
  const std::vector<FlagSpec> sampling = SamplingFlags();
  batch.insert(batch.end(), sampling.begin(), sampling.end());
  return {
      {"generate", "tpserve generate --prompt TEXT | --message TEXT... [flags]",
       "generate a completion and print it once finished", GenerateFlags(), RunGenerate},
      {"stream", "tpserve stream --prompt TEXT | --message TEXT... [flags]", "generate a completion, printing text as it arrives",
       GenerateFlags(), RunStream},
      {"tokenize", "tpserve tokenize --text TEXT [--add_bos] [--json]",
       "print the model's token ids for a text",
       with({{"text", FlagKind::kString, "text to tokenize"},
             {"add_bos", FlagKind::kBool, "prepend the BOS token"},
             {"json", FlagKind::kBool, "print a JSON list"}}),
       RunTokenize},
      {"health", "tpserve health [--service NAME]",
       "print the grpc.health.v1 status (exit 0 only when SERVING)",
       with({{"service", FlagKind::kString, "service to check (default \"\" = the server)"}}), RunHealth},
      {"status", "tpserve status [--json]", "print a table of the replicas and the queue",
       with({{"json", FlagKind::kBool, "print JSON"}}), RunStatus},
      {"model", "tpserve model [--json]", "describe the model being served",
       with({{"json", FlagKind::kBool, "print JSON"}}), RunModel},
      {"bench", "tpserve bench [--concurrency 1,4,16,64] [--prompt_len 32] [--new_tokens 32]",
       "serving load test: closed-loop streaming clients per concurrency level, a markdown table",
       with({{"concurrency", FlagKind::kString, "comma-separated client counts (default 1,4,16,64)"},
             {"requests", FlagKind::kInt, "requests per level (default max(2 x clients, 8))"},
             {"prompt_len", FlagKind::kInt, "prompt tokens per request (default 32)"},
             {"new_tokens", FlagKind::kInt, "greedy tokens per request, EOS ignored (default 32)"}}),
       RunBench},
      {"batch", "tpserve batch --input PROMPTS.jsonl --output RESULTS.jsonl [flags]",
       "run a JSONL file of requests; resumable (rerun the same command after a crash)", batch,
       RunBatchCommand},
  };
}

void PrintUsage(std::FILE* out) {
  absl::FPrintF(out, "usage: tpserve COMMAND [flags]   (tpserve COMMAND --help for its flags)\n\n");
  for (const Command& c : Commands()) absl::FPrintF(out, "  %-10s %s\n", c.name, c.summary);
  absl::FPrintF(out, "  %-10s %s\n", "launch",
                "tpserve launch CONFIG.yaml: start a cluster from cluster-configs/ (tpserve-launch)");
  absl::FPrintF(out,
                "\nexit codes: 0 ok, 1 failed (RPC error, bad file, incomplete batch, not SERVING), "
                "2 usage error\n");
}

void PrintCommandUsage(const Command& c, std::FILE* out) {
  absl::FPrintF(out, "usage: %s\n%s\n\nflags:\n%s", c.synopsis, c.summary, FlagsUsage(c.flags));
}

}  // namespace

int RunCli(const std::vector<std::string>& args) {
  if (args.empty()) {
    PrintUsage(stderr);
    return kExitUsage;
  }
  if (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    PrintUsage(stdout);
    return kExitOk;
  }
  const std::vector<Command> commands = Commands();
  const Command* command = nullptr;
  for (const Command& c : commands) {
    if (c.name == args[0]) command = &c;
  }
  if (command == nullptr) {
    absl::FPrintF(stderr, "tpserve: unknown command '%s'\n\n", args[0]);
    PrintUsage(stderr);
    return kExitUsage;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const std::string& a : rest) {
    if (a == "--help" || a == "-h") {
      PrintCommandUsage(*command, stdout);
      return kExitOk;
    }
  }
  absl::StatusOr<Flags> flags = Flags::Parse(command->flags, rest);
  if (!flags.ok()) {
    absl::FPrintF(stderr, "tpserve %s: %s\n\n", command->name, flags.status().message());
    PrintCommandUsage(*command, stderr);
    return kExitUsage;
  }
  return command->run(*flags);
}

}  // namespace tpserve::cli
