// LLM augmentation from Lua: the client binding against an in-process OpenAI-compatible fake server, the offline
// augmenters and the cleaner, and recipes/augment_llm.lua end to end as a user runs it (the twostage executable,
// forked and exec'd): faults, 401, kill -9 and resume, the API key kept out of every file, EDA, masked LM and the
// classifier filter.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <twostage/build_info.h>

#include "data/sampling.h"
#include "llm/cache.h"
#include "llm/client.h"
#include "llm/fake_server.h"
#include "model/bert.h"
#include "model/checkpoint.h"
#include "runtime.h"

namespace fs = std::filesystem;
using ts::llm::testing::Fault;
using ts::llm::testing::FakeServer;

namespace {

constexpr const char* kKeyVariable = "TS_TEST_AUGMENT_API_KEY";
constexpr const char* kKey = "sk-augment-test-7Hq2Lx9PzWm4Rb8Kd3Vn";
constexpr const char* kSeparator = "\n\n---\n\n";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("twostage_test_llm_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// ---- running the executable -----------------------------------------------------------------------------------

// Starts `twostage args...` with stdout and stderr going to `output`. The environment (the API key) is set by the
// caller before, so that the child does nothing between fork and exec but redirect.
pid_t start_twostage(const std::vector<std::string>& args, const fs::path& output) {
  std::vector<std::string> argv_strings = {std::string(TWOSTAGE_BINARY_DIR) + "/twostage"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const std::string output_path = output.string();
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const int fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return child;
}

int wait_status(pid_t child) {
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

struct Run {
  int status;
  std::string output;
  double seconds;
};

Run run_twostage(const std::vector<std::string>& args, const fs::path& output) {
  const auto started = std::chrono::steady_clock::now();
  const int status = wait_status(start_twostage(args, output));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return {status, read_text(output), seconds};
}

// ---- reading what a run wrote ---------------------------------------------------------------------------------

// RFC 4180: fields separated by commas, quoted fields may hold commas, doubled quotes and line breaks.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field.push_back(c);
      }
      continue;
    }
    any = true;
    if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n') {
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
      any = false;
    } else {
      field.push_back(c);
    }
  }
  if (any) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

struct Row {
  std::int64_t org_ind;
  std::string text;
  std::string label;
};

std::vector<Row> read_aug(const fs::path& path) {
  const auto rows = parse_csv(read_text(path));
  REQUIRE_FALSE(rows.empty());
  REQUIRE(rows[0] == std::vector<std::string>{"org_ind", "text", "label"});
  std::vector<Row> out;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    INFO("aug.csv line " << i + 1);
    REQUIRE(rows[i].size() == 3);
    out.push_back({std::stoll(rows[i][0]), rows[i][1], rows[i][2]});
  }
  return out;
}

// The data rows of a GLUE-style TSV: sentence \t label.
std::vector<std::pair<std::string, std::string>> read_tsv(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::vector<std::pair<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const auto tab = line.rfind('\t');
    rows.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return rows;
}

std::string text_of(const std::string& prompt) {
  const auto at = prompt.rfind(kSeparator);
  return at == std::string::npos ? prompt : prompt.substr(at + std::string(kSeparator).size());
}

