// Tokenizer: loads a Hugging Face tokenizer.json and encodes/decodes text exactly like the HF
// `tokenizers` library for the supported subset (byte-level BPE as in GPT-2 / Llama 3 / Qwen2, and
// SentencePiece-style BPE with byte fallback as in Llama 2 / Mistral). See docs/tokenizer.md.
//
// Pipeline (Encode): added tokens are cut out of the raw text first (leftmost, longest match, never
// split); every other segment goes through normalizer -> pre-tokenizer -> BPE model; the
// post-processor (TemplateProcessing) adds BOS/EOS when add_special_tokens is true.
// Invariants: a loaded Tokenizer is immutable apart from an internal, mutex-guarded BPE cache, so
// one instance may be shared by all threads. Encode/Decode never fail: input that is not valid
// UTF-8 is repaired (each invalid sequence becomes U+FFFD) before encoding; unknown ids decode to
// nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::tokenizer {

class TokenizerImpl;

class Tokenizer {
 public:
  // Reads and parses the file. If a tokenizer_config.json sits in the same directory, its
  // bos_token/eos_token override the guesses (see ApplyTokenizerConfig). NotFound when the file
  // cannot be read; otherwise the errors of FromJson, prefixed with the path.
  static StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json_path);
  // `name` (a path or model name) prefixes every error message. InvalidArgument for malformed JSON,
  // missing/ill-typed fields, merges that reference unknown tokens, or a regex that does not
  // compile (the message names the field); Unimplemented naming the type for components this
  // implementation does not support (e.g. WordPiece/Unigram models).
  static StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json, std::string_view name);
  ~Tokenizer();

  // add_special_tokens: apply the post-processor (BOS etc.).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Ids that are not in the vocab are skipped. skip_special_tokens drops added tokens marked special.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  int32_t vocab_size() const;  // max id + 1 over vocab and added tokens
  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  // From the post-processor / well-known added tokens, or tokenizer_config.json when applied.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  bool IsSpecial(int32_t id) const;

  // Takes bos_token / eos_token (string or {"content": ...}) from a tokenizer_config.json.
  // InvalidArgument for malformed JSON or a named token that is not in the vocab (nothing changes
  // then). Not thread-safe: call it before sharing the Tokenizer.
  Status ApplyTokenizerConfig(std::string_view tokenizer_config_json);

  // The raw bytes one token contributes to decoded text (byte-level chars mapped back to bytes,
  // "<0xNN>" to the byte, "▁" to a space), before UTF-8 repair and the leading-space strip.
  // Empty for unknown ids and, with skip_special_tokens, special tokens.
  std::string TokenBytes(int32_t id, bool skip_special_tokens) const;
  // How many leading spaces the decoder strips from the start of the decoded text (SentencePiece
  // decoders: 1; byte-level: 0).
  int leading_spaces_to_strip() const;

 private:
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

// Per-request incremental detokenizer: feed generated ids one by one and get only text that is
// final: it never emits part of a UTF-8 character and never drops bytes. The concatenation of all
// Push() results and Flush() equals Decode(all ids) whenever the decoded bytes are valid UTF-8;
// invalid sequences become U+FFFD in both. Not thread-safe (one per request); the Tokenizer must
// outlive it.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& t, bool skip_special_tokens = true);
  // Text that became final with this token ("" if the bytes so far end inside a character).
  std::string Push(int32_t id);
  // Remaining text at the end; a trailing incomplete sequence becomes U+FFFD.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  int strip_left_;        // leading spaces still to strip; 0 once any other byte was produced
  std::string pending_;  // bytes not yet emitted (an incomplete character)
};

}  // namespace kvmesh::tokenizer
