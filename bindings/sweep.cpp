#include "sweep.h"

#include "core/fs.h"
#include "json.h"
#include "runtime.h"
#include "sweep/command.h"

namespace ts::lua {

namespace {

int traceback(lua_State* L) {
  const char* message = lua_tostring(L, 1);
  luaL_traceback(L, L, message ? message : "(error object is not a string)", 1);
  return 1;
}

}  // namespace

nlohmann::json evaluate_sweep_file(const std::filesystem::path& sweep_file) {
  RunOptions options;
  options.recipe = sweep_file;  // puts the sweep file's folder on package.path, as for a recipe
  Runtime runtime(options);
  lua_State* L = runtime.state();
  lua_pushcfunction(L, traceback);
  const int handler = lua_gettop(L);
  std::string source = read_file(sweep_file);
  if (source.rfind("#!", 0) == 0) source.insert(0, "--");
  const std::string chunk_name = "@" + sweep_file.string();
  int status = luaL_loadbuffer(L, source.data(), source.size(), chunk_name.c_str());
  if (status == 0) status = lua_pcall(L, 0, 1, handler);
  if (status != 0) {
    const std::string message = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)";
    lua_settop(L, handler - 1);
    throw Error(message);
  }
  if (!lua_istable(L, -1)) {
    const std::string type = luaL_typename(L, -1);
    lua_settop(L, handler - 1);
    fail("sweep file '{}' must return a table (methods, grid, settings, ...), it returned {}", sweep_file.string(),
         type);
  }
  nlohmann::json plan = to_json(L, -1);
  lua_settop(L, handler - 1);
  return plan;
}

int sweep_command(const std::vector<std::string>& args) {
  return ts::sweep::sweep_command(args, evaluate_sweep_file);
}

}  // namespace ts::lua
