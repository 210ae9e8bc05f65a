// The sandbox against a hostile recipe: each hole of issue 24 as the attack that used it
// (tests/lua/fixtures/attacks/), run through the executable as a user would run a recipe someone sent them.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/fs.h"
#include "llm/fake_server.h"
#include "lua/executable.h"

namespace fs = std::filesystem;

namespace {

const fs::path kAttacks = "tests/lua/fixtures/attacks";
constexpr const char* kKey = "sk-sandbox-test-key-0123456789";
constexpr const char* kSecret = "the user's secret line";

// SCRATCH/run is the attack's run folder; SCRATCH/secret.txt a file it must not read; SCRATCH/escaped.txt a file it
// must not write.
struct Scratch {
  fs::path root;
  explicit Scratch(const std::string& name)
      : root(fs::temp_directory_path() / ("twostage-sandbox-" + std::to_string(::getpid())) / name) {
    fs::remove_all(root);
    fs::create_directories(root);
    std::ofstream(root / "secret.txt") << kSecret << "\n";
  }
  fs::path run() const { return root / "run"; }
  bool escaped() const { return fs::exists(root / "escaped.txt"); }
  std::string stolen() const { return fs::exists(run() / "stolen.txt") ? ts::read_file(run() / "stolen.txt") : ""; }
};

ts::testing::Result attack(const std::string& recipe, const Scratch& scratch, const std::string& extra = "") {
  ::setenv("OPENAI_API_KEY", kKey, 1);
  auto result = ts::testing::run_twostage("run " + (kAttacks / recipe).string() + " --quiet --out " +
                                          scratch.run().string() + " " + extra);
  ::unsetenv("OPENAI_API_KEY");
  return result;
}

}  // namespace

TEST_CASE("sandbox, hole 1: rebinding string.find, type or io.open's environment does not open writes", "[sandbox]") {
  for (const char* recipe :
       {"write_after_rebinding_find.lua", "write_after_rebinding_type.lua", "write_after_setfenv.lua"}) {
    INFO(recipe);
    Scratch scratch(recipe);
    const auto result = attack(recipe, scratch);
    INFO(result.output);
    CHECK(result.status == 1);
    CHECK_FALSE(scratch.escaped());
    if (std::string(recipe) == "write_after_setfenv.lua") {
      CHECK_THAT(result.output, Catch::Contains("setfenv is refused"));
    } else {
      CHECK_THAT(result.output, Catch::Contains("refused to write"));
    }
  }
}

TEST_CASE("sandbox, hole 1: a host object's metatable is out of reach, so __gc cannot run twice", "[sandbox]") {
  Scratch scratch("gc");
  const auto result = attack("call_gc_twice.lua", scratch);
  INFO(result.output);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("__gc"));
  CHECK(scratch.stolen().empty());
}

TEST_CASE("sandbox, hole 1: a sweep file cannot write while it is evaluated (--dry-run)", "[sandbox]") {
  const fs::path escaped = "/tmp/twostage-sweep-attack-escaped.txt";
  fs::remove(escaped);
  Scratch scratch("sweep");
  const auto result = ts::testing::run_twostage("sweep " + (kAttacks / "sweep_writes_anywhere.lua").string() +
                                                " --dry-run --out " + (scratch.root / "sweep").string());
  INFO(result.output);
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("refused to write"));
  CHECK_FALSE(fs::exists(escaped));
}

TEST_CASE("sandbox, hole 2: no environment variable and no file outside the allowed places can be read",
          "[sandbox]") {
  SECTION("the API key") {
    Scratch scratch("key");
    const auto result = attack("read_api_key.lua", scratch);
    INFO(result.output);
    CHECK(result.status == 1);
    CHECK_THAT(result.output, Catch::Contains("os.getenv is refused"));
    CHECK(scratch.stolen().find(kKey) == std::string::npos);
  }
  for (const char* via : {"read_file", "io_open", "io_lines", "loadfile", "require"}) {
    SECTION(std::string("a file, by ") + via) {
      Scratch scratch(std::string("secret-") + via);
      const auto result = attack("read_secret_file.lua", scratch, std::string("--set via=") + via);
      INFO(result.output);
      CHECK_THAT(result.output + scratch.stolen(), Catch::Contains("refused to read"));  // require's error is caught
      CHECK(result.output.find(kSecret) == std::string::npos);
      CHECK(scratch.stolen().find(kSecret) == std::string::npos);
    }
  }
}

