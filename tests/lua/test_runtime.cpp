// The Lua runtime: errors across the C++/Lua boundary, settings, strict globals, the sandbox.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "runtime.h"

namespace fs = std::filesystem;
using ts::lua::RunOptions;
using ts::lua::Runtime;

namespace {

fs::path fresh_directory(const std::string& name) {
  auto path = fs::temp_directory_path() / ("twostage-test-" + std::to_string(::getpid())) / name;
  fs::remove_all(path);
  fs::create_directories(path);
  return path;
}

RunOptions options_in(const fs::path& out) {
  RunOptions options;
  options.out = out;
  options.recipe = out / "recipe.lua";
  return options;
}

// Runs `source` as a recipe file and returns (exit status, what it printed on stderr).
std::pair<int, std::string> run_recipe(const std::string& source, RunOptions options) {
  fs::create_directories(options.recipe.parent_path());
  std::ofstream(options.recipe) << source;
  std::ostringstream captured;
  auto* previous = std::cerr.rdbuf(captured.rdbuf());
  int status = 0;
  {
    Runtime runtime(options);
    status = runtime.run();
  }
  std::cerr.rdbuf(previous);
  return {status, captured.str()};
}

int destructor_runs = 0;
struct CountsDestruction {
  ~CountsDestruction() { ++destructor_runs; }
};

int raises_lua_error_with_live_object(lua_State* L) {
  CountsDestruction guard;
  return luaL_error(L, "raised from C++");
}

int throws_std_exception(lua_State*) { throw std::runtime_error("host failure: file 'x.csv' line 3"); }
int throws_torch_error(lua_State*) {
  TORCH_CHECK(false, "shapes [2, 3] and [4] do not match");
  return 0;
}

void expose(Runtime& runtime, const char* name, lua_CFunction function) {
  lua_State* L = runtime.state();
  lua_pushcfunction(L, function);
  lua_pushstring(L, name);
  lua_insert(L, -2);
  lua_rawset(L, LUA_GLOBALSINDEX);  // rawset: strict globals refuse a plain assignment
}

}  // namespace

TEST_CASE("a Lua error raised across C++ frames runs their destructors") {
  Runtime runtime(options_in(fresh_directory("destructors")));
  expose(runtime, "raise_lua_error", raises_lua_error_with_live_object);
  destructor_runs = 0;
  runtime.execute(R"(
    local ok, message = pcall(raise_lua_error)
    assert(not ok and message:find("raised from C%+%+"), tostring(message))
  )");
  CHECK(destructor_runs == 1);
}

TEST_CASE("C++ exceptions in bound functions reach Lua as catchable errors with their message") {
  Runtime runtime(options_in(fresh_directory("exceptions")));
  expose(runtime, "throws_std", ts::lua::guarded<throws_std_exception>);
  expose(runtime, "throws_torch", ts::lua::guarded<throws_torch_error>);
  runtime.execute(R"(
    local ok, message = pcall(function() throws_std() end)
    assert(not ok, "expected an error")
    assert(message:find("host failure: file 'x.csv' line 3", 1, true), message)
    assert(message:find("^test:2: host failure"), "the error names the calling line: " .. message)
    ok, message = pcall(throws_torch)
    assert(not ok and message:find("shapes [2, 3] and [4] do not match", 1, true), message)
    assert(not message:find("C++ exception", 1, true), message)
  )");
  // Uncaught, the error reaches the host as a ts::Error with the message and a traceback.
  try {
    runtime.execute("throws_std()", "@fake.lua");
    FAIL("expected an error");
  } catch (const ts::Error& error) {
    const std::string message = error.what();
    CHECK(message.find("fake.lua:1: host failure") != std::string::npos);
    CHECK(message.find("stack traceback") != std::string::npos);
  }
}

