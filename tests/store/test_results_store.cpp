// The results store: rows, statuses, settings and metrics tables, and the grouping behind `twostage results`.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include <sqlite3.h>

#include "core/error.h"
#include "store/results_store.h"
#include "store/summary.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ts::store;

namespace {

// Every test's folders, removed when the test process ends.
const fs::path kScratch = fs::temp_directory_path() / ("twostage-store-" + std::to_string(::getpid()));
struct RemoveScratch {
  ~RemoveScratch() {
    std::error_code ignored;
    fs::remove_all(kScratch, ignored);
  }
} remove_scratch;

fs::path fresh_folder(const std::string& name) {
  const auto folder = kScratch / name;
  fs::remove_all(folder);
  fs::create_directories(folder);
  return folder;
}

JobSpec spec(const std::string& id, const std::string& method, json settings) {
  return {id, method, "recipes/" + method + ".lua", std::move(settings), "jobs/" + id};
}

// A done row as summarize() sees it.
JobRecord done_row(const std::string& id, const std::string& method, json settings, std::map<std::string, double> metrics) {
  JobRecord record;
  static_cast<JobSpec&>(record) = spec(id, method, std::move(settings));
  record.status = JobStatus::Done;
  record.metrics = std::move(metrics);
  return record;
}

// One column of one SQL query, as text.
std::vector<std::string> query(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK);
  std::vector<std::string> values;
  while (sqlite3_step(statement) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    values.push_back(text ? text : "NULL");
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return values;
}

}  // namespace

TEST_CASE("setting_text writes values as they are typed after --set") {
  CHECK(setting_text("ratio", json(0.1)) == "0.1");
  CHECK(setting_text("lr", json(1e-5)) == "1e-05");
  CHECK(setting_text("seeds", json(7)) == "7");
  CHECK(setting_text("epochs", json(3.0)) == "3");
  CHECK(setting_text("seeds", json::array({7, 42, 106})) == "7,42,106");
  CHECK(setting_text("flag", json(true)) == "true");
  CHECK(setting_text("name", json("sst2")) == "sst2");
  CHECK_THROWS_WITH(setting_text("bad", json{{"a", 1}}), Catch::Contains("setting 'bad'"));
  CHECK_THROWS_WITH(setting_text("nested", json::array({json::array({1})})), Catch::Contains("setting 'nested'"));
}

TEST_CASE("flatten_metrics keeps top-level numbers and f1_per_class by index") {
  const json metrics = {{"accuracy", 0.9},        {"macro_f1", 0.8},       {"f1_per_class", {0.95, 0.65}},
                        {"minority_class", 1},    {"classes", {"a", "b"}}, {"per_seed", {{"7", {{"accuracy", 0.9}}}}},
                        {"std", {{"accuracy", nullptr}}}, {"confusion_matrix", {{1, 2}, {3, 4}}}};
  const auto flat = flatten_metrics(metrics);
  CHECK(flat == std::map<std::string, double>{{"accuracy", 0.9},
                                              {"macro_f1", 0.8},
                                              {"f1_class_0", 0.95},
                                              {"f1_class_1", 0.65},
                                              {"minority_class", 1}});
}

