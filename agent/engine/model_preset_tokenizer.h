// The tokenizer files of the built-in preset models: a byte-level BPE tokenizer.json /
// tokenizer_config.json with Llama-3-style special tokens, built by kvmesh_tokenizer's
// byte-level BPE builder, plus the special-token ids config.json and generation_config.json name.
// Deterministic: the same vocab size gives byte-identical files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvmesh::engine {

struct PresetTokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  int bos_token_id = -1;           // <|begin_of_text|>
  std::vector<int> eos_token_ids;  // <|end_of_text|>, <|eot_id|>
};

// InvalidArgument when `vocab_size` is too small for the 256 byte tokens plus the special tokens.
StatusOr<PresetTokenizerFiles> BuildPresetTokenizer(int vocab_size, int64_t model_max_length);

}  // namespace kvmesh::engine