TEST_CASE("settings: --set values are parsed by the declared type") {
  using ts::SettingType;
  CHECK(std::get<double>(ts::parse_setting("lr", SettingType::Number, "1e-5")) == Approx(1e-5));
  CHECK(std::get<int64_t>(ts::parse_setting("batch", SettingType::Integer, "16")) == 16);
  CHECK_THROWS_WITH(ts::parse_setting("batch", SettingType::Integer, "16.5"),
                    Catch::Contains("setting 'batch' expects integer, got '16.5'"));
  CHECK_THROWS_WITH(ts::parse_setting("lr", SettingType::Number, "fast"), Catch::Contains("expects number"));
  CHECK(std::get<bool>(ts::parse_setting("flag", SettingType::Boolean, "true")));
  CHECK_FALSE(std::get<bool>(ts::parse_setting("flag", SettingType::Boolean, "off")));
  CHECK_THROWS(ts::parse_setting("flag", SettingType::Boolean, "maybe"));
  CHECK(std::get<std::string>(ts::parse_setting("name", SettingType::String, "a=b,c")) == "a=b,c");
  CHECK(std::get<std::vector<int64_t>>(ts::parse_setting("seeds", SettingType::IntegerList, "7,42,106")) ==
        std::vector<int64_t>{7, 42, 106});
  CHECK(std::get<std::vector<double>>(ts::parse_setting("ratio", SettingType::NumberList, "0.1, 0.2")) ==
        std::vector<double>{0.1, 0.2});
  CHECK(std::get<std::vector<std::string>>(ts::parse_setting("m", SettingType::StringList, "a,b")) ==
        std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH(ts::parse_setting("seeds", SettingType::IntegerList, "7,x"), Catch::Contains("'x'"));
  CHECK(ts::split_assignment("out=a=b") == std::pair<std::string, std::string>{"out", "a=b"});
  CHECK_THROWS(ts::split_assignment("novalue"));

  std::vector<ts::SettingSpec> specs = {{"ratio", SettingType::Number, 0.2, "rate"},
                                        {"seeds", SettingType::IntegerList, std::vector<int64_t>{7}, "seeds"}};
  auto resolved = ts::resolve_settings(specs, {{"ratio", "0.5"}});
  CHECK(std::get<double>(resolved["ratio"].value) == 0.5);
  CHECK(resolved["ratio"].overridden);
  CHECK_FALSE(resolved["seeds"].overridden);
  CHECK_THROWS_WITH(ts::resolve_settings(specs, {{"ratoi", "0.5"}}),
                    Catch::Contains("unknown setting 'ratoi'") && Catch::Contains("ratio, seeds"));
}

TEST_CASE("a recipe's settings take --set overrides with type checks") {
  const auto out = fresh_directory("settings");
  const std::string recipe = R"(local ts = require "twostage"
local s = ts.settings {
  ratio = {0.2, "minority/majority rate"},
  batch_size = {16, "examples per step"},
  seeds = {{7, 42}, "seeds"},
  name = {"run", "a name"},
  faithful = {false, "reference behaviour"},
}
ts.write_file(ts.run_dir() .. "/seen.json", ts.json_encode(s))
)";
  auto options = options_in(out);
  options.overrides = {{"ratio", "0.5"}, {"seeds", "1,2,3"}, {"faithful", "true"}, {"batch_size", "8"}};
  auto [status, errors] = run_recipe(recipe, options);
  REQUIRE(status == 0);
  const auto seen = nlohmann::json::parse(ts::read_file(out / "seen.json"));
  CHECK(seen["ratio"] == 0.5);
  CHECK(seen["seeds"] == nlohmann::json::array({1, 2, 3}));
  CHECK(seen["faithful"] == true);
  CHECK(seen["batch_size"] == 8);
  CHECK(seen["name"] == "run");

  options.overrides = {{"batch_size", "8.5"}};
  std::tie(status, errors) = run_recipe(recipe, options);
  CHECK(status != 0);
  CHECK_THAT(errors, Catch::Contains("setting 'batch_size' expects integer, got '8.5'"));

  options.overrides = {{"lr", "1"}};
  std::tie(status, errors) = run_recipe(recipe, options);
  CHECK(status != 0);
  CHECK_THAT(errors, Catch::Contains("unknown setting 'lr'") &&
                         Catch::Contains("batch_size, faithful, name, ratio, seeds"));

  options.overrides = {};
  options.seed = 106;
  std::tie(status, errors) = run_recipe(recipe, options);
  REQUIRE(status == 0);
  CHECK(nlohmann::json::parse(ts::read_file(out / "seen.json"))["seeds"] == nlohmann::json::array({106}));
}

