// Flag-value parsing shared by the simulator's command lines (`kvmesh sim`, `kvmesh sim sweep`,
// `kvmesh sim calibrate`): one number, a comma list of numbers, a comma list of names.
//
// Invariants: a parse either succeeds completely or returns InvalidArgument naming the flag and
// the bad text, and then leaves the output untouched (lists are built aside and moved in on
// success). Numbers must fill the whole text: no leading/trailing spaces, no trailing garbage;
// floating-point values must be finite; integers are non-negative (unsigned targets).
#pragma once

#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::sim {

// Splits at every `sep`, keeping empty parts ("a,,b" -> "a", "", "b"; "" -> one empty part), so a
// number list with a hole fails to parse instead of silently shrinking.
std::vector<std::string_view> SplitList(std::string_view s, char sep = ',');

// Splits a comma list of names, dropping empty parts ("a,,b," -> "a", "b").
std::vector<std::string> SplitNames(std::string_view s);

// Parses one number into *out. InvalidArgument "<flag>: '<s>' is not a number" (floating point) or
// "... is not a non-negative integer" (integers) otherwise.
template <typename T>
Status ParseFlagNumber(std::string_view flag, std::string_view s, T* out) {
  const std::string bad = std::string(flag) + ": '" + std::string(s) + "' is not ";
  T v{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    return InvalidArgumentError(bad + (std::is_floating_point_v<T> ? "a number" : "a non-negative integer"));
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) return InvalidArgumentError(bad + "a number");
  }
  *out = v;
  return Status::Ok();
}

// Parses a comma list of numbers ("0.5,1,2") into *out (replacing it). Every part must parse.
template <typename T>
Status ParseFlagList(std::string_view flag, std::string_view s, std::vector<T>* out) {
  std::vector<T> values;
  for (std::string_view part : SplitList(s, ',')) {
    T v{};
    KVMESH_RETURN_IF_ERROR(ParseFlagNumber(flag, part, &v));
    values.push_back(v);
  }
  *out = std::move(values);
  return Status::Ok();
}

}  // namespace kvmesh::sim
