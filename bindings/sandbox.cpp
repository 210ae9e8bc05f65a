// What a recipe someone else wrote may do: no programs, no native code, no bytecode, no environment variables, and
// files only where the command line allows (check_read, check_write); and, for every recipe, no accidental globals.
//
// Every guard is a C function that keeps the original it wraps as an upvalue and decides in C++: a recipe that
// rebinds `type`, `string.find`, `select` or a function's environment changes nothing here, and `debug` is reduced
// to traceback, so no upvalue, registry or metatable of the host can be dug out again.
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>

#include "core/fs.h"
#include "runtime.h"

namespace ts::lua {
namespace {

// ---- refusals -----------------------------------------------------------------------------------------------------

int refuse(lua_State* L) {
  const char* name = lua_tostring(L, lua_upvalueindex(1));
  const char* why = lua_tostring(L, lua_upvalueindex(2));
  return luaL_error(L, "%s is refused: %s (run with --unsafe to allow it)", name, why);
}

// Replaces table[field] (the table on top of the stack) by a function that refuses with `why`.
void refuse_field(lua_State* L, const char* qualified_name, const char* field, const char* why) {
  lua_pushstring(L, qualified_name);
  lua_pushstring(L, why);
  lua_pushcclosure(L, refuse, 2);
  lua_setfield(L, -2, field);
}

// ---- files --------------------------------------------------------------------------------------------------------

// Calls the original (upvalue 1) with the arguments as given and returns what it returns.
int call_original(lua_State* L) {
  const int arguments = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, arguments, LUA_MULTRET);
  return lua_gettop(L);
}

int checked_open(lua_State* L) {
  const std::string path = check_string(L, 1);
  const char* mode = luaL_optstring(L, 2, "r");
  if (std::strpbrk(mode, "wa+")) {
    check_write(L, path);
  } else {
    check_read(L, path);
  }
  return call_original(L);
}

// io.lines(path), io.input(path): a path names a file to read; no argument means standard input.
int checked_read_path(lua_State* L) {
  if (lua_type(L, 1) == LUA_TSTRING) check_read(L, check_string(L, 1));
  return call_original(L);
}

// io.output(path): a path names a file to write.
int checked_write_path(lua_State* L) {
  if (lua_type(L, 1) == LUA_TSTRING) check_write(L, check_string(L, 1));
  return call_original(L);
}

int checked_remove(lua_State* L) {
  check_write(L, check_string(L, 1));
  return call_original(L);
}

int checked_rename(lua_State* L) {
  check_write(L, check_string(L, 1));
  check_write(L, check_string(L, 2));
  return call_original(L);
}

// ---- loading code: source text only -------------------------------------------------------------------------------

// Precompiled bytecode is not verified by LuaJIT: a changed operand reads outside the VM's memory.
constexpr const char* kTextOnly = "t";

// load(chunk [, name [, mode [, env]]]) and loadstring(text [, name]): the mode is always "t".
int text_load(lua_State* L) {
  const bool has_environment = !lua_isnoneornil(L, 4);
  lua_settop(L, 4);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushstring(L, kTextOnly);
  if (has_environment) lua_pushvalue(L, 4);
  lua_call(L, has_environment ? 4 : 3, LUA_MULTRET);
  return lua_gettop(L) - 4;
}

// Loads a file the run may read as source text: pushes the chunk and returns 0, or pushes the message.
int load_text_file(lua_State* L, const std::string& path) {
  check_read(L, path);
  std::string source, message;
  try {
    source = read_file(path);
  } catch (const std::exception& error) {
    message = error.what();
  }
  if (!message.empty()) {
    lua_pushlstring(L, message.data(), message.size());
    return LUA_ERRFILE;
  }
  return load_source(L, std::move(source), "@" + path, false);
}

// loadfile(path [, mode [, env]]): the chunk, or nil and the message.
int text_loadfile(lua_State* L) {
  const std::string path = luaL_checkstring(L, 1);  // no path would read standard input: not for a recipe
  const bool has_environment = !lua_isnoneornil(L, 3);
  if (load_text_file(L, path) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (has_environment) {
    lua_pushvalue(L, 3);
    lua_setfenv(L, -2);
  }
  return 1;
}

int text_dofile(lua_State* L) {
  const std::string path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  if (load_text_file(L, path) != 0) return lua_error(L);
  lua_call(L, 0, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

// require's searcher for Lua files (package.loaders[2]): package.path as the standard one reads it, but a file
// must be readable by the run and hold source text. The package table is upvalue 1.
int search_lua_module(lua_State* L) {
  const std::string name = luaL_checkstring(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "path");
  const char* templates = lua_tostring(L, -1);
  if (!templates) return luaL_error(L, "package.path must be a string");
  std::string file_name = name;
  for (char& c : file_name)
    if (c == '.') c = '/';
  std::string tried;
  const std::string list = templates;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(';', start);
    if (end == std::string::npos) end = list.size();
    std::string candidate = list.substr(start, end - start);
    start = end + 1;
    if (candidate.empty()) continue;
    for (size_t at = candidate.find('?'); at != std::string::npos; at = candidate.find('?', at + file_name.size()))
      candidate.replace(at, 1, file_name);
    std::FILE* probe = std::fopen(candidate.c_str(), "r");
    if (!probe) {
      tried += "\n\tno file '" + candidate + "'";
      continue;
    }
    std::fclose(probe);
    if (load_text_file(L, candidate) != 0)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name.c_str(), candidate.c_str(),
                        lua_tostring(L, -1));
    return 1;
  }
  lua_pushstring(L, tried.c_str());
  return 1;
}

int no_c_modules(lua_State* L) {
  lua_pushfstring(L, "\n\tno C module '%s' in a recipe (--unsafe allows them)", luaL_checkstring(L, 1));
  return 1;
}

// ---- installation -------------------------------------------------------------------------------------------------

// Replaces table[field] (the table at `table`) by `guard`, which gets the original as upvalue 1.
void wrap_field(lua_State* L, int table, const char* field, lua_CFunction guard) {
  lua_getfield(L, table, field);
  lua_pushcclosure(L, guard, 1);
  lua_setfield(L, table, field);
}

// Replaces the global library `name` (and package.loaded[name]) by a table of only its `kept` fields.
void keep_only(lua_State* L, int package, const char* name, std::initializer_list<const char*> kept) {
  lua_getglobal(L, name);
  lua_newtable(L);
  for (const char* field : kept) {
    lua_getfield(L, -2, field);
    lua_setfield(L, -2, field);
  }
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_setglobal(L, name);
  lua_getfield(L, package, "loaded");
  lua_insert(L, -2);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

// LuaJIT registers its `jit.*` modules in package.preload and package.loaded: jit.util hands out raw prototypes
// and native addresses, jit.attach hooks the compiler. Only the version and status remain.
void reduce_jit(lua_State* L, int package) {
  for (const char* registry : {"loaded", "preload"}) {
    lua_getfield(L, package, registry);
    for (const char* module : {"jit.util", "jit.profile", "jit.opt", "jit.vmdef", "jit.bc", "jit.dump", "jit.v"}) {
      lua_pushnil(L);
      lua_setfield(L, -2, module);
    }
    lua_pop(L, 1);
  }
  keep_only(L, package, "jit", {"version", "version_num", "status", "os", "arch"});
}

constexpr const char* kNoPrograms = "a recipe may not run programs";
constexpr const char* kNoNative = "a recipe may not load native code";
constexpr const char* kNoEnvironment =
    "a recipe may not read environment variables (the host reads the ones it needs, such as the API key)";
constexpr const char* kNoEnvironments = "a recipe may not change or read the environments of functions";

void sandbox(lua_State* L) {
  lua_getglobal(L, "io");
  const int io = lua_gettop(L);
  refuse_field(L, "io.popen", "popen", kNoPrograms);
  wrap_field(L, io, "open", guarded<checked_open>);
  wrap_field(L, io, "lines", guarded<checked_read_path>);
  wrap_field(L, io, "input", guarded<checked_read_path>);
  wrap_field(L, io, "output", guarded<checked_write_path>);
  lua_pop(L, 1);

  lua_getglobal(L, "os");
  const int os = lua_gettop(L);
  refuse_field(L, "os.execute", "execute", kNoPrograms);
  refuse_field(L, "os.getenv", "getenv", kNoEnvironment);
  refuse_field(L, "os.tmpname", "tmpname", "a recipe writes only under its run folder");
  wrap_field(L, os, "remove", guarded<checked_remove>);
  wrap_field(L, os, "rename", guarded<checked_rename>);
  lua_pop(L, 1);

  lua_pushvalue(L, LUA_GLOBALSINDEX);
  const int globals = lua_gettop(L);
  wrap_field(L, globals, "load", text_load);
  lua_getfield(L, globals, "load");  // loadstring(text, name) is load(text, name) in LuaJIT
  lua_getupvalue(L, -1, 1);
  lua_pushcclosure(L, text_load, 1);
  lua_setfield(L, globals, "loadstring");
  lua_pop(L, 1);
  lua_pushcfunction(L, guarded<text_loadfile>);
  lua_setfield(L, globals, "loadfile");
  lua_pushcfunction(L, guarded<text_dofile>);
  lua_setfield(L, globals, "dofile");
  refuse_field(L, "setfenv", "setfenv", kNoEnvironments);
  refuse_field(L, "getfenv", "getfenv", kNoEnvironments);
  lua_pop(L, 1);

  lua_getglobal(L, "package");
  const int package = lua_gettop(L);
  refuse_field(L, "package.loadlib", "loadlib", kNoNative);
  lua_pushliteral(L, "");
  lua_setfield(L, package, "cpath");
  lua_getfield(L, package, "loaders");
  lua_pushvalue(L, package);
  lua_pushcclosure(L, guarded<search_lua_module>, 1);
  lua_rawseti(L, -2, 2);
  lua_pushcfunction(L, no_c_modules);
  lua_rawseti(L, -2, 3);
  lua_pushcfunction(L, no_c_modules);
  lua_rawseti(L, -2, 4);
  lua_pop(L, 1);
  lua_getfield(L, package, "preload");
  refuse_field(L, "require 'ffi'", "ffi", "LuaJIT's FFI calls native code");
  lua_pop(L, 1);
  lua_getfield(L, package, "loaded");
  lua_pushnil(L);
  lua_setfield(L, -2, "ffi");
  lua_pop(L, 1);
  reduce_jit(L, package);

  keep_only(L, package, "debug", {"traceback"});
  lua_pop(L, 1);  // package
}

// The recipe's own code runs with _G guarded against misspelt names; the host never relies on this table.
constexpr const char* kStrictGlobals = R"lua(
setmetatable(_G, {
  __newindex = function(_, name)
    error("assignment to undeclared global '" .. tostring(name) .. "' (declare it with local)", 2)
  end,
  __index = function(_, name)
    error("undeclared global '" .. tostring(name) .. "'", 2)
  end,
})
)lua";

}  // namespace

void install_sandbox(lua_State* L, bool unsafe) {
  if (!unsafe) sandbox(L);
}

void install_strict_globals(lua_State* L) {
  if (load_source(L, kStrictGlobals, "=strict", false) != 0 || lua_pcall(L, 0, 0, 0) != 0) {
    std::string message = lua_tostring(L, -1);
    lua_pop(L, 1);
    fail("{}", message);
  }
}

}  // namespace ts::lua
