#include "agent/engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

namespace kvmesh::engine {
namespace {

using json = nlohmann::json;

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// Short, single-line rendering of a JSON value for messages.
std::string Brief(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

bool ParseDtype(std::string_view s, SafetensorsDtype* out) {
  if (s == "BF16") {
    *out = SafetensorsDtype::kBF16;
  } else if (s == "F16") {
    *out = SafetensorsDtype::kF16;
  } else if (s == "F32") {
    *out = SafetensorsDtype::kF32;
  } else {
    return false;
  }
  return true;
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void PutLe64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

std::string_view SafetensorsDtypeName(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kBF16:
      return "BF16";
    case SafetensorsDtype::kF16:
      return "F16";
    case SafetensorsDtype::kF32:
      return "F32";
  }
  return "?";
}

size_t SafetensorsDtypeSize(SafetensorsDtype dtype) {
  return dtype == SafetensorsDtype::kF32 ? 4 : 2;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> file,
                                                   std::string_view file_name) {
  const std::string where = "safetensors file " + Quote(file_name) + ": ";
  auto bad = [&](const std::string& what) { return InvalidArgumentError(where + what); };
  if (file.size() < 8) {
    return bad("file is " + std::to_string(file.size()) +
               " bytes, shorter than the 8-byte header length");
  }
  const uint64_t n = ReadLe64(file.data());
  if (n > kSafetensorsMaxHeaderBytes) {
    return bad("huge header length " + std::to_string(n) + " (limit " +
               std::to_string(kSafetensorsMaxHeaderBytes) + " bytes)");
  }
  if (n > file.size() - 8) {
    return bad("header length " + std::to_string(n) + " runs past the end of the file (" +
               std::to_string(file.size()) + " bytes)");
  }
  SafetensorsHeader out;
  out.data_offset = 8 + n;
  const uint64_t data_size = file.size() - out.data_offset;

  json doc;
  try {
    doc = json::parse(file.begin() + 8, file.begin() + static_cast<std::ptrdiff_t>(8 + n));
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    return bad("malformed JSON header: " + what);
  }
  if (!doc.is_object())
    return bad("header is JSON " + std::string(doc.type_name()) + ", not an object");

  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        return bad("__metadata__ is " + std::string(v.type_name()) + ", not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return bad("__metadata__ value for " + Quote(m.key()) +
                     " is not a string: " + Brief(m.value()));
        }
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = "tensor " + Quote(name) + ": ";
    if (!v.is_object())
      return bad(tw + "entry is " + std::string(v.type_name()) + ", not an object");
    SafetensorsHeader::Entry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return bad(tw + "dtype missing or not a string");
    const std::string& dts = dt->get_ref<const std::string&>();
    if (!ParseDtype(dts, &e.dtype)) {
      return UnimplementedError(where + tw + "dtype " + Quote(dts) +
                                " is not supported (supported: BF16, F16, F32)");
    }
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) return bad(tw + "shape missing or not a list");
    // numel bounded by the data section, so any product past it is rejected before it can overflow.
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned())
        return bad(tw + "shape " + Brief(*sh) + " holds " + Brief(d) +
                   ", not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(tw + "shape dimension " + std::to_string(dim) + " overflows int64");
      }
      e.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() / 8) / dim) {
        numel_overflow = true;
      } else {
        numel *= dim;
      }
    }
    bool has_zero = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
    if (numel_overflow && !has_zero) {
      return bad(tw + "element count of shape " + ShapeString(e.shape) + " overflows");
    }
    if (has_zero) numel = 0;
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return bad(tw + "data_offsets must be two non-negative integers, got " +
                 (off == v.end() ? std::string("nothing") : Brief(*off)));
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end) {
      return bad(tw + "data_offsets begin " + std::to_string(e.begin) + " > end " +
                 std::to_string(e.end));
    }
    if (e.end > data_size) {
      return bad(tw + "data_offsets end " + std::to_string(e.end) +
                 " is past the end of the data section (" + std::to_string(data_size) + " bytes)");
    }
    const uint64_t want = numel * SafetensorsDtypeSize(e.dtype);
    if (e.end - e.begin != want) {
      return bad("lying header: tensor " + Quote(name) + " has " + std::to_string(e.end - e.begin) +
                 " bytes but shape " + ShapeString(e.shape) + " x " +
                 std::string(SafetensorsDtypeName(e.dtype)) + " needs " + std::to_string(want));
    }
    out.tensors.push_back(std::move(e));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const SafetensorsHeader::Entry* prev = nullptr;
  for (const auto& e : out.tensors) {
    if (e.begin < covered) {
      return bad("tensors " + Quote(prev->name) + " [" + std::to_string(prev->begin) + ", " +
                 std::to_string(prev->end) + ") and " + Quote(e.name) + " [" +
                 std::to_string(e.begin) + ", " + std::to_string(e.end) + ") overlap");
    }
    if (e.begin > covered) {
      return bad("gap in the data section: bytes [" + std::to_string(covered) + ", " +
                 std::to_string(e.begin) + ") belong to no tensor (before " + Quote(e.name) + ")");
    }
    covered = e.end;
    prev = &e;
  }
  if (covered != data_size) {
    return bad(std::to_string(data_size - covered) +
               " trailing bytes after the last tensor's data");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NotFoundError("safetensors file " + Quote(path) + " does not exist");
    return InvalidArgumentError("cannot open safetensors file " + Quote(path) + ": " + ErrnoText());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError("safetensors file " + Quote(path) + " is not a regular file");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_size_ = static_cast<size_t>(st.st_size);
  if (f->map_size_ > 0) {
    void* p = ::mmap(nullptr, f->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      f->map_size_ = 0;
      return InvalidArgumentError("cannot map safetensors file " + Quote(path) + ": " +
                                  ErrnoText());
    }
    f->map_ = p;
  }
  ::close(fd);
  const auto* base = static_cast<const uint8_t*>(f->map_);
  std::span<const uint8_t> all(base, f->map_size_);
  KVMESH_ASSIGN_OR_RETURN(SafetensorsHeader h, ParseSafetensorsHeader(all, path));
  f->metadata_ = std::move(h.metadata);
  f->tensors_.reserve(h.tensors.size());
  for (auto& e : h.tensors) {
    TensorView v;
    v.name = std::move(e.name);
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.bytes = all.subspan(h.data_offset + e.begin, e.end - e.begin);
    f->by_name_[v.name] = f->tensors_.size();
    f->tensors_.push_back(std::move(v));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// SafetensorsSet

StatusOr<std::unique_ptr<SafetensorsSet>> SafetensorsSet::Open(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  std::unique_ptr<SafetensorsSet> set(new SafetensorsSet());
  struct stat st {};
  if (::stat(index_path.c_str(), &st) != 0) {
    if (::stat(single_path.c_str(), &st) != 0) {
      return NotFoundError("model folder " + Quote(dir) +
                           " has neither model.safetensors nor model.safetensors.index.json");
    }
    KVMESH_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single_path));
    for (const auto& v : f->tensors()) set->by_name_[v.name] = &v;
    set->files_.push_back(std::move(f));
    return set;
  }
  std::ifstream in(index_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) return InvalidArgumentError("cannot read " + Quote(index_path));
  json doc;
  try {
    doc = json::parse(ss.str());
  } catch (const json::exception& e) {
    return InvalidArgumentError("malformed JSON in " + Quote(index_path) + ": " + e.what());
  }
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    return InvalidArgumentError(Quote(index_path) + " has no \"weight_map\" object");
  }
  std::map<std::string, std::vector<std::string>> by_shard;  // sorted: deterministic open order
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return InvalidArgumentError(Quote(index_path) + ": weight_map entry for " + Quote(it.key()) +
                                  " is not a string");
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of("/\\") != std::string::npos || shard.find('\0') != std::string::npos) {
      return InvalidArgumentError(
          Quote(index_path) + ": shard name " + Quote(shard) + " for " + Quote(it.key()) +
          " is not a plain file name in the model folder (path traversal?)");
    }
    by_shard[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    const std::string path = dir + "/" + shard;
    auto f = SafetensorsFile::Open(path);
    if (!f.ok()) {
      if (f.status().code() == StatusCode::kNotFound) {
        return NotFoundError(Quote(index_path) + " names shard " + Quote(shard) + " (for " +
                             Quote(names.front()) + "), which does not exist");
      }
      return f.status();
    }
    for (const std::string& name : names) {
      const TensorView* v = (*f)->Find(name);
      if (v == nullptr) {
        return InvalidArgumentError(Quote(index_path) + " lists tensor " + Quote(name) +
                                    " in shard " + Quote(shard) + ", which does not hold it");
      }
      set->by_name_[name] = v;
    }
    set->files_.push_back(std::move(*f));
  }
  return set;
}

