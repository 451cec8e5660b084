#include "agent/engine/model_preset_tokenizer.h"

#include <map>
#include <nlohmann/json.hpp>

#include "tokenizer/byte_level_bpe_builder.h"

namespace kvmesh::engine {

StatusOr<PresetTokenizerFiles> BuildPresetTokenizer(int vocab_size, int64_t model_max_length) {
  tokenizer::ByteLevelBpeSpec spec;  // Llama 3 special tokens, bos <|begin_of_text|>
  if (vocab_size < 256 + static_cast<int>(spec.special_tokens.size())) {
    return InvalidArgumentError("preset tokenizer: vocab_size " + std::to_string(vocab_size) +
                                " is below 256 byte tokens + " +
                                std::to_string(spec.special_tokens.size()) + " special tokens");
  }
  spec.vocab_size = vocab_size;
  PresetTokenizerFiles out;
  out.tokenizer_json = tokenizer::BuildByteLevelBpeTokenizerJson(spec);
  out.tokenizer_config_json = tokenizer::BuildTokenizerConfigJson(spec, model_max_length);
  // Read the special-token ids back from the file itself, so config.json always agrees with it.
  std::map<std::string, int> ids;
  try {
    const auto doc = nlohmann::json::parse(out.tokenizer_json);
    for (const auto& t : doc.at("added_tokens")) {
      ids[t.at("content").get<std::string>()] = t.at("id").get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return InternalError(std::string("preset tokenizer: built tokenizer.json is unreadable: ") +
                         e.what());
  }
  for (const char* name : {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}) {
    auto it = ids.find(name);
    if (it == ids.end() || it->second < 0 || it->second >= vocab_size) {
      return InternalError(std::string("preset tokenizer: special token ") + name +
                           " missing or outside the vocab");
    }
  }
  out.bos_token_id = ids["<|begin_of_text|>"];
  out.eos_token_ids = {ids["<|end_of_text|>"], ids["<|eot_id|>"]};
  return out;
}

}  // namespace kvmesh::engine
