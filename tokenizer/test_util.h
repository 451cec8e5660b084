// Test-only helpers for the tokenizer tests: locating tokenizer/testdata and reading files.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace kvmesh::tokenizer::testing {

// tokenizer/testdata, found from $KVMESH_SOURCE_DIR or else from this header's own path.
inline std::string TestDataDir() {
  if (const char* src = std::getenv("KVMESH_SOURCE_DIR"); src != nullptr && *src != '\0') {
    return std::string(src) + "/tokenizer/testdata";
  }
  return (std::filesystem::path(__FILE__).parent_path() / "testdata").string();
}

inline std::string ReadTestFile(const std::string& name) {
  std::ifstream in(TestDataDir() + "/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kvmesh::tokenizer::testing