TEST_CASE("the store keeps a row per job with settings, status, attempts, times and metrics") {
  const auto folder = fresh_folder("rows");
  const auto file = folder / "results.sqlite";
  {
    ResultsStore store(file);
    CHECK(store.add_job(spec("a", "vanilla", {{"ratio", 0.2}, {"seeds", 7}, {"tags", {"x", "y"}}})));
    CHECK(store.add_job(spec("b", "two_stage_reweight", {{"ratio", 0.5}, {"seeds", 42}})));
    // The same job again is not a new row; another job under the same id is an error.
    CHECK_FALSE(store.add_job(spec("a", "vanilla", {{"ratio", 0.2}, {"seeds", 7}, {"tags", {"x", "y"}}})));
    CHECK_THROWS_WITH(store.add_job(spec("a", "vanilla", {{"ratio", 0.3}})), Catch::Contains("job id 'a'"));

    store.mark_running("a", "2024-01-01T00:00:00.000Z");
    store.mark_done("a", "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:02.500Z", 2.5,
                    {{"macro_f1", 0.75}, {"f1_per_class", {0.9, 0.6}}, {"classes", {"neg", "pos"}}});
    store.mark_running("b", "2024-01-01T00:00:03.000Z");
    store.mark_failed("b", "2024-01-01T00:00:03.000Z", "2024-01-01T00:00:04.000Z", 1.0, "exit status 1\nboom");
    CHECK_THROWS_WITH(store.mark_running("nope", "t"), Catch::Contains("no job 'nope'"));
  }
  // Everything is on disk: a new store object reads it back.
  ResultsStore store(file);
  const auto a = store.job("a");
  REQUIRE(a);
  CHECK(a->status == JobStatus::Done);
  CHECK(a->attempts == 1);
  CHECK(a->method == "vanilla");
  CHECK(a->run_dir == "jobs/a");
  CHECK(a->settings == json{{"ratio", 0.2}, {"seeds", 7}, {"tags", {"x", "y"}}});
  CHECK(a->started_at == "2024-01-01T00:00:00.000Z");
  CHECK(a->finished_at == "2024-01-01T00:00:02.500Z");
  REQUIRE(a->duration_s);
  CHECK(*a->duration_s == Approx(2.5));
  CHECK(a->metrics == std::map<std::string, double>{{"macro_f1", 0.75}, {"f1_class_0", 0.9}, {"f1_class_1", 0.6}});
  CHECK(a->metrics_json["classes"] == json{"neg", "pos"});
  const auto b = store.job("b");
  REQUIRE(b);
  CHECK(b->status == JobStatus::Failed);
  CHECK(b->attempts == 1);
  CHECK(b->error == "exit status 1\nboom");
  CHECK(b->metrics.empty());
  CHECK_FALSE(store.job("c"));
  CHECK(store.counts() == std::map<JobStatus, int>{{JobStatus::Done, 1}, {JobStatus::Failed, 1}});

  // The key-value tables let SQL group by any setting or metric.
  CHECK(query(file, "SELECT value FROM job_settings WHERE job_id = 'a' ORDER BY key") ==
        std::vector<std::string>{"0.2", "7", "x,y"});
  CHECK(query(file, "SELECT number FROM job_settings WHERE job_id = 'a' AND key = 'tags'") ==
        std::vector<std::string>{"NULL"});
  CHECK(query(file, "SELECT name || '=' || value FROM job_metrics WHERE job_id = 'a' ORDER BY name") ==
        std::vector<std::string>{"f1_class_0=0.9", "f1_class_1=0.6", "macro_f1=0.75"});
  CHECK(query(file,
              "SELECT s.value || ':' || AVG(m.value) FROM jobs j JOIN job_settings s ON s.job_id = j.id "
              "JOIN job_metrics m ON m.job_id = j.id WHERE s.key = 'ratio' AND m.name = 'macro_f1' GROUP BY s.value") ==
        std::vector<std::string>{"0.2:0.75"});

  // A failed job that succeeds later: attempts count both, the error is cleared, metrics replace nothing stale.
  store.mark_running("b", "2024-01-01T00:01:00.000Z");
  store.mark_done("b", "2024-01-01T00:01:00.000Z", "2024-01-01T00:01:01.000Z", 1.0, {{"macro_f1", 0.5}});
  CHECK(store.job("b")->attempts == 2);
  CHECK(store.job("b")->error.empty());
  CHECK(store.job("b")->status == JobStatus::Done);
}

TEST_CASE("reset_running puts interrupted jobs back to pending without counting an attempt") {
  ResultsStore store(fresh_folder("reset") / "results.sqlite");
  store.add_job(spec("a", "vanilla", {{"ratio", 0.1}}));
  store.add_job(spec("b", "vanilla", {{"ratio", 0.2}}));
  store.mark_running("a", "2024-01-01T00:00:00.000Z");
  store.mark_running("b", "2024-01-01T00:00:00.000Z");
  store.mark_done("b", "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:01.000Z", 1, {{"macro_f1", 0.5}});
  CHECK(store.reset_running() == 1);
  CHECK(store.job("a")->status == JobStatus::Pending);
  CHECK(store.job("a")->attempts == 0);
  CHECK(store.job("b")->status == JobStatus::Done);
}

