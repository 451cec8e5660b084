// Built-in synthetic models: deterministic random-weight Llama-architecture checkpoints written in
// exactly the Hugging Face folder layout (config.json, generation_config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json), so the whole serving stack can run without downloading
// weights. `builtin:<preset>` model sources resolve to a cached copy.
//
// Invariants: the files of a preset are a pure function of the preset name and its version
// (byte-identical on every machine); a preset folder is published by one rename, so a reader never
// sees a half-written folder; config.json carries "kvmesh_preset": "<name>-v<version>" so a folder
// can be recognised as a given preset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/engine/safetensors.h"
#include "common/status.h"

namespace kvmesh::engine {

struct ModelPresetSpec {
  std::string name;  // "tiny" | "small"
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int intermediate_size = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;  // on disk
  int64_t num_parameters() const;  // as stored in the checkpoint (tied embeddings once)
};

// Version of the preset generator; bump when the bytes a preset produces change.
inline constexpr int kModelPresetVersion = 1;

// The presets, in name order. Unknown name -> InvalidArgument listing the known ones.
std::vector<ModelPresetSpec> ModelPresets();
StatusOr<ModelPresetSpec> FindModelPreset(std::string_view name);

// Writes preset `preset` into `dir` (created if missing). Idempotent: OK without writing anything
// when `dir` already holds this preset (config.json names it and every file has the expected size).
// AlreadyExists when `dir` is non-empty and holds something else (nothing is overwritten).
// The files are built in a temp folder next to `dir` and renamed into place, so concurrent callers
// for the same dir are safe: one rename wins, the others find the preset and succeed.
Status CreatePresetModel(std::string_view preset, const std::string& dir);

// "builtin:tiny" / "builtin:small" -> `cache_dir`/<preset>-v<version>, created on first use (see
// CreatePresetModel). Any other source is a folder path, returned as is when it holds config.json,
// NotFound naming it otherwise. InvalidArgument for an empty source or an unknown builtin preset.
StatusOr<std::string> ResolveModelSource(std::string_view source, const std::string& cache_dir);

// $KVMESH_CACHE_DIR, else $XDG_CACHE_HOME/kvmesh, else $HOME/.cache/kvmesh, else
// /tmp/kvmesh-cache (no HOME).
std::string DefaultModelCacheDir();

}  // namespace kvmesh::engine
