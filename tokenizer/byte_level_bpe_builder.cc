#include "tokenizer/byte_level_bpe_builder.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "tokenizer/pre_tokenizer.h"

namespace kvmesh::tokenizer {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kLlama3ChatTemplate =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

uint64_t Key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Deterministic BPE training; returns merges as (left id, right id) with token strings in `tokens`.
std::vector<std::pair<int32_t, int32_t>> Train(std::string_view corpus, int32_t num_merges,
                                               std::vector<std::string>* tokens) {
  auto regex = Regex::Compile(kLlama3Pattern, false);
  KVMESH_CHECK(regex.ok(), "Llama 3 pattern must compile");
  const auto& table = ByteToUnicodeTable();
  tokens->clear();
  for (int b = 0; b < 256; ++b) tokens->push_back(table[b]);

  std::map<std::string, int64_t> word_counts;  // ordered: deterministic word order
  for (const auto& [b, e] : (*regex)->FindAll(corpus)) ++word_counts[std::string(corpus.substr(b, e - b))];
  std::vector<Word> words;
  for (const auto& [w, c] : word_counts) {
    Word word{{}, c};
    for (char ch : w) word.symbols.push_back(static_cast<uint8_t>(ch));
    words.push_back(std::move(word));
  }
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::unordered_set<size_t>> where;
  auto add_word = [&](size_t wi, int64_t sign) {
    const Word& w = words[wi];
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      const uint64_t k = Key(w.symbols[i], w.symbols[i + 1]);
      pair_counts[k] += sign * w.count;
      if (sign > 0) where[k].insert(wi);
    }
  };
  for (size_t wi = 0; wi < words.size(); ++wi) add_word(wi, +1);

  std::vector<std::pair<int32_t, int32_t>> merges;
  while (static_cast<int32_t>(merges.size()) < num_merges) {
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [k, c] : pair_counts) {
      if (c <= 0) continue;
      bool better = c > best_count;
      if (!better && c == best_count) {
        const auto a = static_cast<int32_t>(k >> 32), b = static_cast<int32_t>(k & 0xFFFFFFFF);
        const auto ba = static_cast<int32_t>(best >> 32),
                   bb = static_cast<int32_t>(best & 0xFFFFFFFF);
        better = std::tie((*tokens)[a], (*tokens)[b]) < std::tie((*tokens)[ba], (*tokens)[bb]);
      }
      if (better) {
        best = k;
        best_count = c;
      }
    }
    if (best_count == 0) break;  // Corpus exhausted.
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFF);
    const auto new_id = static_cast<int32_t>(tokens->size());
    tokens->push_back((*tokens)[a] + (*tokens)[b]);
    merges.emplace_back(a, b);
    std::vector<size_t> affected(where[best].begin(), where[best].end());
    std::sort(affected.begin(), affected.end());
    for (size_t wi : affected) {
      add_word(wi, -1);
      std::vector<int32_t>& s = words[wi].symbols;
      std::vector<int32_t> merged;
      merged.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          merged.push_back(new_id);
          ++i;
        } else {
          merged.push_back(s[i]);
        }
      }
      s = std::move(merged);
      add_word(wi, +1);
    }
    pair_counts.erase(best);
    where.erase(best);
  }
  return merges;
}

}  // namespace

std::string BuildByteLevelBpeTokenizerJson(const ByteLevelBpeSpec& spec) {
  const std::string_view corpus = spec.corpus.empty() ? EmbeddedEnglishCorpus() : spec.corpus;
  const int32_t num_merges = std::max<int32_t>(
      0, spec.vocab_size - 256 - static_cast<int32_t>(spec.special_tokens.size()));
  std::vector<std::string> tokens;
  const auto merges = Train(corpus, num_merges, &tokens);

  ojson vocab = ojson::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[tokens[id]] = id;
  ojson merge_list = ojson::array();
  for (const auto& [a, b] : merges) merge_list.push_back(ojson::array({tokens[a], tokens[b]}));
  ojson added = ojson::array();
  std::vector<std::string> specials;
  for (const std::string& s : spec.special_tokens) {
    if (std::find(specials.begin(), specials.end(), s) != specials.end()) continue;  // dedupe
    specials.push_back(s);
    added.push_back({{"id", tokens.size() + specials.size() - 1},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  ojson processors = ojson::array();
  processors.push_back({{"type", "ByteLevel"},
                        {"add_prefix_space", true},
                        {"trim_offsets", false},
                        {"use_regex", true}});
  auto bos = std::find(specials.begin(), specials.end(), spec.bos_token);
  if (bos != specials.end()) {
    const size_t bos_id = tokens.size() + (bos - specials.begin());
    ojson special_tok = {{"SpecialToken", {{"id", spec.bos_token}, {"type_id", 0}}}};
    processors.push_back(
        {{"type", "TemplateProcessing"},
         {"single", ojson::array({special_tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
         {"pair",
          ojson::array({special_tok,
                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                        {{"SpecialToken", {{"id", spec.bos_token}, {"type_id", 1}}}},
                        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
         {"special_tokens",
          {{spec.bos_token,
            {{"id", spec.bos_token}, {"ids", {bos_id}}, {"tokens", {spec.bos_token}}}}}}});
  }
  ojson root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         ojson::array({{{"type", "Split"},
                        {"pattern", {{"Regex", std::string(kLlama3Pattern)}}},
                        {"behavior", "Isolated"},
                        {"invert", false}},
                       {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", false}}})}}},
      {"post_processor", {{"type", "Sequence"}, {"processors", processors}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
  return root.dump(1) + "\n";
}

std::string BuildTokenizerConfigJson(const ByteLevelBpeSpec& spec, int64_t model_max_length) {
  ojson root = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"bos_token", spec.bos_token},
      {"eos_token", spec.eos_token},
      {"model_max_length", model_max_length},
      {"clean_up_tokenization_spaces", false},
      {"chat_template", std::string(kLlama3ChatTemplate)},
  };
  return root.dump(1) + "\n";
}

}  // namespace kvmesh::tokenizer
