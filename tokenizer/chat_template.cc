#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

namespace kvmesh::tokenizer {
namespace {

constexpr std::string_view kQwen2DefaultSystem = "You are a helpful assistant.";

// Python's str.strip() / Jinja's |trim for ASCII whitespace.
std::string_view Strip(std::string_view s) {
  constexpr std::string_view kWs = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(kWs);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kWs) - b + 1);
}

Status UnknownRole(const std::string& family, size_t i, const std::string& role) {
  return InvalidArgumentError("chat template " + family + ": messages[" + std::to_string(i) +
                              "] has unsupported role \"" + role + "\"");
}

}  // namespace

StatusOr<ChatTemplate> ChatTemplate::ForFamily(std::string_view family) {
  if (family == "llama3") return ChatTemplate("llama3", "<|begin_of_text|>", "<|eot_id|>");
  if (family == "llama2") return ChatTemplate("llama2", "<s>", "</s>");
  if (family == "mistral") return ChatTemplate("mistral", "<s>", "</s>");
  if (family == "chatml" || family == "qwen2") return ChatTemplate("chatml", "", "<|im_end|>");
  return InvalidArgumentError("unknown chat template family \"" + std::string(family) +
                              "\" (known: llama3, llama2, mistral, chatml)");
}

StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(std::string_view text,
                                                         std::string_view fallback_family) {
  using json = nlohmann::json;
  json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgumentError("tokenizer_config.json: malformed JSON");
  }
  std::string tmpl;
  if (auto it = root.find("chat_template"); it != root.end()) {
    if (it->is_string()) {
      tmpl = it->get<std::string>();
    } else if (it->is_array()) {
      for (const json& e : *it) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
            e["template"].is_string()) {
          tmpl = e["template"].get<std::string>();
        }
      }
    }
  }
  std::string_view family = fallback_family;
  if (tmpl.find("<|start_header_id|>") != std::string::npos) family = "llama3";
  else if (tmpl.find("[INST]") != std::string::npos && tmpl.find("<<SYS>>") != std::string::npos)
    family = "llama2";
  else if (tmpl.find("[INST]") != std::string::npos) family = "mistral";
  else if (tmpl.find("<|im_start|>") != std::string::npos) family = "chatml";
  auto t = ForFamily(family);
  if (!t.ok()) return t.status().WithContext("tokenizer_config.json chat_template not recognised");
  auto token = [&](const char* key, std::string* dst) {
    auto it = root.find(key);
    if (it == root.end()) return;
    if (it->is_string()) *dst = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
      *dst = (*it)["content"].get<std::string>();
  };
  token("bos_token", &t->bos_token_);
  token("eos_token", &t->eos_token_);
  return t;
}

StatusOr<std::string> ChatTemplate::Apply(std::span<const ChatMessage> messages,
                                          bool add_generation_prompt) const {
  if (messages.empty()) {
    return InvalidArgumentError("chat template " + family_ + ": no messages");
  }
  if (family_ == "llama3") return ApplyLlama3(messages, add_generation_prompt);
  if (family_ == "llama2") return ApplyInst(messages, /*llama2=*/true);
  if (family_ == "mistral") return ApplyInst(messages, /*llama2=*/false);
  return ApplyChatMl(messages, add_generation_prompt);
}

// {% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] +
// '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}
// {% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}
// {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
StatusOr<std::string> ChatTemplate::ApplyLlama3(std::span<const ChatMessage> messages,
                                                bool gen) const {
  std::string out = bos_token_;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool" &&
        m.role != "ipython") {
      return UnknownRole(family_, i, m.role);
    }
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
    out += Strip(m.content);
    out += "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Llama 2: user -> bos + '[INST] ' + content.strip() + ' [/INST]', assistant -> ' ' +
// content.strip() + ' ' + eos; a leading system message becomes '<<SYS>>\n' + system +
// '\n<</SYS>>\n\n' in front of the first user content.
// Mistral v0.1: bos once, user -> '[INST] ' + content + ' [/INST]', assistant -> content + eos.
StatusOr<std::string> ChatTemplate::ApplyInst(std::span<const ChatMessage> messages,
                                              bool llama2) const {
  std::string system;
  bool has_system = false;
  size_t start = 0;
  if (messages[0].role == "system") {
    system = messages[0].content;
    has_system = true;
    start = 1;
  }
  std::string out = llama2 ? "" : bos_token_;
  for (size_t i = start; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const size_t turn = i - start;
    if (m.role != "user" && m.role != "assistant") {
      if (m.role == "system") {
        return InvalidArgumentError("chat template " + family_ + ": messages[" +
                                    std::to_string(i) + "]: a system message must come first");
      }
      return UnknownRole(family_, i, m.role);
    }
    if ((m.role == "user") != (turn % 2 == 0)) {
      return InvalidArgumentError(
          "chat template " + family_ + ": messages[" + std::to_string(i) + "] is \"" + m.role +
          "\"; after the optional system message, roles must alternate user/assistant/...");
    }
    std::string content = m.content;
    if (turn == 0 && has_system) {
      content = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
                       : system + "\n\n" + content;
    }
    if (llama2) {
      if (m.role == "user") out += bos_token_ + "[INST] " + std::string(Strip(content)) + " [/INST]";
      else out += " " + std::string(Strip(content)) + " " + eos_token_;
    } else {
      if (m.role == "user") out += "[INST] " + content + " [/INST]";
      else out += content + eos_token_;
    }
  }
  if (has_system && messages.size() == 1) {
    return InvalidArgumentError("chat template " + family_ +
                                ": a system message needs a following user message");
  }
  return out;
}

// {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
// {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}
// {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}
// {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
StatusOr<std::string> ChatTemplate::ApplyChatMl(std::span<const ChatMessage> messages,
                                                bool gen) const {
  std::string out;
  if (messages[0].role != "system") {
    out += "<|im_start|>system\n" + std::string(kQwen2DefaultSystem) + "<|im_end|>\n";
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return UnknownRole(family_, i, m.role);
    }
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace kvmesh::tokenizer
