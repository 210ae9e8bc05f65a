// `twostage sweep` and `twostage results` as a user runs them, on the toy recipes of tests/fixtures/sweep/ (each
// job takes well under a second and writes metrics computed from its settings; see toy_job.lua).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <twostage/build_info.h>

#include <fmt/format.h>

#include "core/fs.h"
#include "store/results_store.h"
#include "sweep/process.h"
#include "lua/executable.h"

namespace fs = std::filesystem;
using nlohmann::json;
using ts::store::JobStatus;

namespace {

const std::string kSweep = "tests/fixtures/sweep/small_sweep.lua";
const std::string kTwostage = std::string(TWOSTAGE_BINARY_DIR) + "/twostage";

using ts::testing::Result;

Result run(const std::string& arguments) { return ts::testing::run_twostage(arguments); }

// Every test's folders, removed when the test process ends.
const fs::path kScratch = fs::temp_directory_path() / ("twostage-sweep-" + std::to_string(::getpid()));
struct RemoveScratch {
  ~RemoveScratch() {
    std::error_code ignored;
    fs::remove_all(kScratch, ignored);
  }
} remove_scratch;

fs::path fresh_folder(const std::string& name) {
  const auto folder = kScratch / name;
  fs::remove_all(folder);
  fs::create_directories(folder.parent_path());
  return folder;
}

int count(const std::string& text, const std::string& part) {
  int found = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++found;
  return found;
}

std::map<std::string, ts::store::JobRecord> rows(const fs::path& sweep_dir) {
  ts::store::ResultsStore store(sweep_dir / "results.sqlite");
  std::map<std::string, ts::store::JobRecord> by_id;
  for (auto& record : store.jobs()) by_id.emplace(record.id, std::move(record));
  return by_id;
}

int count_status(const std::map<std::string, ts::store::JobRecord>& by_id, JobStatus status) {
  int n = 0;
  for (const auto& item : by_id) n += item.second.status == status;
  return n;
}

const ts::store::JobRecord& find_job(const std::map<std::string, ts::store::JobRecord>& by_id,
                                     const std::string& method, double ratio, int seed) {
  for (const auto& [id, record] : by_id)
    if (record.method == method && record.settings["ratio"] == ratio && record.settings["seeds"] == seed) return record;
  FAIL("no job " << method << " ratio " << ratio << " seed " << seed);
  throw;
}

}  // namespace