std::string trim(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

// Every regular file below `folder` and the extra files, none of which may hold `needle`.
void check_no_file_contains(const fs::path& folder, const std::vector<fs::path>& extra, const std::string& needle) {
  std::vector<fs::path> files = extra;
  for (const auto& entry : fs::recursive_directory_iterator(folder))
    if (entry.is_regular_file()) files.push_back(entry.path());
  for (const auto& file : files) {
    INFO(file);
    CHECK(read_text(file).find(needle) == std::string::npos);
  }
}

std::vector<std::string> recipe_args(const FakeServer& server, const fs::path& out,
                                     std::vector<std::string> settings) {
  std::vector<std::string> args = {"run", "recipes/augment_llm.lua", "--out", out.string(),
                                   "--set", "base_url=" + server.base_url(),
                                   "--set", std::string("api_key_env=") + kKeyVariable};
  for (auto& setting : settings) {
    args.push_back("--set");
    args.push_back(setting);
  }
  return args;
}

// Runs recipes/augment_llm.lua against `server` into `out`, requires it to succeed, and returns its summary.json.
nlohmann::json augment_summary(const FakeServer& server, const fs::path& out, std::vector<std::string> settings,
                               const fs::path& output) {
  const auto run = run_twostage(recipe_args(server, out, std::move(settings)), output);
  INFO(run.output);
  REQUIRE(run.status == 0);
  return nlohmann::json::parse(read_text(out / "summary.json"));
}

// A TSV of `rows` distinct sentences, labels alternating 0 and 1.
void write_tsv(const fs::path& path, int rows) {
  std::ofstream out(path);
  out << "sentence\tlabel\n";
  for (int i = 0; i < rows; ++i) out << "sentence number " << i << " is about film " << i * 7 % 13 << "\t" << i % 2 << "\n";
}

// ---- in-process Lua ---------------------------------------------------------------------------------------------

struct Lua {
  ts::lua::Runtime runtime;
  explicit Lua(const fs::path& out) : runtime(options_for(out)) {
    runtime.run_state().run_dir = out;
    runtime.run_state().write_policy.allow_tree(out);
    // The fixtures a test reads, as a user would name them on the command line.
    runtime.run_state().read_policy.allow_tree("../shared");
    runtime.run_state().read_policy.allow_tree("tests");
    set("out_dir", out.string());
  }
  static ts::lua::RunOptions options_for(const fs::path& out) {
    ts::lua::RunOptions options;
    options.out = out;
    return options;
  }
  void set(const char* name, const std::string& value) {
    // The test server's address is the user's choice, as if given with --set base_url=URL.
    if (std::string(name) == "base_url") runtime.run_state().user_values[name] = value;
    lua_State* L = runtime.state();
    lua_pushstring(L, name);
    lua_pushlstring(L, value.data(), value.size());
    lua_rawset(L, LUA_GLOBALSINDEX);
  }
  // A failed Lua assert fails the test with its message and traceback.
  void run(const std::string& source) { REQUIRE_NOTHROW(runtime.execute(source)); }
};

}  // namespace

