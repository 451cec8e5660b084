// Safetensors: the Hugging Face tensor file format, read through a read-only memory map and written
// atomically.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, optional "__metadata__": {str: str}},
// then the data section; offsets are relative to the data section. The reader validates everything
// before it hands out a view (see ParseSafetensorsHeader) and never crashes on a bad file.
//
// Invariants of an opened file: every tensor's byte range lies inside the data section, has exactly
// numel x dtype-size bytes, and no two ranges overlap; the ranges together cover the data section
// with no gap (as the format requires). Views stay valid while the SafetensorsFile (or the
// SafetensorsSet holding it) is alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvmesh::engine {

// Element types kvmesh loads. Other safetensors dtypes (F64, I8, F8_E4M3, ...) are Unimplemented.
enum class SafetensorsDtype : uint8_t { kBF16, kF16, kF32 };

std::string_view SafetensorsDtypeName(SafetensorsDtype dtype);  // "BF16" | "F16" | "F32"
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);            // 2 | 2 | 4

// Largest accepted header (the JSON part), as in the reference implementation.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull * 1000 * 1000;

struct TensorView {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // numel() * dtype size bytes inside the mapped file
  int64_t numel() const;
};

// The parsed, validated header. Tensors are in data-offset order; `data_offset` is where the data
// section starts in the file (8 + N).
struct SafetensorsHeader {
  struct Entry {
    std::string name;
    SafetensorsDtype dtype = SafetensorsDtype::kF32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // relative to the data section
    uint64_t end = 0;
  };
  std::vector<Entry> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;
};

// Parses and validates the header of a whole safetensors file held in `file`. `file_name` is only
// used in messages. InvalidArgument (naming the file and the problem) for: fewer than 8 bytes, a
// header length past the end of the file or above 100 MB, malformed JSON or JSON that is not an
// object, a tensor entry that is not an object, a shape that is not a list of non-negative
// integers, element-count overflow, data_offsets that are not two non-negative integers, begin >
// end, end past the data section, end - begin != numel x dtype size ("lying header"), overlapping
// ranges, a gap or trailing bytes in the data section, and a __metadata__ that is not {string:
// string}; Unimplemented for a dtype other than BF16/F16/F32 (naming the dtype and the tensor).
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> file,
                                                   std::string_view file_name);

// One memory-mapped safetensors file.
class SafetensorsFile {
 public:
  // Maps `path` read-only and validates it. NotFound when the file does not exist; InvalidArgument
  // / Unimplemented as ParseSafetensorsHeader says.
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when the file has no tensor of that name.
  const TensorView* Find(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;  // name -> index into tensors_
  std::map<std::string, std::string> metadata_;
};

// The tensors of a model folder: `model.safetensors`, or `model.safetensors.index.json`
// ({"weight_map": {tensor: shard file}}) and its shards.
class SafetensorsSet {
 public:
  // Opens `dir`. Prefers the index when both exist. NotFound when neither exists or a shard file is
  // missing; InvalidArgument for a malformed index, a shard name that is not a plain file name
  // inside `dir` ("../x", "/abs", "a/b"), a tensor the index lists that its shard does not hold;
  // file errors as SafetensorsFile::Open. With an index, only the tensors it lists are visible.
  static StatusOr<std::unique_ptr<SafetensorsSet>> Open(const std::string& dir);

  // nullptr when no file holds `name`.
  const TensorView* Find(std::string_view name) const;
  // Every tensor, sorted by name.
  std::vector<const TensorView*> tensors() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  SafetensorsSet() = default;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*, std::less<>> by_name_;
};

// Scalar conversions. Bf16/Fp16 -> float are exact (fp16 subnormals, infinities and NaN included).
// FloatToBf16 rounds to nearest even and keeps NaN a (quiet) NaN.
float Bf16ToFloat(uint16_t bits);
float Fp16ToFloat(uint16_t bits);
uint16_t FloatToBf16(float value);

// Converts `view` to fp32 into `out`, which must hold view.numel() floats.
void ToFloat32(const TensorView& view, float* out);

// Builds a safetensors file from named tensors and writes it atomically (a temp file in the same
// folder, then rename). Tensors are laid out in the order they were added; the JSON header is
// padded with spaces to a multiple of 8 bytes, as the Hugging Face writer does. Output is a pure
// function of the added tensors (byte-identical for the same input).
class SafetensorsWriter {
 public:
  // `data` holds product(shape) floats; stored as F32, or converted to BF16 (round to nearest
  // even). InvalidArgument for a duplicate or empty name, a name "__metadata__", a negative
  // dimension or a data size that does not match the shape.
  Status AddF32(std::string name, std::vector<int64_t> shape, std::span<const float> data);
  Status AddBf16(std::string name, std::vector<int64_t> shape, std::span<const float> data);
  // Adds raw little-endian bytes of `dtype` (size must equal numel x dtype size).
  Status AddRaw(std::string name, SafetensorsDtype dtype, std::vector<int64_t> shape,
                std::span<const uint8_t> bytes);
  void SetMetadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  // The complete file contents.
  std::string Serialize() const;
  // The 8-byte length prefix plus the padded JSON header.
  std::string SerializeHeader() const;
  // Writes Serialize() to `path` via `path`.tmp.<pid>.<n> + rename (the temp file is removed on
  // failure). Internal error naming the path and the OS error when writing or renaming fails.
  Status Write(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    SafetensorsDtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  Status CheckNew(const std::string& name, const std::vector<int64_t>& shape,
                  size_t num_values) const;
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kvmesh::engine
