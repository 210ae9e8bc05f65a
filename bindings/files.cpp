// Files, JSON, logging and the run's own facts, for recipes and the Lua library.
#include <unistd.h>

#include <chrono>
#include <cmath>

#include <twostage/build_info.h>

#include "core/log.h"
#include "json.h"
#include "runtime.h"
#include "runtime/blas_core.h"
#include "runtime/environment.h"

namespace ts::lua {
namespace {

const char kArrayMarker = 0;  // metatable field marking an empty table as a JSON array

bool is_array(lua_State* L, int index) {
  const size_t length = lua_objlen(L, index);
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, index) != 0) {
    ++count;
    lua_pop(L, 1);
  }
  if (count == 0) {
    if (!lua_getmetatable(L, index)) return false;
    lua_pushlightuserdata(L, const_cast<char*>(&kArrayMarker));
    lua_rawget(L, -2);
    const bool marked = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return marked;
  }
  return count == length;
}

// ts.null: a value that JSON encodes as null (a Lua nil would vanish from its table).
const char kJsonNull = 0;

nlohmann::json convert(lua_State* L, int index, int depth) {
  if (depth > 100) fail("value nested too deeply (or a cycle) for JSON");
  index = index < 0 ? lua_gettop(L) + index + 1 : index;
  switch (lua_type(L, index)) {
    case LUA_TNIL: return nullptr;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, index) == &kJsonNull) return nullptr;
      fail("a light userdata has no JSON form");
    case LUA_TBOOLEAN: return static_cast<bool>(lua_toboolean(L, index));
    case LUA_TNUMBER: {
      const double number = lua_tonumber(L, index);
      if (!std::isfinite(number)) return nullptr;
      if (number == std::floor(number) && std::fabs(number) < 9.007199254740992e15)
        return static_cast<int64_t>(number);
      return number;
    }
    case LUA_TSTRING: {
      size_t length = 0;
      const char* text = lua_tolstring(L, index, &length);
      return std::string(text, length);
    }
    case LUA_TTABLE: {
      if (is_array(L, index)) {
        nlohmann::json array = nlohmann::json::array();
        const size_t length = lua_objlen(L, index);
        for (size_t i = 1; i <= length; ++i) {
          lua_rawgeti(L, index, static_cast<int>(i));
          array.push_back(convert(L, -1, depth + 1));
          lua_pop(L, 1);
        }
        return array;
      }
      nlohmann::json object = nlohmann::json::object();
      lua_pushnil(L);
      while (lua_next(L, index) != 0) {
        std::string key;
        if (lua_type(L, -2) == LUA_TSTRING) {
          key = lua_tostring(L, -2);
        } else if (lua_type(L, -2) == LUA_TNUMBER) {
          key = fmt::format("{}", lua_tonumber(L, -2));
        } else {
          fail("JSON object keys must be strings or numbers, not {}", luaL_typename(L, -2));
        }
        object[key] = convert(L, -1, depth + 1);
        lua_pop(L, 1);
      }
      return object;
    }
    default:
      fail("cannot write a {} as JSON", luaL_typename(L, index));
  }
}

}  // namespace

nlohmann::json to_json(lua_State* L, int index) { return convert(L, index, 0); }

nlohmann::json options_json(lua_State* L, int index) {
  return lua_isnoneornil(L, index) ? nlohmann::json() : to_json(L, index);
}

void push_json(lua_State* L, const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: lua_pushnil(L); return;
    case nlohmann::json::value_t::boolean: lua_pushboolean(L, value.get<bool>()); return;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float: lua_pushnumber(L, value.get<double>()); return;
    case nlohmann::json::value_t::string: {
      const auto& text = value.get_ref<const std::string&>();
      lua_pushlstring(L, text.data(), text.size());
      return;
    }
    case nlohmann::json::value_t::array: {
      lua_createtable(L, static_cast<int>(value.size()), 0);
      int i = 1;
      for (const auto& item : value) {
        push_json(L, item);
        lua_rawseti(L, -2, i++);
      }
      return;
    }
    case nlohmann::json::value_t::object: {
      lua_createtable(L, 0, static_cast<int>(value.size()));
      for (const auto& [key, item] : value.items()) {
        push_json(L, item);
        lua_setfield(L, -2, key.c_str());
      }
      return;
    }
    default: lua_pushnil(L); return;
  }
}

