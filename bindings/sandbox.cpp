// What a recipe someone else wrote may do: no programs, no native code, writes only where the command line allows;
// and, for every recipe, no accidental globals.
#include <cstring>

#include "runtime.h"

namespace ts::lua {
namespace {

// Runs with the original functions as upvalues; `debug` is reduced to traceback so that no recipe can dig them out
// again (debug.getupvalue, debug.getregistry).
constexpr const char* kSandbox = R"lua(
local check_write, unsafe = ...
local function refuse(name)
  return function()
    error(name .. " is refused: a recipe may not run programs or load native code (run with --unsafe to allow it)", 2)
  end
end
if unsafe then return end

os.execute = refuse("os.execute")
io.popen = refuse("io.popen")
package.loadlib = refuse("package.loadlib")
package.cpath = ""
local function no_c_modules(name)
  return "\n\tno C module '" .. name .. "' in a recipe (--unsafe allows them)"
end
package.loaders[3] = no_c_modules
package.loaders[4] = no_c_modules
package.preload.ffi = function() error("require 'ffi' is refused: LuaJIT's FFI calls native code (--unsafe allows it)", 3) end
package.loaded.ffi = nil

-- Precompiled bytecode can break out of the VM's safety checks: only source text loads.
local raw_load, raw_loadfile = load, loadfile
load = function(chunk, name, mode, ...)
  if select("#", ...) > 0 then return raw_load(chunk, name, "t", ...) end
  return raw_load(chunk, name, "t")
end
loadstring = function(text, name) return raw_load(text, name, "t") end
loadfile = function(path, mode, ...)
  if select("#", ...) > 0 then return raw_loadfile(path, "t", ...) end
  return raw_loadfile(path, "t")
end
dofile = function(path)
  local chunk = assert(raw_loadfile(path, "t"))
  return chunk()
end

local raw_open, raw_output, raw_remove, raw_rename = io.open, io.output, os.remove, os.rename
io.open = function(path, mode)
  if type(mode) == "string" and mode:find("[wa+]") then check_write(path) end
  return raw_open(path, mode)
end
io.output = function(file)
  if type(file) == "string" then check_write(file) end
  return raw_output(file)
end
os.remove = function(path) check_write(path); return raw_remove(path) end
os.rename = function(from, to) check_write(from); check_write(to); return raw_rename(from, to) end
os.tmpname = refuse("os.tmpname")

debug = { traceback = debug.traceback }
package.loaded.debug = debug
)lua";

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

int lua_check_write(lua_State* L) {
  check_write(L, check_string(L, 1));
  return 0;
}

void run_chunk(lua_State* L, const char* source, const char* name, int arguments) {
  if (luaL_loadbuffer(L, source, std::strlen(source), name) != 0) fail("{}", lua_tostring(L, -1));
  lua_insert(L, -(arguments + 1));
  if (lua_pcall(L, arguments, 0, 0) != 0) {
    std::string message = lua_tostring(L, -1);
    lua_pop(L, 1);
    fail("{}", message);
  }
}

}  // namespace

void install_sandbox(lua_State* L, bool unsafe) {
  lua_pushcfunction(L, guarded<lua_check_write>);
  lua_pushboolean(L, unsafe);
  run_chunk(L, kSandbox, "=sandbox", 2);
}

void install_strict_globals(lua_State* L) { run_chunk(L, kStrictGlobals, "=strict", 0); }

}  // namespace ts::lua