TEST_CASE("a small sweep runs each job once with --jobs 2, and run again it starts nothing") {
  const auto out = fresh_folder("twice");
  const std::string command = "sweep " + kSweep + " --out " + out.string() + " --jobs 2";
  const auto first = run(command);
  INFO(first.output);
  REQUIRE(first.status == 0);
  const int threads = std::max(1, ts::sweep::usable_cpus() / 2);
  CHECK_THAT(first.output, Catch::Contains(fmt::format("8 jobs: 0 done before, 8 to run, 2 at a time with {} thread",
                                                       threads)));
  CHECK(count(first.output, "] start ") == 8);

  auto before = rows(out);
  REQUIRE(before.size() == 8);
  CHECK(count_status(before, JobStatus::Done) == 8);
  for (const auto& [id, record] : before) {
    CHECK(record.attempts == 1);
    CHECK(record.duration_s.value_or(0) > 0);
    CHECK(fs::exists(out / record.run_dir / "metrics.json"));
    CHECK(fs::exists(out / record.run_dir / "config.json"));
    CHECK(fs::exists(out / record.run_dir / "log.txt"));
    const auto job_record = json::parse(ts::read_file(out / record.run_dir / "job.json"));
    CHECK(job_record["status"] == "done");
    CHECK_THAT(job_record["command"].get<std::string>(), Catch::Contains(fmt::format("--threads {} --quiet", threads)));
  }
  // The toy job's numbers: f1_minority = 0.3 + 0.5 * ratio + (seed % 10) / 100 for vanilla.
  CHECK(find_job(before, "vanilla", 0.2, 7).metrics.at("f1_minority") == Approx(0.47));
  CHECK(find_job(before, "two_stage_reweight", 0.5, 42).metrics.at("f1_minority") == Approx(0.67));
  CHECK(find_job(before, "vanilla", 0.2, 42).metrics.at("f1_class_0") == Approx(0.9));

  // Two at a time: some jobs' run times overlap (timestamps share one format, so text order is time order).
  bool overlapped = false;
  for (const auto& a : before)
    for (const auto& b : before)
      if (a.first != b.first && a.second.started_at < b.second.started_at &&
          b.second.started_at < a.second.finished_at)
        overlapped = true;
  CHECK(overlapped);

  // The report, its CSV and the plots.
  const std::string report = ts::read_file(out / "report.md");
  CHECK_THAT(report, Catch::Contains("8 jobs: 8 done, 0 failed") && Catch::Contains("![f1_minority against ratio]") &&
                         Catch::Contains("| two_stage_reweight | 0.5 | 2 | 0.695 ± 0.035 |") &&
                         Catch::Contains("## Per-class F1 at ratio = 0.2") &&
                         Catch::Contains("| positive | 0.545 ± 0.035 | 0.445 ± 0.035 |"));
  for (const char* plot : {"f1_minority.png", "macro_f1.png", "per_class_f1.png"}) {
    INFO(plot << "\n" << report);
    CHECK(fs::file_size(out / "plots" / plot) > 1000);
  }
  const std::string csv = ts::read_file(out / "summary.csv");
  CHECK_THAT(csv, Catch::StartsWith("method,ratio,n,f1_minority_mean,f1_minority_std,f1_minority_n,"));
  CHECK_THAT(csv, Catch::Contains("\nvanilla,0.2,2,0.445"));

  // Run again: nothing starts, nothing in the store changes.
  const auto second = run(command);
  INFO(second.output);
  CHECK(second.status == 0);
  CHECK_THAT(second.output, Catch::Contains("8 jobs: 8 done before, 0 to run"));
  CHECK(count(second.output, "] start ") == 0);
  const auto after = rows(out);
  for (const auto& [id, record] : before) {
    CHECK(after.at(id).finished_at == record.finished_at);
    CHECK(after.at(id).attempts == 1);
  }

  // twostage results: mean ± std by the keys asked for, and its CSV.
  // vanilla f1_minority: 0.47, 0.42, 0.62, 0.57 -> mean 0.52, sample std sqrt(0.025 / 3) = 0.0913.
  const auto results = run("results " + out.string() + " --group-by method --metric f1_minority,macro_f1");
  INFO(results.output);
  CHECK(results.status == 0);
  CHECK_THAT(results.output, Catch::Contains("8 jobs, 8 done, 0 failed") &&
                                 Catch::Contains("vanilla             4  0.520 ± 0.091  0.710 ± 0.046"));
  const std::string results_csv = ts::read_file(out / "results.csv");
  CHECK_THAT(results_csv, Catch::StartsWith("method,n,f1_minority_mean,f1_minority_std,f1_minority_n,macro_f1_mean"));
  CHECK_THAT(results_csv, Catch::Contains("\nvanilla,4,0.52"));
  // Given the store file itself, with the default grouping (method and ratio; the seeds are averaged).
  const auto by_default = run("results " + (out / "results.sqlite").string() + " --csv " + (out / "mine.csv").string());
  CHECK(by_default.status == 0);
  CHECK_THAT(by_default.output, Catch::Contains("method              ratio  n"));
  CHECK(fs::exists(out / "mine.csv"));
  const auto misspelt = run("results " + out.string() + " --metric macro_f2");
  CHECK(misspelt.status != 0);
  CHECK_THAT(misspelt.output, Catch::Contains("no job in") && Catch::Contains("reports 'macro_f2'") &&
                                  Catch::Contains("macro_f1"));
  // A narrower plan over the same folder finds its jobs done; its report shows per-class F1 at the ratio it has.
  const auto narrower = run("sweep " + kSweep + " --out " + out.string() + " --set ratio=0.5 --collect");
  INFO(narrower.output);
  CHECK(narrower.status == 0);
  CHECK_THAT(ts::read_file(out / "report.md"),
             Catch::Contains("4 jobs: 4 done") && Catch::Contains("## Per-class F1 at ratio = 0.5") &&
                 Catch::Contains("per-class F1: no finished job at ratio = 0.2; shown at ratio = 0.5 instead"));
  const auto bad_key = run("results " + out.string() + " --group-by ratoi");
  CHECK(bad_key.status != 0);
  CHECK_THAT(bad_key.output, Catch::Contains("no setting 'ratoi'") && Catch::Contains("ratio"));
}

