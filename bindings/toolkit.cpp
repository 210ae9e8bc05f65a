#include "toolkit.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <c10/util/Exception.h>

namespace ts::lua {

// ---- errors -----------------------------------------------------------------------------------------------------

int convert_exceptions(lua_State* L, int (*body)(lua_State*)) {
  // The message is copied out of the exception and the handler left before the Lua error is raised.
  std::string message;
  try {
    return body(L);
  } catch (const c10::Error& error) {
    message = error.what_without_backtrace();  // torch's own backtrace is noise in a recipe's error
  } catch (const std::exception& error) {
    message = error.what();
  }
  luaL_where(L, 1);
  lua_pushlstring(L, message.data(), message.size());
  message.clear();
  message.shrink_to_fit();
  lua_concat(L, 2);
  return lua_error(L);
}

// ---- userdata ---------------------------------------------------------------------------------------------------

void set_functions(lua_State* L, const luaL_Reg* functions) {
  for (const luaL_Reg* entry = functions; entry->name; ++entry) {
    lua_pushcfunction(L, entry->func);
    lua_setfield(L, -2, entry->name);
  }
}

void protect_metatable(lua_State* L, const char* type_name) {
  lua_pushstring(L, type_name);
  lua_setfield(L, -2, "__metatable");
}

void define_type(lua_State* L, const char* type_name, const luaL_Reg* methods, const luaL_Reg* metamethods) {
  luaL_newmetatable(L, type_name);
  lua_pushstring(L, type_name);
  lua_setfield(L, -2, "__name");
  protect_metatable(L, type_name);
  if (methods) {
    lua_newtable(L);
    set_functions(L, methods);
    lua_setfield(L, -2, "__index");
  }
  if (metamethods) set_functions(L, metamethods);
  lua_pop(L, 1);
}

// ---- argument helpers -------------------------------------------------------------------------------------------

std::string check_string(lua_State* L, int index) {
  size_t length = 0;
  const char* text = luaL_checklstring(L, index, &length);
  return std::string(text, length);
}

namespace {
// table[key] read with `read` when present; an absent table or key gives nullopt, another Lua type an error.
template <typename Read>
auto opt_field(lua_State* L, int table, const char* key, int lua_type_wanted, const char* expected, Read read)
    -> std::optional<decltype(read(-1))> {
  if (lua_isnoneornil(L, table)) return std::nullopt;
  lua_getfield(L, table, key);
  std::optional<decltype(read(-1))> value;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != lua_type_wanted)
      fail("option '{}' expects {}, got {}", key, expected, luaL_typename(L, -1));
    value = read(-1);
  }
  lua_pop(L, 1);
  return value;
}
}  // namespace

std::optional<std::string> opt_string_field(lua_State* L, int table, const char* key) {
  return opt_field(L, table, key, LUA_TSTRING, "a string", [L](int index) {
    size_t length = 0;
    const char* text = lua_tolstring(L, index, &length);
    return std::string(text, length);
  });
}

std::optional<double> opt_number_field(lua_State* L, int table, const char* key) {
  return opt_field(L, table, key, LUA_TNUMBER, "a number", [L](int index) { return lua_tonumber(L, index); });
}

std::optional<bool> opt_bool_field(lua_State* L, int table, const char* key) {
  return opt_field(L, table, key, LUA_TBOOLEAN, "a boolean",
                   [L](int index) { return static_cast<bool>(lua_toboolean(L, index)); });
}

void check_option_keys(lua_State* L, int index, std::initializer_list<const char*> known, const char* where) {
  if (lua_isnoneornil(L, index)) return;
  luaL_checktype(L, index, LUA_TTABLE);
  if (index < 0) index = lua_gettop(L) + index + 1;  // the traversal pushes; LuaJIT has no lua_absindex
  std::string unknown;
  lua_pushnil(L);
  while (lua_next(L, index) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TNUMBER) continue;
    const std::string key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(a key that is not a name)";
    if (std::find_if(known.begin(), known.end(), [&](const char* name) { return key == name; }) == known.end()) {
      unknown = key;
      lua_pop(L, 1);
      break;
    }
  }
  if (unknown.empty()) return;
  std::string names;
  for (const char* name : known) names += names.empty() ? name : std::string(", ") + name;
  fail("{}: unknown option '{}' (known: {})", where, unknown, names.empty() ? "none" : names);
}

