#pragma once
// `twostage sweep`: the sweep file is Lua, evaluated here into a plain table; host/sweep does the rest.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts::lua {

// Runs SWEEP.lua in a sandboxed Lua state (the same library as recipes: `require "twostage"` works, writing files
// does not) and returns the table it returns as JSON. Throws ts::Error with the Lua message and traceback.
nlohmann::json evaluate_sweep_file(const std::filesystem::path& sweep_file);

// twostage sweep ... (see ts::sweep::sweep_command)
int sweep_command(const std::vector<std::string>& args);

}  // namespace ts::lua
