// Builds a small byte-level BPE tokenizer (Llama 3 layout) from scratch, for the built-in models
// that have no downloaded tokenizer: a deterministic BPE trainer runs over an embedded English
// corpus and the result is written as a standard Hugging Face tokenizer.json (HF tools and
// transformers.js load it too) plus a matching tokenizer_config.json.
//
// Layout of the vocab: ids 0..255 are the 256 byte tokens in byte order (GPT-2 byte->unicode
// alphabet), then one token per merge in training order, then the special tokens. The trainer
// merges the most frequent adjacent pair over the words the Llama 3 pre-tokenizer regex yields,
// ties broken by the pair's token strings (bytewise), so the same spec always gives byte-identical
// JSON. If the corpus runs out of pairs first, the vocab is smaller than requested.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvmesh::tokenizer {

struct ByteLevelBpeSpec {
  // Total vocab including the 256 byte tokens and the special tokens. Values below
  // 256 + special_tokens.size() train no merges.
  int32_t vocab_size = 1024;
  // Added as special tokens at the end of the vocab, in this order.
  std::vector<std::string> special_tokens = {"<|begin_of_text|>", "<|end_of_text|>",
                                             "<|start_header_id|>", "<|end_header_id|>",
                                             "<|eot_id|>"};
  std::string bos_token = "<|begin_of_text|>";  // prepended by the post-processor (if non-empty)
  std::string eos_token = "<|eot_id|>";         // for tokenizer_config.json
  // Training text; empty = EmbeddedEnglishCorpus().
  std::string corpus;
};

// The embedded English training text (~6 KB).
std::string_view EmbeddedEnglishCorpus();

// tokenizer.json text for `spec` (deterministic).
std::string BuildByteLevelBpeTokenizerJson(const ByteLevelBpeSpec& spec);

// tokenizer_config.json text: tokenizer_class, bos_token/eos_token, model_max_length and the
// Llama 3 chat_template (so ChatTemplate::FromTokenizerConfig selects "llama3").
std::string BuildTokenizerConfigJson(const ByteLevelBpeSpec& spec, int64_t model_max_length);

}  // namespace kvmesh::tokenizer
