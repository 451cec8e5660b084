// `kvmesh up [graph.yaml]`: runs an InferenceGraph on this machine as child processes: the
// prefill/decode kvmesh-agents on free loopback ports, then kvmesh-router in front of them. Waits
// for every ready file, writes the router's workers file, prints the endpoint and a curl to paste,
// re-prints every child's log lines with a "[name] " prefix, restarts a crashed child (bounded),
// and on SIGINT/SIGTERM stops the router first, then the agents. docs/kvmesh-up.md.
//
// Run dir layout (--run-dir, else a temp dir removed on exit):
//   <name>.ready   each child's ready file (JSON with http, port, pid), router.ready last
//   workers.yaml   the router's workers file (router/worker_registry.h), rewritten by rename
//                  when a restarted agent comes back on a new port
//   up.json        the endpoint and every child's pid, rewritten as they change
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/engine/model_preset.h"
#include "cli/commands.h"
#include "cli/process_supervisor.h"
#include "common/file_util.h"
#include "common/inference_graph.h"
#include "operator/planner/metrics_source.h"
#include "operator/planner/perf_profile.h"
#include "operator/planner/planner.h"

namespace kvmesh::cli {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kUpUsage =
    R"(usage: kvmesh up [graph.yaml] [--port N] [--host ADDR] [--run-dir DIR] [--cache-dir DIR]
                 [--ready-timeout SECONDS] [--grace SECONDS] [--print-config]

Runs an InferenceGraph (kvmesh.dev/v1alpha1) on this machine: kvmesh-agent processes for the
prefill and decode pools and kvmesh-router in front of them, on loopback ports. With no file it
runs the embedded default: builtin:tiny, 1 prefill + 1 decode agent, one router. Ctrl-C stops it.

flags:
  --port N               router HTTP port (default 8000; 0 = pick a free one)
  --host ADDR            router HTTP address (default 127.0.0.1; agents always use 127.0.0.1)
  --run-dir DIR          ready files, workers.yaml and up.json go here (kept on exit);
                         default: a temp dir removed on exit
  --cache-dir DIR        where builtin: models are created (default $KVMESH_CACHE_DIR,
                         $XDG_CACHE_HOME/kvmesh or ~/.cache/kvmesh)
  --ready-timeout S      how long each start-up phase may take (default 300)
  --planner-profile FILE run the SLA planner (docs/planner.md): scale the pools between
                         minReplicas and maxReplicas to spec.sla, with this performance
                         profile (JSON, docs/planner.md); agents start and drain as processes
  --planner-interval S   seconds between planner decisions (default 10)
  --planner-scale-down-window S
                         scale down only to the highest recommendation of this window (default 60)
  --grace S              on stop, seconds a child gets after SIGTERM before SIGKILL (default 10)
  --print-config         print the effective graph as JSON and the commands it would run; exit
  -h, --help             show this help
Binaries: $KVMESH_AGENT_BIN / $KVMESH_ROUTER_BIN, else the build tree next to kvmesh
(../agent/kvmesh-agent, ../router/kvmesh-router), else kvmesh's own directory, else $PATH.
Exit status: 0 stopped by a signal, 1 a child failed or never became ready, 2 bad arguments or
graph.
)";

volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

struct UpArgs {
  std::string graph_file;
  uint32_t port = 8000;
  std::string host = "127.0.0.1";
  std::string run_dir;
  std::string cache_dir;
  int ready_timeout_s = 300;
  int grace_s = 10;
  bool print_config = false;
  bool no_router = false;  // hidden: agents only (tests of the lifecycle without a router)
  std::string planner_profile;  // "" = no planner
  double planner_interval_s = 10;
  double planner_scale_down_window_s = 60;
};

bool ParseSeconds(std::string_view s, double& out) {
  std::string text(s);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v > 0) || v > 86400) return false;
  out = v;
  return true;
}

