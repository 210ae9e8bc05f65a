#include "runtime.h"

#include <chrono>
#include <ctime>
#include <iostream>

#include <twostage/build_info.h>

#include "core/fs.h"
#include "core/log.h"

namespace ts::lua {

namespace {

const char kRunStateKey = 0;

}  // namespace

RunState& run_state(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kRunStateKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  auto* state = static_cast<RunState*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (!state) fail("no run state in this Lua state");
  return *state;
}

// The path rules are host's (core/run_access.h); bindings reach them through the Lua state.
void check_write(lua_State* L, const std::filesystem::path& path) { run_state(L).check_write(path); }

void check_read(lua_State* L, const std::filesystem::path& path) { run_state(L).check_read(path); }

bool given_by_user(lua_State* L, const std::string& value) { return run_state(L).given_by_user(value); }

void allow_outputs(lua_State* L) {
  auto& state = run_state(L);
  state.allow_outputs(state.setting_specs);
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
  const ChunkResult result = pcall_chunk(L_, source, chunk_name, 0, state_->unsafe);
  if (!result.ok && !result.stopped) throw Error(result.message);
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
  const ChunkResult result = pcall_chunk(L, std::move(source), "@" + options.recipe.string(), 0, state.unsafe);
  int exit_status = 0;
  if (!result.ok && !result.stopped) {
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
