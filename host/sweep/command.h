#pragma once
// `twostage sweep` and `twostage results`. The sweep file is Lua: the caller (bindings/sweep.cpp) passes the function
// that evaluates it to JSON, so this library stays free of Lua.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts::sweep {

using EvaluateSweepFile = std::function<nlohmann::json(const std::filesystem::path&)>;

// twostage sweep SWEEP.lua [--set key=value]... [--out DIR] [--jobs N] [--emit slurm | --collect | --dry-run]
// Returns the exit status: 0 when every job is done (or the script was written, or the folders collected),
// 1 when a job failed, 2 for a usage error.
int sweep_command(const std::vector<std::string>& args, const EvaluateSweepFile& evaluate);

// twostage results PATH [--group-by KEY,...] [--metric NAME,...] [--csv FILE] [--all]
int results_command(const std::vector<std::string>& args);

extern const char* const kSweepUsage;
extern const char* const kResultsUsage;

}  // namespace ts::sweep