const TensorView* SafetensorsSet::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorView*> SafetensorsSet::tensors() const {
  std::vector<const TensorView*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, v] : by_name_) out.push_back(v);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conversions

float Bf16ToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float Fp16ToFloat(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1u;
  const uint32_t exp = (bits >> 10) & 0x1fu;
  const uint32_t mant = bits & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal: mant * 2^-24, exact
  } else if (exp == 31) {
    v = mant == 0 ? std::numeric_limits<float>::infinity()
                  : std::numeric_limits<float>::quiet_NaN();
  } else {
    uint32_t u = ((exp + 112u) << 23) | (mant << 13);  // rebias 15 -> 127
    std::memcpy(&v, &u, 4);
  }
  return sign ? -v : v;
}

uint16_t FloatToBf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

void ToFloat32(const TensorView& view, float* out) {
  const uint8_t* p = view.bytes.data();
  const size_t n = view.bytes.size() / SafetensorsDtypeSize(view.dtype);
  switch (view.dtype) {
    case SafetensorsDtype::kF32:
      if (n) std::memcpy(out, p, n * 4);
      break;
    case SafetensorsDtype::kBF16:
      // Whole-word loads and stores (little-endian host) so the loop vectorises; bytewise
      // assembly was 5x slower (safetensors_bench).
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        const uint32_t u = static_cast<uint32_t>(b) << 16;
        std::memcpy(out + i, &u, 4);
      }
      break;
    case SafetensorsDtype::kF16:
      for (size_t i = 0; i < n; ++i) {
        out[i] = Fp16ToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      }
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

Status SafetensorsWriter::CheckNew(const std::string& name, const std::vector<int64_t>& shape,
                                   size_t num_values) const {
  if (name.empty() || name == "__metadata__") {
    return InvalidArgumentError("safetensors writer: invalid tensor name " + Quote(name));
  }
  for (const auto& t : tensors_) {
    if (t.name == name)
      return InvalidArgumentError("safetensors writer: duplicate tensor " + Quote(name));
  }
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return InvalidArgumentError("safetensors writer: tensor " + Quote(name) + " has shape " +
                                  ShapeString(shape) + " with a negative dimension");
    }
    numel *= static_cast<uint64_t>(d);
  }
  if (numel != num_values) {
    return InvalidArgumentError("safetensors writer: tensor " + Quote(name) + " shape " +
                                ShapeString(shape) + " needs " + std::to_string(numel) +
                                " values, got " + std::to_string(num_values));
  }
  return Status::Ok();
}

