#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_model.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace kvmesh::tokenizer {

using json = nlohmann::json;

namespace {

// Largest accepted token id (real vocabs stay below 2^18); bounds per-id tables.
constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
};

struct NormalizerStep {
  enum Kind { kPrepend, kReplace, kStrip } kind;
  std::string a;  // prepend text / replace pattern
  std::string b;  // replacement
  std::shared_ptr<Regex> regex;  // Replace with a {"Regex": ...} pattern
  bool strip_left = false, strip_right = false;
};

struct PreTokenizerStep {
  enum Kind { kSplit, kByteLevel, kMetaspace } kind;
  std::shared_ptr<Regex> regex;  // Split / ByteLevel(use_regex) / Metaspace(split)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;
  std::string replacement;  // Metaspace
  enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
};


std::string Replace(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

bool IsAsciiSpaceAt(std::string_view s, size_t pos, size_t* len) {
  const auto c = static_cast<uint8_t>(s[pos]);
  if (c == ' ' || (c >= '\t' && c <= '\r')) {
    *len = 1;
    return true;
  }
  return false;
}

// Reads optional typed fields without throwing.
const json* Field(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}
bool BoolField(const json& j, const char* key, bool dflt) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_boolean() ? f->get<bool>() : dflt;
}
std::string StringField(const json& j, const char* key, std::string dflt = "") {
  const json* f = Field(j, key);
  return f != nullptr && f->is_string() ? f->get<std::string>() : dflt;
}

}  // namespace

class TokenizerImpl {
 public:
  Status Load(const json& root);
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  void AppendTokenBytes(int32_t id, bool skip_special, std::string* out, bool* byte_fallback) const;
  void ComputeTokenBytes(int32_t id, std::string* out, bool* byte_fallback) const;
  void PrecomputeTokenBytes();
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;

  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;                   // in file order
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index into `added`
  std::array<std::vector<size_t>, 256> added_by_first_byte;  // longest first
  std::vector<std::string> id_to_token;             // model vocab, "" for gaps
  int32_t vocab_size = 0;

  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  std::vector<int32_t> post_prefix, post_suffix;  // single-sequence template around "A"

  // Decoder.
  bool dec_byte_level = false;
  bool dec_byte_fallback = false;
  std::vector<std::pair<std::string, std::string>> dec_replace;
  int dec_strip_left = 0;

  std::optional<int32_t> bos, eos;

  // Decoded bytes of every id (index = id) and whether the id is a byte-fallback token; filled
  // once by PrecomputeTokenBytes() so Decode and streaming only copy bytes.
  std::vector<std::string> token_bytes;
  std::vector<uint8_t> token_is_byte;
  std::vector<uint8_t> token_known;
  std::vector<uint8_t> token_special;

 private:
  Status LoadAddedTokens(const json& root);
  Status LoadNormalizer(const json& j, const std::string& path);
  Status LoadPreTokenizer(const json& j, const std::string& path);
  Status LoadModel(const json& j);
  Status LoadPostProcessor(const json& j, const std::string& path);
  Status LoadDecoder(const json& j, const std::string& path);
  std::optional<int32_t> Lookup(std::string_view token) const;
  void EncodeSegment(std::string_view segment, bool at_start, std::vector<int32_t>* out) const;
  void RunPreTokenizers(size_t step_index, std::string_view text, bool at_start,
                        std::vector<int32_t>* out) const;
};

std::optional<int32_t> TokenizerImpl::Lookup(std::string_view token) const {
  for (const AddedToken& t : added)
    if (t.content == token) return t.id;
  auto it = model->vocab().find(token);
  if (it != model->vocab().end()) return it->second;
  return std::nullopt;
}