TEST_CASE("an unreadable store file is an error naming it") {
  const auto file = fresh_folder("garbage") / "results.sqlite";
  std::FILE* out = std::fopen(file.c_str(), "wb");
  std::fputs("this is not a database, but it is long enough to look like a header of one......", out);
  std::fclose(out);
  CHECK_THROWS_WITH(ResultsStore(file), Catch::Contains(file.string()));
}

TEST_CASE("summarize: mean and sample standard deviation per group, checked by hand") {
  // vanilla at 0.2: 0.80, 0.84, 0.90 -> mean 0.846667; deviations -0.046667, -0.006667, 0.053333;
  // squares sum 0.0050667; / (3 - 1) = 0.0025333; std = 0.050332.
  // vanilla at 0.5: 0.70, 0.74 -> mean 0.72, std |0.04| / sqrt(2) = 0.028284.
  // reweight at 0.2: 0.90 alone -> mean 0.9, no std.
  std::vector<JobRecord> rows = {
      done_row("1", "vanilla", {{"ratio", 0.2}, {"seeds", 7}}, {{"macro_f1", 0.80}, {"acc", 1.0}}),
      done_row("2", "vanilla", {{"ratio", 0.2}, {"seeds", 42}}, {{"macro_f1", 0.84}, {"acc", 0.0}}),
      done_row("3", "vanilla", {{"ratio", 0.2}, {"seeds", 106}}, {{"macro_f1", 0.90}}),
      done_row("4", "vanilla", {{"ratio", 0.5}, {"seeds", 7}}, {{"macro_f1", 0.70}}),
      done_row("5", "vanilla", {{"ratio", 0.5}, {"seeds", 42}}, {{"macro_f1", 0.74}}),
      done_row("6", "two_stage_reweight", {{"ratio", 0.2}, {"seeds", 7}}, {{"macro_f1", 0.90}}),
  };
  const auto groups = summarize(rows, {"method", "ratio"}, {"macro_f1", "acc"});
  REQUIRE(groups.size() == 3);
  // Text keys in order: "two_stage_reweight" < "vanilla"; then ratio as a number.
  CHECK(groups[0].key_values == std::vector<std::string>{"two_stage_reweight", "0.2"});
  CHECK(groups[1].key_values == std::vector<std::string>{"vanilla", "0.2"});
  CHECK(groups[2].key_values == std::vector<std::string>{"vanilla", "0.5"});

  const auto& reweight = groups[0].metrics.at("macro_f1");
  CHECK(reweight.n == 1);
  CHECK(reweight.mean == Approx(0.9));
  CHECK_FALSE(reweight.std);

  const auto& low = groups[1];
  CHECK(low.rows == 3);
  CHECK(low.job_ids == std::vector<std::string>{"1", "2", "3"});
  CHECK(low.metrics.at("macro_f1").n == 3);
  CHECK(low.metrics.at("macro_f1").mean == Approx(0.846667).epsilon(1e-5));
  REQUIRE(low.metrics.at("macro_f1").std);
  CHECK(*low.metrics.at("macro_f1").std == Approx(0.050332).epsilon(1e-4));
  // A metric only some rows have is averaged over those rows.
  CHECK(low.metrics.at("acc").n == 2);
  CHECK(low.metrics.at("acc").mean == Approx(0.5));
  CHECK(*low.metrics.at("acc").std == Approx(std::sqrt(0.5)));

  const auto& high = groups[2].metrics.at("macro_f1");
  CHECK(high.mean == Approx(0.72));
  CHECK(*high.std == Approx(0.028284).epsilon(1e-4));
  CHECK(groups[2].metrics.count("acc") == 0);

  // Everything in one group when there are no keys.
  const auto all = summarize(rows, {}, {"macro_f1"});
  REQUIRE(all.size() == 1);
  CHECK(all[0].rows == 6);
  CHECK(all[0].metrics.at("macro_f1").mean == Approx((0.80 + 0.84 + 0.90 + 0.70 + 0.74 + 0.90) / 6));
}