TEST_CASE("a sweep killed midway (its process group) runs only the missing jobs when started again") {
  const auto out = fresh_folder("killed");
  const std::vector<std::string> arguments = {"sweep", kSweep, "--out", out.string(), "--set", "ratio=0.2",
                                              "--set", "work_seconds=0.5"};
  const fs::path log_file = out.parent_path() / "killed-first-run.txt";
  const pid_t sweep = ::fork();
  REQUIRE(sweep >= 0);
  if (sweep == 0) {
    ::setpgid(0, 0);
    std::FILE* log = std::fopen(log_file.c_str(), "w");
    if (log) {
      ::dup2(::fileno(log), 1);
      ::dup2(::fileno(log), 2);
    }
    std::vector<char*> argv = {const_cast<char*>(kTwostage.c_str())};
    for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    ::execv(kTwostage.c_str(), argv.data());
    ::_exit(127);
  }
  ::setpgid(sweep, sweep);

  // Kill the whole group (the sweep and its running job) once two of the four jobs are done.
  int done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(out / "results.sqlite")) continue;
    done = count_status(rows(out), JobStatus::Done);
    if (done >= 2) break;
  }
  ::kill(-sweep, SIGKILL);
  int status = 0;
  ::waitpid(sweep, &status, 0);
  INFO(ts::read_file(log_file));
  REQUIRE(done >= 2);
  REQUIRE(WIFSIGNALED(status));

  const auto before = rows(out);
  const int done_before = count_status(before, JobStatus::Done);
  REQUIRE(done_before < 4);  // the kill came midway

  const auto again = run("sweep " + kSweep + " --out " + out.string() + " --set ratio=0.2 --set work_seconds=0.5");
  INFO(again.output);
  CHECK(again.status == 0);
  CHECK_THAT(again.output,
             Catch::Contains(fmt::format("4 jobs: {} done before, {} to run", done_before, 4 - done_before)));
  CHECK(count(again.output, "] start ") == 4 - done_before);
  if (count_status(before, JobStatus::Running) > 0)
    CHECK_THAT(again.output, Catch::Contains("interrupted in an earlier run will run again"));

  const auto after = rows(out);
  CHECK(count_status(after, JobStatus::Done) == 4);
  for (const auto& [id, record] : before) {
    CHECK(after.at(id).attempts == 1);  // an interrupted run is not an attempt
    if (record.status == JobStatus::Done) CHECK(after.at(id).finished_at == record.finished_at);
  }
}

TEST_CASE("a job that fails is retried once, then reported, and one that fails once succeeds on its retry") {
  const auto out = fresh_folder("failing");
  const auto failing = run("sweep " + kSweep + " --out " + out.string() + " --set seeds=7 --set fail_above_ratio=0.3");
  INFO(failing.output);
  CHECK(failing.status == 1);
  CHECK(count(failing.output, "will retry") == 2);
  CHECK_THAT(failing.output, Catch::Contains("failed after 2 attempts") &&
                                 Catch::Contains("ratio 0.5 is above fail_above_ratio 0.3"));
  const auto stored = rows(out);
  CHECK(count_status(stored, JobStatus::Done) == 2);
  CHECK(count_status(stored, JobStatus::Failed) == 2);
  for (const auto& [id, record] : stored) {
    if (record.status != JobStatus::Failed) continue;
    CHECK(record.attempts == 2);
    CHECK(record.settings["ratio"] == 0.5);
    CHECK_THAT(record.error, Catch::StartsWith("exit status 1") &&
                                 Catch::Contains("ratio 0.5 is above fail_above_ratio 0.3"));
    // Each attempt's output is kept, one after the other.
    CHECK(count(ts::read_file(out / record.run_dir / "output.txt"), "== twostage sweep: attempt") == 2);
  }
  const std::string report = ts::read_file(out / "report.md");
  CHECK_THAT(report, Catch::Contains("4 jobs: 2 done, 2 failed") && Catch::Contains("## Failed jobs"));

  // The next run tries the failed jobs again (and only them).
  const auto retried = run("sweep " + kSweep + " --out " + out.string() + " --set seeds=7 --set fail_above_ratio=0.3");
  CHECK(retried.status == 1);
  CHECK_THAT(retried.output, Catch::Contains("4 jobs: 2 done before, 2 to run"));

  const auto flaky_out = fresh_folder("flaky");
  const auto flaky = run("sweep " + kSweep + " --out " + flaky_out.string() +
                         " --set seeds=7 --set ratio=0.2 --set fail_first_attempt=true");
  INFO(flaky.output);
  CHECK(flaky.status == 0);
  CHECK(count(flaky.output, "will retry") == 2);
  for (const auto& [id, record] : rows(flaky_out)) {
    CHECK(record.status == JobStatus::Done);
    CHECK(record.attempts == 2);
    CHECK(record.error.empty());
  }
}