template <class T>
bool ParseUint(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

// Returns an error message, or "" on success.
std::string ParseArgs(std::span<char*> args, UpArgs& a, bool& help) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string value;
    bool has_inline = false;
    if (arg.rfind("--", 0) == 0) {
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
    }
    auto next = [&](std::string& out) -> bool {
      if (has_inline) {
        out = value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    if (arg == "-h" || arg == "--help") {
      help = true;
    } else if (arg == "--print-config") {
      a.print_config = true;
    } else if (arg == "--no-router") {
      a.no_router = true;
    } else if (arg == "--port") {
      if (!next(value) || !ParseUint(value, a.port) || a.port > 65535) return "--port needs a number in [0, 65535]";
    } else if (arg == "--host") {
      if (!next(a.host) || a.host.empty()) return "--host needs an address";
    } else if (arg == "--run-dir") {
      if (!next(a.run_dir) || a.run_dir.empty()) return "--run-dir needs a directory";
    } else if (arg == "--cache-dir") {
      if (!next(a.cache_dir) || a.cache_dir.empty()) return "--cache-dir needs a directory";
    } else if (arg == "--ready-timeout") {
      if (!next(value) || !ParseUint(value, a.ready_timeout_s) || a.ready_timeout_s <= 0) {
        return "--ready-timeout needs a positive number of seconds";
      }
    } else if (arg == "--planner-profile") {
      if (!next(a.planner_profile) || a.planner_profile.empty()) return "--planner-profile needs a file";
    } else if (arg == "--planner-interval") {
      if (!next(value) || !ParseSeconds(value, a.planner_interval_s)) {
        return "--planner-interval needs seconds in (0, 86400]";
      }
    } else if (arg == "--planner-scale-down-window") {
      if (!next(value) || !ParseSeconds(value, a.planner_scale_down_window_s)) {
        return "--planner-scale-down-window needs seconds in (0, 86400]";
      }
    } else if (arg == "--grace") {
      if (!next(value) || !ParseUint(value, a.grace_s)) return "--grace needs a number of seconds";
    } else if (arg.rfind("-", 0) == 0) {
      return "unknown flag " + arg;
    } else if (a.graph_file.empty()) {
      a.graph_file = arg;
    } else {
      return "only one graph file may be given, got " + a.graph_file + " and " + arg;
    }
  }
  return "";
}

bool IsExecutable(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

// Finds kvmesh-agent / kvmesh-router; the error lists every place searched.
StatusOr<std::string> LocateBinary(const char* name, const char* env_var, const char* build_subdir) {
  std::vector<std::string> searched;
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') {
    if (IsExecutable(env)) return std::string(env);
    return NotFoundError(std::string("$") + env_var + "=" + env + " is not an executable file");
  }
  searched.push_back(std::string("$") + env_var + " (unset)");
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path build = self.parent_path().parent_path() / build_subdir / name;
    if (IsExecutable(build)) return build.string();
    searched.push_back(build.string());
    fs::path installed = self.parent_path() / name;
    if (IsExecutable(installed)) return installed.string();
    searched.push_back(installed.string());
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      size_t colon = rest.find(':');
      std::string_view dir = rest.substr(0, colon);
      if (!dir.empty()) {
        fs::path p = fs::path(std::string(dir)) / name;
        if (IsExecutable(p)) return p.string();
      }
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
    searched.push_back("$PATH");
  }
  std::string msg = std::string(name) + " not found; searched: ";
  for (size_t i = 0; i < searched.size(); ++i) msg += (i ? ", " : "") + searched[i];
  return NotFoundError(msg + " (build it, or set $" + env_var + ")");
}

struct Member {
  std::string name;  // prefill-0, decode-1, router
  std::string role;  // prefill | decode | aggregated | router
  std::string pool;  // prefill | decode (the graph's pool; aggregated agents form "decode")
  bool was_ready = false;         // ready once before (a restart, not a new agent)
  bool draining = false;          // planner scale-down: out of workers.yaml, stopped after a delay
  Clock::time_point drain_since;
  ChildSpec spec;
  std::string ready_file;
  bool ready = false;
  std::string url;   // from the ready file
  int port = 0;
};

std::optional<nlohmann::json> ReadReadyFile(const std::string& path, pid_t pid) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("http") || !j["http"].is_string()) return std::nullopt;
  // A file left by an earlier process of the same name does not count.
  if (j.contains("pid") && j["pid"].is_number_integer() && j["pid"].get<int64_t>() != pid) return std::nullopt;
  return j;
}

std::string WorkersYaml(const std::vector<Member>& agents) {
  std::string out =
      "# Written by `kvmesh up`; rewritten (atomic rename) when an agent restarts on a new port.\n"
      "# Schema: ParseWorkerFile in router/worker_registry.h.\n"
      "workers:\n";
  for (const Member& m : agents) {
    if (m.url.empty() || m.draining) continue;
    out += "  - url: " + m.url + "\n    role: " + m.role + "\n    name: " + m.name + "\n";
  }
  return out;
}

