#include "runtime.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <iostream>

#include <c10/util/Exception.h>
#include <twostage/build_info.h>

#include "core/log.h"
#include "runtime/environment.h"

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

int open_native_module(lua_State* L) {
  lua_newtable(L);
  for (const auto& entry : registry()) {
    entry.open(L);
    if (!lua_istable(L, -1)) luaL_error(L, "binding '%s' left the stack unbalanced", entry.name);
  }
  return 1;
}

const char kRunStateKey = 0;
const char kHelpShownKey = 0;  // error value that ends a run after `--help` printed the settings

}  // namespace

Registrar::Registrar(const char* name, OpenFunction open) { registry().push_back({name, open}); }

RunState& run_state(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kRunStateKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  auto* state = static_cast<RunState*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (!state) fail("no run state in this Lua state");
  return *state;
}

// Ends the recipe quietly once `--help` has printed its settings (see bindings/settings.cpp).
[[noreturn]] void stop_after_help(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kHelpShownKey));
  lua_error(L);
  std::abort();
}

// ---- paths and versions -----------------------------------------------------------------------------------------

std::filesystem::path scripts_directory() {
  std::error_code error;
  const auto executable = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const auto installed = executable.parent_path().parent_path() / "share" / "twostage" / "scripts";
    if (std::filesystem::exists(installed / "twostage" / "init.lua")) return installed;
  }
  const std::filesystem::path source = std::filesystem::path(TWOSTAGE_SOURCE_DIR) / "scripts";
  if (std::filesystem::exists(source / "twostage" / "init.lua")) return source;
  return TWOSTAGE_SCRIPTS_INSTALL_DIR;
}

std::string luajit_version() { return LUAJIT_VERSION; }

// ---- the runtime ------------------------------------------------------------------------------------------------

void install_sandbox(lua_State* L, bool unsafe);  // bindings/sandbox.cpp
void install_strict_globals(lua_State* L);        // bindings/sandbox.cpp

namespace {

int traceback_handler(lua_State* L) {
  if (lua_touserdata(L, 1) == &kHelpShownKey) return 1;
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

ChunkResult pcall_chunk(lua_State* L, std::string source, const std::string& chunk_name, int results) {
  const bool unsafe = run_state(L).options.unsafe;
  lua_pushcfunction(L, traceback_handler);
  const int handler = lua_gettop(L);
  int status = load_source(L, std::move(source), chunk_name, unsafe);
  if (status == 0) status = lua_pcall(L, 0, results, handler);
  ChunkResult result;
  if (status != 0) {
    result.ok = false;
    result.help_shown = lua_touserdata(L, -1) == &kHelpShownKey;
    if (!result.help_shown) result.message = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)";
    lua_settop(L, handler - 1);
    return result;
  }
  lua_remove(L, handler);
  return result;
}

namespace {

std::string timestamp_folder_name() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm local{};
  localtime_r(&seconds, &local);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &local);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{}-{:03d}", buffer, static_cast<int>(millis));
}

}  // namespace

Runtime::Runtime(RunOptions options) : state_(std::make_unique<RunState>()) {
  state_->options = std::move(options);
  state_->unsafe = state_->options.unsafe;
  for (const auto& [key, value] : state_->options.overrides)
    if (!state_->options.sweep_file_settings.count(key)) state_->user_values.emplace(key, value);
  L_ = luaL_newstate();
  if (!L_) fail("cannot create a Lua state (out of memory)");
  open_libraries();
}

Runtime::~Runtime() {
  if (L_) lua_close(L_);
}

void Runtime::open_libraries() {
  lua_State* L = L_;
  luaL_openlibs(L);

  lua_pushlightuserdata(L, const_cast<char*>(&kRunStateKey));
  lua_pushlightuserdata(L, state_.get());
  lua_rawset(L, LUA_REGISTRYINDEX);

  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, open_native_module);
  lua_setfield(L, -2, "twostage.native");
  lua_pop(L, 1);
  const auto scripts = scripts_directory().string();
  std::string path = scripts + "/?.lua;" + scripts + "/?/init.lua";
  const auto& recipe = state_->options.recipe;
  if (!recipe.empty()) {
    const auto folder = std::filesystem::absolute(recipe).parent_path().string();
    path += ";" + folder + "/?.lua;" + folder + "/?/init.lua";
  }
  lua_pushlstring(L, path.data(), path.size());
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);

  allow_reads();
  install_sandbox(L, state_->options.unsafe);
  install_strict_globals(L);
}

void Runtime::allow_reads() { state_->allow_reads(state_->options.recipe, scripts_directory()); }

void Runtime::execute(const std::string& source, const std::string& chunk_name) {
  const ChunkResult result = pcall_chunk(L_, source, chunk_name, 0);
  if (!result.ok && !result.help_shown) throw Error(result.message);
}

int Runtime::run() {
  lua_State* L = L_;
  auto& state = *state_;
  const auto& options = state.options;

  if (!options.help) {
    if (options.out) {
      state.run_dir = *options.out;
    } else {
      state.run_dir = std::filesystem::path("runs") / options.recipe.stem() / timestamp_folder_name();
    }
    std::filesystem::create_directories(state.run_dir);
    state.write_policy.allow_tree(state.run_dir);
    log::add_text_file((state.run_dir / "log.txt").string());
    log::info("run", fmt::format("run folder {}", state.run_dir.string()), {{"run_dir", state.run_dir.string()}});
  }

  std::string source;
  try {
    source = read_file(options.recipe);
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  const ChunkResult result = pcall_chunk(L, std::move(source), "@" + options.recipe.string(), 0);
  int exit_status = 0;
  if (!result.ok && !result.help_shown) {
    std::cerr << "error: " << result.message << std::endl;
    log::event(spdlog::level::err, "recipe_failed", result.message, {});
    exit_status = 1;
  } else if (result.ok && options.help) {
    std::cout << "This recipe declares no settings.\n";
  }
  log::close_files();
  return exit_status;
}

}  // namespace ts::lua

namespace ts::lua {

void check_write(lua_State* L, const std::filesystem::path& path) { run_state(L).check_write(path); }

void check_read(lua_State* L, const std::filesystem::path& path) { run_state(L).check_read(path); }

bool given_by_user(lua_State* L, const std::string& value) { return run_state(L).given_by_user(value); }

void allow_outputs(lua_State* L) {
  auto& state = run_state(L);
  state.allow_outputs(state.setting_specs);
}

}  // namespace ts::lua
