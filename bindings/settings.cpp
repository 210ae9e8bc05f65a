// settings{ name = {default, "help"[, type = "number"][, output = true]}, ... }: declares a recipe's settings and
// returns them with the command line's --set, --seed and --device applied. An output setting names a path the run
// writes: writable when the user gives it on the command line.
#include <algorithm>
#include <cmath>
#include <iostream>

#include "core/log.h"
#include "runtime.h"

namespace ts::lua {
namespace {

SettingType parse_type_name(const std::string& name, const std::string& setting) {
  static const std::pair<const char*, SettingType> names[] = {
      {"number", SettingType::Number},          {"integer", SettingType::Integer},
      {"boolean", SettingType::Boolean},        {"string", SettingType::String},
      {"numbers", SettingType::NumberList},     {"integers", SettingType::IntegerList},
      {"strings", SettingType::StringList}};
  for (const auto& [text, type] : names)
    if (name == text) return type;
  fail("setting '{}': unknown type '{}' (number, integer, boolean, string, numbers, integers, strings)", setting, name);
}

bool is_whole(double value) { return std::isfinite(value) && value == std::floor(value); }

// The default's Lua value (on top of the stack) as a SettingValue of `type`.
SettingValue default_value(lua_State* L, const std::string& name, SettingType type) {
  const int index = lua_gettop(L);
  auto mismatch = [&]() -> SettingValue {
    fail("setting '{}': default of type {} does not fit the declared type {}", name, luaL_typename(L, index),
         to_string(type));
  };
  switch (type) {
    case SettingType::Number:
      if (lua_type(L, index) != LUA_TNUMBER) return mismatch();
      return lua_tonumber(L, index);
    case SettingType::Integer:
      if (lua_type(L, index) != LUA_TNUMBER || !is_whole(lua_tonumber(L, index))) return mismatch();
      return static_cast<int64_t>(lua_tonumber(L, index));
    case SettingType::Boolean:
      if (lua_type(L, index) != LUA_TBOOLEAN) return mismatch();
      return static_cast<bool>(lua_toboolean(L, index));
    case SettingType::String:
      if (lua_type(L, index) != LUA_TSTRING) return mismatch();
      return std::string(lua_tostring(L, index));
    default:
      break;
  }
  if (lua_type(L, index) != LUA_TTABLE) return mismatch();
  const size_t count = lua_objlen(L, index);
  std::vector<double> numbers;
  std::vector<std::string> strings;
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, index, static_cast<int>(i));
    if (type == SettingType::StringList) {
      if (lua_type(L, -1) != LUA_TSTRING) fail("setting '{}': item {} of the default is not a string", name, i);
      strings.emplace_back(lua_tostring(L, -1));
    } else {
      if (lua_type(L, -1) != LUA_TNUMBER) fail("setting '{}': item {} of the default is not a number", name, i);
      numbers.push_back(lua_tonumber(L, -1));
      if (type == SettingType::IntegerList && !is_whole(numbers.back()))
        fail("setting '{}': item {} of the default is not an integer", name, i);
    }
    lua_pop(L, 1);
  }
  if (type == SettingType::StringList) return strings;
  if (type == SettingType::NumberList) return numbers;
  return std::vector<int64_t>(numbers.begin(), numbers.end());
}

// Without an explicit type: whole numbers are integers, lists take the type of their items.
SettingType infer_type(lua_State* L, const std::string& name) {
  switch (lua_type(L, -1)) {
    case LUA_TNUMBER: return is_whole(lua_tonumber(L, -1)) ? SettingType::Integer : SettingType::Number;
    case LUA_TBOOLEAN: return SettingType::Boolean;
    case LUA_TSTRING: return SettingType::String;
    case LUA_TTABLE: {
      const size_t count = lua_objlen(L, -1);
      if (count == 0) fail("setting '{}': an empty list needs type = \"numbers\", \"integers\" or \"strings\"", name);
      bool all_whole = true;
      for (size_t i = 1; i <= count; ++i) {
        lua_rawgeti(L, -1, static_cast<int>(i));
        const int item = lua_type(L, -1);
        if (item == LUA_TSTRING) {
          lua_pop(L, 1);
          return SettingType::StringList;
        }
        all_whole = all_whole && item == LUA_TNUMBER && is_whole(lua_tonumber(L, -1));
        lua_pop(L, 1);
      }
      return all_whole ? SettingType::IntegerList : SettingType::NumberList;
    }
    default:
      fail("setting '{}': a default must be a number, boolean, string or list, not {}", name, luaL_typename(L, -1));
  }
}

