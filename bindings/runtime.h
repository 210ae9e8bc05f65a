#pragma once
// The recipe runner: the Lua state that runs a recipe (sandbox, strict globals, `require` paths), its run folder and
// settings, and the run's path rules (host's RunAccess) as bindings reach them. Bindings that only bind a type need
// bindings/toolkit.h alone.
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <lua.hpp>

#include "core/run_access.h"
#include "core/settings.h"
#include "toolkit.h"

namespace ts::lua {

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
[[noreturn]] inline void stop_after_help(lua_State* L) { stop_quietly(L); }

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