class UpRunner {
 public:
  UpRunner(UpArgs args, graph::InferenceGraph graph) : args_(std::move(args)), graph_(std::move(graph)) {}
  int Run();

 private:
  void Say(const std::string& line) {
    std::fprintf(stdout, "[kvmesh up] %s\n", line.c_str());
    std::fflush(stdout);
  }
  Status Prepare();       // binaries, run dir, model
  void PlanMembers();
  int PrintConfig();
  // Waits until every member in `names` wrote its ready file; false on timeout, a child exit or
  // a stop signal (reason in *why).
  bool WaitReady(const std::vector<Member*>& members, std::string* why);
  bool CheckReady(Member& m);
  Status WriteWorkersFile();
  void WriteUpJson();
  void PrintReady();
  void StopEverything();
  Member* FindMember(const std::string& name);
  Member MakeAgent(const std::string& pool, const std::string& role, int index);
  // The SLA planner (--planner-profile): set up, one step per interval, and the process side of
  // its decisions. Scale-down drains: the agent leaves workers.yaml first (the router stops
  // sending it requests), and gets SIGTERM kDrainDelay later (it finishes what it has in flight
  // before exiting, docs/agent.md); a request is never cut off.
  Status SetUpPlanner();
  void PlannerStep();
  void ApplyReplicas(const std::string& pool, int32_t replicas);
  void FinishDrains(bool* changed);
  int32_t PoolSize(const std::string& pool, bool ready_only) const;

  UpArgs args_;
  graph::InferenceGraph graph_;
  std::string agent_bin_;
  std::string router_bin_;
  std::string model_dir_;
  std::string run_dir_;
  bool temp_run_dir_ = false;
  std::vector<Member> agents_;
  std::optional<Member> router_;
  std::unique_ptr<ProcessSupervisor> sup_;
  std::vector<std::string> agent_common_;  // agent flags shared by every pool
  std::vector<std::pair<std::string, std::string>> agent_env_;
  std::map<std::string, int> next_index_;  // per pool: the next agent name's number
  std::map<std::string, std::string> pool_role_;
  std::unique_ptr<planner::Planner> planner_;
  std::unique_ptr<planner::ScrapeSource> planner_source_;
  Clock::time_point planner_start_;
  Clock::time_point next_plan_;
  nlohmann::ordered_json last_decision_;
  static constexpr milliseconds kDrainDelay{1500};  // > the router's workers file poll (250 ms)
};

Member* UpRunner::FindMember(const std::string& name) {
  for (Member& m : agents_) {
    if (m.name == name) return &m;
  }
  if (router_ && router_->name == name) return &*router_;
  return nullptr;
}

Status UpRunner::Prepare() {
  if (graph_.spec.model.source.rfind("pvc://", 0) == 0) {
    return InvalidArgumentError("spec.model.source: pvc:// sources exist only in Kubernetes (kvmesh-operator); "
                                "use a local folder or builtin:tiny for kvmesh up, got " +
                                graph_.spec.model.source);
  }
  KVMESH_ASSIGN_OR_RETURN(agent_bin_, LocateBinary("kvmesh-agent", "KVMESH_AGENT_BIN", "agent"));
  if (!args_.no_router) {
    KVMESH_ASSIGN_OR_RETURN(router_bin_, LocateBinary("kvmesh-router", "KVMESH_ROUTER_BIN", "router"));
  }
  const std::string cache = args_.cache_dir.empty() ? engine::DefaultModelCacheDir() : args_.cache_dir;
  // Resolved once here: builtin: presets are created before any child starts, so the children
  // never race to create the same folder.
  auto resolved = engine::ResolveModelSource(graph_.spec.model.source, cache);
  if (!resolved.ok()) return resolved.status().WithContext("spec.model.source");
  model_dir_ = fs::absolute(*resolved).string();
  return Status::Ok();
}

