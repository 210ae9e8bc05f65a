#include "core/settings.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace ts {

const char* to_string(SettingType type) {
  switch (type) {
    case SettingType::Number: return "number";
    case SettingType::Integer: return "integer";
    case SettingType::Boolean: return "boolean";
    case SettingType::String: return "string";
    case SettingType::NumberList: return "list of numbers";
    case SettingType::IntegerList: return "list of integers";
    case SettingType::StringList: return "list of strings";
  }
  return "?";
}

namespace {

std::string trim(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const auto end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

std::optional<double> parse_number(const std::string& text) {
  const std::string trimmed = trim(text);
  if (trimmed.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(trimmed.c_str(), &end);
  // Overflow is refused; underflow is not: glibc flags "5e-324", the way a subnormal prints, as ERANGE, yet reads
  // "0x1p-1074" to the same number without it, and a value that parses must parse again as printed.
  if (end != trimmed.c_str() + trimmed.size() || (errno == ERANGE && std::isinf(value)) || std::isnan(value))
    return std::nullopt;
  return value;
}

std::optional<int64_t> parse_integer(const std::string& text) {
  const auto number = parse_number(text);
  if (!number || *number != std::floor(*number) || std::fabs(*number) > 9007199254740992.0) return std::nullopt;
  return static_cast<int64_t>(*number);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  if (trim(text).empty()) return items;
  size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    items.push_back(trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return items;
}

[[noreturn]] void bad_value(const std::string& name, SettingType type, const std::string& text) {
  fail("setting '{}' expects {}, got '{}'", name, to_string(type), text);
}

}  // namespace

SettingValue parse_setting(const std::string& name, SettingType type, const std::string& text) {
  switch (type) {
    case SettingType::Number:
      if (auto number = parse_number(text)) return *number;
      bad_value(name, type, text);
    case SettingType::Integer:
      if (auto integer = parse_integer(text)) return *integer;
      bad_value(name, type, text);
    case SettingType::Boolean: {
      std::string lower = trim(text);
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
      if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return false;
      bad_value(name, type, text);
    }
    case SettingType::String:
      return text;
    case SettingType::NumberList: {
      std::vector<double> values;
      for (const auto& item : split_list(text)) {
        auto number = parse_number(item);
        if (!number) fail("setting '{}' expects {}, but '{}' in '{}' is not a number", name, to_string(type), item, text);
        values.push_back(*number);
      }
      return values;
    }
    case SettingType::IntegerList: {
      std::vector<int64_t> values;
      for (const auto& item : split_list(text)) {
        auto integer = parse_integer(item);
        if (!integer)
          fail("setting '{}' expects {}, but '{}' in '{}' is not an integer", name, to_string(type), item, text);
        values.push_back(*integer);
      }
      return values;
    }
    case SettingType::StringList:
      return split_list(text);
  }
  bad_value(name, type, text);
}

std::pair<std::string, std::string> split_assignment(const std::string& assignment) {
  const auto equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0)
    fail("--set expects key=value, got '{}'", assignment);
  return {trim(assignment.substr(0, equals)), assignment.substr(equals + 1)};
}

std::map<std::string, ResolvedSetting> resolve_settings(const std::vector<SettingSpec>& specs,
                                                        const std::map<std::string, std::string>& overrides) {
  std::map<std::string, ResolvedSetting> resolved;
  for (const auto& spec : specs) {
    if (resolved.count(spec.name)) fail("setting '{}' is declared twice", spec.name);
    resolved[spec.name] = {spec.default_value, false};
  }
  for (const auto& override_entry : overrides) {
    const std::string& key = override_entry.first;
    const std::string& text = override_entry.second;
    auto found = std::find_if(specs.begin(), specs.end(), [&](const SettingSpec& spec) { return spec.name == key; });
    if (found == specs.end()) {
      std::vector<std::string> known;
      for (const auto& spec : specs) known.push_back(spec.name);
      std::sort(known.begin(), known.end());
      std::string list;
      for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
      fail("unknown setting '{}'; this recipe's settings are: {}", key, list.empty() ? "(none)" : list);
    }
    resolved[key] = {parse_setting(key, found->type, text), true};
  }
  return resolved;
}

namespace {
struct SettingFormatter {
  std::string operator()(double number) const { return fmt::format("{}", number); }
  std::string operator()(int64_t integer) const { return std::to_string(integer); }
  std::string operator()(bool flag) const { return flag ? "true" : "false"; }
  std::string operator()(const std::string& text) const { return text; }
  template <typename T>
  std::string operator()(const std::vector<T>& items) const {
    std::string joined;
    for (size_t i = 0; i < items.size(); ++i) joined += (i ? "," : "") + (*this)(items[i]);
    return joined;
  }
};
}  // namespace

std::string format_setting(const SettingValue& value) { return std::visit(SettingFormatter{}, value); }

std::string describe_settings(const std::vector<SettingSpec>& specs) {
  size_t width = 0;
  for (const auto& spec : specs) width = std::max(width, spec.name.size());
  std::string text;
  for (const auto& spec : specs) {
    text += fmt::format("  {:<{}}  {} (default: {}, {}{})\n", spec.name, width, spec.help,
                        format_setting(spec.default_value), to_string(spec.type), spec.output ? ", output" : "");
  }
  return text;
}

}  // namespace ts
