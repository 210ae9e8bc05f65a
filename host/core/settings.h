#pragma once
// Recipe settings: each has a type, a default and a one-line help; `--set key=value` overrides are parsed and type
// checked here, so the rules are the same whatever the recipe.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace ts {

enum class SettingType { Number, Integer, Boolean, String, NumberList, IntegerList, StringList };

const char* to_string(SettingType type);

using SettingValue = std::variant<double, int64_t, bool, std::string, std::vector<double>, std::vector<int64_t>,
                                  std::vector<std::string>>;

struct SettingSpec {
  std::string name;
  SettingType type;
  SettingValue default_value;
  std::string help;
  bool output = false;  // a path the run writes: writable when the user names it on the command line
};

struct ResolvedSetting {
  SettingValue value;
  bool overridden = false;  // set on the command line
};

// Parses one command-line value as `type`: numbers as Lua reads them, booleans true/false/1/0/yes/no/on/off, lists
// comma-separated (`7,42,106`; an empty string is an empty list). Throws ts::Error naming `name` and the value.
SettingValue parse_setting(const std::string& name, SettingType type, const std::string& text);

// Splits `key=value`; throws on a missing '='.
std::pair<std::string, std::string> split_assignment(const std::string& assignment);

// Applies `overrides` (key -> text) to `specs`. An unknown key is an error that lists the known keys.
std::map<std::string, ResolvedSetting> resolve_settings(const std::vector<SettingSpec>& specs,
                                                        const std::map<std::string, std::string>& overrides);

// The text a user would type for `value` (`7,42,106`), for --help and logs.
std::string format_setting(const SettingValue& value);

// `twostage run RECIPE.lua --help`: one line per setting with type, default and help.
std::string describe_settings(const std::vector<SettingSpec>& specs);

}  // namespace ts