void push_strings(lua_State* L, const std::vector<std::string>& values) {
  lua_createtable(L, static_cast<int>(values.size()), 0);
  for (size_t i = 0; i < values.size(); ++i) {
    lua_pushlstring(L, values[i].data(), values[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

std::vector<std::string> check_string_list(lua_State* L, int index) {
  luaL_checktype(L, index, LUA_TTABLE);
  std::vector<std::string> items;
  const size_t count = lua_objlen(L, index);
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, index, static_cast<int>(i));
    if (lua_type(L, -1) != LUA_TSTRING) fail("item {} of the list is {}, expected a string", i, luaL_typename(L, -1));
    size_t length = 0;
    const char* text = lua_tolstring(L, -1, &length);
    items.emplace_back(text, length);
    lua_pop(L, 1);
  }
  return items;
}

std::vector<double> check_number_list(lua_State* L, int index, const char* what) {
  luaL_checktype(L, index, LUA_TTABLE);
  std::vector<double> items(lua_objlen(L, index));
  for (size_t i = 0; i < items.size(); ++i) {
    lua_rawgeti(L, index, static_cast<int>(i + 1));
    if (lua_type(L, -1) != LUA_TNUMBER) fail("{}: item {} is {}, expected a number", what, i + 1, luaL_typename(L, -1));
    items[i] = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  return items;
}

std::vector<int64_t> check_integer_list(lua_State* L, int index, const char* what) {
  std::vector<int64_t> items;
  for (const double value : check_number_list(L, index, what)) {
    if (value != std::floor(value) || std::fabs(value) > 9.007199254740992e15)
      fail("{}: item {} is {}, expected an integer", what, items.size() + 1, value);
    items.push_back(static_cast<int64_t>(value));
  }
  return items;
}

// ---- registration -----------------------------------------------------------------------------------------------

namespace {

struct Registered {
  const char* name;
  OpenFunction open;
};

std::vector<Registered>& registry() {
  static std::vector<Registered> entries;
  return entries;
}

const char kStoppedKey = 0;  // the error value of stop_quietly

}  // namespace

Registrar::Registrar(const char* name, OpenFunction open) { registry().push_back({name, open}); }

int open_native_module(lua_State* L) {
  lua_newtable(L);
  for (const auto& entry : registry()) {
    entry.open(L);
    if (!lua_istable(L, -1)) luaL_error(L, "binding '%s' left the stack unbalanced", entry.name);
  }
  return 1;
}

// ---- running chunks ---------------------------------------------------------------------------------------------

[[noreturn]] void stop_quietly(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kStoppedKey));
  lua_error(L);
  std::abort();
}

namespace {

int traceback_handler(lua_State* L) {
  if (lua_touserdata(L, 1) == &kStoppedKey) return 1;
  const char* message = lua_tostring(L, 1);
  if (!message) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    message = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, message, 1);
  return 1;
}

}  // namespace

int load_source(lua_State* L, std::string source, const std::string& chunk_name, bool allow_bytecode) {
  if (source.rfind("#!", 0) == 0) source.insert(0, "--");
  // LuaJIT reads any chunk that starts with ESC as bytecode; say so plainly rather than "wrong mode".
  if (!allow_bytecode && !source.empty() && source[0] == '\x1b') {
    const bool prefixed = !chunk_name.empty() && (chunk_name[0] == '@' || chunk_name[0] == '=');
    lua_pushfstring(L, "%s: precompiled bytecode is refused: a recipe, sweep file or module must be Lua source "
                    "(--unsafe allows bytecode)", chunk_name.c_str() + (prefixed ? 1 : 0));
    return LUA_ERRSYNTAX;
  }
  return luaL_loadbufferx(L, source.data(), source.size(), chunk_name.c_str(), allow_bytecode ? "bt" : "t");
}

ChunkResult pcall_chunk(lua_State* L, std::string source, const std::string& chunk_name, int results,
                        bool allow_bytecode) {
  lua_pushcfunction(L, traceback_handler);
  const int handler = lua_gettop(L);
  int status = load_source(L, std::move(source), chunk_name, allow_bytecode);
  if (status == 0) status = lua_pcall(L, 0, results, handler);
  ChunkResult result;
  if (status != 0) {
    result.ok = false;
    result.stopped = lua_touserdata(L, -1) == &kStoppedKey;
    if (!result.stopped) result.message = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)";
    lua_settop(L, handler - 1);
    return result;
  }
  lua_remove(L, handler);
  return result;
}

}  // namespace ts::lua
