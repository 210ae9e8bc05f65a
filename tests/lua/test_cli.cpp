// The twostage executable as a user runs it.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <twostage/build_info.h>

#include <nlohmann/json.hpp>

#include "lua/executable.h"

namespace {

using ts::testing::Result;

Result run(const std::string& arguments) { return ts::testing::run_twostage(arguments); }

std::filesystem::path temporary(const std::string& name) {
  auto folder = std::filesystem::temp_directory_path() / ("twostage-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  return folder / name;
}

}  // namespace

TEST_CASE("a recipe whose line 3 calls an undefined function reports recipe.lua:3 and fails") {
  const auto recipe = temporary("broken_recipe.lua");
  std::ofstream(recipe) << "local ts = require \"twostage\"\nlocal n = 1\nnot_a_function(n)\n";
  const auto result = run("run " + recipe.string() + " --out " + temporary("broken_out").string());
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("broken_recipe.lua:3: undeclared global 'not_a_function'"));
  CHECK_THAT(result.output, Catch::Contains("stack traceback"));
}

TEST_CASE("twostage --version names twostage, LibTorch, LuaJIT and the BLAS") {
  const auto result = run("--version");
  CHECK(result.status == 0);
  CHECK_THAT(result.output, Catch::Contains("twostage") && Catch::Contains("LibTorch") &&
                                Catch::Contains("LuaJIT") && Catch::Contains("BLAS"));
}

TEST_CASE("twostage --version says whether CUDA is compiled in, --device cuda without a GPU is a one-line error") {
  const auto version = run("--version");
  CHECK_THAT(version.output, Catch::Contains(TWOSTAGE_TORCH_HAS_CUDA ? "(CUDA compiled in; " : "(CPU only: no CUDA"));
  if (version.output.find("GPU(s) visible") != std::string::npos) return;  // a machine with a GPU runs it
  const std::string out = (std::filesystem::temp_directory_path() / "twostage_test_cuda_run").string();
  const auto expected = TWOSTAGE_TORCH_HAS_CUDA ? "has CUDA, but no GPU is visible" : "has no CUDA";
  auto result = run("run recipes/vanilla.lua --device cuda --quiet --out " + out);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::StartsWith("error: --device cuda: ") && Catch::Contains(expected));
  CHECK(std::count(result.output.begin(), result.output.end(), '\n') == 1);
  // A recipe's own device setting goes through the same check, inside the recipe's error report.
  result = run("run recipes/vanilla.lua --set device=cuda:1 --set seeds=7 --quiet --out " + out);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("--device cuda:1: ") && Catch::Contains(expected));
  std::filesystem::remove_all(out);
}

TEST_CASE("run --help lists a recipe's settings, a bad --set fails with the known keys") {
  const auto help = run("run recipes/hello_tensors.lua --help");
  CHECK(help.status == 0);
  CHECK_THAT(help.output, Catch::Contains("rows") && Catch::Contains("rows of the random matrix"));
  const auto bad = run("run recipes/hello_tensors.lua --set colums=3 --out " + temporary("bad_set").string());
  CHECK(bad.status != 0);
  CHECK_THAT(bad.output, Catch::Contains("unknown setting 'colums'") && Catch::Contains("rows, seed"));
  const auto out = temporary("hello");
  const auto good = run("run recipes/hello_tensors.lua --set rows=5 --out " + out.string());
  CHECK(good.status == 0);
  CHECK(std::filesystem::exists(out / "result.json"));
  CHECK(std::filesystem::exists(out / "log.txt"));
}

TEST_CASE("tokenize prints Hugging Face's ids a line") {
  const auto input = temporary("texts.txt");
  std::ofstream(input) << "Hello, world!\n\n";
  const auto result = run("tokenize --vocab ../shared/data/vocab/bert-base-uncased < " + input.string());
  CHECK(result.status == 0);
  CHECK(result.output == "101 7592 1010 2088 999 102\n101 102\n");
}

TEST_CASE("predict writes transformers' logits for the golden classifier") {
  const auto output = temporary("predictions.csv");
  const auto result = run("predict --model ../shared/golden/bert-classifier --input "
                          "../shared/golden/bert-classifier/inputs.tsv --text-column sentence --batch-size 7 --output " +
                          output.string());
  REQUIRE(result.status == 0);
  std::ifstream csv(output);
  std::string line;
  std::getline(csv, line);
  CHECK(line == "index,prediction,logit_0,logit_1,logit_2");
  std::ifstream expected_file("../shared/golden/bert-classifier/expected.jsonl");
  int rows = 0;
  while (std::getline(csv, line)) {
    std::string expected_line;
    REQUIRE(std::getline(expected_file, expected_line));
    const auto expected = nlohmann::json::parse(expected_line);
    std::vector<std::string> fields;
    std::stringstream split(line);
    std::string field;
    while (std::getline(split, field, ',')) fields.push_back(field);
    REQUIRE(fields.size() == 5);
    CHECK(std::stoi(fields[0]) == rows);
    int best = 0;
    for (int c = 0; c < 3; ++c) {
      CHECK(std::stod(fields[2 + c]) == Approx(expected["logits"][c].get<double>()).margin(1e-4));
      if (expected["logits"][c] > expected["logits"][best]) best = c;
    }
    CHECK(std::stoi(fields[1]) == best);
    ++rows;
  }
  CHECK(rows == 40);
  const auto missing = run("predict --model ../shared/golden/bert-classifier --input nowhere.csv --text-column x");
  CHECK(missing.status != 0);
  CHECK_THAT(missing.output, Catch::Contains("nowhere.csv"));
}

