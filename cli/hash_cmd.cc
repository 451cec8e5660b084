// `kvmesh hash`: block hashes of a token sequence, exactly as the router computes them
// (kv/block_hash.h). Input is a JSON array of token ids (or {"tokens": [...]} in a file); output is
// one JSON object on stdout. Every input error exits 2 with a message on stderr and no stdout.
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/status.h"
#include "kv/block_hash.h"

namespace kvmesh::cli {
namespace {

constexpr std::string_view kHashUsage =
    R"(usage: kvmesh hash [--block-size N] [--salt S] [--lora NAME] [--tokens JSON | --file PATH]

Prints the block hashes of a token sequence as JSON, exactly as kvmesh's router computes them
(docs/block-hashing.md). Tokens come from --tokens, --file, or stdin (in that order), as a JSON
array of integers in [0, 4294967295]; a file may also hold an object {"tokens": [...]}.

flags:
  --block-size N   tokens per block, > 0 (default 16)
  --salt S         tenant cache salt, appended to block 0's bytes (default: none)
  --lora NAME      LoRA adapter name; changes the seed to 1337 + XXH3-64(NAME) (default: none)
  --tokens JSON    the token ids, e.g. '[1,2,3]'
  --file PATH      read the tokens from PATH
  -h, --help       show this help

output: {"block_size":16,"num_tokens":N,"num_blocks":B,"local_hashes":[...],
         "sequence_hashes":[...],"sequence_hashes_hex":["0123456789abcdef",...]}
A trailing partial block has no hash. Exit status: 0 ok, 2 bad input.
)";

struct HashArgs {
  uint32_t block_size = 16;
  std::string salt;
  std::string lora;
  std::optional<std::string> tokens_json;
  std::optional<std::string> file;
  bool help = false;
};

StatusOr<uint32_t> ParseBlockSize(std::string_view s) {
  uint32_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return InvalidArgumentError("block size '" + std::string(s) + "' is out of range (max 4294967295)");
  }
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) {
    return InvalidArgumentError("block size '" + std::string(s) + "' is not a positive integer");
  }
  if (v == 0) return InvalidArgumentError("block size must be > 0, got 0");
  return v;
}

StatusOr<HashArgs> ParseArgs(std::span<char*> args) {
  HashArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "-h" || arg == "--help") {
      out.help = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      return InvalidArgumentError("unexpected argument '" + std::string(arg) + "' (see --help)");
    }
    std::string_view name = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string_view::npos) {
      value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
    }
    if (name != "block-size" && name != "block_size" && name != "salt" && name != "lora" &&
        name != "tokens" && name != "file") {
      return InvalidArgumentError("unknown flag --" + std::string(name) + " (see --help)");
    }
    if (!value) {
      if (i + 1 >= args.size()) {
        return InvalidArgumentError("flag --" + std::string(name) + " needs a value");
      }
      value = args[++i];
    }
    if (name == "block-size" || name == "block_size") {
      KVMESH_ASSIGN_OR_RETURN(out.block_size, ParseBlockSize(*value));
    } else if (name == "salt") {
      out.salt = *value;
    } else if (name == "lora") {
      out.lora = *value;
    } else if (name == "tokens") {
      out.tokens_json = *value;
    } else {
      out.file = *value;
    }
  }
  if (out.tokens_json && out.file) {
    return InvalidArgumentError("give only one of --tokens and --file");
  }
  return out;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgumentError("cannot read token file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return InvalidArgumentError("error while reading token file '" + path + "'");
  return ss.str();
}

// Parses a JSON array of token ids (or, when `allow_object`, {"tokens": [...]}).
StatusOr<std::vector<uint32_t>> ParseTokens(const std::string& text, std::string_view source,
                                            bool allow_object) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    return InvalidArgumentError("malformed JSON in " + std::string(source) + ": " + what);
  }
  const nlohmann::json* arr = &doc;
  if (allow_object && doc.is_object()) {
    auto it = doc.find("tokens");
    if (it == doc.end()) {
      return InvalidArgumentError(std::string(source) + ": JSON object has no \"tokens\" array");
    }
    arr = &*it;
  }
  if (!arr->is_array()) {
    return InvalidArgumentError(std::string(source) + ": expected a JSON array of token ids" +
                                (allow_object ? " or {\"tokens\": [...]}" : "") + ", got " +
                                arr->type_name());
  }
  std::vector<uint32_t> tokens;
  tokens.reserve(arr->size());
  for (size_t i = 0; i < arr->size(); ++i) {
    const auto& t = (*arr)[i];
    const std::string where = std::string(source) + ": token at index " + std::to_string(i);
    if (t.is_number_unsigned()) {
      uint64_t v = t.get<uint64_t>();
      if (v > UINT32_MAX) {
        return InvalidArgumentError(where + " is " + std::to_string(v) +
                                    ", above the maximum 4294967295");
      }
      tokens.push_back(static_cast<uint32_t>(v));
    } else if (t.is_number_integer()) {  // signed: only negatives get here
      return InvalidArgumentError(where + " is negative: " + t.dump());
    } else if (t.is_number_float()) {
      return InvalidArgumentError(where + " is not an integer: " + t.dump() +
                                  " (token ids are integers in [0, 4294967295])");
    } else {
      return InvalidArgumentError(where + " is not an integer: " + t.dump());
    }
  }
  return tokens;
}

StatusOr<std::string> RunHash(std::span<char*> args, bool* help) {
  KVMESH_ASSIGN_OR_RETURN(HashArgs a, ParseArgs(args));
  if (a.help) {
    *help = true;
    return std::string(kHashUsage);
  }
  std::string text;
  std::string source;
  bool allow_object = false;
  if (a.tokens_json) {
    text = *a.tokens_json;
    source = "--tokens";
  } else if (a.file) {
    KVMESH_ASSIGN_OR_RETURN(text, ReadFile(*a.file));
    source = "file '" + *a.file + "'";
    allow_object = true;
  } else {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    source = "stdin";
    allow_object = true;
  }
  KVMESH_ASSIGN_OR_RETURN(std::vector<uint32_t> tokens, ParseTokens(text, source, allow_object));

  kv::BlockHashOptions opts;
  opts.block_size = a.block_size;
  opts.cache_salt = a.salt;
  opts.lora_name = a.lora;
  KVMESH_ASSIGN_OR_RETURN(kv::BlockHashes h, kv::ComputeBlockHashes(tokens, opts));

  nlohmann::ordered_json out;  // keys in the documented order
  out["block_size"] = a.block_size;
  out["num_tokens"] = tokens.size();
  out["num_blocks"] = h.sequence.size();
  out["local_hashes"] = h.local;
  out["sequence_hashes"] = h.sequence;
  auto hex = nlohmann::ordered_json::array();
  for (kv::BlockHash s : h.sequence) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(s));
    hex.push_back(buf);
  }
  out["sequence_hashes_hex"] = std::move(hex);
  return out.dump() + "\n";
}

}  // namespace

int HashCommand(std::span<char*> args) {
  bool help = false;
  StatusOr<std::string> out = [&]() -> StatusOr<std::string> {
    try {
      return RunHash(args, &help);
    } catch (const std::exception& e) {  // nothing should throw; never let it escape main
      return InternalError(std::string("unexpected error: ") + e.what());
    }
  }();
  if (!out.ok()) {
    std::fprintf(stderr, "kvmesh hash: %s\n", out.status().message().c_str());
    return out.status().code() == StatusCode::kInternal ? 1 : 2;
  }
  std::fwrite(out->data(), 1, out->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace kvmesh::cli