namespace {

int json_encode(lua_State* L) {
  const int indent = lua_isnoneornil(L, 2) ? -1 : static_cast<int>(luaL_checknumber(L, 2));
  const auto text = to_json(L, 1).dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

int json_decode(lua_State* L) {
  const std::string text = check_string(L, 1);
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    fail("not valid JSON: {}", error.what());
  }
  push_json(L, parsed);
  return 1;
}

int json_array(lua_State* L) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_newtable(L);
  lua_pushlightuserdata(L, const_cast<char*>(&kArrayMarker));
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_setmetatable(L, 1);
  return 1;
}

int read_whole_file(lua_State* L) {
  const std::string path = check_string(L, 1);
  check_read(L, path);
  const auto content = read_file(path);
  lua_pushlstring(L, content.data(), content.size());
  return 1;
}

// write_file(path, text): atomically, and only where the run may write.
int write_whole_file(lua_State* L) {
  const std::string path = check_string(L, 1);
  const std::string content = check_string(L, 2);
  check_write(L, path);
  write_file_atomic(path, content);
  return 0;
}

int file_exists(lua_State* L) {
  const std::string path = check_string(L, 1);
  check_read(L, path);
  lua_pushboolean(L, std::filesystem::exists(path));
  return 1;
}

int make_directories(lua_State* L) {
  const std::string path = check_string(L, 1);
  check_write(L, path);
  std::filesystem::create_directories(path);
  return 0;
}

// run_info(): what config.json records besides the settings.
int run_info(lua_State* L) {
  const auto& state = run_state(L);
  nlohmann::json info = {
      {"recipe", state.options.recipe.string()},
      {"run_dir", state.run_dir.string()},
      {"command_line", state.options.command_line},
      {"device", state.options.device},
      {"threads", state.options.threads},
      {"unsafe", state.options.unsafe},
      {"twostage_version", TWOSTAGE_VERSION},
      {"libtorch_version", runtime::torch_version()},
      {"luajit_version", luajit_version()},
      {"blas", runtime::blas_description()},
      {"blas_kernels", runtime::blas_core_report()},
  };
  if (state.options.seed) info["seed"] = *state.options.seed;
  nlohmann::json overridden = nlohmann::json::array();
  for (const auto& [name, setting] : state.settings)
    if (setting.overridden) overridden.push_back(name);
  info["overridden_settings"] = overridden;
  push_json(L, info);
  return 1;
}

int run_dir(lua_State* L) {
  const auto path = run_state(L).run_dir.string();
  lua_pushlstring(L, path.data(), path.size());
  return 1;
}

// log(event, message[, fields][, level])
int log_event(lua_State* L) {
  const std::string name = check_string(L, 1);
  const std::string message = check_string(L, 2);
  const nlohmann::json fields = lua_isnoneornil(L, 3) ? nlohmann::json::object() : to_json(L, 3);
  const std::string level = lua_isnoneornil(L, 4) ? "info" : check_string(L, 4);
  log::event(spdlog::level::from_str(level), name, message, fields);
  return 0;
}

int monotonic_seconds(lua_State* L) {
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  lua_pushnumber(L, std::chrono::duration<double>(now).count());
  return 1;
}

int stderr_is_terminal(lua_State* L) {
  lua_pushboolean(L, ::isatty(2));
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg functions[] = {{"json_encode", guarded<json_encode>},
                                       {"json_decode", guarded<json_decode>},
                                       {"json_array", guarded<json_array>},
                                       {"read_file", guarded<read_whole_file>},
                                       {"write_file", guarded<write_whole_file>},
                                       {"exists", guarded<file_exists>},
                                       {"mkdir", guarded<make_directories>},
                                       {"run_info", guarded<run_info>},
                                       {"run_dir", guarded<run_dir>},
                                       {"log", guarded<log_event>},
                                       {"clock", guarded<monotonic_seconds>},
                                       {"is_terminal", guarded<stderr_is_terminal>},
                                       {nullptr, nullptr}};
  set_functions(L, functions);
  lua_pushlightuserdata(L, const_cast<char*>(&kJsonNull));
  lua_setfield(L, -2, "null");
}

}  // namespace

TWOSTAGE_LUA_BINDING(files, open);

}  // namespace ts::lua
