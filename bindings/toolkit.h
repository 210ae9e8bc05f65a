#pragma once
// The binding toolkit every binding file uses: error conversion, userdata typed by a trait, registration, argument
// helpers, and one protected way to run a chunk. It knows nothing of recipes or runs (bindings/runtime.h is the
// recipe runner).
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <lua.hpp>

#include "core/error.h"

namespace ts::lua {

// ---- errors -----------------------------------------------------------------------------------------------------
// Runs `body` and turns any std::exception (c10::Error included) into a Lua error carrying its message, raised
// after the catch block has been left (Love2D's rule). Every bound function goes through this.
int convert_exceptions(lua_State* L, int (*body)(lua_State*));

template <lua_CFunction Body>
int guarded(lua_State* L) {
  return convert_exceptions(L, Body);
}

// ---- userdata ---------------------------------------------------------------------------------------------------
// The Lua type name of a C++ value held in a userdata, so that no file writes a type name out and a value can never
// be pushed under one name and checked under another. A binding's own struct names itself with a member
//   static constexpr const char* kLuaType = "twostage.Loss";
// a host type gets a specialisation, written in namespace ts::lua (outside any anonymous namespace) beside the
// binding that defines it, or in that binding's header when other bindings take the type too:
//   TWOSTAGE_LUA_TYPE(text::Tokenizer, "twostage.Tokenizer");
template <typename T>
struct LuaType {
  static constexpr const char* name = T::kLuaType;
};
#define TWOSTAGE_LUA_TYPE(Type, Name)            \
  template <>                                    \
  struct LuaType<Type> {                         \
    static constexpr const char* name = Name;    \
  }

// getmetatable() on a host object answers its type name, never the metatable itself: with it a recipe could call
// __gc twice, or set another type's metatable. The metatable to protect is on top of the stack.
void protect_metatable(lua_State* L, const char* type_name);

// Sets each function of `functions` (ending with {nullptr, nullptr}) as a field of the table on top of the stack.
void set_functions(lua_State* L, const luaL_Reg* functions);

// Creates (or fetches) the metatable `type_name`, sets __index to a table of `methods` and adds `metamethods`.
// All functions are wrapped with convert_exceptions by the caller (use guarded<>).
void define_type(lua_State* L, const char* type_name, const luaL_Reg* methods, const luaL_Reg* metamethods);

template <typename T>
void define_type(lua_State* L, const luaL_Reg* methods, const luaL_Reg* metamethods) {
  define_type(L, LuaType<T>::name, methods, metamethods);
}

// A userdata owns one C++ value; its metatable is LuaType<T>'s, and __gc runs the value's destructor.
// There is no identity table (DESIGN.md's Love2D lesson, deliberately not followed; README.md's Layout says why):
// every host object reaches Lua once, when it is made, and the only values handed out again are tensors
// (parameters, gradients), whose handles share storage and whose `==` compares values, so a second userdata for one
// native object never shows.
template <typename T, typename... Args>
T& push_new(lua_State* L, Args&&... args) {
  const char* type_name = LuaType<T>::name;
  void* memory = lua_newuserdata(L, sizeof(T));
  T* object = new (memory) T(std::forward<Args>(args)...);
  // The metatable may have been made by define_type, which knows nothing of T: the destructor is added here.
  luaL_newmetatable(L, type_name);
  lua_getfield(L, -1, "__gc");
  const bool has_destructor = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has_destructor) {
    lua_pushcfunction(L, [](lua_State* state) -> int {
      static_cast<T*>(lua_touserdata(state, 1))->~T();
      // A finaliser of the recipe's own (newproxy) may bring the object back: without its metatable, every method
      // refuses it instead of using a destroyed value.
      lua_pushnil(state);
      lua_setmetatable(state, 1);
      return 0;
    });
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, type_name);
    lua_setfield(L, -2, "__name");
    protect_metatable(L, type_name);
  }
  lua_setmetatable(L, -2);
  return *object;
}

