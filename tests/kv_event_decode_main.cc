// kvmesh_kv_event_tool: a small bridge between kvmesh's KV event codec and other implementations,
// used by tests/kv_events_python_test.sh.
//
//   kvmesh_kv_event_tool decode < message     -> JSON {"ok": true, "topic", "seq", "batch"} or
//                                               {"ok": false, "code", "error"} on stdout
//   kvmesh_kv_event_tool encode < json        -> message on stdout
//
// A "message" is the multipart ZMQ message serialized as: u32 BE frame count, then per frame
// u32 BE length and the bytes. The JSON batch is {"ts", "dp_rank", "events": [{"type":
// "BlockStored", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
// "medium", "lora_name"} | {"type": "BlockRemoved", "block_hashes", "medium"} |
// {"type": "AllBlocksCleared"}]}.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/kv_event_codec.h"

namespace {

using nlohmann::json;
namespace kv = kvmesh::kv;

uint32_t ReadU32(const std::string& in, size_t& at, bool& ok) {
  if (in.size() - at < 4 || at > in.size()) {
    ok = false;
    return 0;
  }
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[at + i]);
  at += 4;
  return v;
}

void WriteU32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

json EventToJson(const kv::KvEvent& e) {
  if (const auto* s = std::get_if<kv::BlockStored>(&e)) {
    return {{"type", "BlockStored"},
            {"block_hashes", s->hashes},
            {"parent_block_hash", s->parent_hash ? json(*s->parent_hash) : json(nullptr)},
            {"token_ids", s->token_ids},
            {"block_size", s->block_size},
            {"lora_id", s->lora_id ? json(*s->lora_id) : json(nullptr)},
            {"medium", kv::MediumWireName(s->medium)},
            {"lora_name", s->lora_name ? json(*s->lora_name) : json(nullptr)}};
  }
  if (const auto* r = std::get_if<kv::BlockRemoved>(&e)) {
    return {{"type", "BlockRemoved"},
            {"block_hashes", r->hashes},
            {"medium", kv::MediumWireName(r->medium)}};
  }
  return {{"type", "AllBlocksCleared"}};
}

kv::Medium MediumFromJson(const json& j) {
  if (!j.contains("medium") || j["medium"].is_null()) return kv::Medium::kG1;
  auto m = kv::ParseMedium(j["medium"].get<std::string>());
  if (!m) throw std::runtime_error("bad medium");
  return *m;
}

kv::KvEvent EventFromJson(const json& j) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "BlockStored") {
    kv::BlockStored s;
    s.hashes = j.at("block_hashes").get<std::vector<uint64_t>>();
    if (j.contains("parent_block_hash") && !j["parent_block_hash"].is_null()) {
      s.parent_hash = j["parent_block_hash"].get<uint64_t>();
    }
    if (j.contains("token_ids")) s.token_ids = j["token_ids"].get<std::vector<uint32_t>>();
    s.block_size = j.at("block_size").get<uint32_t>();
    if (j.contains("lora_id") && !j["lora_id"].is_null()) s.lora_id = j["lora_id"].get<int64_t>();
    if (j.contains("lora_name") && !j["lora_name"].is_null()) {
      s.lora_name = j["lora_name"].get<std::string>();
    }
    s.medium = MediumFromJson(j);
    return s;
  }
  if (type == "BlockRemoved") {
    return kv::BlockRemoved{j.at("block_hashes").get<std::vector<uint64_t>>(), MediumFromJson(j)};
  }
  if (type == "AllBlocksCleared") return kv::AllBlocksCleared{};
  throw std::runtime_error("unknown type " + type);
}

int Decode(const std::string& in) {
  size_t at = 0;
  bool ok = true;
  const uint32_t n = ReadU32(in, at, ok);
  std::vector<std::string> frames;
  for (uint32_t i = 0; ok && i < n; ++i) {
    const uint32_t len = ReadU32(in, at, ok);
    if (!ok || in.size() - at < len) {
      ok = false;
      break;
    }
    frames.push_back(in.substr(at, len));
    at += len;
  }
  if (!ok) {
    std::fprintf(stderr, "malformed message container\n");
    return 2;
  }
  auto d = kv::DecodeKvEventFrames(frames);
  json out;
  if (!d.ok()) {
    out = {{"ok", false},
           {"code", std::string(kvmesh::StatusCodeName(d.status().code()))},
           {"error", d.status().message()}};
  } else {
    json events = json::array();
    for (const auto& e : d->batch.events) events.push_back(EventToJson(e));
    out = {{"ok", true},
           {"topic", d->topic},
           {"seq", d->seq},
           {"batch",
            {{"ts", d->batch.ts},
             {"dp_rank", d->batch.dp_rank ? json(*d->batch.dp_rank) : json(nullptr)},
             {"events", events}}}};
  }
  std::cout << out.dump() << "\n";
  return 0;
}

int Encode(const std::string& in) {
  const json j = json::parse(in);
  kv::KvEventBatch batch;
  const json& b = j.at("batch");
  batch.ts = b.at("ts").get<double>();
  if (b.contains("dp_rank") && !b["dp_rank"].is_null()) batch.dp_rank = b["dp_rank"].get<int64_t>();
  for (const json& e : b.at("events")) batch.events.push_back(EventFromJson(e));
  auto frames = kv::EncodeKvEventFrames(j.at("topic").get<std::string>(),
                                        j.at("seq").get<uint64_t>(), batch);
  std::string out;
  WriteU32(out, static_cast<uint32_t>(frames.size()));
  for (const auto& f : frames) {
    WriteU32(out, static_cast<uint32_t>(f.size()));
    out += f;
  }
  std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "decode" && mode != "encode") {
    std::fprintf(stderr, "usage: %s decode|encode < input\n", argv[0]);
    return 2;
  }
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  try {
    return mode == "decode" ? Decode(in) : Encode(in);
  } catch (const std::exception& e) {  // JSON input errors in encode mode
    std::fprintf(stderr, "kvmesh_kv_event_tool: %s\n", e.what());
    return 2;
  }
}