TEST_CASE("sandbox, hole 2: the LLM client talks only to an endpoint the user named", "[sandbox]") {
  ts::llm::testing::FakeServer capture;
  const std::string url = "http://127.0.0.1:" + std::to_string(capture.port()) + "/v1";

  SECTION("a URL the recipe built is refused, and the server hears nothing") {
    Scratch scratch("endpoint-built");
    const auto result = attack("send_to_own_server.lua", scratch, "--set port=" + std::to_string(capture.port()));
    INFO(result.output);
    CHECK(result.status == 1);
    CHECK_THAT(result.output, Catch::Contains("refused to send requests to '" + url + "'"));
    CHECK(capture.total_requests() == 0);
    CHECK(result.output.find(kKey) == std::string::npos);
  }
  SECTION("a recipe's own default is refused, naming the setting") {
    Scratch scratch("endpoint-default");
    const auto result = attack("send_to_own_default.lua", scratch);
    INFO(result.output);
    CHECK(result.status == 1);
    CHECK_THAT(result.output, Catch::Contains("the recipe's own value of setting 'base_url'"));
  }
  SECTION("the same URL given on the command line is used") {
    Scratch scratch("endpoint-given");
    const auto result = attack("send_to_own_default.lua", scratch, "--set base_url=" + url);
    INFO(result.output);
    CHECK(result.status == 0);
    CHECK(capture.total_requests() == 1);
  }
}

TEST_CASE("sandbox, hole 3: bytecode never loads, intact or mutated, as a module, a recipe or a sweep file",
          "[sandbox]") {
  for (const char* mutate : {"false", "true"}) {
    INFO("mutated: " << mutate);
    Scratch scratch(std::string("bytecode-") + mutate);
    const auto result = attack("require_bytecode.lua", scratch, std::string("--set mutate=") + mutate);
    INFO(result.output);
    CHECK(result.status == 1);  // an error, never a crash (a signal gives -1)
    CHECK_THAT(result.output, Catch::Contains("precompiled bytecode is refused"));
    CHECK(scratch.stolen().empty());
  }

  Scratch scratch("bytecode-recipe");
  const auto made = ts::testing::run_twostage("run " + (kAttacks / "make_bytecode.lua").string() +
                                              " --unsafe --quiet --out " + (scratch.root / "maker").string());
  REQUIRE(made.status == 0);
  const auto bytecode = scratch.root / "maker" / "bytecode_recipe.lua";
  REQUIRE(ts::read_file(bytecode).rfind("\x1bLJ", 0) == 0);
  auto result = ts::testing::run_twostage("run " + bytecode.string() + " --quiet --out " + scratch.run().string());
  INFO(result.output);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("precompiled bytecode is refused"));
  CHECK(scratch.stolen().empty());

  result = ts::testing::run_twostage("sweep " + bytecode.string() + " --dry-run --out " +
                                     (scratch.root / "sweep").string());
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("precompiled bytecode is refused"));

  // --unsafe is the user's word that they trust the file.
  result = ts::testing::run_twostage("run " + bytecode.string() + " --unsafe --quiet --out " + scratch.run().string());
  CHECK(result.status == 0);
  CHECK(scratch.stolen() == "bytecode recipe ran");
}

TEST_CASE("sandbox, hole 3: jit.util and the compiler's hooks are gone", "[sandbox]") {
  Scratch scratch("jit");
  const auto result = attack("jit_util.lua", scratch);
  INFO(result.output);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("module 'jit.util' not found"));
  CHECK(scratch.stolen().empty());
}

TEST_CASE("sandbox, hole 4: files and folders named by --set are read-only inputs", "[sandbox]") {
  Scratch scratch("inputs");
  const auto model = scratch.root / "model";
  fs::create_directories(model);
  std::ofstream(model / "config.json") << "{\"hidden_size\": 8}";
  const auto train = scratch.root / "train.tsv";
  std::ofstream(train) << "sentence\tlabel\nfine\t1\n";
  const auto result =
      attack("overwrite_inputs.lua", scratch, "--set model=" + model.string() + " --set train=" + train.string());
  INFO(result.output);
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("refused to write '" + (model / "config.json").string() + "'"));
  CHECK(ts::read_file(model / "config.json") == "{\"hidden_size\": 8}");
  CHECK(ts::read_file(train) == "sentence\tlabel\nfine\t1\n");
}

TEST_CASE("sandbox: an output setting is writable only when the user gave its path", "[sandbox]") {
  Scratch scratch("outputs");
  const auto recipe = scratch.root / "writes_output.lua";
  std::ofstream(recipe) << "local ts = require 'twostage'\n"
                           "local s = ts.settings { out = { '', 'where to write', output = true } }\n"
                           "ts.write_file(s.out ~= '' and s.out or (ts.run_dir() .. '/../escaped.txt'), 'x')\n";
  const auto given = scratch.root / "given.txt";
  auto result = ts::testing::run_twostage("run " + recipe.string() + " --quiet --out " + scratch.run().string() +
                                          " --set out=" + given.string());
  CHECK(result.status == 0);
  CHECK(fs::exists(given));

  result = ts::testing::run_twostage("run " + recipe.string() + " --quiet --out " + scratch.run().string());
  CHECK(result.status == 1);
  CHECK_FALSE(scratch.escaped());

  // The same value written by a sweep file is not the user's word.
  fs::remove(given);
  result = ts::testing::run_twostage("run " + recipe.string() + " --quiet --out " + scratch.run().string() +
                                     " --set out=" + given.string() + " --sweep-file-settings out");
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("refused to write"));
  CHECK_FALSE(fs::exists(given));
}
