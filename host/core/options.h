#pragma once
// Option objects read strictly, in one place: every host options struct's from_json(json, where) reads its keys
// through an OptionReader, so `ts.loader{batchsize = 32}` is an error naming the key and the known ones instead of a
// silently ignored option, and a value of the wrong type is an error naming its key.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts {

class OptionReader {
 public:
  // `options` is an object, or null for none; `where` names the caller in errors ("ts.loader"). Fails at once on a
  // key outside `known`.
  OptionReader(const nlohmann::json& options, std::string where, std::initializer_list<const char*> known);
  // The reader keeps a reference to `options`: a temporary would be gone before the first read.
  OptionReader(nlohmann::json&& options, std::string where, std::initializer_list<const char*> known) = delete;

  // Each returns nothing when the key is absent or null, and fails when its value has another type.
  std::optional<double> number(const char* key) const;
  std::optional<int64_t> integer(const char* key) const;  // a number with no fractional part
  std::optional<bool> boolean(const char* key) const;
  std::optional<std::string> string(const char* key) const;
  std::optional<std::vector<std::string>> strings(const char* key) const;
  std::optional<std::vector<double>> numbers(const char* key) const;
  std::optional<std::vector<int64_t>> integers(const char* key) const;
  // A seed: a whole number of 0 or more; seed32 for the 32-bit streams (pandas' random_state, the samplers), a
  // whole number in [0, 2^32).
  std::optional<uint64_t> seed(const char* key) const;
  std::optional<uint32_t> seed32(const char* key) const;
  // The raw value, for options a struct reads itself (several accepted types).
  const nlohmann::json* find(const char* key) const;

  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& options_;
  std::string where_;
};

}  // namespace ts
