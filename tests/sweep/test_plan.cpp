// Sweep plans: parsing the evaluated sweep file, --set overrides, expansion into jobs with stable ids.
#include <algorithm>

#include <catch2/catch.hpp>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "sweep/plan.h"
#include "sweep/slurm.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ts::sweep;

namespace {

const fs::path kSweepFile = "tests/fixtures/sweep/small_sweep.lua";  // tests run from the source root

json small_sweep() {
  return json::parse(R"({
    "methods": ["vanilla", "two_stage_reweight"],
    "grid": {"ratio": [0.2, 0.5], "seeds": [7, 42]},
    "settings": {"epochs_stage1": 1},
    "slurm": {"partition": "debug", "time": "01:00:00", "cpus_per_task": 2, "mem": "8G"},
    "report": {"x": "ratio", "metrics": ["f1_minority"], "per_class_at": {"ratio": 0.2}}
  })");
}

std::set<std::string> ids(const std::vector<Job>& jobs) {
  std::set<std::string> result;
  for (const auto& job : jobs) result.insert(job.id);
  return result;
}

}  // namespace

TEST_CASE("a grid of 2 methods x 2 ratios x 2 seeds is 8 jobs, seeds outermost") {
  const auto plan = parse_plan(small_sweep(), kSweepFile);
  REQUIRE(plan.methods.size() == 2);
  CHECK(plan.methods[0].name == "vanilla");
  CHECK(plan.methods[0].recipe == fs::weakly_canonical("tests/fixtures/sweep/vanilla.lua"));
  CHECK(plan.report.metrics == std::vector<std::string>{"f1_minority"});
  const auto jobs = expand(plan);
  REQUIRE(jobs.size() == 8);
  CHECK(ids(jobs).size() == 8);
  // Seeds turn slowest, so that the first half of a sweep covers each configuration once.
  for (size_t i = 0; i < 4; ++i) CHECK(jobs[i].settings["seeds"] == 7);
  for (size_t i = 4; i < 8; ++i) CHECK(jobs[i].settings["seeds"] == 42);
  CHECK(jobs[0].method == "vanilla");
  CHECK(jobs[0].settings == json{{"epochs_stage1", 1}, {"ratio", 0.2}, {"seeds", 7}});
  CHECK(jobs[1].settings["ratio"] == 0.5);
  CHECK(jobs[2].method == "two_stage_reweight");
  CHECK(jobs[0].id.rfind("vanilla-ratio_0.2-seeds_7-", 0) == 0);
  CHECK(jobs[0].run_dir == "jobs/" + jobs[0].id);
}

TEST_CASE("job ids depend on method and settings only, not on the order of the grid") {
  auto reordered = small_sweep();
  reordered["grid"]["ratio"] = {0.5, 0.2};
  reordered["grid"]["seeds"] = {42, 7};
  reordered["methods"] = {"two_stage_reweight", "vanilla"};
  CHECK(ids(expand(parse_plan(small_sweep(), kSweepFile))) == ids(expand(parse_plan(reordered, kSweepFile))));
  // A changed fixed setting is another job: its results must not be mistaken for the old ones.
  auto changed = small_sweep();
  changed["settings"]["epochs_stage1"] = 2;
  const auto old_ids = ids(expand(parse_plan(small_sweep(), kSweepFile)));
  for (const auto& id : ids(expand(parse_plan(changed, kSweepFile)))) CHECK(old_ids.count(id) == 0);
  CHECK(job_id("vanilla", {{"ratio", 0.2}}, {"ratio"}) == job_id("vanilla", {{"ratio", 0.2}}, {"ratio"}));
  CHECK(job_id("vanilla", {{"ratio", 0.2}}, {"ratio"}) != job_id("vanilla", {{"ratio", 0.3}}, {"ratio"}));
}

TEST_CASE("set overrides: a grid axis gets a list, methods, slurm options, any other key a recipe setting") {
  const auto plan = parse_plan(small_sweep(), kSweepFile,
                               {{"ratio", "0.1,0.3,0.7"}, {"epochs_stage1", "3"}, {"lr", "2e-5"},
                                {"methods", "vanilla"}, {"slurm.partition", "gpu"}, {"seeds", "42"}});
  REQUIRE(plan.grid.size() == 2);
  CHECK(plan.grid[0].first == "ratio");
  CHECK(plan.grid[0].second == std::vector<json>{0.1, 0.3, 0.7});
  CHECK(plan.grid[1].second == std::vector<json>{42});
  CHECK(plan.settings == json{{"epochs_stage1", 3}, {"lr", 2e-5}});
  CHECK(plan.methods.size() == 1);
  CHECK(plan.slurm["partition"] == "gpu");
  const auto jobs = expand(plan);
  CHECK(jobs.size() == 3);
  const auto arguments = job_arguments(jobs[0], "/tmp/job", 4);
  CHECK(arguments == std::vector<std::string>{"run", jobs[0].recipe_path.string(), "--set", "epochs_stage1=3", "--set",
                                              "lr=2e-05", "--set", "ratio=0.1", "--set", "seeds=42", "--out",
                                              "/tmp/job", "--threads", "4", "--quiet"});
}

