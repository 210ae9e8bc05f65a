#pragma once
// The small runtime every binding file uses: error conversion, userdata, registration, and the Lua state that runs a
// recipe (sandbox, strict globals, settings, run folder).
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <lua.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/run_access.h"
#include "core/settings.h"

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
// getmetatable() on a host object answers `type_name`, never the metatable itself: with it a recipe could call
// __gc twice, or set another type's metatable. The metatable to protect is on top of the stack.
void protect_metatable(lua_State* L, const char* type_name);

// A userdata owns one C++ value; its metatable is named `type_name`, and __gc runs the value's destructor.
// There is no identity table (DESIGN.md's Love2D lesson): every host object reaches Lua once, when it is made, and
// the only values handed out again are tensors (parameters, gradients), whose handles share storage and whose `==`
// compares values, so a second userdata for one native object never shows.
template <typename T, typename... Args>
T& push_new(lua_State* L, const char* type_name, Args&&... args) {
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

template <typename T>
T& check(lua_State* L, int index, const char* type_name) {
  return *static_cast<T*>(luaL_checkudata(L, index, type_name));
}

template <typename T>
T* test(lua_State* L, int index, const char* type_name) {
  void* memory = lua_touserdata(L, index);
  if (!memory || !lua_getmetatable(L, index)) return nullptr;
  luaL_getmetatable(L, type_name);
  const bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? static_cast<T*>(memory) : nullptr;
}

// Sets each function of `functions` (ending with {nullptr, nullptr}) as a field of the table on top of the stack.
void set_functions(lua_State* L, const luaL_Reg* functions);

// Creates (or fetches) the metatable `type_name`, sets __index to a table of `methods` and adds `metamethods`.
// All functions are wrapped with convert_exceptions by the caller (use guarded<>).
void define_type(lua_State* L, const char* type_name, const luaL_Reg* methods, const luaL_Reg* metamethods);

// ---- small argument helpers -------------------------------------------------------------------------------------
std::string check_string(lua_State* L, int index);
std::optional<std::string> opt_string_field(lua_State* L, int table, const char* key);
std::optional<double> opt_number_field(lua_State* L, int table, const char* key);
std::optional<bool> opt_bool_field(lua_State* L, int table, const char* key);
std::vector<std::string> check_string_list(lua_State* L, int index);

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

// ---- running chunks ---------------------------------------------------------------------------------------------
// Loads `source` as a chunk named `chunk_name`: source text only, unless `allow_bytecode` (--unsafe), since LuaJIT
// does not verify bytecode. A leading "#!" line is skipped, as the standalone interpreter skips it. Returns
// luaL_loadbufferx's status, with the chunk or the message on the stack.
int load_source(lua_State* L, std::string source, const std::string& chunk_name, bool allow_bytecode);

struct ChunkResult {
  bool ok = true;
  bool help_shown = false;  // ended by stop_after_help
  std::string message;      // the error and its traceback
};
// Loads and calls `source` with a traceback handler, leaving `results` values on the stack when it succeeds.
ChunkResult pcall_chunk(lua_State* L, std::string source, const std::string& chunk_name, int results);

// ---- the runtime ------------------------------------------------------------------------------------------------
struct RunOptions {
  std::filesystem::path recipe;                     // the recipe file
  std::map<std::string, std::string> overrides;     // --set key=value
  // Keys of `overrides` whose values a sweep file wrote, not the user: they open no path and no endpoint.
  std::set<std::string> sweep_file_settings;        // --sweep-file-settings key,key
  std::optional<std::filesystem::path> out;         // --out DIR: the run folder itself
  std::optional<int64_t> seed;                      // --seed N
  std::string device = "cpu";                       // --device
  int threads = 0;                                  // --threads (0: all cores)
  bool unsafe = false;                              // --unsafe
  bool help = false;                                // RECIPE.lua --help: print its settings and stop
  std::string command_line;                         // for config.json
};

// Host-side state of one run that bindings can reach through run_state(L); its path rules are host's RunAccess
// (core/run_access.h), filled from `options` when the runtime is made.
struct RunState : RunAccess {
  RunOptions options;
  std::filesystem::path run_dir;                    // empty until created
  std::vector<SettingSpec> setting_specs;
  std::map<std::string, ResolvedSetting> settings;  // after overrides
  bool settings_declared = false;
};

RunState& run_state(lua_State* L);

// Throws ts::Error unless the run may write `path`: the run folder, --out, a path the user gave to an output
// setting on the command line, or anything under --unsafe. Bindings that write files call this first.
void check_write(lua_State* L, const std::filesystem::path& path);
// Throws ts::Error unless the run may read `path`: what it may write, the recipe's folder, data/, scripts/, and
// the paths the user gave on the command line, or anything under --unsafe. Bindings that read files call this first.
void check_read(lua_State* L, const std::filesystem::path& path);
// Whether the user typed `value` on the command line (a --set value not written by a sweep file).
bool given_by_user(lua_State* L, const std::string& value);
// Allows what the settings declared as outputs may write, once they are resolved (bindings/settings.cpp).
void allow_outputs(lua_State* L);

// Ends the recipe quietly after `RECIPE.lua --help` has printed its settings.
[[noreturn]] void stop_after_help(lua_State* L);

class Runtime {
 public:
  explicit Runtime(RunOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Runs the recipe; prints `path:line: message` and a traceback on error. Returns the exit status.
  int run();
  // Runs a chunk of Lua source in the prepared state (tests use it). Throws ts::Error with the Lua message and
  // traceback on failure.
  void execute(const std::string& source, const std::string& chunk_name = "=test");
  lua_State* state() { return L_; }
  RunState& run_state() { return *state_; }

 private:
  void open_libraries();
  void allow_reads();
  std::unique_ptr<RunState> state_;
  lua_State* L_ = nullptr;
};

// Where `require` finds scripts/: beside an installed executable (../share/twostage/scripts), or the source tree.
std::filesystem::path scripts_directory();
std::string luajit_version();

}  // namespace ts::lua