void UpRunner::PlanMembers() {
  const auto& s = graph_.spec;
  const bool disagg = s.disaggregation.mode != "off" && s.prefill.replicas > 0;
  const std::string served = graph_.ServedModelName();
  std::vector<std::string> common = {
      "--model", model_dir_.empty() ? s.model.source : model_dir_,
      "--served-model-name", served,
      "--host", "127.0.0.1",
      "--port", "0",
      "--engine.block-size", std::to_string(s.kv_cache.block_size),
      "--engine.kv-cache-mib", std::to_string(s.kv_cache.device_mib),
      "--transfer.timeout", s.disaggregation.transfer_timeout,
      "--transfer.on-failure", s.disaggregation.on_failure,
  };
  if (!s.disaggregation.transport.empty()) {
    common.insert(common.end(), {"--transfer.ucx-tls", s.disaggregation.transport});
  }
  if (!args_.cache_dir.empty()) common.insert(common.end(), {"--cache-dir", args_.cache_dir});
  agent_common_ = common;
  agent_env_.clear();
  // Many processes share a small machine: one compute thread each unless the user says otherwise.
  for (const char* var : {"OPENBLAS_NUM_THREADS", "KVMESH_CPU_THREADS"}) {
    const char* v = std::getenv(var);
    agent_env_.emplace_back(var, v != nullptr && *v != '\0' ? v : "1");
  }
  auto add_pool = [&](const graph::PoolSpec& pool, const std::string& name, const std::string& role) {
    pool_role_[name] = role;
    for (int i = 0; i < pool.replicas; ++i) agents_.push_back(MakeAgent(name, role, i));
    next_index_[name] = pool.replicas;
  };
  if (disagg) add_pool(s.prefill, "prefill", "prefill");
  add_pool(s.decode, "decode", disagg ? "decode" : "aggregated");

  if (!args_.no_router) {
    Member r;
    r.name = "router";
    r.role = "router";
    r.ready_file = (fs::path(run_dir_) / "router.ready").string();
    r.spec.name = "router";
    auto num = [](double d) {
      std::ostringstream os;
      os << d;
      return os.str();
    };
    r.spec.argv = {router_bin_,
                   "--host", args_.host,
                   "--port", std::to_string(args_.port),
                   "--ready-file", r.ready_file,
                   "--model", model_dir_.empty() ? s.model.source : model_dir_,
                   "--served-model-name", served,
                   "--block-size", std::to_string(s.kv_cache.block_size),
                   "--workers.file", (fs::path(run_dir_) / "workers.yaml").string(),
                   "--workers.file-poll-interval", "250ms",
                   "--routing.mode", s.router.routing_mode,
                   "--routing.kv-cost", s.router.kv_cost,
                   "--routing.overlap-weight", num(s.router.overlap_weight),
                   "--routing.temperature", num(s.router.temperature),
                   "--disaggregation.mode", disagg ? s.disaggregation.mode : "off",
                   "--disaggregation.min-remote-prefill-tokens",
                   std::to_string(s.disaggregation.min_remote_prefill_tokens),
                   "--disaggregation.max-prefill-queue", std::to_string(s.disaggregation.max_prefill_queue)};
    if (!args_.cache_dir.empty()) r.spec.argv.insert(r.spec.argv.end(), {"--cache-dir", args_.cache_dir});
    router_ = std::move(r);
  }
}

Member UpRunner::MakeAgent(const std::string& pool, const std::string& role, int index) {
  const graph::PoolSpec& spec = pool == "prefill" ? graph_.spec.prefill : graph_.spec.decode;
  Member m;
  m.name = pool + "-" + std::to_string(index);
  m.role = role;
  m.pool = pool;
  m.ready_file = (fs::path(run_dir_) / (m.name + ".ready")).string();
  m.spec.name = m.name;
  m.spec.argv = {agent_bin_, "--role", role};
  m.spec.argv.insert(m.spec.argv.end(), agent_common_.begin(), agent_common_.end());
  m.spec.argv.insert(m.spec.argv.end(), {"--ready-file", m.ready_file, "--agent-id", m.name});
  m.spec.argv.insert(m.spec.argv.end(), spec.extra_args.begin(), spec.extra_args.end());
  m.spec.env = agent_env_;
  return m;
}

int32_t UpRunner::PoolSize(const std::string& pool, bool ready_only) const {
  int32_t n = 0;
  for (const Member& m : agents_) {
    if (m.pool == pool && !m.draining && (!ready_only || m.ready)) ++n;
  }
  return n;
}