// The value at `index`; an argument error naming the expected type otherwise.
template <typename T>
T& check(lua_State* L, int index) {
  return *static_cast<T*>(luaL_checkudata(L, index, LuaType<T>::name));
}

// The value at `index`, or nullptr when it is not a T.
template <typename T>
T* test(lua_State* L, int index) {
  void* memory = lua_touserdata(L, index);
  if (!memory || !lua_getmetatable(L, index)) return nullptr;
  luaL_getmetatable(L, LuaType<T>::name);
  const bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? static_cast<T*>(memory) : nullptr;
}

// ---- arguments and option tables --------------------------------------------------------------------------------
// Option tables are read strictly in host (core/options.h's OptionReader over bindings/json.h's options_json); these
// are for positional arguments and the few tables JSON cannot carry (tensors, userdata, a dataset's columns).
std::string check_string(lua_State* L, int index);
std::vector<std::string> check_string_list(lua_State* L, int index);
// Lists of numbers; `what` names the argument in errors ("labels: item 3 is a string, expected an integer").
std::vector<double> check_number_list(lua_State* L, int index, const char* what);
std::vector<int64_t> check_integer_list(lua_State* L, int index, const char* what);

// table[key] when present; an absent table or key gives nullopt, another Lua type an error naming the key.
std::optional<std::string> opt_string_field(lua_State* L, int table, const char* key);
std::optional<double> opt_number_field(lua_State* L, int table, const char* key);
std::optional<bool> opt_bool_field(lua_State* L, int table, const char* key);

// Fails, naming `where` and listing `known`, on a string key of the option table at `index` that is not in `known`:
// `ts.optimizer{weight_decy = 0.01}` must be an error, not a silently ignored option. Nil or none passes; number keys
// (an array part, as in a message list) are left alone.
void check_option_keys(lua_State* L, int index, std::initializer_list<const char*> known, const char* where);

// Pushes a Lua array of the values; `offset` turns 0-based positions into Lua's 1-based ones.
template <typename Integer>
void push_integers(lua_State* L, const std::vector<Integer>& values, int64_t offset = 0) {
  lua_createtable(L, static_cast<int>(values.size()), 0);
  for (size_t i = 0; i < values.size(); ++i) {
    lua_pushnumber(L, static_cast<lua_Number>(static_cast<int64_t>(values[i]) + offset));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}
void push_strings(lua_State* L, const std::vector<std::string>& values);

// ---- registration -----------------------------------------------------------------------------------------------
// Each binding file registers a function that adds its entries to the `twostage.native` module table (on top of the
// stack when called). Registration happens in static initialisers, so bindings/ is an object library.
using OpenFunction = void (*)(lua_State* L);
struct Registrar {
  Registrar(const char* name, OpenFunction open);
};
#define TWOSTAGE_LUA_BINDING(name, function) \
  static const ::ts::lua::Registrar twostage_lua_binding_##name(#name, function)

// The loader of `require "twostage.native"`: a table of every registered binding's entries.
int open_native_module(lua_State* L);

// ---- running chunks ---------------------------------------------------------------------------------------------
// Loads `source` as a chunk named `chunk_name`: source text only, unless `allow_bytecode` (--unsafe), since LuaJIT
// does not verify bytecode. A leading "#!" line is skipped, as the standalone interpreter skips it. Returns
// luaL_loadbufferx's status, with the chunk or the message on the stack.
int load_source(lua_State* L, std::string source, const std::string& chunk_name, bool allow_bytecode);

struct ChunkResult {
  bool ok = true;
  bool stopped = false;  // ended by stop_quietly (a recipe's --help once its settings are printed)
  std::string message;   // the error and its traceback
};
// Loads and calls `source` with a traceback handler, leaving `results` values on the stack when it succeeds. Every
// chunk the host runs (a recipe, a sweep file, a test's source) goes through here.
ChunkResult pcall_chunk(lua_State* L, std::string source, const std::string& chunk_name, int results,
                        bool allow_bytecode);

// Ends the running chunk with no error message: pcall_chunk reports it as `stopped`.
[[noreturn]] void stop_quietly(lua_State* L);

}  // namespace ts::lua