TEST_CASE("method_settings go to one method's jobs, and {setting} in a text setting takes the job's value") {
  auto sweep = small_sweep();
  sweep["settings"]["note"] = "{method} at {ratio}, {unknown} and {} stay";
  sweep["method_settings"] = {{"two_stage_reweight", {{"augmented", "data/aug_{ratio}_{seeds}.csv"}}}};
  const auto jobs = expand(parse_plan(sweep, kSweepFile));
  int with_augmented = 0;
  for (const auto& job : jobs) {
    const std::string ratio = job.settings["ratio"] == 0.2 ? "0.2" : "0.5";
    CHECK(job.settings["note"] == job.method + " at " + ratio + ", {unknown} and {} stay");
    if (job.method == "two_stage_reweight") {
      ++with_augmented;
      CHECK(job.settings["augmented"] == "data/aug_" + ratio + "_" + job.settings["seeds"].dump() + ".csv");
    } else {
      CHECK_FALSE(job.settings.contains("augmented"));
    }
  }
  CHECK(with_augmented == 4);
  // From the command line: METHOD.key; a method left out of the sweep leaves its method_settings unused.
  const auto plan = parse_plan(sweep, kSweepFile, {{"vanilla.epochs_stage1", "0"}, {"methods", "vanilla"}});
  CHECK(expand(plan)[0].settings["epochs_stage1"] == 0);
  CHECK_THROWS_WITH(parse_plan(sweep, kSweepFile, {{"vanila.epochs_stage1", "0"}}),
                    Catch::Contains("'vanila' is not a method"));
  auto clash = small_sweep();
  clash["method_settings"] = {{"vanilla", {{"ratio", 0.3}}}};
  CHECK_THROWS_WITH(parse_plan(clash, kSweepFile), Catch::Contains("'ratio' is both a setting of method vanilla"));
}

TEST_CASE("parse_value reads command-line values as numbers, booleans, text and lists") {
  CHECK(parse_value("7") == json(7));
  CHECK(parse_value("0.25") == json(0.25));
  CHECK(parse_value("true") == json(true));
  CHECK(parse_value("sst2") == json("sst2"));
  CHECK(parse_value("7,42") == json::array({7, 42}));
  CHECK(parse_value("a, b") == json::array({"a", "b"}));
}

TEST_CASE("random draws are reproducible, within their ranges, and the same for every method and grid point") {
  auto sweep = small_sweep();
  sweep["random"] = json::parse(R"({"count": 4, "seed": 1, "axes": {
      "lr": {"log_uniform": [1e-5, 1e-3]}, "dropout": {"uniform": [0.0, 0.5]},
      "layers": {"int_uniform": [1, 3]}, "pooling": {"choice": ["cls", "mean"]}}})");
  const auto jobs = expand(parse_plan(sweep, kSweepFile));
  CHECK(jobs.size() == 32);
  CHECK(ids(jobs) == ids(expand(parse_plan(sweep, kSweepFile))));
  std::set<std::string> draws;
  for (const auto& job : jobs) {
    const double lr = job.settings["lr"].get<double>();
    CHECK(lr >= 1e-5);
    CHECK(lr <= 1e-3);
    CHECK(job.settings["dropout"].get<double>() <= 0.5);
    CHECK(job.settings["layers"].is_number_integer());
    CHECK(job.settings["layers"].get<int>() >= 1);
    CHECK(job.settings["layers"].get<int>() <= 3);
    CHECK((job.settings["pooling"] == "cls" || job.settings["pooling"] == "mean"));
    draws.insert(job.settings["lr"].dump() + job.settings["dropout"].dump());
  }
  CHECK(draws.size() == 4);
  // Another seed, other draws; more draws keep the first ones.
  auto reseeded = sweep;
  reseeded["random"]["seed"] = 2;
  CHECK(ids(expand(parse_plan(reseeded, kSweepFile))) != ids(jobs));
  auto more = sweep;
  more["random"]["count"] = 6;
  const auto extended = ids(expand(parse_plan(more, kSweepFile)));
  CHECK(extended.size() == 48);
  for (const auto& id : ids(jobs)) CHECK(extended.count(id) == 1);
  // --set on a random axis makes it a grid axis.
  const auto fixed = parse_plan(sweep, kSweepFile, {{"lr", "1e-4"}});
  CHECK(fixed.random_axes.size() == 3);
  CHECK(expand(fixed).size() == 32);
}

