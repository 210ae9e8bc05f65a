// libFuzzer target: `--set key=value` text through the settings parser, against specs of every type. Each value
// must parse into its setting's type or be a ts::Error; a value that parses must print (as --help and logs show it)
// as text that parses back to the same value.
//
// The input is a list of --set arguments, one a line. Settings are named after their types' first letters (n, i,
// b, s, nl, il, sl) so that keys are cheap to find.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/settings.h"

namespace {

using ts::SettingSpec;
using ts::SettingType;
using ts::SettingValue;

void check(bool condition) {
  if (!condition) std::abort();
}

SettingSpec spec(const std::string& name, SettingType type, SettingValue value) {
  SettingSpec result;
  result.name = name;
  result.type = type;
  result.default_value = std::move(value);
  result.help = "a setting of type " + std::string(ts::to_string(type));
  return result;
}

const std::vector<SettingSpec>& specs() {
  static const std::vector<SettingSpec> all = {
      spec("n", SettingType::Number, 0.5),
      spec("i", SettingType::Integer, int64_t{1}),
      spec("b", SettingType::Boolean, false),
      spec("s", SettingType::String, std::string("text")),
      spec("nl", SettingType::NumberList, std::vector<double>{0.1, 0.2}),
      spec("il", SettingType::IntegerList, std::vector<int64_t>{7, 42}),
      spec("sl", SettingType::StringList, std::vector<std::string>{"a", "b"}),
  };
  return all;
}

// The value has the spec's type, and its printed form reads back as the same value.
void check_value(const std::string& name, SettingType type, const SettingValue& value) {
  check(value.index() == static_cast<size_t>(type));  // the variant's alternatives follow SettingType's order
  const std::string printed = ts::format_setting(value);
  SettingValue again;
  try {
    again = ts::parse_setting(name, type, printed);
  } catch (const ts::Error&) {
    std::abort();  // what was accepted once must be accepted as printed
  }
  check(again == value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> overrides;
  size_t start = 0;
  while (start <= input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string::npos) end = input.size();
    const std::string line = input.substr(start, end - start);
    start = end + 1;
    try {
      const auto [key, value] = ts::split_assignment(line);
      overrides[key] = value;
      // The same text as a value of every type.
      for (const auto& setting : specs()) {
        try {
          check_value(setting.name, setting.type, ts::parse_setting(setting.name, setting.type, value));
        } catch (const ts::Error&) {
        }
      }
    } catch (const ts::Error&) {
    }
  }
  try {
    const auto resolved = ts::resolve_settings(specs(), overrides);
    check(resolved.size() == specs().size());
    std::vector<SettingSpec> described;
    for (const auto& setting : specs()) {
      const auto& entry = resolved.at(setting.name);
      check(entry.overridden == (overrides.count(setting.name) == 1));
      check_value(setting.name, setting.type, entry.value);
      described.push_back(spec(setting.name, setting.type, entry.value));
    }
    check(!ts::describe_settings(described).empty());
  } catch (const ts::Error&) {
    // An unknown key: named, with the recipe's settings listed.
  }
  return 0;
}