Status TokenizerImpl::Load(const json& root) {
  if (!root.is_object()) return InvalidArgumentError("top level is not a JSON object");
  const json* m = Field(root, "model");
  if (m == nullptr || !m->is_object()) return InvalidArgumentError("field \"model\" is missing");
  KVMESH_RETURN_IF_ERROR(LoadModel(*m));
  KVMESH_RETURN_IF_ERROR(LoadAddedTokens(root));
  if (const json* n = Field(root, "normalizer")) {
    KVMESH_RETURN_IF_ERROR(LoadNormalizer(*n, "normalizer"));
  }
  if (const json* p = Field(root, "pre_tokenizer")) {
    KVMESH_RETURN_IF_ERROR(LoadPreTokenizer(*p, "pre_tokenizer"));
  }
  if (const json* p = Field(root, "post_processor")) {
    KVMESH_RETURN_IF_ERROR(LoadPostProcessor(*p, "post_processor"));
  }
  if (const json* d = Field(root, "decoder")) {
    KVMESH_RETURN_IF_ERROR(LoadDecoder(*d, "decoder"));
  }
  // Per-id tables are dense; refuse files whose ids are mostly gaps (real vocabs are dense).
  const int64_t num_tokens = static_cast<int64_t>(model->vocab().size() + added.size());
  if (vocab_size > 2 * num_tokens + 65536) {
    return InvalidArgumentError("token ids are too sparse: max id " +
                                std::to_string(vocab_size - 1) + " for " +
                                std::to_string(num_tokens) + " tokens");
  }
  PrecomputeTokenBytes();
  // BOS/EOS guesses: the template's prefix token, else well-known names.
  if (!post_prefix.empty()) bos = post_prefix.front();
  if (!bos) {
    for (const char* name : {"<|begin_of_text|>", "<s>", "<bos>"})
      if ((bos = Lookup(name))) break;
  }
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
    if ((eos = Lookup(name))) break;
  return Status::Ok();
}

Status TokenizerImpl::LoadModel(const json& m) {
  const std::string type = StringField(m, "type", "BPE");
  if (type != "BPE") {
    return UnimplementedError("model.type \"" + type +
                              "\" is not supported (supported: BPE)");
  }
  const json* v = Field(m, "vocab");
  if (v == nullptr || !v->is_object()) {
    return InvalidArgumentError("model.vocab is missing or not an object");
  }
  TokenMap vocab;
  vocab.reserve(v->size());
  int32_t max_id = -1;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_number_integer()) {
      return InvalidArgumentError("model.vocab[\"" + it.key() + "\"] is not an integer id");
    }
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
      return InvalidArgumentError("model.vocab[\"" + it.key() + "\"] has out-of-range id " +
                                  std::to_string(id));
    }
    vocab.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [tok, id] : vocab) id_to_token[id] = tok;
  vocab_size = max_id + 1;

  std::vector<std::pair<std::string, std::string>> merges;
  if (const json* ms = Field(m, "merges")) {
    if (!ms->is_array()) return InvalidArgumentError("model.merges is not an array");
    merges.reserve(ms->size());
    for (size_t i = 0; i < ms->size(); ++i) {
      const json& e = (*ms)[i];
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          return InvalidArgumentError("model.merges[" + std::to_string(i) + "] \"" + s +
                                      "\" is not two tokens separated by one space");
        }
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        return InvalidArgumentError("model.merges[" + std::to_string(i) +
                                    "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  BpeOptions opts;
  if (const json* u = Field(m, "unk_token"); u != nullptr && u->is_string()) {
    opts.unk_token = u->get<std::string>();
  }
  opts.fuse_unk = BoolField(m, "fuse_unk", false);
  opts.byte_fallback = BoolField(m, "byte_fallback", false);
  opts.ignore_merges = BoolField(m, "ignore_merges", false);
  opts.continuing_subword_prefix = StringField(m, "continuing_subword_prefix");
  opts.end_of_word_suffix = StringField(m, "end_of_word_suffix");
  if (const json* d = Field(m, "dropout"); d != nullptr && d->is_number() && d->get<double>() > 0) {
    return UnimplementedError("model.dropout > 0 (BPE dropout) is not supported");
  }
  KVMESH_ASSIGN_OR_RETURN(model, BpeModel::Create(std::move(vocab), merges, std::move(opts)));
  return Status::Ok();
}

Status TokenizerImpl::LoadAddedTokens(const json& root) {
  const json* at = Field(root, "added_tokens");
  if (at == nullptr) return Status::Ok();
  if (!at->is_array()) return InvalidArgumentError("added_tokens is not an array");
  for (size_t i = 0; i < at->size(); ++i) {
    const json& e = (*at)[i];
    const json* id = Field(e, "id");
    const json* content = Field(e, "content");
    if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > kMaxTokenId || content == nullptr || !content->is_string() ||
        content->get<std::string>().empty()) {
      return InvalidArgumentError("added_tokens[" + std::to_string(i) +
                                  "] needs an integer \"id\" >= 0 and a non-empty \"content\"");
    }
    AddedToken t;
    t.id = static_cast<int32_t>(id->get<int64_t>());
    t.content = content->get<std::string>();
    t.special = BoolField(e, "special", false);
    t.lstrip = BoolField(e, "lstrip", false);
    t.rstrip = BoolField(e, "rstrip", false);
    vocab_size = std::max(vocab_size, t.id + 1);
    added_by_id[t.id] = added.size();
    added.push_back(std::move(t));
  }
  for (size_t i = 0; i < added.size(); ++i) {
    added_by_first_byte[static_cast<uint8_t>(added[i].content[0])].push_back(i);
  }
  for (auto& list : added_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return added[a].content.size() > added[b].content.size();
    });
  }
  return Status::Ok();
}