Status UpRunner::SetUpPlanner() {
  if (args_.planner_profile.empty()) return Status::Ok();
  if (!router_) return InvalidArgumentError("--planner-profile needs the router (its /metrics are the planner's input)");
  KVMESH_ASSIGN_OR_RETURN(planner::TablePerfProfile table,
                          planner::TablePerfProfile::FromFile(args_.planner_profile));
  KVMESH_ASSIGN_OR_RETURN(planner::PlannerConfig config, planner::PlannerConfig::FromGraph(graph_));
  if (pool_role_.count("prefill") == 0) config.prefill.enabled = false;
  config.interval_s = args_.planner_interval_s;
  config.scale_down_window_s = args_.planner_scale_down_window_s;
  KVMESH_RETURN_IF_ERROR(config.Validate());
  auto profile = std::make_shared<const planner::TablePerfProfile>(std::move(table));
  KVMESH_ASSIGN_OR_RETURN(planner_, planner::Planner::Create(config, profile));
  auto limits = [](const planner::PoolLimits& l) {
    return l.enabled ? std::to_string(l.min_replicas) + ".." + std::to_string(l.max_replicas) : std::string("off");
  };
  Say("planner on: every " + std::to_string(args_.planner_interval_s) + " s, TTFT p90 target " +
      std::to_string(config.ttft_target_s) + " s, ITL p90 target " + std::to_string(config.itl_target_s) +
      " s, prefill " + limits(config.prefill) + ", decode " + limits(config.decode));
  return Status::Ok();
}

// Called from the supervise loop: one decision per interval from the router's /metrics.
void UpRunner::PlannerStep() {
  if (!planner_ || !router_ || !router_->ready) return;
  const Clock::time_point now = Clock::now();
  if (!planner_source_) {
    planner::ScrapeSource::Options o;
    o.targets = {router_->url + "/metrics"};
    planner_source_ = std::make_unique<planner::ScrapeSource>(o);
    planner_start_ = now;
    next_plan_ = now;
  }
  if (now < next_plan_) return;
  next_plan_ = now + milliseconds(static_cast<int64_t>(args_.planner_interval_s * 1000));
  const double t = std::chrono::duration<double>(now - planner_start_).count();
  auto sample = planner_source_->Sample(t);
  if (!sample.ok() && sample.status().code() == StatusCode::kFailedPrecondition) return;  // baseline
  planner::Decision d;
  if (sample.ok()) {
    sample->prefill_replicas = PoolSize("prefill", /*ready_only=*/true);
    sample->decode_replicas = PoolSize("decode", /*ready_only=*/true);
    d = planner_->Decide(t, *sample);
  } else {
    d = planner_->Hold(t, sample.status());
  }
  last_decision_ = {{"time_s", t},
                    {"metrics_ok", d.metrics_ok},
                    {"predicted_request_rate", d.predicted_request_rate},
                    {"prefill", {{"current", d.prefill.current}, {"replicas", d.prefill.replicas},
                                 {"reason", d.prefill.reason}}},
                    {"decode", {{"current", d.decode.current}, {"replicas", d.decode.replicas},
                                {"reason", d.decode.reason}}}};
  for (const auto& [pool, pd] : {std::pair<std::string, const planner::PoolDecision*>{"prefill", &d.prefill},
                                 {"decode", &d.decode}}) {
    if (pool_role_.count(pool) == 0) continue;
    if (pd->direction != "hold" || pd->replicas != PoolSize(pool, false)) {
      Say("planner: " + pool + " " + std::to_string(PoolSize(pool, false)) + " -> " +
          std::to_string(pd->replicas) + " (" + pd->reason + ")");
    }
    ApplyReplicas(pool, pd->replicas);
  }
  WriteUpJson();
}

void UpRunner::ApplyReplicas(const std::string& pool, int32_t replicas) {
  int32_t have = PoolSize(pool, /*ready_only=*/false);
  for (; have < replicas; ++have) {
    Member m = MakeAgent(pool, pool_role_[pool], next_index_[pool]++);
    std::error_code ec;
    fs::remove(m.ready_file, ec);
    Say("planner: starting " + m.name + " (" + m.role + ")");
    if (Status s = sup_->Start(m.spec); !s.ok()) {
      Say("warning: planner could not start " + m.name + ": " + s.ToString());
      break;
    }
    agents_.push_back(std::move(m));
  }
  // Newest first: the youngest agents hold the least cache.
  bool drained = false;
  for (auto it = agents_.rbegin(); it != agents_.rend() && have > replicas; ++it) {
    if (it->pool != pool || it->draining) continue;
    it->draining = true;
    it->drain_since = Clock::now();
    --have;
    drained = true;
    Say("planner: draining " + it->name + " (out of the router's workers; stopped in " +
        std::to_string(kDrainDelay.count()) + " ms)");
  }
  // A started agent joins workers.yaml once it is ready (the supervision loop writes it then);
  // only a drain changes the file here.
  if (drained) {
    if (Status s = WriteWorkersFile(); !s.ok()) Say("warning: " + s.ToString());
  }
}

