// `kvmesh generate`: runs the engine in-process on a model folder or a built-in model and prints
// the generated text, usage per run and the engine's stats (prefix reuse, steps, KV blocks) as
// JSON. Running the same prompt several times (--repeat) shows the prefix cache at work; running
// several copies at once (--parallel) shows continuous batching.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/engine/engine_core.h"
#include "agent/engine/model_preset.h"
#include "cli/commands.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace kvmesh::cli {
namespace {

constexpr std::string_view kGenerateUsage =
    R"(usage: kvmesh generate [--model SRC] [--prompt TEXT] [--chat] [--max-tokens N]
                       [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop STR]
                       [--repeat N] [--parallel N] [--block-size N] [--kv-cache-mib N]
                       [--cache-dir DIR] [--ignore-eos] [--json]

Generates text with kvmesh's engine on the CPU backend and prints it, then one JSON line of
stats. SRC is a Hugging Face model folder or builtin:tiny / builtin:small (created on first use
in the cache dir).

flags:
  --model SRC         model source (default builtin:tiny)
  --prompt TEXT       prompt text (default "The quick brown fox jumps over the lazy dog.")
  --chat              wrap the prompt as one user message with the model's chat template
  --max-tokens N      completion tokens per run (default 32)
  --temperature T     0 = greedy (default 0)
  --top-p P           nucleus sampling mass in (0, 1] (default 1)
  --top-k K           keep the K most likely tokens, 0 = all (default 0)
  --seed S            sampling seed (default 0)
  --stop STR          stop string (repeatable)
  --ignore-eos        keep generating past end-of-sequence tokens
  --repeat N          run the request N times one after another (default 2: the second run
                      reuses the first one's prefix cache)
  --parallel N        submit N copies at once in each run (default 1)
  --block-size N      tokens per KV block (default 16)
  --kv-cache-mib N    KV cache size (default 64)
  --cache-dir DIR     where builtin models are created (default $KVMESH_CACHE_DIR,
                      $XDG_CACHE_HOME/kvmesh or ~/.cache/kvmesh)
  --json              print each run's result as JSON instead of text
  -h, --help          show this help
Exit status: 0 ok, 1 runtime failure, 2 bad arguments.
)";

struct GenerateArgs {
  std::string model = "builtin:tiny";
  std::string prompt = "The quick brown fox jumps over the lazy dog.";
  bool chat = false;
  int max_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int repeat = 2;
  int parallel = 1;
  int block_size = 16;
  int kv_cache_mib = 64;
  std::string cache_dir;
  bool json = false;
};

template <typename T>
bool ParseNumber(std::string_view s, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    try {
      size_t used = 0;
      out = static_cast<T>(std::stod(std::string(s), &used));
      return used == s.size();
    } catch (...) {
      return false;
    }
  } else {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
  }
}

int Usage(const std::string& error) {
  std::fprintf(stderr, "kvmesh generate: %s\n%.*s", error.c_str(),
               static_cast<int>(kGenerateUsage.size()), kGenerateUsage.data());
  return 2;
}

}  // namespace

