// `kvmesh model`: model folder utilities. `kvmesh model create --preset tiny|small DIR` writes a
// built-in synthetic model (agent/engine/model_preset.h) in the Hugging Face layout; re-running it
// on a folder that already holds the preset does nothing. Exit status: 0 ok, 1 runtime failure
// (cannot write, folder holds something else), 2 usage error.
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "agent/engine/model_preset.h"
#include "cli/commands.h"
#include "common/status.h"

namespace kvmesh::cli {
namespace {

constexpr std::string_view kModelUsage =
    R"(usage: kvmesh model create --preset tiny|small DIR

Writes a built-in synthetic Llama-architecture model (deterministic random weights) into DIR in
the Hugging Face layout: config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json. DIR is created if missing; if it already holds the same preset nothing is
written; if it holds anything else the command fails and leaves it alone (docs/models.md).

presets:
  tiny    hidden 256, 4 layers, 8 heads / 4 kv heads, vocab 1024, tied embeddings, fp32 (~3.4M params)
  small   hidden 768, 16 layers, 12 heads / 4 kv heads, vocab 1024, bf16 (~102M params)

flags:
  --preset NAME   which preset (required)
  -h, --help      show this help
)";

int Usage(const std::string& error) {
  std::fprintf(stderr, "kvmesh model: %s\n%s", error.c_str(), std::string(kModelUsage).c_str());
  return 2;
}

int Create(std::span<char*> args) {
  std::optional<std::string> preset;
  std::optional<std::string> dir;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "-h" || a == "--help") {
      std::fwrite(kModelUsage.data(), 1, kModelUsage.size(), stdout);
      return 0;
    }
    if (a == "--preset") {
      if (i + 1 >= args.size()) return Usage("flag --preset needs a value");
      preset = args[++i];
    } else if (a.starts_with("--preset=")) {
      preset = std::string(a.substr(9));
    } else if (a.starts_with("-")) {
      return Usage("unknown flag " + std::string(a));
    } else if (dir) {
      return Usage("unexpected argument '" + std::string(a) + "' (one DIR only)");
    } else {
      dir = std::string(a);
    }
  }
  if (!preset) return Usage("missing --preset");
  if (!dir) return Usage("missing DIR");
  if (auto p = engine::FindModelPreset(*preset); !p.ok()) return Usage(p.status().message());
  Status st = engine::CreatePresetModel(*preset, *dir);
  if (!st.ok()) {
    std::fprintf(stderr, "kvmesh model create: %s\n", st.message().c_str());
    return st.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("%s\n", dir->c_str());
  return 0;
}

}  // namespace

int ModelCommand(std::span<char*> args) {
  try {
    if (args.empty()) return Usage("missing subcommand");
    std::string_view sub = args[0];
    if (sub == "-h" || sub == "--help") {
      std::fwrite(kModelUsage.data(), 1, kModelUsage.size(), stdout);
      return 0;
    }
    if (sub == "create") return Create(args.subspan(1));
    return Usage("unknown subcommand '" + std::string(sub) + "'");
  } catch (const std::exception& e) {  // nothing should throw; never let it escape main
    std::fprintf(stderr, "kvmesh model: unexpected error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kvmesh::cli