struct SettingPusher {
  lua_State* L;
  void operator()(double number) const { lua_pushnumber(L, number); }
  void operator()(int64_t integer) const { lua_pushnumber(L, static_cast<lua_Number>(integer)); }
  void operator()(bool flag) const { lua_pushboolean(L, flag); }
  void operator()(const std::string& text) const { lua_pushlstring(L, text.data(), text.size()); }
  template <typename T>
  void operator()(const std::vector<T>& items) const {
    lua_createtable(L, static_cast<int>(items.size()), 0);
    for (size_t i = 0; i < items.size(); ++i) {
      (*this)(items[i]);
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
  }
};

void push_value(lua_State* L, const SettingValue& value) { std::visit(SettingPusher{L}, value); }

int unknown_setting(lua_State* L) {
  luaL_where(L, 2);
  lua_pushfstring(L, "unknown setting '%s'", luaL_checkstring(L, 2));
  lua_concat(L, 2);
  return lua_error(L);
}

int declare_settings(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  auto& state = run_state(L);
  if (state.settings_declared) fail("settings are declared once per recipe");

  std::vector<SettingSpec> specs;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) fail("setting names must be strings");
    const std::string name = lua_tostring(L, -2);
    if (lua_type(L, -1) != LUA_TTABLE) fail("setting '{}' must be {{default, \"help\"}}", name);
    const int entry = lua_gettop(L);
    SettingSpec spec;
    spec.name = name;
    lua_rawgeti(L, entry, 2);
    if (lua_type(L, -1) != LUA_TSTRING) fail("setting '{}' needs a one-line help text as its second item", name);
    spec.help = lua_tostring(L, -1);
    lua_pop(L, 1);
    const auto declared_type = opt_string_field(L, entry, "type");
    spec.output = opt_bool_field(L, entry, "output").value_or(false);
    lua_rawgeti(L, entry, 1);
    if (lua_isnil(L, -1)) fail("setting '{}' needs a default as its first item", name);
    spec.type = declared_type ? parse_type_name(*declared_type, name) : infer_type(L, name);
    spec.default_value = default_value(L, name, spec.type);
    lua_pop(L, 1);
    specs.push_back(std::move(spec));
    lua_pop(L, 1);
  }
  std::sort(specs.begin(), specs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });

  const auto& options = state.options;
  if (options.help) {
    std::cout << "Settings of " << options.recipe.string() << " (override with --set key=value):\n"
              << describe_settings(specs);
    stop_after_help(L);
  }

  // --seed and --device are shorthands for the recipe's own seed(s) and device settings.
  auto overrides = options.overrides;
  auto declares = [&](const char* name) {
    return std::any_of(specs.begin(), specs.end(), [&](const auto& spec) { return spec.name == name; });
  };
  if (options.seed) {
    if (declares("seeds") && !overrides.count("seeds")) overrides["seeds"] = std::to_string(*options.seed);
    if (declares("seed") && !overrides.count("seed")) overrides["seed"] = std::to_string(*options.seed);
  }
  if (declares("device") && !overrides.count("device")) overrides["device"] = options.device;

  state.settings = resolve_settings(specs, overrides);
  state.setting_specs = specs;
  state.settings_declared = true;
  allow_outputs(L);

  nlohmann::json logged = nlohmann::json::object();
  lua_newtable(L);
  for (const auto& [name, setting] : state.settings) {
    push_value(L, setting.value);
    lua_setfield(L, -2, name.c_str());
    logged[name] = format_setting(setting.value);
  }
  log::info("settings", "settings " + logged.dump(), {{"settings", logged}});
  lua_newtable(L);
  lua_pushcfunction(L, unknown_setting);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}

void open(lua_State* L) {
  lua_pushcfunction(L, guarded<declare_settings>);
  lua_setfield(L, -2, "settings");
}

}  // namespace

TWOSTAGE_LUA_BINDING(settings, open);

}  // namespace ts::lua
