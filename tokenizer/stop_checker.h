// StopChecker: incremental detokenization with stop strings for one request. Text that could be
// the start of a stop string is held back until it is known not to be; a matched stop string and
// everything after it is never emitted (OpenAI semantics). Emitted text is always valid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kvmesh::tokenizer {

class StopChecker {
 public:
  StopChecker(const Tokenizer& tokenizer, std::vector<std::string> stop);

  struct Result {
    std::string text;      // newly final text
    bool stopped = false;  // a stop string matched; `text` ends right before it
  };
  Result Push(int32_t token);
  std::string Flush();  // at the end of the request: the held-back text

 private:
  StreamingDecoder decoder_;
  std::vector<std::string> stop_;
  size_t max_stop_len_ = 0;
  std::string pending_;  // decoded, not yet emitted
};

}  // namespace kvmesh::tokenizer