Status SafetensorsWriter::AddF32(std::string name, std::vector<int64_t> shape,
                                 std::span<const float> data) {
  KVMESH_RETURN_IF_ERROR(CheckNew(name, shape, data.size()));
  Pending t{std::move(name), SafetensorsDtype::kF32, std::move(shape), {}};
  t.bytes.resize(data.size() * 4);
  for (size_t i = 0; i < data.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &data[i], 4);
    for (int b = 0; b < 4; ++b) t.bytes[4 * i + b] = static_cast<uint8_t>(u >> (8 * b));
  }
  tensors_.push_back(std::move(t));
  return Status::Ok();
}

Status SafetensorsWriter::AddBf16(std::string name, std::vector<int64_t> shape,
                                  std::span<const float> data) {
  KVMESH_RETURN_IF_ERROR(CheckNew(name, shape, data.size()));
  Pending t{std::move(name), SafetensorsDtype::kBF16, std::move(shape), {}};
  t.bytes.resize(data.size() * 2);
  for (size_t i = 0; i < data.size(); ++i) {
    uint16_t h = FloatToBf16(data[i]);
    t.bytes[2 * i] = static_cast<uint8_t>(h & 0xff);
    t.bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  tensors_.push_back(std::move(t));
  return Status::Ok();
}

Status SafetensorsWriter::AddRaw(std::string name, SafetensorsDtype dtype,
                                 std::vector<int64_t> shape, std::span<const uint8_t> bytes) {
  const size_t es = SafetensorsDtypeSize(dtype);
  if (bytes.size() % es != 0) {
    return InvalidArgumentError("safetensors writer: tensor " + Quote(name) + " has " +
                                std::to_string(bytes.size()) + " bytes, not a multiple of " +
                                std::to_string(es));
  }
  KVMESH_RETURN_IF_ERROR(CheckNew(name, shape, bytes.size() / es));
  tensors_.push_back(Pending{std::move(name), dtype, std::move(shape),
                             std::vector<uint8_t>(bytes.begin(), bytes.end())});
  return Status::Ok();
}

std::string SafetensorsWriter::SerializeHeader() const {
  // Build the JSON by hand so key order is the insertion order (and the output deterministic).
  std::string h = "{";
  bool first = true;
  if (!metadata_.empty()) {
    h += "\"__metadata__\":" + json(metadata_).dump();
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    if (!first) h += ",";
    first = false;
    h += json(t.name).dump() + ":{\"dtype\":\"" + std::string(SafetensorsDtypeName(t.dtype)) +
         "\",\"shape\":" + json(t.shape).dump() + ",\"data_offsets\":[" + std::to_string(offset) +
         "," + std::to_string(offset + t.bytes.size()) + "]}";
    offset += t.bytes.size();
  }
  h += "}";
  while (h.size() % 8 != 0) h += ' ';
  std::string out;
  PutLe64(h.size(), &out);
  return out + h;
}

std::string SafetensorsWriter::Serialize() const {
  std::string out = SerializeHeader();
  for (const auto& t : tensors_)
    out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return out;
}

Status SafetensorsWriter::Write(const std::string& path) const {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return InternalError("cannot create " + Quote(tmp) + ": " + ErrnoText());
    const std::string header = SerializeHeader();
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : tensors_) {
      out.write(reinterpret_cast<const char*>(t.bytes.data()),
                static_cast<std::streamsize>(t.bytes.size()));
    }
    out.flush();
    if (!out) {
      ::unlink(tmp.c_str());
      return InternalError("error writing " + Quote(tmp) + ": " + ErrnoText());
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = ErrnoText();
    ::unlink(tmp.c_str());
    return InternalError("cannot rename " + Quote(tmp) + " to " + Quote(path) + ": " + err);
  }
  return Status::Ok();
}

}  // namespace kvmesh::engine
