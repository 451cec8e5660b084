// Built-in chat templates: turn a list of chat messages into the exact prompt string a model family's
// official Jinja chat_template renders (no Jinja engine; one hand-written renderer per family).
//
// Families: "llama3" (Llama 3 / 3.1 instruct, no tools, no date header), "llama2" (Llama 2 chat,
// <<SYS>> folded into the first user turn), "mistral" (Mistral 7B Instruct v0.1 "[INST] ... [/INST]";
// a leading system message is folded into the first user turn as "system\n\nuser"), "chatml"
// (Qwen2 / ChatML, with Qwen2's default system prompt when none is given).
// The rendered string contains special tokens as text (e.g. "<|begin_of_text|>"); encode it with
// Tokenizer::Encode(prompt, /*add_special_tokens=*/false) so BOS is not added twice.
// A ChatTemplate is an immutable value; Apply is thread-safe.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvmesh::tokenizer {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant" (llama3/chatml also "tool", llama3 "ipython")
  std::string content;
};

class ChatTemplate {
 public:
  // Picks the family by markers in tokenizer_config.json's "chat_template" (a string, or a list of
  // {"name", "template"} where "default" is used): "<|start_header_id|>" -> llama3, "[INST]" with
  // "<<SYS>>" -> llama2, "[INST]" -> mistral, "<|im_start|>" -> chatml. Falls back to
  // `fallback_family` when the template is absent or unrecognised. bos_token/eos_token (string or
  // {"content": ...}) override the family defaults. InvalidArgument for malformed JSON, or when the
  // template is unrecognised and `fallback_family` is not a known family.
  static StatusOr<ChatTemplate> FromTokenizerConfig(std::string_view json,
                                                    std::string_view fallback_family);
  // "llama3" | "llama2" | "mistral" | "chatml" ("qwen2" is an alias of "chatml"); InvalidArgument
  // naming the family otherwise.
  static StatusOr<ChatTemplate> ForFamily(std::string_view family);

  const std::string& family() const { return family_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  // InvalidArgument for an empty message list, a role the family does not know, a system message
  // anywhere but first (llama2/mistral), or turns that do not alternate user/assistant starting
  // with user (llama2/mistral). add_generation_prompt appends the assistant header (llama3,
  // chatml); llama2/mistral prompts already end ready for the answer and ignore it.
  StatusOr<std::string> Apply(std::span<const ChatMessage> messages,
                              bool add_generation_prompt) const;

 private:
  ChatTemplate(std::string family, std::string bos, std::string eos)
      : family_(std::move(family)), bos_token_(std::move(bos)), eos_token_(std::move(eos)) {}
  StatusOr<std::string> ApplyLlama3(std::span<const ChatMessage> m, bool gen) const;
  StatusOr<std::string> ApplyInst(std::span<const ChatMessage> m, bool llama2) const;
  StatusOr<std::string> ApplyChatMl(std::span<const ChatMessage> m, bool gen) const;

  std::string family_;
  std::string bos_token_;
  std::string eos_token_;
};

}  // namespace kvmesh::tokenizer