TEST_CASE("a single recipe, an explicit recipe path, and a repeated grid value") {
  const auto plan = parse_plan(json::parse(R"({"recipe": "vanilla.lua", "grid": {"ratio": [0.2, 0.2, 0.4]}})"), kSweepFile);
  CHECK(plan.methods.size() == 1);
  CHECK(plan.methods[0].name == "vanilla");
  CHECK(expand(plan).size() == 2);  // 0.2 once
  const auto grid_methods = parse_plan(json::parse(R"({"grid": {"method": ["vanilla", "two_stage_reweight"]}})"), kSweepFile);
  CHECK(grid_methods.methods.size() == 2);
  CHECK(expand(grid_methods).size() == 2);
}

TEST_CASE("sweep file mistakes are errors that name the file and the key") {
  auto check_error = [](const json& sweep, const std::string& expected, std::vector<Override> overrides = {}) {
    CHECK_THROWS_WITH(parse_plan(sweep, kSweepFile, overrides),
                      Catch::Contains(expected) && Catch::Contains(kSweepFile.string()));
  };
  check_error(json::parse(R"({"methods": ["vanilla"], "gird": {}})"), "unknown key 'gird'");
  check_error(json::parse(R"({"methods": ["no_such_method"]})"), "no recipe for method 'no_such_method'");
  check_error(json::parse(R"({"grid": {"ratio": [0.1]}})"), "names no recipe");
  check_error(json::parse(R"({"methods": ["vanilla"], "grid": {"ratio": 0.1}})"), "grid.ratio must be a non-empty list");
  check_error(json::parse(R"({"methods": ["vanilla"], "grid": {"ratio": [0.1]}, "settings": {"ratio": 0.2}})"),
              "'ratio' is both a fixed setting and an axis");
  check_error(json::parse(R"({"methods": ["vanilla"], "random": {"count": 2, "axes": {"lr": {"normal": [0, 1]}}}})"),
              "unknown distribution 'normal'");
  check_error(json::parse(R"({"methods": ["vanilla"], "random": {"count": 2, "axes": {"lr": {"log_uniform": [0, 1]}}}})"),
              "bounds must be positive");
  check_error(json::parse(R"({"methods": ["vanilla", "vanilla"]})"), "listed twice");
  check_error(json::parse(R"({"methods": ["vanilla"], "settings": {"x": {"a": 1}}})"), "settings.x");
  CHECK_THROWS_WITH(parse_plan(json::array({1}), kSweepFile), Catch::Contains("must return a table"));
}

TEST_CASE("sbatch options: resources from the sweep's slurm table") {
  const auto lines = sbatch_options(json{{"partition", "debug"}, {"time", "01:00:00"}, {"cpus_per_task", 2},
                                         {"mem", "8G"}, {"exclusive", true}, {"requeue", false}, {"max_parallel", 3}},
                                    5, "twostage-x", "/tmp/logs");
  CHECK(lines == std::vector<std::string>{"#SBATCH --array=0-4%3", "#SBATCH --cpus-per-task=2", "#SBATCH --exclusive",
                                          "#SBATCH --job-name=twostage-x", "#SBATCH --mem=8G",
                                          "#SBATCH --output=/tmp/logs/%A_%a.out", "#SBATCH --partition=debug",
                                          "#SBATCH --time=01:00:00"});
  CHECK_THROWS_WITH(sbatch_options(json{{"array", "0-3"}}, 2, "x", "/tmp"), Catch::Contains("slurm.array"));
  CHECK_THROWS_WITH(sbatch_options(json{{"Bad Key", 1}}, 2, "x", "/tmp"), Catch::Contains("slurm.Bad Key"));
}

TEST_CASE("a job learns which of its settings the sweep file wrote: those open no path and no endpoint") {
  auto sweep = small_sweep();
  sweep["method_settings"] = {{"vanilla", {{"cache", "/tmp/from_the_sweep_file"}}}};
  const auto plan = parse_plan(sweep, kSweepFile, {{"lr", "2e-5"}, {"ratio", "0.2"}, {"two_stage_reweight.out", "x"}});
  for (const auto& job : expand(plan)) {
    const auto arguments = job_arguments(job, "/tmp/job", 1);
    const auto flag = std::find(arguments.begin(), arguments.end(), "--sweep-file-settings");
    REQUIRE(flag != arguments.end());
    // lr and ratio came from the command line, and two_stage_reweight's out; everything else from the file.
    CHECK(*std::next(flag) == (job.method == "vanilla" ? "cache,epochs_stage1,seeds" : "epochs_stage1,seeds"));
  }
}