TEST_CASE("llm_client: chat and map against a local server, errors per item, stats, no key in any Lua value",
          "[lua][llm]") {
  TempDir dir("client");
  FakeServer server(kKey);
  server.policy = [](const std::string& prompt, int) {
    return prompt == "too long" ? Fault::bad_request : Fault::none;
  };
  ::setenv(kKeyVariable, kKey, 1);
  Lua lua(dir.path);
  lua.set("base_url", server.base_url());
  lua.set("key_variable", kKeyVariable);
  lua.set("key", kKey);
  lua.run(R"(
    local ts = require "twostage"
    local client = ts.llm_client {model = "gpt-test", base_url = base_url, api_key_env = key_variable,
                                  concurrency = 4, max_retries = 2, temperature = 0.5, cache = out_dir .. "/c.sqlite"}
    local text, info = client:chat("hello there")
    assert(text == "paraphrase of: hello there", text)
    assert(info.ok and not info.cached and info.attempts == 1 and info.total_tokens > 0)
    local again, info2 = client:chat({{role = "user", content = "hello there"}})
    assert(again == text and info2.cached, "the same request comes from the cache")
    local results = client:map({"first", {prompt = "second", sample_index = 2}, "too long",
                                {messages = {{role = "system", content = "be brief"}, {role = "user", content = "third"}},
                                 n = 2}}, {progress = false})
    assert(#results == 4)
    assert(results[1].text == "paraphrase of: first" and results[1].ok)
    assert(results[2].text == "paraphrase of: second")
    assert(not results[3].ok and results[3].outcome == "failed" and results[3].http_status == 400)
    assert(results[3].error:find("maximum context length"), results[3].error)
    assert(#results[4].texts == 2 and results[4].texts[2] == "paraphrase 1 of: third")
    local ok, message = pcall(client.chat, client, "too long")
    assert(not ok and message:find("HTTP 400"), message)
    local stats = client:stats()
    assert(stats.cache_hits == 1 and stats.failures == 2 and stats.requests_sent == 6, ts.json_encode(stats))

    -- Nothing Lua can reach holds the key: walk every value returned.
    local function walk(value, seen)
      if type(value) == "string" then assert(not value:find(key, 1, true), "the key leaked into " .. value) end
      if type(value) == "table" and not seen[value] then
        seen[value] = true
        for k, v in pairs(value) do walk(k, seen); walk(v, seen) end
      end
    end
    walk({results, stats, client:settings(), info, info2, message, tostring(client)}, {})
    assert(client:settings().api_key_env == key_variable)

    -- Options are checked; the cache must be a path the run may write.
    ok, message = pcall(ts.llm_client, {modle = "x"})
    assert(not ok and message:find("unknown option 'modle'"), message)
    ok, message = pcall(ts.llm_client, {cache = "/tmp/not-the-run-folder/cache.sqlite"})
    assert(not ok and message:find("/tmp/not%-the%-run%-folder/cache.sqlite"), message)
    ok, message = pcall(client.map, client, {{prompt = "x", temprature = 1}})
    assert(not ok and message:find("requests%[1%]: unknown option 'temprature'"), message)
  )");
  for (const auto& body : server.bodies()) {
    CHECK(body["model"] == "gpt-test");
    CHECK(body["temperature"] == 0.5);  // the client's default reached every request
  }
}

TEST_CASE("llm_client: a 401 stops map at once with a clear message, or returns aborted items on request",
          "[lua][llm]") {
  TempDir dir("abort");
  FakeServer server("sk-the-key-the-server-wants");
  ::setenv(kKeyVariable, kKey, 1);
  Lua lua(dir.path);
  lua.set("base_url", server.base_url());
  lua.set("key_variable", kKeyVariable);
  lua.set("key", kKey);
  lua.run(R"(
    local ts = require "twostage"
    local client = ts.llm_client {base_url = base_url, api_key_env = key_variable, concurrency = 2}
    local prompts = {}
    for i = 1, 50 do prompts[i] = "row " .. i end
    local ok, message = pcall(client.map, client, prompts, {progress = false})
    assert(not ok, "map must stop")
    assert(message:find("HTTP 401") and message:find(key_variable) and message:find("0 of 50"), message)
    assert(not message:find(key, 1, true), "the server echoed the key; the message must not: " .. message)
    local results = client:map(prompts, {progress = false, on_abort = "return"})
    assert(#results == 50 and results[50].outcome == "aborted" and not results[50].ok)
    assert(client:stats().aborted)
  )");
  CHECK(server.total_requests() <= 4);  // one wave of two per map
}

TEST_CASE("The cleaner, the paraphrase filter, EDA and pandas' sample positions in Lua", "[lua][llm][augment]") {
  TempDir dir("offline");
  Lua lua(dir.path);
  lua.set("expected", nlohmann::json(ts::data::pandas_sample_positions(10, 4, 42)).dump());
  lua.run(R"(
    local ts = require "twostage"
    assert(ts.clean_paraphrase('Sure! Here is a rephrased version:\n\n"A truly fine movie."', "a fine film") ==
           "A truly fine movie.")
    local text, reason = ts.clean_paraphrase("  A fine film ", "a fine film")
    assert(text == nil and reason == "same_as_source", reason)
    text, reason = ts.clean_paraphrase("", "a fine film")
    assert(text == nil and reason == "empty")
    local filter = ts.paraphrase_filter()
    assert(filter:add("a fine film", "1. A lovely picture.") == "A lovely picture.")
    local _, why = filter:add("a fine film", "A lovely picture.")
    assert(why == "duplicate", why)
    local counts = filter:counts()
    assert(counts.accepted == 1 and counts.duplicate == 1)

    local eda = ts.eda {seed = 7, alpha = 0.2}
    local variants = eda:augment("the movie was a delightful surprise from start to finish", 4)
    assert(#variants == 4)
    for _, v in ipairs(variants) do assert(v:find("^[a-z ]+$"), v) end
    local same = ts.eda {seed = 7, alpha = 0.2}:augment("the movie was a delightful surprise from start to finish", 4)
    for i = 1, 4 do assert(same[i] == variants[i], "the same seed gives the same variants") end
    assert(#eda:augment("!!!", 3) == 0)
    local ok, message = pcall(ts.eda, {wordnet = "/nonexistent/wordnet"})
    assert(not ok and message:find("/nonexistent/wordnet"), message)
    ok, message = pcall(ts.eda, {alpah = 0.1})
    assert(not ok and message:find("unknown option 'alpah'"), message)

    local positions = ts.pandas_sample_positions(10, 4, 42)
    local want = ts.json_decode(expected)  -- the host's pandas-exact sampler (tested against pandas), 0-based
    assert(#positions == 4)
    for i = 1, 4 do assert(positions[i] == want[i] + 1) end
  )");
}

TEST_CASE("augment.lua: targets, the pass plan and RFC 4180 fields", "[lua][llm][augment]") {
  TempDir dir("plan");
  Lua lua(dir.path);
  lua.run(R"(
    local ts = require "twostage"
    local augment = ts.augment
    local t = augment.targets({3, 7}, {0, 1}, "majority")
    assert(t[0] == 7 and t[1] == 7)
    t = augment.targets({3, 7}, {1}, "5")
    assert(t[1] == 5 and t[0] == nil)
    t = augment.targets({3, 7}, {0, 1}, "4,9")
    assert(t[0] == 4 and t[1] == 9)
    assert(not pcall(augment.targets, {3, 7}, {0, 1}, "4,9,1"))
    assert(not pcall(augment.targets, {3, 7}, {0, 1}, "lots"))
    local fill = augment.fill_classes({"neg", "pos"}, {"pos"})
    assert(#fill == 1 and fill[1] == 1)
    assert(not pcall(augment.fill_classes, {"neg", "pos"}, {"neutral"}))

    -- Class 0 has rows 2 and 5, class 1 rows 1, 3, 4: 5 requests for class 0 are passes 0, 0, 1, 1, 2 over its rows.
    local plan = augment.plan({[0] = {2, 5}, [1] = {1, 3, 4}}, {[0] = 0, [1] = 0}, {[0] = 5, [1] = 3})
    local got = {}
    for i, r in ipairs(plan) do got[i] = ("%d:%d:%d"):format(r.sample_index, r.row, r.class) end
    assert(table.concat(got, " ") == "0:1:1 0:2:0 0:3:1 0:4:1 0:5:0 1:2:0 1:5:0 2:2:0", table.concat(got, " "))
    -- A refill continues where the plan stopped.
    plan = augment.plan({[0] = {2, 5}}, {[0] = 5}, {[0] = 2})
    assert(plan[1].row == 5 and plan[1].sample_index == 2 and plan[2].row == 2 and plan[2].sample_index == 3)

    assert(augment.csv_field("plain text") == "plain text")
    assert(augment.csv_field('say "hi", then go') == '"say ""hi"", then go"')
    assert(augment.csv_field("two\nlines") == '"two\nlines"')
    assert(augment.csv_field("trailing ") == '"trailing "')
    assert(augment.prompt_for("Rephrase:", "a film") == "Rephrase:\n\n---\n\na film")
    assert(augment.prompt_for("Say {text} again", "a film") == "Say a film again")
  )");
}

TEST_CASE("augment_llm.lua against a local server with every fault: each row completes, the key is in no file",
          "[lua][llm][recipe]") {
  TempDir dir("faults");
  FakeServer server(kKey);
  server.retry_after = "1";
  server.slow_seconds = 1.5;
  // Each prompt, in the order the server first sees it, meets one of these fault plans before its answers.
  const std::vector<std::vector<Fault>> plans = {
      {Fault::rate_limit}, {Fault::server_error}, {Fault::unavailable},          {Fault::slow},
      {Fault::drop},       {Fault::malformed},    {Fault::drop, Fault::unavailable}, {}, {}, {}};
  std::mutex mutex;
  std::map<std::string, std::size_t> plan_of;
  std::map<Fault, int> injected;
  server.policy = [&](const std::string& prompt, int attempt) {
    std::lock_guard lock(mutex);
    const auto found = plan_of.emplace(prompt, plan_of.size()).first;
    const auto& plan = plans[found->second % plans.size()];
    if (attempt > int(plan.size())) return Fault::none;
    ++injected[plan[std::size_t(attempt - 1)]];
    return plan[std::size_t(attempt - 1)];
  };
  // Answers: a preamble and quotes for some, list numbering for others, and for every 6th source the source itself
  // at first (rejected as same_as_source, so the class is refilled by a later pass).
  server.answer = [](const std::string& prompt, int attempt, int) {
    const std::string text = trim(text_of(prompt));
    const std::size_t kind = std::hash<std::string>{}(text) % 6;
    if (kind == 0 && attempt <= 3) return text;
    const std::string paraphrase = "in other words, " + text + " (take " + std::to_string(attempt) + ")";
    if (kind == 1) return "Sure! Here's a rephrased version:\n\n\"" + paraphrase + "\"";
    if (kind == 2) return "1. " + paraphrase;
    return paraphrase;
  };
  ::setenv(kKeyVariable, kKey, 1);
  const fs::path out = dir.path / "run";
  const fs::path events = dir.path / "events.jsonl";
  auto args = recipe_args(server, out, {"limit=40", "timeout=0.5", "concurrency=16"});
  args.insert(args.end(), {"--log-json", events.string()});
  const auto run = run_twostage(args, dir.path / "output.txt");
  INFO(run.output);
  REQUIRE(run.status == 0);

  const auto summary = nlohmann::json::parse(read_text(out / "summary.json"));
  INFO(summary.dump(2));
  const int target = summary["classes"]["1"]["target"];
  CHECK(target == summary["classes"]["1"]["rows"]);  // majority: the larger class of the 40 rows
  CHECK(summary["classes"]["0"]["target"] == target);
  CHECK(summary["rejections"]["failed"] == 0);  // every request completed despite its faults
  CHECK(summary["rejections"]["same_as_source"].get<int>() > 0);
  CHECK(summary["rounds"].get<int>() >= 2);  // the rejected ones were refilled
  CHECK(summary["rows_written"] == 2 * target);
  CHECK_FALSE(summary.contains("short"));
  CHECK(summary["llm"]["retries"].get<int>() >= 8);
  CHECK(summary["llm"]["requests_sent"].get<int>() == summary["requests"].get<int>() + summary["llm"]["retries"].get<int>());
  CHECK(summary["llm"]["tokens"]["total"].get<int>() > 0);
  for (Fault fault : {Fault::rate_limit, Fault::server_error, Fault::unavailable, Fault::slow, Fault::drop,
                      Fault::malformed})
    CHECK(injected[fault] >= 1);

  const auto rows = read_aug(out / "aug.csv");
  CHECK(rows.size() == std::size_t(2 * target));
  std::map<std::string, int> per_label;
  const auto train = read_tsv("data/sst2/train.tsv");
  for (const auto& row : rows) {
    INFO(row.text);
    ++per_label[row.label];
    CHECK(row.text.rfind("in other words, ", 0) == 0);  // preambles, quotes and numbering are gone
    REQUIRE(row.org_ind >= 0);
    REQUIRE(row.org_ind < std::int64_t(train.size()));
    CHECK(row.label == train[std::size_t(row.org_ind)].second);  // the label of the row it paraphrases
    CHECK(row.text.find(trim(train[std::size_t(row.org_ind)].first)) != std::string::npos);
  }
  CHECK(per_label["0"] == target);
  CHECK(per_label["1"] == target);

  // The progress reached the log (plain lines: stderr is a file here) and the summary is an event.
  CHECK(run.output.find("paraphrase: ") != std::string::npos);
  CHECK(read_text(events).find("\"augment.summary\"") != std::string::npos);
  CHECK(read_text(events).find("\"llm.progress\"") != std::string::npos);
  CHECK(read_text(out / "log.txt").find("paraphrase: ") != std::string::npos);
  // The key was sent, and is nowhere: run folder (aug.csv, summary, log, cache), JSON log, terminal output.
  for (const auto& header : server.authorizations()) CHECK(header == std::string("Bearer ") + kKey);
  check_no_file_contains(out, {events, dir.path / "output.txt"}, kKey);
  CHECK(fs::exists(out / "llm_cache.sqlite"));

  // A second run answers everything from the cache.
  const int before = server.total_requests();
  const auto again = run_twostage(recipe_args(server, out, {"limit=40", "timeout=0.5", "concurrency=16"}),
                                  dir.path / "output2.txt");
  INFO(again.output);
  REQUIRE(again.status == 0);
  CHECK(server.total_requests() == before);
  CHECK(read_aug(out / "aug.csv").size() == rows.size());
}

TEST_CASE("augment_llm.lua with per_request and request_seed: the prompt paid once for n paraphrases, one seed per "
          "pass, tokens and cost per accepted paraphrase",
          "[lua][llm][recipe]") {
  TempDir dir("per_request");
  FakeServer server(kKey);
  // Replies are a function of seed + choice, as llama.cpp's: a pass whose seeds overlapped the previous pass's would
  // repeat its replies, and they would be rejected as duplicates.
  server.answers_follow_seed = true;
  ::setenv(kKeyVariable, kKey, 1);
  const auto settings = std::vector<std::string>{"limit=30", "per_request=3", "request_seed=40", "price_prompt=2",
                                                 "price_completion=4"};
  const fs::path out = dir.path / "run";
  const auto summary = augment_summary(server, out, settings, dir.path / "output.txt");
  INFO(summary.dump(2));
  const int target = summary["classes"]["1"]["target"];
  // Each request brings 3 paraphrases: a third of the requests (rounded up per class) fill both classes.
  const int per_class_requests = (target + 2) / 3;
  CHECK(summary["requests"] == 2 * per_class_requests);
  CHECK(summary["rows_written"] == 2 * target);
  CHECK(summary["llm"]["per_request"] == 3);
  std::set<std::int64_t> seeds;
  for (const auto& body : server.bodies()) {
    CHECK(body["n"] == 3);
    seeds.insert(body["seed"].get<std::int64_t>());
  }
  // Pass p sends 40 + 3p: each request's 3 choices take seeds of their own.
  CHECK(seeds.count(40) == 1);
  CHECK(seeds.size() > 1);  // the minority class needed several passes
  for (auto seed : seeds) CHECK((seed - 40) % 3 == 0);
  CHECK(summary["rejections"]["duplicate"] == 0);
  const auto& llm = summary["llm"];
  const double accepted = summary["accepted"];
  CHECK(llm["tokens_per_accepted"]["total"].get<double>() ==
        Approx(llm["tokens_used"]["total"].get<double>() / accepted));
  CHECK(llm["cost"].get<double>() == Approx((llm["tokens_used"]["prompt"].get<double>() * 2 +
                                             llm["tokens_used"]["completion"].get<double>() * 4) / 1e6));
  const auto rows = read_aug(out / "aug.csv");
  std::set<std::string> texts;
  for (const auto& row : rows) texts.insert(row.text);
  CHECK(texts.size() == rows.size());  // the choices of one request are distinct rows

  // The same settings without per_request: one request per paraphrase, and more prompt tokens per accepted one.
  const auto single_summary =
      augment_summary(server, dir.path / "single", {"limit=30", "request_seed=40"}, dir.path / "output1.txt");
  CHECK(single_summary["requests"].get<int>() >= 2 * target);
  CHECK(single_summary["llm"]["tokens_per_accepted"]["prompt"].get<double>() >
        2 * llm["tokens_per_accepted"]["prompt"].get<double>());
}

TEST_CASE("augment.similarity_filter: near copies and drifted paraphrases are dropped by the encoder's cosine",
          "[lua][llm][augment]") {
  TempDir dir("similarity");
  Lua lua(dir.path);
  lua.run(R"(
    local ts = require "twostage"
    local augment = require "twostage.augment"
    local source = "a gorgeous, witty, seductive movie."
    local near = augment.similarity_filter("data/models/all-minilm-l6-v2", {low = 0.3, high = 0.999})
    local verdicts, cosines = near({source, source, source},
                                   {source, "a beautiful, clever and alluring film.", "the invoice is due on monday."})
    assert(verdicts[1] == "near_copy" and math.abs(cosines[1] - 1) < 1e-5, ts.json_encode(cosines))
    assert(verdicts[2] == nil, "a paraphrase is kept: " .. ts.json_encode(cosines))
    assert(cosines[2] > cosines[3] + 0.3, "the paraphrase is closer than an unrelated text: " .. ts.json_encode(cosines))
    local strict = augment.similarity_filter("data/models/all-minilm-l6-v2", {low = cosines[3] + 1e-3, high = 1.1})
    assert(strict({source}, {"the invoice is due on monday."})[1] == "drifted")
    local ok, message = pcall(augment.similarity_filter, "data/models/all-minilm-l6-v2", {low = 0.9, high = 0.5})
    assert(not ok and message:find("empty"), message)
  )");
}

TEST_CASE("augment_llm.lua stops at once on 401 with a clear message and no key in it", "[lua][llm][recipe]") {
  TempDir dir("unauthorized");
  FakeServer server("sk-the-key-the-server-expects");
  ::setenv(kKeyVariable, kKey, 1);  // not the key the server wants; the server echoes what it got
  const fs::path out = dir.path / "run";
  const auto run = run_twostage(recipe_args(server, out, {"limit=40", "concurrency=8"}), dir.path / "output.txt");
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK(run.seconds < 10);
  CHECK(server.total_requests() <= 8);
  CHECK(run.output.find("HTTP 401") != std::string::npos);
  CHECK(run.output.find(kKeyVariable) != std::string::npos);
  CHECK(run.output.find(kKey) == std::string::npos);
  CHECK_FALSE(fs::exists(out / "aug.csv"));
  check_no_file_contains(out, {}, kKey);
}

TEST_CASE("augment_llm.lua against a server that is not listening fails in seconds, saying connection refused",
          "[lua][llm][recipe][unreachable]") {
  TempDir dir("unreachable");
  // A port nothing listens on: bound, then closed.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(fd);
  const std::string base_url = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/v1";
  const fs::path out = dir.path / "run";
  const auto run = run_twostage({"run", "recipes/augment_llm.lua", "--out", out.string(), "--set",
                                 "base_url=" + base_url, "--set", "api_key_env=", "--set", "limit=10"},
                                dir.path / "output.txt");
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK(run.seconds < 20);
  CHECK_THAT(run.output, Catch::Contains("LLM server " + base_url + "/chat/completions cannot be reached: "
                                         "connection refused"));
  CHECK_FALSE(fs::exists(out / "aug.csv"));
}

TEST_CASE("augment_llm.lua whose every request fails stops with the first error, not an empty aug.csv",
          "[lua][llm][recipe]") {
  TempDir dir("all_failed");
  FakeServer server(kKey);
  server.policy = [](const std::string&, int) { return Fault::bad_request; };
  ::setenv(kKeyVariable, kKey, 1);
  const fs::path out = dir.path / "run";
  const auto run = run_twostage(recipe_args(server, out, {"limit=10"}), dir.path / "output.txt");
  INFO(run.output);
  CHECK(run.status != 0);
  CHECK_THAT(run.output, Catch::Contains("augment: all ") && Catch::Contains(" requests of round 0 failed; the first: "
                                                                             "HTTP 400 from " + server.base_url()));
  CHECK_FALSE(fs::exists(out / "aug.csv"));
}

TEST_CASE("augment_llm.lua fails when rejections leave a class short of target, unless allow_short=true",
          "[lua][llm][recipe][short]") {
  TempDir dir("short");
  FakeServer server(kKey);
  // Class 0's sources come back unchanged (rejected as same_as_source, every pass); class 1's are paraphrased.
  server.answer = [](const std::string& prompt, int, int) {
    const std::string text = trim(text_of(prompt));
    return text.rfind("dull", 0) == 0 ? text : "in other words, " + text;
  };
  ::setenv(kKeyVariable, kKey, 1);
  const fs::path train = dir.path / "train.tsv";
  {
    std::ofstream tsv(train);
    tsv << "sentence\tlabel\n";
    for (int i = 0; i < 6; ++i) tsv << "dull film number " << i << "\t0\nbright film number " << i << "\t1\n";
  }
  const std::vector<std::string> settings = {"train=" + train.string(), "ratio=1", "target=4", "refill_rounds=1"};
  const fs::path out = dir.path / "strict";
  const auto strict = run_twostage(recipe_args(server, out, settings), dir.path / "output.txt");
  INFO(strict.output);
  CHECK(strict.status != 0);
  CHECK_THAT(strict.output, Catch::Contains("augment: after 2 round(s), class '0' has 0 of its target 4 rows "
                                            "(rejected: same_as_source ") &&
                                Catch::Contains("set allow_short=true to accept fewer"));
  CHECK_FALSE(fs::exists(out / "aug.csv"));
  const auto strict_summary = nlohmann::json::parse(read_text(out / "summary.json"));
  CHECK(strict_summary["short"]["0"] == 4);
  CHECK(strict_summary["allow_short"] == false);

  auto lenient_settings = settings;
  lenient_settings.push_back("allow_short=true");
  const fs::path lenient_out = dir.path / "lenient";
  const auto summary = augment_summary(server, lenient_out, lenient_settings, dir.path / "output2.txt");
  INFO(summary.dump(2));
  CHECK(summary["short"] == nlohmann::json{{"0", 4}});
  CHECK(summary["allow_short"] == true);
  const auto rows = read_aug(lenient_out / "aug.csv");
  CHECK(rows.size() == 4);
  for (const auto& row : rows) CHECK(row.label == "1");
}

TEST_CASE("augment_llm.lua killed with SIGKILL midway repeats no completed request when run again",
          "[lua][llm][recipe][kill]") {
  TempDir dir("kill");
  FakeServer server(kKey);
  server.reply_seconds = 0.02;
  server.answer = [](const std::string& prompt, int, int) { return "put differently: " + trim(text_of(prompt)); };
  ::setenv(kKeyVariable, kKey, 1);
  const fs::path train = dir.path / "train.tsv";
  write_tsv(train, 300);
  const fs::path out = dir.path / "run";
  // 150 per class from 150 rows each: one pass, every request a different prompt.
  const auto args = recipe_args(server, out, {"train=" + train.string(), "ratio=1", "target=150", "concurrency=4"});

  const pid_t child = start_twostage(args, dir.path / "output1.txt");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (server.answered() < 60 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(child, SIGKILL);
  REQUIRE(wait_status(child) == -SIGKILL);
  INFO(read_text(dir.path / "output1.txt"));
  REQUIRE(server.answered() >= 60);
  REQUIRE_FALSE(fs::exists(out / "aug.csv"));

  // What the killed run had completed, as its cache says.
  ts::llm::ClientSettings settings;
  settings.base_url = server.base_url();
  ts::llm::Client keys(settings);
  std::set<std::string> completed;
  {
    ts::llm::ResponseCache cache((out / "llm_cache.sqlite").string());
    for (const auto& [sentence, label] : read_tsv(train)) {
      auto request = ts::llm::ChatRequest::user(
          "Rephrase the following phrase into a different phrase with similar meaning." + std::string(kSeparator) +
          sentence);
      request.temperature = 1.0;
      if (cache.get(keys.cache_key(request))) completed.insert(request.messages.back().content);
    }
    CHECK(std::int64_t(completed.size()) == cache.size());
  }
  CHECK(completed.size() >= 50);
  CHECK(completed.size() < 300);

  const auto again = run_twostage(args, dir.path / "output2.txt");
  INFO(again.output);
  REQUIRE(again.status == 0);
  int repeated = 0;
  for (const auto& [prompt, count] : server.counts()) {
    if (completed.count(prompt)) CHECK(count == 1);  // completed before the kill: never asked again
    repeated += count > 1;
  }
  CHECK(repeated <= 4);  // only what was in flight when the run died
  CHECK(server.counts().size() == 300);
  const auto summary = nlohmann::json::parse(read_text(out / "summary.json"));
  CHECK(summary["llm"]["cache_hits"] == std::int64_t(completed.size()));
  CHECK(read_aug(out / "aug.csv").size() == 300);
}

TEST_CASE("augment_llm.lua offline with EDA: balanced, reproducible, rows traced to their source",
          "[lua][llm][recipe][eda]") {
  TempDir dir("eda");
  const auto first = run_twostage({"run", "recipes/augment_llm.lua", "--out", (dir.path / "a").string(), "--set",
                                   "augmenter=eda", "--set", "limit=60"},
                                  dir.path / "output.txt");
  INFO(first.output);
  REQUIRE(first.status == 0);
  const auto summary = nlohmann::json::parse(read_text(dir.path / "a" / "summary.json"));
  INFO(summary.dump(2));
  CHECK(summary["augmenter"] == "eda");
  CHECK_FALSE(summary.contains("llm"));
  const int target = summary["classes"]["1"]["target"];
  const auto rows = read_aug(dir.path / "a" / "aug.csv");
  CHECK(rows.size() == summary["rows_written"].get<std::size_t>());
  CHECK(rows.size() == std::size_t(2 * target));
  const auto train = read_tsv("data/sst2/train.tsv");
  for (const auto& row : rows) {
    INFO(row.text);
    CHECK(row.text.find_first_not_of("abcdefghijklmnopqrstuvwxyz ") == std::string::npos);
    CHECK(row.label == train.at(std::size_t(row.org_ind)).second);
  }
  const auto second = run_twostage({"run", "recipes/augment_llm.lua", "--out", (dir.path / "b").string(), "--set",
                                    "augmenter=eda", "--set", "limit=60"},
                                   dir.path / "output2.txt");
  REQUIRE(second.status == 0);
  CHECK(read_text(dir.path / "a" / "aug.csv") == read_text(dir.path / "b" / "aug.csv"));
}

TEST_CASE("augment_llm.lua offline with a masked LM, and a classifier filter that drops label flips",
          "[lua][llm][recipe][mlm]") {
  TempDir dir("mlm");
  const auto mlm = run_twostage({"run", "recipes/augment_llm.lua", "--out", (dir.path / "mlm").string(), "--set",
                                 "augmenter=mlm", "--set", "mlm_model=../shared/golden/bert-mlm", "--set", "limit=30",
                                 "--set", "target=12"},
                                dir.path / "output.txt");
  INFO(mlm.output);
  REQUIRE(mlm.status == 0);
  CHECK(read_aug(dir.path / "mlm" / "aug.csv").size() == 24);

  // A classifier sure of class 1 whatever the text: every paraphrase of class 0 is a confident label flip.
  torch::manual_seed(3);
  ts::BertConfig config;
  config.vocab_size = 30522;
  config.hidden_size = 32;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.intermediate_size = 64;
  ts::BertForSequenceClassification classifier(config);
  {
    torch::NoGradGuard no_grad;
    classifier->classifier_linear->weight.zero_();
    classifier->classifier_linear->bias.copy_(torch::tensor({-10.0f, 10.0f}));
  }
  ts::SaveOptions save;
  save.tokenizer_from = "../shared/data/vocab/bert-base-uncased";
  ts::save_pretrained(classifier, dir.path / "sure_of_one", save);

  const auto filtered = run_twostage(
      {"run", "recipes/augment_llm.lua", "--out", (dir.path / "filtered").string(), "--set", "augmenter=eda", "--set",
       "limit=30", "--set", "target=10", "--set", "refill_rounds=0", "--set", "allow_short=true", "--set",
       "filter_model=" + (dir.path / "sure_of_one").string()},
      dir.path / "output_filtered.txt");
  INFO(filtered.output);
  REQUIRE(filtered.status == 0);
  const auto summary = nlohmann::json::parse(read_text(dir.path / "filtered" / "summary.json"));
  INFO(summary.dump(2));
  CHECK(summary["rejections"]["classifier"].get<int>() > 0);
  CHECK(summary["classes"]["0"]["accepted"] == 0);  // every class-0 paraphrase was dropped
  CHECK(summary["classes"]["1"]["accepted"].get<int>() > 0);  // class 1's agree with the classifier and stay
  CHECK(summary["classes"]["0"]["written"] == 0);
  CHECK(summary["short"]["0"] == 10);
  CHECK(summary["allow_short"] == true);
  for (const auto& row : read_aug(dir.path / "filtered" / "aug.csv")) CHECK(row.label == "1");
}