Status TokenizerImpl::LoadNormalizer(const json& j, const std::string& path) {
  const std::string type = StringField(j, "type");
  if (type == "Sequence") {
    const json* list = Field(j, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return InvalidArgumentError(path + ".normalizers is not an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      KVMESH_RETURN_IF_ERROR(
          LoadNormalizer((*list)[i], path + ".normalizers[" + std::to_string(i) + "]"));
    }
    return Status::Ok();
  }
  if (type == "NFC") return Status::Ok();  // Input is assumed NFC already; see docs.
  if (type == "Prepend") {
    normalizers.push_back({NormalizerStep::kPrepend, StringField(j, "prepend"), "", nullptr});
    return Status::Ok();
  }
  if (type == "Strip") {
    NormalizerStep s{NormalizerStep::kStrip, "", "", nullptr};
    s.strip_left = BoolField(j, "strip_left", true);
    s.strip_right = BoolField(j, "strip_right", true);
    normalizers.push_back(s);
    return Status::Ok();
  }
  if (type == "Replace") {
    const json* p = Field(j, "pattern");
    NormalizerStep s{NormalizerStep::kReplace, "", StringField(j, "content"), nullptr};
    if (p != nullptr && Field(*p, "String") != nullptr && (*p)["String"].is_string()) {
      s.a = (*p)["String"].get<std::string>();
    } else if (p != nullptr && Field(*p, "Regex") != nullptr && (*p)["Regex"].is_string()) {
      auto re = Regex::Compile((*p)["Regex"].get<std::string>(), false);
      if (!re.ok()) return re.status().WithContext(path + ".pattern.Regex");
      s.regex = std::move(re).value();
    } else {
      return InvalidArgumentError(path + ".pattern needs a \"String\" or \"Regex\"");
    }
    normalizers.push_back(std::move(s));
    return Status::Ok();
  }
  return UnimplementedError(path + ".type \"" + type + "\" is not supported");
}