TEST_CASE("emit slurm writes a job array whose tasks run the jobs, and --collect reads them into the store") {
  const auto out = fresh_folder("emit");
  const std::string sweep =
      "sweep " + kSweep + " --out " + out.string() + " --set slurm.partition=debug --set seeds=7";
  const auto emitted = run(sweep + " --emit slurm");
  INFO(emitted.output);
  REQUIRE(emitted.status == 0);
  const fs::path script = out / "slurm" / "sweep.sbatch";
  CHECK_THAT(emitted.output, Catch::Contains("4 array tasks") && Catch::Contains("sbatch " + script.string()));
  const std::string text = ts::read_file(script);
  CHECK_THAT(text, Catch::StartsWith("#!/bin/bash\n#SBATCH --array=0-3\n") &&
                       Catch::Contains("#SBATCH --cpus-per-task=1\n") && Catch::Contains("#SBATCH --mem=200M\n") &&
                       Catch::Contains("#SBATCH --partition=debug\n") && Catch::Contains("#SBATCH --time=00:05:00\n") &&
                       Catch::Contains("#SBATCH --job-name=twostage-small_sweep\n"));
  CHECK(rows(out).size() == 4);
  CHECK(count_status(rows(out), JobStatus::Pending) == 4);

  // Run two array tasks the way Slurm would (same script, SLURM_ARRAY_TASK_ID set), then collect.
  auto run_task = [&](int task) {
    const std::string command = "SLURM_ARRAY_TASK_ID=" + std::to_string(task) + " SLURM_CPUS_PER_TASK=1 bash " +
                                script.string() + " > " + (out / ("task" + std::to_string(task) + ".txt")).string() +
                                " 2>&1";
    return std::system(command.c_str());
  };
  for (int task = 0; task < 2; ++task) CHECK(run_task(task) == 0);
  const auto collected = run(sweep + " --collect");
  INFO(collected.output);
  CHECK(collected.status == 0);
  CHECK_THAT(collected.output, Catch::Contains("2 done, 0 failed, 0 running, 2 not started (2 rows updated)"));
  auto stored = rows(out);
  CHECK(count_status(stored, JobStatus::Done) == 2);
  for (const auto& [id, record] : stored) {
    if (record.status != JobStatus::Done) continue;
    CHECK(record.attempts == 1);
    CHECK(record.duration_s.value_or(-1) > 0);
    const auto job_record = json::parse(ts::read_file(out / record.run_dir / "job.json"));
    CHECK(job_record["runner"] == "slurm");
  }
  // Collecting again changes nothing.
  CHECK_THAT(run(sweep + " --collect").output, Catch::Contains("(0 rows updated)"));

  // A new script holds only the two jobs left.
  const auto rest = run(sweep + " --emit slurm");
  CHECK_THAT(rest.output, Catch::Contains("2 array tasks (2 jobs done before)"));
  CHECK_THAT(ts::read_file(script), Catch::StartsWith("#!/bin/bash\n#SBATCH --array=0-1\n"));
  for (int task = 0; task < 2; ++task) CHECK(run_task(task) == 0);
  CHECK(run_task(2) != 0);  // no such task
  CHECK_THAT(run(sweep + " --collect").output, Catch::Contains("4 done, 0 failed"));
  CHECK(count_status(rows(out), JobStatus::Done) == 4);
  CHECK_THAT(ts::read_file(out / "report.md"), Catch::Contains("4 jobs: 4 done"));
  CHECK_THAT(run(sweep + " --emit slurm").output, Catch::Contains("are done; nothing to emit"));
  // A local run finds nothing to do either.
  CHECK_THAT(run(sweep).output, Catch::Contains("4 jobs: 4 done before, 0 to run"));

  // A task whose job fails: collect records the failure with the job's own error message.
  const auto failing_out = fresh_folder("emit-failing");
  const std::string failing = "sweep " + kSweep + " --out " + failing_out.string() +
                              " --set methods=vanilla --set ratio=0.5 --set seeds=7 --set fail_above_ratio=0.3";
  REQUIRE(run(failing + " --emit slurm").status == 0);
  const std::string failing_task = "SLURM_ARRAY_TASK_ID=0 bash " + (failing_out / "slurm" / "sweep.sbatch").string() +
                                   " > /dev/null 2>&1";
  CHECK(std::system(failing_task.c_str()) != 0);
  CHECK_THAT(run(failing + " --collect").output, Catch::Contains("0 done, 1 failed"));
  const auto failed = rows(failing_out);
  REQUIRE(failed.size() == 1);
  const auto& record = failed.begin()->second;
  CHECK(record.status == JobStatus::Failed);
  CHECK(record.attempts == 1);
  CHECK_THAT(record.error, Catch::StartsWith("exit status 1") &&
                               Catch::Contains("ratio 0.5 is above fail_above_ratio 0.3"));
}

