#include "core/options.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ts {
namespace {

const char* type_name(const nlohmann::json& value) {
  if (value.is_number()) return "number";
  if (value.is_boolean()) return "boolean";
  if (value.is_string()) return "string";
  if (value.is_array()) return "list";
  if (value.is_object()) return "table";
  return "nil";
}

}  // namespace

OptionReader::OptionReader(const nlohmann::json& options, std::string where, std::initializer_list<const char*> known)
    : options_(options), where_(std::move(where)) {
  if (options_.is_null()) return;
  if (!options_.is_object()) fail("{}: options must be a table of named values, got a {}", where_, type_name(options_));
  for (const auto& item : options_.items()) {
    const auto& key = item.key();
    if (std::find_if(known.begin(), known.end(), [&](const char* name) { return key == name; }) != known.end())
      continue;
    std::string names;
    for (const char* name : known) names += names.empty() ? name : std::string(", ") + name;
    fail("{}: unknown option '{}' (known: {})", where_, key, names.empty() ? "none" : names);
  }
}

const nlohmann::json* OptionReader::find(const char* key) const {
  if (!options_.is_object()) return nullptr;
  const auto found = options_.find(key);
  return found == options_.end() || found->is_null() ? nullptr : &*found;
}

std::optional<double> OptionReader::number(const char* key) const {
  const auto* value = find(key);
  if (!value) return std::nullopt;
  if (!value->is_number()) fail("{}: option '{}' expects a number, got a {}", where_, key, type_name(*value));
  return value->get<double>();
}

std::optional<int64_t> OptionReader::integer(const char* key) const {
  const auto value = number(key);
  if (!value) return std::nullopt;
  if (std::trunc(*value) != *value || std::abs(*value) > 9.007199254740992e15)
    fail("{}: option '{}' expects an integer, got {}", where_, key, *value);
  return static_cast<int64_t>(*value);
}

std::optional<bool> OptionReader::boolean(const char* key) const {
  const auto* value = find(key);
  if (!value) return std::nullopt;
  if (!value->is_boolean()) fail("{}: option '{}' expects a boolean, got a {}", where_, key, type_name(*value));
  return value->get<bool>();
}

std::optional<std::string> OptionReader::string(const char* key) const {
  const auto* value = find(key);
  if (!value) return std::nullopt;
  if (!value->is_string()) fail("{}: option '{}' expects a string, got a {}", where_, key, type_name(*value));
  return value->get<std::string>();
}

std::optional<std::vector<std::string>> OptionReader::strings(const char* key) const {
  const auto* value = find(key);
  if (!value) return std::nullopt;
  // An empty Lua table reaches JSON as an empty object.
  if (value->is_object() && value->empty()) return std::vector<std::string>{};
  if (!value->is_array()) fail("{}: option '{}' expects a list of strings, got a {}", where_, key, type_name(*value));
  std::vector<std::string> out;
  for (const auto& item : *value) {
    if (!item.is_string())
      fail("{}: option '{}': item {} is a {}, expected a string", where_, key, out.size() + 1, type_name(item));
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::optional<std::vector<double>> OptionReader::numbers(const char* key) const {
  const auto* value = find(key);
  if (!value) return std::nullopt;
  if (value->is_object() && value->empty()) return std::vector<double>{};
  if (!value->is_array()) fail("{}: option '{}' expects a list of numbers, got a {}", where_, key, type_name(*value));
  std::vector<double> out;
  for (const auto& item : *value) {
    if (!item.is_number())
      fail("{}: option '{}': item {} is a {}, expected a number", where_, key, out.size() + 1, type_name(item));
    out.push_back(item.get<double>());
  }
  return out;
}

std::optional<std::vector<int64_t>> OptionReader::integers(const char* key) const {
  const auto values = numbers(key);
  if (!values) return std::nullopt;
  std::vector<int64_t> out;
  for (const double value : *values) {
    if (std::trunc(value) != value || std::abs(value) > 9.007199254740992e15)
      fail("{}: option '{}': item {} is {}, expected an integer", where_, key, out.size() + 1, value);
    out.push_back(static_cast<int64_t>(value));
  }
  return out;
}

std::optional<uint64_t> OptionReader::seed(const char* key) const {
  const auto value = integer(key);
  if (!value) return std::nullopt;
  if (*value < 0) fail("{}: {} must be a whole number of 0 or more, got {}", where_, key, *value);
  return static_cast<uint64_t>(*value);
}

std::optional<uint32_t> OptionReader::seed32(const char* key) const {
  const auto value = integer(key);
  if (!value) return std::nullopt;
  if (*value < 0 || *value > 4294967295)
    fail("{}: option '{}' must be a whole number from 0 to 4294967295, got {}", where_, key, *value);
  return static_cast<uint32_t>(*value);
}

}  // namespace ts