// Stops drained agents once the router has dropped them; SIGTERM lets them finish in-flight work.
void UpRunner::FinishDrains(bool* changed) {
  const milliseconds grace(static_cast<int64_t>(args_.grace_s) * 1000);
  for (auto it = agents_.begin(); it != agents_.end();) {
    if (!it->draining || Clock::now() - it->drain_since < kDrainDelay) {
      ++it;
      continue;
    }
    Say("planner: stopping " + it->name);
    sup_->Stop(it->name, grace);
    std::error_code ec;
    fs::remove(it->ready_file, ec);
    it = agents_.erase(it);
    *changed = true;
  }
}

int UpRunner::PrintConfig() {
  nlohmann::ordered_json out;
  out["graph"] = nlohmann::ordered_json::parse(graph::InferenceGraphToJson(graph_));
  out["processes"] = nlohmann::ordered_json::array();
  auto add = [&](const Member& m) {
    nlohmann::ordered_json p;
    p["name"] = m.name;
    p["role"] = m.role;
    p["argv"] = m.spec.argv;
    nlohmann::ordered_json env = nlohmann::ordered_json::object();
    for (const auto& [k, v] : m.spec.env) env[k] = v;
    p["env"] = env;
    out["processes"].push_back(p);
  };
  for (const Member& m : agents_) add(m);
  if (router_) add(*router_);
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

bool UpRunner::CheckReady(Member& m) {
  pid_t pid = sup_->Pid(m.name);
  if (pid == 0) return false;
  auto j = ReadReadyFile(m.ready_file, pid);
  if (!j) return false;
  m.url = (*j)["http"].get<std::string>();
  m.port = j->value("port", 0);
  m.ready = true;
  return true;
}

bool UpRunner::WaitReady(const std::vector<Member*>& members, std::string* why) {
  const auto deadline = Clock::now() + std::chrono::seconds(args_.ready_timeout_s);
  while (true) {
    bool all = true;
    for (Member* m : members) all = all && (m->ready || CheckReady(*m));
    if (all) return true;
    if (g_stop_signal != 0) {
      *why = "stop signal received while starting";
      return false;
    }
    if (Clock::now() > deadline) {
      *why = "not ready after " + std::to_string(args_.ready_timeout_s) + " s:";
      for (Member* m : members) {
        if (!m->ready) *why += " " + m->name + " (no " + m->ready_file + ")";
      }
      return false;
    }
    for (const ChildEvent& e : sup_->Poll(milliseconds(100))) {
      if (e.kind == ChildEvent::Kind::kRestarted) continue;
      // A child that dies during start-up is most likely misconfigured: stop rather than loop.
      *why = e.name + " (pid " + std::to_string(e.pid) + ") " + e.description + " while starting; its last lines:";
      for (const std::string& l : sup_->LastLines(e.name)) *why += "\n    " + l;
      return false;
    }
  }
}

Status UpRunner::WriteWorkersFile() {
  return WriteFileAtomic((fs::path(run_dir_) / "workers.yaml").string(), WorkersYaml(agents_));
}

void UpRunner::WriteUpJson() {
  nlohmann::ordered_json j;
  j["pid"] = static_cast<int64_t>(::getpid());
  if (router_ && router_->ready) j["endpoint"] = router_->url + "/v1";
  j["model"] = graph_.ServedModelName();
  j["run_dir"] = run_dir_;
  nlohmann::ordered_json children = nlohmann::ordered_json::object();
  for (const Member& m : agents_) {
    children[m.name] = {{"role", m.role}, {"pid", static_cast<int64_t>(sup_->Pid(m.name))}, {"url", m.url}};
  }
  if (router_) {
    children["router"] = {{"role", "router"}, {"pid", static_cast<int64_t>(sup_->Pid("router"))}, {"url", router_->url}};
  }
  j["children"] = children;
  if (!last_decision_.is_null()) j["planner"] = last_decision_;
  Status s = WriteFileAtomic((fs::path(run_dir_) / "up.json").string(), j.dump(2) + "\n");
  if (!s.ok()) Say("warning: " + s.ToString());
}

void UpRunner::PrintReady() {
  std::string served = graph_.ServedModelName();
  std::ostringstream os;
  os << "\n";
  if (router_) {
    os << "kvmesh up: ready. OpenAI-compatible endpoint: " << router_->url << "/v1\n"
       << "  model: " << served << "   workers:";
    for (const Member& m : agents_) os << " " << m.name << "=" << m.url;
    os << "\n  run dir: " << run_dir_ << "   stop: Ctrl-C\n\n"
       << "  curl -s " << router_->url << "/v1/chat/completions -H 'Content-Type: application/json' \\\n"
       << "    -d '{\"model\": \"" << served
       << "\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32}'\n\n";
  } else {
    os << "kvmesh up: agents ready (no router):";
    for (const Member& m : agents_) os << " " << m.name << "=" << m.url;
    os << "\n  run dir: " << run_dir_ << "\n\n";
  }
  std::fputs(os.str().c_str(), stdout);
  std::fflush(stdout);
}

void UpRunner::StopEverything() {
  if (!sup_) return;
  const milliseconds grace(static_cast<int64_t>(args_.grace_s) * 1000);
  if (router_ && sup_->Has("router")) {
    Say("stopping router");
    sup_->Stop("router", grace);
  }
  Say("stopping agents");
  sup_->StopAll(grace);
}

int UpRunner::Run() {
  if (args_.run_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "kvmesh-up-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "kvmesh up: cannot create a temp run dir %s\n", tmpl.c_str());
      return 1;
    }
    run_dir_ = tmpl;
    temp_run_dir_ = true;
  } else {
    std::error_code ec;
    fs::create_directories(args_.run_dir, ec);
    if (ec) {
      std::fprintf(stderr, "kvmesh up: cannot create --run-dir %s: %s\n", args_.run_dir.c_str(), ec.message().c_str());
      return 2;
    }
    run_dir_ = fs::absolute(args_.run_dir).string();
  }
  auto cleanup_dir = [&] {
    if (temp_run_dir_) {
      std::error_code ec;
      fs::remove_all(run_dir_, ec);
    }
  };

  if (args_.print_config) {
    // No model resolution or binary search needed to show the plan; use what can be found.
    if (auto a = LocateBinary("kvmesh-agent", "KVMESH_AGENT_BIN", "agent"); a.ok()) agent_bin_ = *a;
    else agent_bin_ = "kvmesh-agent";
    if (auto r = LocateBinary("kvmesh-router", "KVMESH_ROUTER_BIN", "router"); r.ok()) router_bin_ = *r;
    else router_bin_ = "kvmesh-router";
    PlanMembers();
    int rc = PrintConfig();
    cleanup_dir();
    return rc;
  }

  if (Status s = Prepare(); !s.ok()) {
    std::fprintf(stderr, "kvmesh up: %s\n", s.ToString().c_str());
    cleanup_dir();
    return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  for (const std::string& note : {
           graph_.spec.router.replicas > 1 ? std::string("spec.router.replicas > 1: kvmesh up runs one router") : "",
           graph_.spec.prefill.gpus_per_worker + graph_.spec.decode.gpus_per_worker > 0
               ? std::string("gpusPerWorker is used by the operator only; agents use the backend they were built with")
               : "",
           graph_.spec.kv_cache.host_mib + graph_.spec.kv_cache.disk_mib > 0
               ? std::string("spec.kvCache.hostMiB/diskMiB are used by the operator only")
               : ""}) {
    if (!note.empty()) Say("note: " + note);
  }
  PlanMembers();
  Say("run dir " + run_dir_ + ", model " + model_dir_ + " (served as " + graph_.ServedModelName() + ")");

  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a signal interrupts poll() at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  sup_ = std::make_unique<ProcessSupervisor>();
  int exit_code = 0;
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "kvmesh up: %s\n", why.c_str());
    exit_code = 1;
  };

  std::vector<Member*> agent_ptrs;
  for (Member& m : agents_) {
    std::error_code ec;
    fs::remove(m.ready_file, ec);
    Say("starting " + m.name + " (" + m.role + ")");
    if (Status s = sup_->Start(m.spec); !s.ok()) {
      fail("cannot start " + m.name + ": " + s.ToString());
      break;
    }
    agent_ptrs.push_back(&m);
  }
  std::string why;
  if (exit_code == 0 && !WaitReady(agent_ptrs, &why)) {
    if (g_stop_signal != 0) Say(why); else fail(why);
  }
  if (exit_code == 0 && g_stop_signal == 0) {
    if (Status s = WriteWorkersFile(); !s.ok()) fail(s.ToString());
  }
  if (exit_code == 0 && g_stop_signal == 0 && router_) {
    std::error_code ec;
    fs::remove(router_->ready_file, ec);
    Say("starting router on " + args_.host + ":" + std::to_string(args_.port));
    if (Status s = sup_->Start(router_->spec); !s.ok()) {
      fail("cannot start router: " + s.ToString());
    } else if (!WaitReady({&*router_}, &why)) {
      if (g_stop_signal != 0) Say(why); else fail(why);
    }
  }
  if (exit_code == 0 && g_stop_signal == 0) {
    WriteUpJson();
    PrintReady();
    if (Status s = SetUpPlanner(); !s.ok()) fail("planner: " + s.ToString());
  }

  // Supervise until a signal or a child that spent its restart budget.
  while (exit_code == 0 && g_stop_signal == 0) {
    bool changed = false;
    for (const ChildEvent& e : sup_->Poll(milliseconds(200))) {
      Member* m = FindMember(e.name);
      if (m == nullptr) continue;
      switch (e.kind) {
        case ChildEvent::Kind::kExited: {
          Say(e.name + " (pid " + std::to_string(e.pid) + ") " + e.description + "; restarting in " +
              std::to_string(e.restart_in.count()) + " ms");
          m->ready = false;
          std::error_code ec;
          fs::remove(m->ready_file, ec);
          if (m->role != "router") {
            m->url.clear();  // out of workers.yaml until it is back
            changed = true;
          }
          break;
        }
        case ChildEvent::Kind::kRestarted:
          Say(e.name + " restarted (" + e.description + ")");
          break;
        case ChildEvent::Kind::kFailed: {
          std::string msg = e.name + " failed: " + e.description + "; its last lines:";
          for (const std::string& l : sup_->LastLines(e.name)) msg += "\n    " + l;
          fail(msg);
          break;
        }
      }
    }
    std::vector<std::string> back;  // announced once workers.yaml and up.json name them
    for (Member& m : agents_) {
      if (!m.ready && sup_->Pid(m.name) != 0 && CheckReady(m)) {
        back.push_back(m.name + (m.was_ready ? " ready again at " : " ready at ") + m.url);
        changed = true;
      }
      m.was_ready = m.was_ready || m.ready;
    }
    if (router_ && !router_->ready && sup_->Pid("router") != 0 && CheckReady(*router_)) {
      WriteUpJson();
      Say("router ready again at " + router_->url);
      PrintReady();
    }
    FinishDrains(&changed);
    if (changed) {
      if (Status s = WriteWorkersFile(); !s.ok()) Say("warning: " + s.ToString());
      WriteUpJson();
    }
    // Only now that both files name them: whoever waits for this line reads the files next.
    for (const std::string& line : back) Say(line);
    PlannerStep();
  }
  if (g_stop_signal != 0) {
    Say(std::string("received ") + (g_stop_signal == SIGINT ? "SIGINT" : g_stop_signal == SIGTERM ? "SIGTERM" : "SIGHUP") +
        ", stopping");
  }
  StopEverything();
  sup_.reset();
  cleanup_dir();
  Say(exit_code == 0 ? "stopped" : "stopped after a failure");
  return exit_code;
}

}  // namespace

int UpCommand(std::span<char*> args) {
  UpArgs a;
  bool help = false;
  if (std::string err = ParseArgs(args, a, help); !err.empty()) {
    std::fprintf(stderr, "kvmesh up: %s\n\n%.*s", err.c_str(), static_cast<int>(kUpUsage.size()), kUpUsage.data());
    return 2;
  }
  if (help) {
    std::fwrite(kUpUsage.data(), 1, kUpUsage.size(), stdout);
    return 0;
  }
  StatusOr<graph::InferenceGraph> g =
      a.graph_file.empty() ? StatusOr<graph::InferenceGraph>(graph::DefaultLocalGraph())
                           : graph::LoadInferenceGraphFile(a.graph_file);
  if (!g.ok()) {
    std::fprintf(stderr, "kvmesh up: %s\n", g.status().ToString().c_str());
    return 2;
  }
  g_stop_signal = 0;
  UpRunner runner(std::move(a), std::move(*g));
  return runner.Run();
}

}  // namespace kvmesh::cli