TEST_CASE("sweep command-line mistakes are usage errors, and --dry-run lists the jobs") {
  const auto missing = run("sweep");
  CHECK(missing.status == 2);
  CHECK_THAT(missing.output, Catch::Contains("sweep needs a sweep file") && Catch::Contains("usage: twostage sweep"));
  const auto bad_jobs = run("sweep " + kSweep + " --jobs 0");
  CHECK(bad_jobs.status == 2);
  CHECK_THAT(bad_jobs.output, Catch::Contains("--jobs expects a positive integer"));
  const auto bad_emit = run("sweep " + kSweep + " --emit pbs");
  CHECK(bad_emit.status == 2);
  const auto no_file = run("sweep no_such_sweep.lua");
  CHECK(no_file.status == 1);
  CHECK_THAT(no_file.output, Catch::Contains("no sweep file 'no_such_sweep.lua'"));

  const auto dry_out = fresh_folder("dry");
  const auto dry = run("sweep " + kSweep + " --dry-run --set ratio=0.3 --out " + dry_out.string());
  INFO(dry.output);
  CHECK(dry.status == 0);
  CHECK_THAT(dry.output, Catch::Contains("4 jobs in " + dry_out.string()) &&
                             Catch::Contains("--set ratio=0.3 --set seeds=42 --sweep-file-settings epochs_stage1,seeds"
                                             " --out " + dry_out.string() + "/jobs/"));
  CHECK_FALSE(fs::exists(dry_out));  // a dry run creates nothing
}

TEST_CASE("an error in the sweep file reports its line") {
  const auto folder = fresh_folder("broken");
  fs::create_directories(folder);
  const auto file = folder / "broken_sweep.lua";
  std::ofstream(file) << "local x = 1\nreturn { methods = undefined_name }\n";
  const auto result = run("sweep " + file.string());
  CHECK(result.status == 1);
  CHECK_THAT(result.output, Catch::Contains("broken_sweep.lua:2: undeclared global 'undefined_name'"));
  std::ofstream(file) << "return 42\n";
  CHECK_THAT(run("sweep " + file.string()).output, Catch::Contains("must return a table"));
  // A sweep file may not write files: it is evaluated in the recipe sandbox.
  std::ofstream(file) << "local ts = require 'twostage'\nts.write_file('/tmp/x.txt', 'x')\nreturn {}\n";
  const auto writes = run("sweep " + file.string());
  CHECK(writes.status == 1);
  CHECK_THAT(writes.output, Catch::Contains("broken_sweep.lua:2:"));
}