TEST_CASE("an error in a recipe names its file and line and fails the run") {
  const auto out = fresh_directory("recipe-error");
  auto [status, errors] = run_recipe("local ts = require \"twostage\"\nlocal x = 1\nundefined_function(x)\n",
                                     options_in(out));
  CHECK(status != 0);
  CHECK_THAT(errors, Catch::Contains("recipe.lua:3: undeclared global 'undefined_function'"));
  CHECK_THAT(errors, Catch::Contains("stack traceback"));
}

TEST_CASE("undeclared globals are errors, for reading and for assignment") {
  Runtime runtime(options_in(fresh_directory("strict")));
  runtime.execute(R"(
    local ok, message = pcall(function() return misspelt_name end)
    assert(not ok and message:find("undeclared global 'misspelt_name'"), message)
    ok, message = pcall(function() accidental = 1 end)
    assert(not ok and message:find("assignment to undeclared global 'accidental'"), message)
    local fine = 1
    assert(print and string and math, "the standard library is still there")
  )");
}

TEST_CASE("the sandbox refuses programs, native code and writes outside the run") {
  const auto out = fresh_directory("sandbox");
  const auto outside = fresh_directory("sandbox-outside") / "stolen.txt";
  Runtime runtime(options_in(out));
  auto& state = runtime.run_state();
  state.write_policy.allow_tree(out);
  lua_State* L = runtime.state();
  runtime.execute(R"(
    local function refused(what, f, ...)
      local ok, message = pcall(f, ...)
      assert(not ok, what .. " should be refused")
      return message
    end
    local m = refused("os.execute", os.execute, "true")
    assert(m:find("os.execute is refused"), m)
    assert(refused("io.popen", io.popen, "ls"):find("io.popen is refused"))
    assert(refused("package.loadlib", package.loadlib, "libc.so.6", "puts"):find("refused"))
    assert(refused("ffi", require, "ffi"):find("FFI"))
    local dumped = string.dump(function() return 1 end)
    local chunk, message = loadstring(dumped)
    assert(chunk == nil and message, "bytecode must not load")
    assert(debug.getupvalue == nil and debug.getregistry == nil)
  )");
  // rawset: strict globals refuse a plain assignment.
  lua_pushstring(L, "outside_path");
  lua_pushstring(L, outside.c_str());
  lua_rawset(L, LUA_GLOBALSINDEX);
  lua_pushstring(L, "inside_path");
  lua_pushstring(L, (out / "inside.txt").c_str());
  lua_rawset(L, LUA_GLOBALSINDEX);
  runtime.execute(R"(
    local ts = require "twostage"
    local ok, message = pcall(io.open, outside_path, "w")
    assert(not ok and message:find("refused to write"), tostring(message))
    ok, message = pcall(ts.write_file, outside_path, "x")
    assert(not ok and message:find("refused to write"), tostring(message))
    ok, message = pcall(os.remove, outside_path)
    assert(not ok and message:find("refused to write"), tostring(message))
    local f = assert(io.open(inside_path, "w"))
    f:write("allowed")
    f:close()
    ts.write_file(inside_path, "allowed too")
    assert(io.open(inside_path, "r"):read("*a") == "allowed too")
  )");
  CHECK_FALSE(fs::exists(outside));
  CHECK(ts::read_file(out / "inside.txt") == "allowed too");
}

TEST_CASE("the sandbox is lifted by --unsafe") {
  auto options = options_in(fresh_directory("unsafe"));
  options.unsafe = true;
  Runtime runtime(options);
  runtime.execute(R"(
    assert(os.execute("true") == 0)
    local ffi = require "ffi"
    assert(ffi.C)
  )");
}
