// The sandbox's path rules (core/run_access.h), asserted against the host alone.
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/run_access.h"

namespace fs = std::filesystem;
using ts::RunAccess;

namespace {

struct Scratch {
  fs::path root = fs::temp_directory_path() / ("run_access_" + std::to_string(::getpid()));
  Scratch() {
    fs::create_directories(root / "inputs");
    std::ofstream(root / "inputs" / "table.csv") << "text,label\n";
    std::ofstream(root / "recipe.lua") << "-- a recipe\n";
  }
  ~Scratch() { fs::remove_all(root); }
};

}  // namespace

TEST_CASE("a run reads its recipe's folder, scripts, data/ and the paths the user typed, and nothing else") {
  Scratch scratch;
  RunAccess access;
  access.user_values = {{"train", (scratch.root / "inputs" / "table.csv").string() + ":sentence"},
                        {"seeds", "7,42"}};
  access.allow_reads("tests/recipe_nowhere/recipe.lua", scratch.root / "scripts");
  CHECK_NOTHROW(access.check_read(scratch.root / "inputs" / "table.csv"));  // PATH:COLUMN opens PATH
  CHECK_NOTHROW(access.check_read("data/sst2/train.tsv"));
  CHECK_NOTHROW(access.check_read(scratch.root / "scripts" / "twostage" / "train.lua"));
  CHECK_THROWS_AS(access.check_read(scratch.root / "recipe.lua"), ts::Error);
  CHECK_THROWS_AS(access.check_read("/etc/passwd"), ts::Error);
  CHECK_THROWS_AS(access.check_read("data/../../etc/passwd"), ts::Error);
  CHECK(access.given_by_user("7,42"));
  CHECK_FALSE(access.given_by_user("7"));
}

TEST_CASE("a run writes its run folder and the output paths the user typed, while a sweep file's values open nothing") {
  Scratch scratch;
  RunAccess access;
  access.write_policy.allow_tree(scratch.root / "run");
  ts::SettingSpec output{"augmented", ts::SettingType::String, std::string(""), "where to write", true};
  ts::SettingSpec plain{"note", ts::SettingType::String, std::string(""), "not a path", false};
  access.user_values = {{"augmented", (scratch.root / "aug.csv").string()}, {"note", (scratch.root / "x").string()}};
  access.allow_outputs({output, plain});
  CHECK_NOTHROW(access.check_write(scratch.root / "run" / "metrics.json"));
  CHECK_NOTHROW(access.check_write(scratch.root / "aug.csv"));
  CHECK_THROWS_AS(access.check_write(scratch.root / "x"), ts::Error);  // not an output setting
  CHECK_NOTHROW(access.check_read(scratch.root / "run" / "metrics.json"));  // what it may write it may read

  RunAccess from_sweep;  // the same setting, written by a sweep file: not in user_values
  from_sweep.allow_outputs({output});
  CHECK_THROWS_AS(from_sweep.check_write(scratch.root / "aug.csv"), ts::Error);
  from_sweep.unsafe = true;
  CHECK_NOTHROW(from_sweep.check_write(scratch.root / "aug.csv"));
  CHECK_NOTHROW(from_sweep.check_read("/etc/passwd"));
}