TEST_CASE("group keys sort numbers by value, then text") {
  std::vector<JobRecord> rows = {done_row("a", "m", {{"x", 10}}, {{"f", 1}}), done_row("b", "m", {{"x", 0.5}}, {{"f", 1}}),
                                 done_row("c", "m", {{"x", "abc"}}, {{"f", 1}}), done_row("d", "m", {{"x", 2}}, {{"f", 1}}),
                                 done_row("e", "m", json::object(), {{"f", 1}})};
  std::vector<std::string> order;
  for (const auto& group : summarize(rows, {"x"}, {"f"})) order.push_back(group.key_values[0]);
  CHECK(order == std::vector<std::string>{"0.5", "2", "10", "", "abc"});
}

TEST_CASE("varying_keys names what differs, method first, seeds left out") {
  std::vector<JobRecord> rows = {
      done_row("1", "vanilla", {{"ratio", 0.2}, {"seeds", 7}, {"epochs", 1}}, {{"macro_f1", 0.8}}),
      done_row("2", "reweight", {{"ratio", 0.5}, {"seeds", 42}, {"epochs", 1}}, {{"f1_minority", 0.4}}),
  };
  CHECK(varying_keys(rows, {"seeds"}) == std::vector<std::string>{"method", "ratio"});
  CHECK(varying_keys(rows, {}) == std::vector<std::string>{"method", "ratio", "seeds"});
  CHECK(metric_names(rows) == std::vector<std::string>{"f1_minority", "macro_f1"});

  // One method's own setting follows from method (and ratio): no grouping key. A setting every job has stays.
  rows.push_back(done_row("3", "augment", {{"ratio", 0.2}, {"seeds", 7}, {"epochs", 1}, {"data", "aug_0.2.csv"}}, {}));
  rows.push_back(done_row("4", "augment", {{"ratio", 0.5}, {"seeds", 7}, {"epochs", 1}, {"data", "aug_0.5.csv"}}, {}));
  CHECK(varying_keys(rows, {"seeds"}) == std::vector<std::string>{"method", "ratio"});
  rows.push_back(done_row("5", "augment", {{"ratio", 0.5}, {"seeds", 42}, {"epochs", 1}, {"data", "other.csv"}}, {}));
  CHECK(varying_keys(rows, {"seeds"}) == std::vector<std::string>{"method", "data", "ratio"});
}

TEST_CASE("tables: terminal, Markdown and CSV with exact text") {
  std::vector<JobRecord> rows = {
      done_row("1", "vanilla", {{"ratio", 0.2}}, {{"macro_f1", 0.8}}),
      done_row("2", "vanilla", {{"ratio", 0.2}}, {{"macro_f1", 0.9}}),
      done_row("3", "two, stage", {{"ratio", 0.5}}, {{"macro_f1", 0.7}}),
  };
  const auto groups = summarize(rows, {"method", "ratio"}, {"macro_f1", "missing"});
  // std of 0.8 and 0.9: 0.1 / sqrt(2) = 0.0707107
  CHECK(format_csv(groups, {"method", "ratio"}, {"macro_f1", "missing"}) ==
        "method,ratio,n,macro_f1_mean,macro_f1_std,macro_f1_n,missing_mean,missing_std,missing_n\n"
        "\"two, stage\",0.5,1,0.7,,1,,,0\n"
        "vanilla,0.2,2,0.8500000000000001,0.07071067811865474,2,,,0\n");
  CHECK(format_table(groups, {"method", "ratio"}, {"macro_f1"}) ==
        "method      ratio  n       macro_f1\n"
        "-----------------------------------\n"
        "two, stage  0.5    1          0.700\n"
        "vanilla     0.2    2  0.850 ± 0.071\n");
  CHECK(format_markdown(groups, {"method", "ratio"}, {"macro_f1"}) ==
        "| method | ratio | n | macro_f1 |\n"
        "|---|---|---:|---:|\n"
        "| two, stage | 0.5 | 1 | 0.700 |\n"
        "| vanilla | 0.2 | 2 | 0.850 ± 0.071 |\n");
  CHECK(format_mean_std(std::nullopt) == "-");
}