Status TokenizerImpl::LoadPreTokenizer(const json& j, const std::string& path) {
  const std::string type = StringField(j, "type");
  if (type == "Sequence") {
    const json* list = Field(j, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return InvalidArgumentError(path + ".pretokenizers is not an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      KVMESH_RETURN_IF_ERROR(
          LoadPreTokenizer((*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]"));
    }
    return Status::Ok();
  }
  PreTokenizerStep step{};
  if (type == "Split") {
    step.kind = PreTokenizerStep::kSplit;
    const json* p = Field(j, "pattern");
    std::string pattern;
    bool literal = false;
    if (p != nullptr && Field(*p, "Regex") != nullptr && (*p)["Regex"].is_string()) {
      pattern = (*p)["Regex"].get<std::string>();
    } else if (p != nullptr && Field(*p, "String") != nullptr && (*p)["String"].is_string()) {
      pattern = (*p)["String"].get<std::string>();
      literal = true;
    } else {
      return InvalidArgumentError(path + ".pattern needs a \"Regex\" or \"String\"");
    }
    auto re = Regex::Compile(pattern, literal);
    if (!re.ok()) return re.status().WithContext(path + ".pattern.Regex");
    step.regex = std::move(re).value();
    auto behavior = ParseSplitBehavior(StringField(j, "behavior", "Isolated"));
    if (!behavior.ok()) return behavior.status().WithContext(path + ".behavior");
    step.behavior = *behavior;
    step.invert = BoolField(j, "invert", false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::kByteLevel;
    step.add_prefix_space = BoolField(j, "add_prefix_space", true);
    if (BoolField(j, "use_regex", true)) {
      auto re = Regex::Compile(kGpt2Pattern, false);
      if (!re.ok()) return re.status().WithContext(path);
      step.regex = std::move(re).value();
    }
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::kMetaspace;
    step.replacement = StringField(j, "replacement", std::string(kMetaspace));
    const std::string scheme =
        StringField(j, "prepend_scheme", BoolField(j, "add_prefix_space", true) ? "always" : "never");
    if (scheme == "always") step.prepend = PreTokenizerStep::kAlways;
    else if (scheme == "first") step.prepend = PreTokenizerStep::kFirst;
    else if (scheme == "never") step.prepend = PreTokenizerStep::kNever;
    else return InvalidArgumentError(path + ".prepend_scheme \"" + scheme + "\" is unknown");
    if (BoolField(j, "split", true)) {
      auto re = Regex::Compile(step.replacement, true);
      if (!re.ok()) return re.status().WithContext(path + ".replacement");
      step.regex = std::move(re).value();
    }
  } else {
    return UnimplementedError(path + ".type \"" + type + "\" is not supported");
  }
  pre_tokenizers.push_back(std::move(step));
  return Status::Ok();
}

Status TokenizerImpl::LoadPostProcessor(const json& j, const std::string& path) {
  const std::string type = StringField(j, "type");
  if (type == "Sequence") {
    const json* list = Field(j, "processors");
    if (list == nullptr || !list->is_array()) {
      return InvalidArgumentError(path + ".processors is not an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      KVMESH_RETURN_IF_ERROR(
          LoadPostProcessor((*list)[i], path + ".processors[" + std::to_string(i) + "]"));
    }
    return Status::Ok();
  }
  if (type == "ByteLevel") return Status::Ok();  // Only adjusts offsets.
  if (type == "TemplateProcessing") {
    const json* single = Field(j, "single");
    if (single == nullptr || !single->is_array()) {
      return InvalidArgumentError(path + ".single is not an array");
    }
    const json* specials = Field(j, "special_tokens");
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const json& item = (*single)[i];
      const std::string where = path + ".single[" + std::to_string(i) + "]";
      if (Field(item, "Sequence") != nullptr) {
        seen_sequence = true;
        continue;
      }
      const json* st = Field(item, "SpecialToken");
      if (st == nullptr || !Field(*st, "id") || !(*st)["id"].is_string()) {
        return InvalidArgumentError(where + " is neither Sequence nor SpecialToken{id}");
      }
      const std::string name = (*st)["id"].get<std::string>();
      std::vector<int32_t> ids;
      const json* entry = specials != nullptr ? Field(*specials, name.c_str()) : nullptr;
      if (entry != nullptr && Field(*entry, "ids") != nullptr && (*entry)["ids"].is_array()) {
        for (const json& id : (*entry)["ids"]) {
          if (!id.is_number_integer()) {
            return InvalidArgumentError(path + ".special_tokens[\"" + name + "\"].ids has a non-integer");
          }
          ids.push_back(id.get<int32_t>());
        }
      } else if (auto id = Lookup(name)) {
        ids.push_back(*id);
      } else {
        return InvalidArgumentError(where + " names special token \"" + name +
                                    "\" that is neither in special_tokens nor the vocab");
      }
      auto& dst = seen_sequence ? post_suffix : post_prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return Status::Ok();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const json* cls = Field(j, "cls");
    const json* sep = Field(j, "sep");
    if (cls == nullptr || sep == nullptr || !cls->is_array() || cls->size() != 2 ||
        !sep->is_array() || sep->size() != 2 || !(*cls)[1].is_number_integer() ||
        !(*sep)[1].is_number_integer()) {
      return InvalidArgumentError(path + ".cls/.sep must be [token, id]");
    }
    post_prefix.push_back((*cls)[1].get<int32_t>());
    post_suffix.push_back((*sep)[1].get<int32_t>());
    return Status::Ok();
  }
  return UnimplementedError(path + ".type \"" + type + "\" is not supported");
}

Status TokenizerImpl::LoadDecoder(const json& j, const std::string& path) {
  const std::string type = StringField(j, "type");
  if (type == "Sequence") {
    const json* list = Field(j, "decoders");
    if (list == nullptr || !list->is_array()) {
      return InvalidArgumentError(path + ".decoders is not an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      KVMESH_RETURN_IF_ERROR(
          LoadDecoder((*list)[i], path + ".decoders[" + std::to_string(i) + "]"));
    }
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    dec_byte_level = true;
  } else if (type == "ByteFallback") {
    dec_byte_fallback = true;
  } else if (type == "Fuse") {
    // Concatenation is what Decode does anyway.
  } else if (type == "Replace") {
    const json* p = Field(j, "pattern");
    if (p == nullptr || Field(*p, "String") == nullptr || !(*p)["String"].is_string()) {
      return UnimplementedError(path + ".pattern: only {\"String\": ...} patterns are supported");
    }
    dec_replace.emplace_back((*p)["String"].get<std::string>(), StringField(j, "content"));
  } else if (type == "Strip") {
    const json* stop = Field(j, "stop");
    if (StringField(j, "content", " ") != " " ||
        (stop != nullptr && (!stop->is_number_integer() || stop->get<int>() != 0))) {
      return UnimplementedError(path + ": only Strip of leading spaces is supported");
    }
    const json* start = Field(j, "start");
    dec_strip_left = start != nullptr && start->is_number_integer() ? start->get<int>() : 0;
  } else if (type == "Metaspace") {
    const std::string rep = StringField(j, "replacement", std::string(kMetaspace));
    dec_replace.emplace_back(rep, " ");
    const std::string scheme =
        StringField(j, "prepend_scheme", BoolField(j, "add_prefix_space", true) ? "always" : "never");
    if (scheme != "never") dec_strip_left = 1;
  } else {
    return UnimplementedError(path + ".type \"" + type + "\" is not supported");
  }
  return Status::Ok();
}

void TokenizerImpl::EncodeSegment(std::string_view segment, bool at_start,
                                  std::vector<int32_t>* out) const {
  std::string normalized(segment);
  for (const NormalizerStep& n : normalizers) {
    switch (n.kind) {
      case NormalizerStep::kPrepend:
        if (!normalized.empty()) normalized.insert(0, n.a);
        break;
      case NormalizerStep::kReplace:
        if (n.regex) {
          std::string r;
          size_t prev = 0;
          for (const auto& [b, e] : n.regex->FindAll(normalized)) {
            r.append(normalized, prev, b - prev);
            r.append(n.b);
            prev = e;
          }
          r.append(normalized, prev);
          normalized = std::move(r);
        } else {
          normalized = Replace(normalized, n.a, n.b);
        }
        break;
      case NormalizerStep::kStrip: {
        size_t b = 0, e = normalized.size(), len = 0;
        if (n.strip_left)
          while (b < e && IsAsciiSpaceAt(normalized, b, &len)) b += len;
        if (n.strip_right)
          while (e > b && IsAsciiSpaceAt(normalized, e - 1, &len)) e -= len;
        normalized = normalized.substr(b, e - b);
        break;
      }
    }
  }
  if (normalized.empty()) return;
  RunPreTokenizers(0, normalized, at_start, out);
}

// Applies pre-tokenizer `step` to one piece and recurses into the next step for each resulting
// piece; after the last step the piece goes to the model. Depth-first, so no list of all pieces
// is ever materialised.
void TokenizerImpl::RunPreTokenizers(size_t step_index, std::string_view text, bool at_start,
                                     std::vector<int32_t>* out) const {
  if (step_index == pre_tokenizers.size()) {
    model->Tokenize(text, out);
    return;
  }
  const PreTokenizerStep& step = pre_tokenizers[step_index];
  const size_t next = step_index + 1;
  switch (step.kind) {
    case PreTokenizerStep::kSplit:
      for (std::string_view s : SplitByRegex(*step.regex, text, step.behavior, step.invert))
        RunPreTokenizers(next, s, at_start && s.data() == text.data(), out);
      return;
    case PreTokenizerStep::kByteLevel: {
      std::string prefixed;
      if (step.add_prefix_space && !text.starts_with(' ')) {
        prefixed = " " + std::string(text);
        text = prefixed;
      }
      if (step.regex) {
        for (std::string_view s : SplitByRegex(*step.regex, text, SplitBehavior::kIsolated, false))
          RunPreTokenizers(next, BytesToUnicode(s), at_start && s.data() == text.data(), out);
      } else {
        RunPreTokenizers(next, BytesToUnicode(text), at_start, out);
      }
      return;
    }
    case PreTokenizerStep::kMetaspace: {
      std::string t = Replace(text, " ", step.replacement);
      const bool prepend = !t.starts_with(step.replacement) &&
                           (step.prepend == PreTokenizerStep::kAlways ||
                            (step.prepend == PreTokenizerStep::kFirst && at_start));
      if (prepend) t.insert(0, step.replacement);
      if (step.regex) {
        for (std::string_view s : SplitByRegex(*step.regex, t, SplitBehavior::kMergedWithNext, false))
          RunPreTokenizers(next, s, at_start && s.data() == t.data(), out);
      } else {
        RunPreTokenizers(next, t, at_start, out);
      }
      return;
    }
  }
}

std::vector<int32_t> TokenizerImpl::Encode(std::string_view raw, bool add_special_tokens) const {
  std::string repaired;
  std::string_view text = raw;
  if (!IsValidUtf8(raw)) {
    repaired = Utf8Lossy(raw);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special_tokens) out.insert(out.end(), post_prefix.begin(), post_prefix.end());
  size_t seg_begin = 0;  // start of the pending normal segment
  size_t pos = 0;
  auto is_space = [&](size_t p) {
    const char c = text[p];
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  };
  while (pos < text.size()) {
    const auto& candidates = added_by_first_byte[static_cast<uint8_t>(text[pos])];
    const AddedToken* hit = nullptr;
    for (size_t idx : candidates) {
      if (text.substr(pos).starts_with(added[idx].content)) {
        hit = &added[idx];
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t seg_end = pos;
    if (hit->lstrip)
      while (seg_end > seg_begin && is_space(seg_end - 1)) --seg_end;
    if (seg_end > seg_begin) {
      EncodeSegment(text.substr(seg_begin, seg_end - seg_begin), seg_begin == 0, &out);
    }
    out.push_back(hit->id);
    pos += hit->content.size();
    if (hit->rstrip)
      while (pos < text.size() && is_space(pos)) ++pos;
    seg_begin = pos;
  }
  if (seg_begin < text.size()) {
    EncodeSegment(text.substr(seg_begin), seg_begin == 0, &out);
  }
  if (add_special_tokens) out.insert(out.end(), post_suffix.begin(), post_suffix.end());
  return out;
}

void TokenizerImpl::AppendTokenBytes(int32_t id, bool skip_special, std::string* out,
                                     bool* byte_fallback) const {
  *byte_fallback = false;
  if (id < 0 || static_cast<size_t>(id) >= token_bytes.size() || !token_known[id]) return;
  if (skip_special && token_special[id]) return;
  out->append(token_bytes[id]);
  *byte_fallback = token_is_byte[id] != 0;
}

void TokenizerImpl::PrecomputeTokenBytes() {
  token_bytes.assign(static_cast<size_t>(vocab_size), std::string());
  token_is_byte.assign(static_cast<size_t>(vocab_size), 0);
  token_known.assign(static_cast<size_t>(vocab_size), 0);
  token_special.assign(static_cast<size_t>(vocab_size), 0);
  for (const AddedToken& t : added) token_special[t.id] = t.special ? 1 : 0;
  for (int32_t id = 0; id < vocab_size; ++id) {
    bool is_byte = false;
    std::string bytes;
    ComputeTokenBytes(id, &bytes, &is_byte);
    token_known[id] = added_by_id.count(id) > 0 ||
                      (static_cast<size_t>(id) < id_to_token.size() && !id_to_token[id].empty());
    token_bytes[id] = std::move(bytes);
    token_is_byte[id] = is_byte ? 1 : 0;
  }
}

void TokenizerImpl::ComputeTokenBytes(int32_t id, std::string* out, bool* byte_fallback) const {
  *byte_fallback = false;
  const std::string* token = nullptr;
  if (auto it = added_by_id.find(id); it != added_by_id.end()) {
    token = &added[it->second].content;
  } else if (id >= 0 && static_cast<size_t>(id) < id_to_token.size() && !id_to_token[id].empty()) {
    token = &id_to_token[id];
  } else {
    return;
  }
  std::string t = *token;
  for (const auto& [from, to] : dec_replace) t = Replace(t, from, to);
  if (dec_byte_fallback && t.size() == 6 && t.starts_with("<0x") && t.back() == '>') {
    const bool hex = std::isxdigit(static_cast<unsigned char>(t[3])) &&
                     std::isxdigit(static_cast<unsigned char>(t[4]));
    const int b = hex ? static_cast<int>(std::strtol(t.substr(3, 2).c_str(), nullptr, 16)) : 0;
    if (hex) {
      out->push_back(static_cast<char>(b));
      *byte_fallback = true;
      return;
    }
  }
  if (dec_byte_level) {
    std::string bytes;
    size_t pos = 0;
    bool all = true;
    while (pos < t.size()) {
      const int b = UnicodeToByte(NextCodepoint(t, &pos));
      if (b < 0) {
        all = false;
        break;
      }
      bytes.push_back(static_cast<char>(b));
    }
    out->append(all ? bytes : t);
    return;
  }
  out->append(t);
}

std::string TokenizerImpl::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  std::string group;  // consecutive byte-fallback bytes
  size_t group_tokens = 0;
  auto flush_group = [&] {
    if (group_tokens == 0) return;
    if (IsValidUtf8(group)) {
      out.append(group);
    } else {
      for (size_t i = 0; i < group_tokens; ++i) out.append(kReplacementChar);
    }
    group.clear();
    group_tokens = 0;
  };
  std::string piece;
  for (int32_t id : ids) {
    piece.clear();
    bool is_byte = false;
    AppendTokenBytes(id, skip_special, &piece, &is_byte);
    if (is_byte) {
      group.append(piece);
      ++group_tokens;
    } else if (!piece.empty()) {
      flush_group();
      out.append(piece);
    }
  }
  flush_group();
  size_t strip = 0;
  while (static_cast<int>(strip) < dec_strip_left && strip < out.size() && out[strip] == ' ') ++strip;
  out.erase(0, strip);
  return Utf8Lossy(out);
}

// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view text,
                                                         std::string_view name) {
  const std::string ctx(name);
  json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgumentError(ctx + ": malformed JSON");
  auto impl = std::make_unique<TokenizerImpl>();
  Status s;
  try {
    s = impl->Load(root);
  } catch (const std::exception& e) {  // nlohmann type errors on unexpected shapes
    s = InvalidArgumentError(std::string("unexpected JSON structure: ") + e.what());
  }
  if (!s.ok()) return s.WithContext(ctx);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  auto read = [](const std::filesystem::path& p, std::string* out) {
    std::ifstream in(p, std::ios::binary);
    if (!in) return false;
    std::ostringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    return true;
  };
  std::string text;
  if (!read(path, &text)) return NotFoundError("cannot read tokenizer file " + path);
  KVMESH_ASSIGN_OR_RETURN(auto tok, FromJson(text, path));
  std::error_code ec;
  const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::string config_text;
  if (std::filesystem::exists(config, ec) && read(config, &config_text)) {
    KVMESH_RETURN_IF_ERROR(tok->ApplyTokenizerConfig(config_text).WithContext(config.string()));
  }
  return tok;
}

Status Tokenizer::ApplyTokenizerConfig(std::string_view text) {
  json root = json::parse(text.begin(), text.end(), nullptr, false);
  if (root.is_discarded() || !root.is_object()) return InvalidArgumentError("malformed JSON");
  auto token_of = [&](const char* key, std::optional<int32_t>* dst) -> Status {
    const json* f = Field(root, key);
    if (f == nullptr) return Status::Ok();
    std::string name;
    if (f->is_string()) name = f->get<std::string>();
    else if (f->is_object() && Field(*f, "content") && (*f)["content"].is_string())
      name = (*f)["content"].get<std::string>();
    else return InvalidArgumentError(std::string(key) + " is neither a string nor {content}");
    auto id = TokenToId(name);
    if (!id) return InvalidArgumentError(std::string(key) + " \"" + name + "\" is not in the vocab");
    *dst = *id;
    return Status::Ok();
  };
  std::optional<int32_t> bos = impl_->bos, eos = impl_->eos;
  KVMESH_RETURN_IF_ERROR(token_of("bos_token", &bos));
  KVMESH_RETURN_IF_ERROR(token_of("eos_token", &eos));
  impl_->bos = bos;
  impl_->eos = eos;
  return Status::Ok();
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  return impl_->Encode(text, add_special_tokens);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->Decode(ids, skip_special_tokens);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  for (const AddedToken& t : impl_->added)
    if (t.content == token) return t.id;
  auto it = impl_->model->vocab().find(token);
  if (it != impl_->model->vocab().end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
    return impl_->added[it->second].content;
  }
  if (id >= 0 && static_cast<size_t>(id) < impl_->id_to_token.size() &&
      !impl_->id_to_token[id].empty()) {
    return impl_->id_to_token[id];
  }
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::string Tokenizer::TokenBytes(int32_t id, bool skip_special_tokens) const {
  std::string out;
  bool is_byte = false;
  impl_->AppendTokenBytes(id, skip_special_tokens, &out, &is_byte);
  return out;
}

int Tokenizer::leading_spaces_to_strip() const { return impl_->dec_strip_left; }

// ---------------------------------------------------------------------------------------------

StreamingDecoder::StreamingDecoder(const Tokenizer& t, bool skip_special_tokens)
    : tokenizer_(t),
      skip_special_tokens_(skip_special_tokens),
      strip_left_(t.leading_spaces_to_strip()) {}

std::string StreamingDecoder::Push(int32_t id) {
  std::string bytes = tokenizer_.TokenBytes(id, skip_special_tokens_);
  size_t skip = 0;
  while (strip_left_ > 0 && skip < bytes.size()) {
    if (bytes[skip] != ' ') {
      strip_left_ = 0;
      break;
    }
    ++skip;
    --strip_left_;
  }
  if (!bytes.empty() && skip < bytes.size()) strip_left_ = 0;
  pending_.append(bytes, skip);
  const size_t n = Utf8EmittablePrefix(pending_);
  if (n == 0) return "";
  std::string out = Utf8Lossy(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamingDecoder::Flush() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvmesh::tokenizer