TEST_CASE("logging: --log-json writes the run's events as JSON lines") {
  const auto log = temporary("events.jsonl");
  std::filesystem::remove(log);
  const auto result = run("run recipes/hello_tensors.lua --quiet --log-json " + log.string() + " --out " +
                          temporary("json_out").string());
  REQUIRE(result.status == 0);
  std::ifstream lines(log);
  std::string line;
  std::set<std::string> events;
  while (std::getline(lines, line)) {
    const auto event = nlohmann::json::parse(line);
    CHECK(event.contains("time"));
    CHECK(event.contains("level"));
    events.insert(event["event"].get<std::string>());
  }
  CHECK(events.count("threads") == 1);
  CHECK(events.count("settings") == 1);
  CHECK(events.count("run") == 1);
}

TEST_CASE("the shipped sweep files plan their grids") {
  const std::pair<std::string, int> sweeps[] = {{"recipes/sweep_paper.lua", 7 * 3 * 5},
                                                 {"recipes/sweep_multiclass.lua", 3 * 3 * 3},
                                                 {"recipes/sweep_init.lua", 2 * 2 * 3}};
  for (const auto& [file, jobs] : sweeps) {
    const auto out = temporary("plan_" + std::filesystem::path(file).stem().string());
    const auto result = run("sweep " + file + " --dry-run --out " + out.string());
    INFO(result.output);
    CHECK(result.status == 0);
    CHECK_THAT(result.output, Catch::StartsWith(std::to_string(jobs) + " jobs in "));
    CHECK_FALSE(std::filesystem::exists(out));  // a dry run writes nothing
  }
}

TEST_CASE("threads: twostage restarts itself with passive OpenMP threads, then torch and OpenBLAS share the cores") {
  if (run("--version").output.find("\nBLAS OpenBLAS") == std::string::npos) {
    // Official LibTorch 2.x links MKL, which follows torch's own thread pool: nothing to split.
    const auto shared = run("run recipes/hello_tensors.lua --threads 2 --out " + temporary("threads_mkl").string());
    CHECK(shared.status == 0);
    CHECK_THAT(shared.output, Catch::Contains("threads: torch 2, BLAS shared"));
    return;
  }
  const char* saved = std::getenv("OMP_WAIT_POLICY");
  const std::string saved_value = saved ? saved : "";
  ::unsetenv("OMP_WAIT_POLICY");
  const auto passive = run("run recipes/hello_tensors.lua --threads 2 --out " + temporary("threads_passive").string());
  ::setenv("OMP_WAIT_POLICY", "active", 1);
  const auto active = run("run recipes/hello_tensors.lua --threads 2 --out " + temporary("threads_active").string());
  if (saved) ::setenv("OMP_WAIT_POLICY", saved_value.c_str(), 1);
  else ::unsetenv("OMP_WAIT_POLICY");
  CHECK(passive.status == 0);
  CHECK_THAT(passive.output, Catch::Contains("threads: torch 2, BLAS 2"));
  CHECK(active.status == 0);  // a policy the user set is kept, and torch then keeps to one thread
  CHECK_THAT(active.output, Catch::Contains("threads: torch 1, BLAS 2"));
}

namespace {

// `twostage --version` with OPENBLAS_CORETYPE set to `coretype` (unset when empty) and `flags`.
Result version_with_coretype(const std::string& coretype, const std::string& flags) {
  const char* saved = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved_value = saved ? saved : "";
  if (coretype.empty()) ::unsetenv("OPENBLAS_CORETYPE");
  else ::setenv("OPENBLAS_CORETYPE", coretype.c_str(), 1);
  const auto result = run("--version " + flags);
  if (saved) ::setenv("OPENBLAS_CORETYPE", saved_value.c_str(), 1);
  else ::unsetenv("OPENBLAS_CORETYPE");
  return result;
}

}  // namespace

TEST_CASE("BLAS kernels: the user's OPENBLAS_CORETYPE is respected, --blas-core as-is and NAME obeyed") {
  if (run("--version").output.find("\nBLAS OpenBLAS") == std::string::npos) {
    WARN("the BLAS is not OpenBLAS: no kernel choice to test");
    return;
  }
  // Prescott's kernels run on any x86-64 CPU, so the test can force them anywhere.
  auto result = version_with_coretype("Prescott", "");
  INFO(result.output);
  CHECK(result.status == 0);
  CHECK_THAT(result.output, Catch::Contains("BLAS kernels Prescott (OPENBLAS_CORETYPE=Prescott set by the user"));
  result = version_with_coretype("Prescott", "--blas-core as-is");
  CHECK_THAT(result.output, Catch::Contains("BLAS kernels Prescott (OPENBLAS_CORETYPE=Prescott as set"));
  result = version_with_coretype("", "--blas-core as-is");
  CHECK_THAT(result.output, Catch::Contains("OpenBLAS's own choice, --blas-core as-is"));
  const bool openblas_runs_prescott = result.output.find("BLAS kernels Prescott (") != std::string::npos;
  result = version_with_coretype("", "--blas-core Prescott");
  if (openblas_runs_prescott)  // what OpenBLAS chose already: nothing to set, so no restart to verify
    CHECK_THAT(result.output, Catch::Contains("BLAS kernels Prescott (--blas-core Prescott)"));
  else
    CHECK_THAT(result.output, Catch::Contains("BLAS kernels Prescott (chosen by twostage: --blas-core Prescott; "
                                              "sgemm verified"));
  result = version_with_coretype("", "--blas-core nonsense");
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("--blas-core nonsense: expected auto, as-is or an OpenBLAS core type"));
}
