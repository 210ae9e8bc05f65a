#include "sweep.h"

#include "core/fs.h"
#include "json.h"
#include "runtime.h"
#include "sweep/command.h"

namespace ts::lua {

nlohmann::json evaluate_sweep_file(const std::filesystem::path& sweep_file) {
  RunOptions options;
  options.recipe = sweep_file;  // puts the sweep file's folder on package.path, as for a recipe
  Runtime runtime(options);
  lua_State* L = runtime.state();
  const ChunkResult result =
      pcall_chunk(L, read_file(sweep_file), "@" + sweep_file.string(), 1, runtime.run_state().unsafe);
  if (!result.ok) throw Error(result.message);
  if (!lua_istable(L, -1)) {
    const std::string type = luaL_typename(L, -1);
    lua_pop(L, 1);
    fail("sweep file '{}' must return a table (methods, grid, settings, ...), it returned {}", sweep_file.string(),
         type);
  }
  nlohmann::json plan = to_json(L, -1);
  lua_pop(L, 1);
  return plan;
}

int sweep_command(const std::vector<std::string>& args) {
  return ts::sweep::sweep_command(args, evaluate_sweep_file);
}

}  // namespace ts::lua
