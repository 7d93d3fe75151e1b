#include "launcher/cluster_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/yaml.h"

namespace tpserve {
namespace {

// Errors carry "file: key: why".
struct Context {
  std::string source;
  absl::Status Bad(const std::string& key, const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": ", why));
  }
};

absl::Status OnlyKeys(const Context& ctx, const YAML::Node& node, const std::string& where,
                      const std::set<std::string>& allowed) {
  if (!node.IsMap()) return ctx.Bad(where, "must be a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (allowed.count(key) == 0) {
      return ctx.Bad(where.empty() ? key : where + "." + key,
                     absl::StrCat("unknown key (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Read(const Context& ctx, const YAML::Node& node, const std::string& key, T* out) {
  if (!node) return absl::OkStatus();
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception&) {
    return ctx.Bad(key, "has the wrong type");
  }
  return absl::OkStatus();
}

absl::Status Positive(const Context& ctx, const std::string& key, int v, int min = 1) {
  if (v < min) return ctx.Bad(key, absl::StrCat("must be >= ", min, ", got ", v));
  return absl::OkStatus();
}

// A replica's `gpus`: valid indices, each once, for a replica that uses GPUs, at least as many
// as the ranks it places on any one host: every rank when local, else mpirun's default
// placement, which fills the slots of "host:N" entries in order (a host without a count ends
// the check: its slots are not known here).
absl::Status CheckGpus(const Context& ctx, const std::string& key, const ReplicaConfig& r) {
  if (r.gpus.empty()) return absl::OkStatus();
  if (r.backend == "cpu") return ctx.Bad(key, "given for a cpu replica (backend cuda or auto)");
  std::set<int> seen;
  for (const int g : r.gpus) {
    if (g < 0) return ctx.Bad(key, absl::StrCat("GPU index ", g, " is negative"));
    if (!seen.insert(g).second) return ctx.Bad(key, absl::StrCat("GPU ", g, " is listed twice"));
  }
  const int gpus = static_cast<int>(r.gpus.size());
  int unplaced = r.tensor_parallel * r.pipeline_parallel;
  if (r.hosts.empty() && unplaced > gpus) {
    return ctx.Bad(key, absl::StrCat(gpus, " GPUs for the ", unplaced, " ranks of a local replica"));
  }
  for (const std::string& host : r.hosts) {
    const size_t colon = host.rfind(':');
    int slots = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(host.substr(colon + 1), &slots)) break;
    const int placed = std::min(slots, unplaced);
    if (placed > gpus) {
      return ctx.Bad(key, absl::StrCat(gpus, " GPUs for the ", placed, " ranks on ", host));
    }
    unplaced -= placed;
  }
  return absl::OkStatus();
}

absl::StatusOr<ClusterConfig> Parse(const Context& ctx, const YAML::Node& root,
                                    const std::string& base_dir) {
  ClusterConfig c;
  if (absl::Status s = OnlyKeys(ctx, root, "", {"model", "coordinator", "replicas", "scheduler"}); !s.ok()) return s;
  if (!root["model"]) return ctx.Bad("model", "missing");
  if (absl::Status s = Read(ctx, root["model"], "model", &c.model); !s.ok()) return s;
  if (!c.model.empty() && c.model[0] != '/') c.model = base_dir + "/" + c.model;
  if (const YAML::Node co = root["coordinator"]) {
    if (absl::Status s = OnlyKeys(ctx, co, "coordinator", {"listen", "worker_listen", "args"}); !s.ok()) return s;
    if (absl::Status s = Read(ctx, co["args"], "coordinator.args", &c.coordinator_args); !s.ok()) return s;
    if (absl::Status s = Read(ctx, co["listen"], "coordinator.listen", &c.coordinator_listen); !s.ok()) return s;
    if (absl::Status s = Read(ctx, co["worker_listen"], "coordinator.worker_listen", &c.coordinator_worker_listen); !s.ok()) return s;
  }
  if (const YAML::Node sc = root["scheduler"]) {
    if (absl::Status s = OnlyKeys(ctx, sc, "scheduler",
                                  {"max_num_seqs", "max_batch_tokens", "kv_block_size", "kv_cache_blocks"});
        !s.ok()) {
      return s;
    }
    SchedulerConfig& s = c.scheduler;
    for (auto [key, field, min] : {std::tuple{"max_num_seqs", &s.max_num_seqs, 1},
                                   std::tuple{"max_batch_tokens", &s.max_batch_tokens, 1},
                                   std::tuple{"kv_block_size", &s.kv_block_size, 1},
                                   std::tuple{"kv_cache_blocks", &s.kv_cache_blocks, 0}}) {
      const std::string name = absl::StrCat("scheduler.", key);
      if (absl::Status st = Read(ctx, sc[key], name, field); !st.ok()) return st;
      if (absl::Status st = Positive(ctx, name, *field, min); !st.ok()) return st;
    }
  }
  const YAML::Node reps = root["replicas"];
  if (!reps || !reps.IsSequence() || reps.size() == 0) {
    return ctx.Bad("replicas", "missing: list at least one replica");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < reps.size(); ++i) {
    const YAML::Node n = reps[i];
    const std::string where = absl::StrCat("replicas[", i, "]");
    if (absl::Status s = OnlyKeys(ctx, n, where,
                                  {"name", "tensor_parallel", "pipeline_parallel", "backend",
                                   "gpu_memory_fraction", "cuda_graphs", "stage_handoff", "hosts",
                                   "gpus", "layers_per_stage", "mpirun_args"});
        !s.ok()) {
      return s;
    }
    ReplicaConfig r;
    r.name = absl::StrCat("replica-", i);
    if (absl::Status s = Read(ctx, n["name"], where + ".name", &r.name); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["tensor_parallel"], where + ".tensor_parallel", &r.tensor_parallel); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["pipeline_parallel"], where + ".pipeline_parallel", &r.pipeline_parallel); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["backend"], where + ".backend", &r.backend); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["gpu_memory_fraction"], where + ".gpu_memory_fraction", &r.gpu_memory_fraction); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["cuda_graphs"], where + ".cuda_graphs", &r.cuda_graphs); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["stage_handoff"], where + ".stage_handoff", &r.stage_handoff); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["hosts"], where + ".hosts", &r.hosts); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["gpus"], where + ".gpus", &r.gpus); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["layers_per_stage"], where + ".layers_per_stage", &r.layers_per_stage); !s.ok()) return s;
    if (absl::Status s = Read(ctx, n["mpirun_args"], where + ".mpirun_args", &r.mpirun_args); !s.ok()) return s;
    if (absl::Status s = Positive(ctx, where + ".tensor_parallel", r.tensor_parallel); !s.ok()) return s;
    if (absl::Status s = Positive(ctx, where + ".pipeline_parallel", r.pipeline_parallel); !s.ok()) return s;
    if (r.backend != "cpu" && r.backend != "cuda" && r.backend != "auto") {
      return ctx.Bad(where + ".backend", absl::StrCat("\"", r.backend, "\" is not cpu, cuda or auto"));
    }
    if (r.stage_handoff != "nccl" && r.stage_handoff != "host") {
      return ctx.Bad(where + ".stage_handoff", absl::StrCat("\"", r.stage_handoff, "\" is not nccl or host"));
    }
    if (!(r.gpu_memory_fraction > 0.0 && r.gpu_memory_fraction <= 1.0)) {
      return ctx.Bad(where + ".gpu_memory_fraction",
                     absl::StrCat(r.gpu_memory_fraction, " is outside (0, 1]"));
    }
    if (!r.layers_per_stage.empty() &&
        static_cast<int>(r.layers_per_stage.size()) != r.pipeline_parallel) {
      return ctx.Bad(where + ".layers_per_stage",
                     absl::StrCat("has ", r.layers_per_stage.size(), " entries for pipeline_parallel ",
                                  r.pipeline_parallel));
    }
    if (absl::Status s = CheckGpus(ctx, where + ".gpus", r); !s.ok()) return s;
    if (!names.insert(r.name).second) return ctx.Bad(where + ".name", "\"" + r.name + "\" is used twice");
    c.replicas.push_back(std::move(r));
  }
  return c;
}

}  // namespace

absl::StatusOr<ClusterConfig> ParseClusterConfig(const std::string& yaml_text,
                                                 const std::string& source,
                                                 const std::string& base_dir) {
  const Context ctx{source};
  try {
    return Parse(ctx, YAML::Load(yaml_text), base_dir);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
}

absl::StatusOr<ClusterConfig> LoadClusterConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  const std::string dir = std::filesystem::absolute(path).parent_path().string();
  return ParseClusterConfig(text.str(), path, dir);
}

}  // namespace tpserve
