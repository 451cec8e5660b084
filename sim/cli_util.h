// Typed parsing of the `kvmesh sim` flag values that common/config.h loads as text: one number,
// a list of numbers, the fields of NAME:GPUS / A:B:GBIT:MS items (sim/sim_options.h).
//
// Invariants: a parse either succeeds completely or returns InvalidArgument naming the flag and
// the bad text. Numbers must fill the whole text: no leading/trailing spaces, no trailing garbage;
// floating-point values must be finite; integers are non-negative (unsigned targets).
#pragma once

#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "common/status.h"

namespace kvmesh::sim {

// Splits at every `sep`, keeping empty parts ("a::b" -> "a", "", "b"; "" -> one empty part), so an
// item with a hole fails to parse instead of silently shrinking.
std::vector<std::string_view> SplitList(std::string_view s, char sep);

// `names` without its empty items ("a,,b," given to a list flag -> "a", "b").
std::vector<std::string> NonEmpty(std::vector<std::string> names);

// One number. InvalidArgument "<flag>: '<s>' is not a number" (floating point) or "... is not a
// non-negative integer" (integers) otherwise.
template <typename T>
StatusOr<T> ParseFlagNumber(std::string_view flag, std::string_view s) {
  const std::string bad = std::string(flag) + ": '" + std::string(s) + "' is not ";
  T v{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    return InvalidArgumentError(bad + (std::is_floating_point_v<T> ? "a number" : "a non-negative integer"));
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) return InvalidArgumentError(bad + "a number");
  }
  return v;
}

// Every item of a list flag as a number; the first bad item is the error.
template <typename T>
StatusOr<std::vector<T>> ParseFlagNumbers(std::string_view flag, const std::vector<std::string>& items) {
  std::vector<T> values;
  for (const std::string& item : items) {
    KVMESH_ASSIGN_OR_RETURN(T v, ParseFlagNumber<T>(flag, item));
    values.push_back(v);
  }
  return values;
}

}  // namespace kvmesh::sim