int GenerateCommand(std::span<char*> args) {
  GenerateArgs a;
  a.cache_dir = engine::DefaultModelCacheDir();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view f = args[i];
    if (f == "-h" || f == "--help") {
      std::printf("%.*s", static_cast<int>(kGenerateUsage.size()), kGenerateUsage.data());
      return 0;
    }
    if (f == "--chat") { a.chat = true; continue; }
    if (f == "--json") { a.json = true; continue; }
    if (f == "--ignore-eos") { a.ignore_eos = true; continue; }
    if (i + 1 >= args.size()) return Usage("flag " + std::string(f) + " needs a value");
    const std::string_view v = args[++i];
    bool ok = true;
    if (f == "--model") a.model = v;
    else if (f == "--prompt") a.prompt = v;
    else if (f == "--stop") a.stop.emplace_back(v);
    else if (f == "--cache-dir") a.cache_dir = v;
    else if (f == "--max-tokens") ok = ParseNumber(v, a.max_tokens) && a.max_tokens > 0;
    else if (f == "--temperature") ok = ParseNumber(v, a.temperature) && a.temperature >= 0;
    else if (f == "--top-p") ok = ParseNumber(v, a.top_p) && a.top_p > 0 && a.top_p <= 1;
    else if (f == "--top-k") ok = ParseNumber(v, a.top_k) && a.top_k >= 0;
    else if (f == "--seed") ok = ParseNumber(v, a.seed);
    else if (f == "--repeat") ok = ParseNumber(v, a.repeat) && a.repeat > 0;
    else if (f == "--parallel") ok = ParseNumber(v, a.parallel) && a.parallel > 0 && a.parallel <= 256;
    else if (f == "--block-size") ok = ParseNumber(v, a.block_size) && a.block_size > 0;
    else if (f == "--kv-cache-mib") ok = ParseNumber(v, a.kv_cache_mib) && a.kv_cache_mib > 0;
    else return Usage("unknown flag " + std::string(f));
    if (!ok) return Usage("bad value '" + std::string(v) + "' for " + std::string(f));
  }

  auto fail = [](const Status& s) {
    std::fprintf(stderr, "kvmesh generate: %s\n", s.ToString().c_str());
    return 1;
  };
  auto dir = engine::ResolveModelSource(a.model, a.cache_dir);
  if (!dir.ok()) return fail(dir.status());
  auto weights = engine::ModelWeights::Load(*dir);
  if (!weights.ok()) return fail(weights.status());
  auto tok = tokenizer::Tokenizer::FromFile(*dir + "/tokenizer.json");
  if (!tok.ok()) return fail(tok.status());
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer(std::move(*tok));

  std::vector<int32_t> prompt;
  if (a.chat) {
    std::ifstream in(*dir + "/tokenizer_config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto tmpl = tokenizer::ChatTemplate::FromTokenizerConfig(in ? ss.str() : "{}", "llama3");
    if (!tmpl.ok()) return fail(tmpl.status());
    std::vector<tokenizer::ChatMessage> msgs = {{"user", a.prompt}};
    auto text = tmpl->Apply(msgs, /*add_generation_prompt=*/true);
    if (!text.ok()) return fail(text.status());
    prompt = tokenizer->Encode(*text, /*add_special_tokens=*/false);
  } else {
    prompt = tokenizer->Encode(a.prompt, /*add_special_tokens=*/true);
  }

  engine::EngineOptions o;
  o.block_size = a.block_size;
  o.kv_cache_bytes = static_cast<int64_t>(a.kv_cache_mib) << 20;
  auto core_or = engine::EngineCore::Create(o, std::shared_ptr<const engine::ModelWeights>(std::move(*weights)),
                                            engine::RefKernelOps(), tokenizer);
  if (!core_or.ok()) return fail(core_or.status());
  engine::EngineCore& core = **core_or;

  using Clock = std::chrono::steady_clock;
  for (int run = 0; run < a.repeat; ++run) {
    std::vector<std::string> texts(a.parallel);
    std::vector<engine::RequestOutput> finals(a.parallel);
    for (int p = 0; p < a.parallel; ++p) {
      engine::GenerateRequest r;
      r.id = std::to_string(run) + "-" + std::to_string(p);
      r.prompt = prompt;
      r.max_tokens = a.max_tokens;
      r.sampling.temperature = a.temperature;
      r.sampling.top_p = a.top_p;
      r.sampling.top_k = a.top_k;
      r.sampling.seed = a.seed + p;
      r.stop = a.stop;
      r.ignore_eos = a.ignore_eos;
      Status st = core.AddRequest(std::move(r));
      if (!st.ok()) return fail(st);
    }
    const auto t0 = Clock::now();
    double ttft = -1;
    while (core.HasWork()) {
      for (const engine::RequestOutput& out : core.Step()) {
        const int p = std::stoi(out.id.substr(out.id.find('-') + 1));
        if (ttft < 0 && !out.new_tokens.empty()) {
          ttft = std::chrono::duration<double>(Clock::now() - t0).count();
        }
        texts[p] += out.text;
        if (out.finished) finals[p] = out;
        if (!a.json && p == 0 && a.parallel == 1) {
          std::fwrite(out.text.data(), 1, out.text.size(), stdout);
          std::fflush(stdout);
        }
      }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    int completion = 0;
    for (const auto& f : finals) completion += f.completion_tokens;
    nlohmann::json result = {
        {"run", run},
        {"requests", a.parallel},
        {"prompt_tokens", finals[0].prompt_tokens},
        {"cached_tokens", finals[0].cached_tokens},
        {"completion_tokens", completion},
        {"finish_reason", engine::FinishReasonName(finals[0].finish_reason)},
        {"ttft_s", ttft},
        {"seconds", secs},
        {"tokens_per_s", completion / secs},
    };
    if (a.json) {
      result["text"] = texts[0];
      std::printf("%s\n", result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      if (a.parallel > 1) std::printf("%s", texts[0].c_str());
      std::printf("\n[run %d] %s\n", run, result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    if (!finals[0].error.ok()) return fail(finals[0].error);
  }
  const engine::EngineStats s = core.Stats();
  const nlohmann::json stats = {
      {"steps", s.steps},
      {"requests_finished", s.requests_finished},
      {"prompt_tokens", s.prompt_tokens},
      {"cached_prompt_tokens", s.cached_prompt_tokens},
      {"computed_prompt_tokens", s.computed_prompt_tokens},
      {"generated_tokens", s.generated_tokens},
      {"preemptions", s.preemptions},
      {"kv_blocks_total", s.kv_blocks_total},
      {"kv_blocks_used", s.kv_blocks_used},
      {"kv_blocks_cached", s.kv_blocks_cached},
      {"prefix_cache_hits", s.pool.hits},
      {"prefix_cache_lookups", s.pool.lookups},
  };
  std::printf("{\"engine_stats\":%s}\n", stats.dump().c_str());
  return 0;
}

}  // namespace kvmesh::cli
