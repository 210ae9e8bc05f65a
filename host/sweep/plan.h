#pragma once
// A sweep plan and its jobs. The sweep file (Lua, evaluated by bindings/sweep.cpp) arrives here as JSON:
//
//   { "methods":  ["vanilla", "two_stage_reweight"]      -- recipes <method>.lua, or paths ending in .lua
//     "recipe":   "recipes/vanilla.lua"                  -- instead of methods: one recipe
//     "grid":     { "ratio": [0.1, 0.2], "seeds": [7, 42] }            -- every combination
//     "random":   { "count": 4, "seed": 1, "axes": { "lr": {"log_uniform": [1e-5, 1e-3]} } }
//     "settings": { "epochs_stage1": 1 }                 -- the same for every job
//     "method_settings": { "two_stage_augment": { "augmented": "data/sst2/aug_{ratio}.csv" } }  -- one method's jobs
//     "slurm":    { "partition": "debug", "time": "01:00:00", "cpus_per_task": 2, "mem": "8G" }
//     "report":   { "x": "ratio", "metrics": ["f1_minority", "macro_f1"], "per_class_at": {"ratio": 0.2} } }
//
// A text setting may name another setting of its job in braces ("{ratio}", also "{method}"): each job gets the text
// with that setting's value in its place; braces around anything else are left as they are.
//
// Jobs are methods × grid combinations × random draws. A job's id is stable: it depends only on its method and
// settings (never on the order of the grid), so a sweep run again, extended, or resumed finds its finished jobs.
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/results_store.h"

namespace ts::sweep {

struct Method {
  std::string name;                   // "vanilla", or the stem of an explicit recipe path
  std::filesystem::path recipe;       // absolute path of the recipe file
};

// One random axis: {"uniform": [a, b]}, {"log_uniform": [a, b]} (a, b > 0), {"int_uniform": [a, b]} (inclusive),
// or {"choice": [v1, v2, ...]}.
struct RandomAxis {
  std::string name;
  std::string distribution;
  nlohmann::json arguments;  // the array after the distribution's name
};

struct ReportOptions {
  std::string x = "ratio";                                       // the plots' x axis
  std::vector<std::string> metrics = {"f1_minority", "macro_f1"};
  nlohmann::json per_class_at = nlohmann::json::object();        // {setting: value}; empty: the smallest x
  // The tables' groups; empty: every setting that varies except the seeds. A setting that varies only where it
  // changes nothing (a stage-1 rate of vanilla's jobs) would otherwise split the table.
  std::vector<std::string> group_by;
};

struct SweepPlan {
  std::filesystem::path sweep_file;
  std::string name;                                              // the sweep file's stem
  std::string description;  // what the sweep runs, in a sentence or two: printed when it starts
  std::vector<Method> methods;
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> grid;  // axes in name order
  int random_count = 0;
  std::uint64_t random_seed = 0;
  std::vector<RandomAxis> random_axes;                           // in name order
  nlohmann::json settings = nlohmann::json::object();            // fixed settings
  nlohmann::json method_settings = nlohmann::json::object();     // method -> settings of its jobs only
  nlohmann::json slurm = nlohmann::json::object();               // sbatch options
  // What the user set with --set (a key, or METHOD.key for one method's jobs); every other value comes from the
  // sweep file, which is trusted no more than a recipe: it opens no path and no endpoint to the job.
  std::set<std::string> set_by_user;
  ReportOptions report;
  nlohmann::json source;                                         // the sweep as evaluated, for plan.json
};

// A `--set key=value` of the sweep command, in command-line order.
using Override = std::pair<std::string, std::string>;

// Reads the evaluated sweep file, then applies `overrides`: a grid or random axis, `methods` or `recipe` gets the
// comma-separated list; `slurm.KEY` sets an sbatch option; `METHOD.KEY` a setting of that method's jobs; any other
// key sets a fixed recipe setting. Recipes are
// looked up beside the sweep file, then in ./recipes/, then in the installed recipes folder. Throws ts::Error
// naming the sweep file and the key at fault.
SweepPlan parse_plan(const nlohmann::json& sweep, const std::filesystem::path& sweep_file,
                     const std::vector<Override>& overrides = {});

// A value as typed on the command line: `true`/`false`, an integer, a number, or text; with commas, a list of those.
nlohmann::json parse_value(const std::string& text);

// A job of the plan. run_dir is relative to the sweep folder ("jobs/<id>").
struct Job : store::JobSpec {
  std::filesystem::path recipe_path;     // absolute
  std::vector<std::string> varying;      // the grid and random axes, for the job's name
  std::vector<std::string> sweep_file_settings;  // settings whose values the sweep file wrote, not the user
};

// Every job of the plan, in run order: seeds axes outermost (so that a partial sweep covers every configuration
// once early), then methods, then the other axes. Throws if two jobs would be the same.
std::vector<Job> expand(const SweepPlan& plan);

// The arguments after the executable: run RECIPE --set k=v ... [--sweep-file-settings k,...] --out DIR --threads T
// --quiet
std::vector<std::string> job_arguments(const Job& job, const std::filesystem::path& job_dir, int threads);

// The job's id: method, the varying settings, and 8 hex digits of a hash of method and all settings.
std::string job_id(const std::string& method, const nlohmann::json& settings, const std::vector<std::string>& varying);

// The plan and its jobs as plan.json records them.
nlohmann::json plan_json(const SweepPlan& plan, const std::vector<Job>& jobs);

}  // namespace ts::sweep
