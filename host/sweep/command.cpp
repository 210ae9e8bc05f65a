#include "sweep/command.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "store/results_store.h"
#include "store/summary.h"
#include "sweep/local.h"
#include "sweep/plan.h"
#include "sweep/process.h"
#include "sweep/report.h"
#include "sweep/slurm.h"

namespace ts::sweep {

namespace fs = std::filesystem;

const char* const kSweepUsage = R"(usage: twostage sweep SWEEP.lua [--set key=value]... [--out DIR] [--jobs N]
       twostage sweep SWEEP.lua --emit slurm     write an sbatch job array of the jobs not done yet
       twostage sweep SWEEP.lua --collect        read finished job folders into the store
       twostage sweep SWEEP.lua --dry-run        list the jobs and their commands

  --set key=value  a grid axis gets a list (--set ratio=0.2,0.5), methods=a,b picks methods, slurm.KEY=V sets an
                   sbatch option; any other key is a recipe setting of every job
  --out DIR        the sweep folder (default sweeps/<sweep file name>): results.sqlite, jobs/, report.md, plots/
  --jobs N         jobs run at once here (default 1); each gets max(1, CPUs / N) threads
Finished jobs are skipped when the sweep runs again; a failed job is retried once, then reported.
)";

const char* const kResultsUsage = R"(usage: twostage results PATH [--group-by KEY,...] [--metric NAME,...] [--csv FILE]

  PATH          a sweep folder or its results.sqlite
  --group-by    settings (or method) to group by; default: every setting that varies, except the seeds
  --metric      metrics to summarize; default: f1_minority, macro_f1, accuracy (those reported)
  --csv FILE    where to write the table as CSV (default: results.csv beside the store)
Prints mean ± sample standard deviation over the done jobs of each group.
)";

namespace {

struct UsageError : Error {
  using Error::Error;
};

std::string take_value(const std::vector<std::string>& args, size_t& i) {
  if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
  return args[++i];
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) items.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

int usage_error(const std::string& message, const char* usage) {
  std::cerr << "twostage: " << message << "\n\n" << usage;
  return 2;
}

std::vector<store::JobRecord> plan_records(const store::ResultsStore& store, const std::vector<Job>& jobs) {
  std::set<std::string> ids;
  for (const auto& job : jobs) ids.insert(job.id);
  std::vector<store::JobRecord> records;
  for (auto& record : store.jobs())
    if (ids.count(record.id)) records.push_back(std::move(record));
  return records;
}

void print_summary_table(const std::vector<store::JobRecord>& records, const ReportOptions& report) {
  std::vector<store::JobRecord> done;
  for (const auto& record : records)
    if (record.status == store::JobStatus::Done) done.push_back(record);
  if (done.empty()) return;
  const auto keys = report.group_by.empty() ? store::varying_keys(done, kSeedKeys) : report.group_by;
  const auto present = store::metric_names(done);
  std::vector<std::string> metrics;
  for (const auto& metric : report.metrics)
    if (std::find(present.begin(), present.end(), metric) != present.end()) metrics.push_back(metric);
  if (metrics.empty()) return;
  std::cout << store::format_table(store::summarize(done, keys, metrics), keys, metrics);
}

int run_sweep(const std::vector<std::string>& args, const EvaluateSweepFile& evaluate) {
  std::optional<fs::path> sweep_file;
  std::vector<Override> overrides;
  std::optional<fs::path> out;
  int parallel = 1;
  std::string mode = "run";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--set" || arg.rfind("--set=", 0) == 0) {
      const std::string assignment = arg == "--set" ? take_value(args, i) : arg.substr(6);
      const auto equals = assignment.find('=');
      if (equals == std::string::npos || equals == 0)
        throw UsageError("--set expects key=value, got '" + assignment + "'");
      overrides.emplace_back(assignment.substr(0, equals), assignment.substr(equals + 1));
    } else if (arg == "--out") {
      out = take_value(args, i);
    } else if (arg == "--jobs" || arg == "-j") {
      const std::string text = take_value(args, i);
      char* end = nullptr;
      const long value = std::strtol(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || value < 1) throw UsageError("--jobs expects a positive integer, got '" + text + "'");
      parallel = static_cast<int>(value);
    } else if (arg == "--emit") {
      const std::string target = take_value(args, i);
      if (target != "slurm") throw UsageError("--emit knows only 'slurm', got '" + target + "'");
      mode = "emit";
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kSweepUsage;
      return 0;
    } else if (arg == "--collect") {
      mode = "collect";
    } else if (arg == "--dry-run") {
      mode = "dry-run";
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "'");
    } else if (!sweep_file) {
      sweep_file = arg;
    } else {
      throw UsageError("unexpected argument '" + arg + "' (settings are given as --set key=value)");
    }
  }
  if (!sweep_file) throw UsageError("sweep needs a sweep file");
  if (!fs::is_regular_file(*sweep_file)) fail("no sweep file '{}'", sweep_file->string());

  log::init(spdlog::level::info);
  const SweepPlan plan = parse_plan(evaluate(*sweep_file), *sweep_file, overrides);
  const std::vector<Job> jobs = expand(plan);
  const fs::path sweep_dir = out ? *out : fs::path("sweeps") / plan.name;
  const fs::path executable = current_executable();

  if (mode == "dry-run") {
    const int threads = threads_per_job(usable_cpus(), parallel);
    std::cout << jobs.size() << " jobs in " << sweep_dir.string() << "\n";
    for (const auto& job : jobs) {
      std::string command = shell_quote(executable.string());
      for (const auto& argument : job_arguments(job, sweep_dir / job.run_dir, threads))
        command += " " + shell_quote(argument);
      std::cout << job.id << "\n  " << command << "\n";
    }
    return 0;
  }

  fs::create_directories(sweep_dir);
  FolderLock lock(sweep_dir / ".lock", "sweep folder '" + sweep_dir.string() + "'");
  write_file_atomic(sweep_dir / "plan.json", plan_json(plan, jobs).dump(2) + "\n");
  store::ResultsStore store(sweep_dir / "results.sqlite");
  for (const auto& job : jobs) store.add_job(job);

  // Folders finished elsewhere (a Slurm array, a run killed after its job ended) count before anything is decided.
  const CollectSummary collected = collect(store, jobs, sweep_dir);
  std::string again = "twostage sweep " + shell_quote(sweep_file->string());
  for (const auto& [key, value] : overrides) again += " --set " + shell_quote(key + "=" + value);
  if (out) again += " --out " + shell_quote(out->string());

  if (mode == "collect") {
    log::info("collect", fmt::format("collected {}: {} done, {} failed, {} running, {} not started ({} rows updated)",
                                     sweep_dir.string(), collected.done, collected.failed, collected.running,
                                     collected.not_started, collected.updated),
              {{"done", collected.done}, {"failed", collected.failed}, {"running", collected.running},
               {"not_started", collected.not_started}, {"updated", collected.updated}});
    const auto records = plan_records(store, jobs);
    const auto report = write_report(sweep_dir, plan.name, records, plan.report);
    print_summary_table(records, plan.report);
    std::cout << "report: " << report.markdown.string() << "\n";
    return 0;
  }

  if (mode == "emit") {
    std::vector<const Job*> remaining;
    for (const auto& job : jobs) {
      const auto row = store.job(job.id);
      if (!row || row->status != store::JobStatus::Done) remaining.push_back(&job);
    }
    if (remaining.empty()) {
      std::cout << "all " << jobs.size() << " jobs of " << sweep_dir.string() << " are done; nothing to emit\n";
      return 0;
    }
    const auto script = write_slurm_script(sweep_dir, plan.name, remaining, plan.slurm, executable, fs::current_path(),
                                           again + " --collect");
    std::cout << "wrote " << script.path.string() << ": " << script.tasks << " array tasks ("
              << jobs.size() - remaining.size() << " jobs done before)\n"
              << "submit:   sbatch " << shell_quote(script.path.string()) << "\n"
              << "then:     " << again << " --collect\n";
    return 0;
  }

  // Holding the lock, no other sweep runs here: a row still marked running was interrupted.
  const int interrupted = store.reset_running();
  if (interrupted)
    log::info("interrupted", fmt::format("{} job{} interrupted in an earlier run will run again", interrupted,
                                         interrupted == 1 ? "" : "s"));
  if (!plan.description.empty()) log::info("sweep", plan.description);
  LocalOptions options;
  options.executable = executable;
  options.parallel = parallel;
  const auto summary = run_local(store, jobs, sweep_dir, options);
  const auto records = plan_records(store, jobs);
  const auto report = write_report(sweep_dir, plan.name, records, plan.report);
  print_summary_table(records, plan.report);
  std::cout << fmt::format("sweep {}: {} jobs, {} done before, {} done now, {} failed; report {}\n",
                           sweep_dir.string(), summary.total, summary.already_done, summary.done,
                           summary.failed.size(), report.markdown.string());
  if (!summary.failed.empty()) {
    std::cout << "failed after " << options.attempts << " attempts (see each job's output.txt):\n";
    for (const auto& id : summary.failed) std::cout << "  " << (sweep_dir / "jobs" / id).string() << "\n";
    std::cout << "run `" << again << "` again to retry them\n";
    return 1;
  }
  return 0;
}

int show_results(const std::vector<std::string>& args) {
  std::optional<fs::path> path;
  std::vector<std::string> keys, metrics;
  bool keys_given = false;
  std::optional<fs::path> csv;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--group-by") {
      keys = split_list(take_value(args, i));
      keys_given = true;
    } else if (arg == "--metric" || arg == "--metrics") {
      metrics = split_list(take_value(args, i));
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kResultsUsage;
      return 0;
    } else if (arg == "--csv") {
      csv = take_value(args, i);
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "'");
    } else if (!path) {
      path = arg;
    } else {
      throw UsageError("unexpected argument '" + arg + "'");
    }
  }
  if (!path) throw UsageError("results needs a sweep folder or its results.sqlite");
  const fs::path database = fs::is_directory(*path) ? *path / "results.sqlite" : *path;
  if (!fs::is_regular_file(database)) fail("no results store at '{}'", database.string());
  const store::ResultsStore store(database);
  const auto records = store.jobs();
  std::vector<store::JobRecord> done;
  std::map<store::JobStatus, int> counts;
  for (const auto& record : records) {
    ++counts[record.status];
    if (record.status == store::JobStatus::Done) done.push_back(record);
  }

  // Known keys and metrics, so that a misspelt name is an error that lists the right ones.
  std::set<std::string> known_keys = {"method", "status"};
  for (const auto& record : records)
    for (const auto& item : record.settings.items()) known_keys.insert(item.key());
  for (const auto& key : keys)
    if (!known_keys.count(key)) {
      std::string list;
      for (const auto& known : known_keys) list += (list.empty() ? "" : ", ") + known;
      fail("--group-by: no setting '{}' in {} (known: {})", key, database.string(), list);
    }
  if (!keys_given) keys = store::varying_keys(done, kSeedKeys);
  const auto present = store::metric_names(done);
  if (metrics.empty()) {
    for (const char* metric : {"f1_minority", "macro_f1", "accuracy"})
      if (std::find(present.begin(), present.end(), metric) != present.end()) metrics.push_back(metric);
    if (metrics.empty())
      for (const auto& metric : present)
        if (metric.rfind("f1_class_", 0) != 0) metrics.push_back(metric);
  } else {
    for (const auto& metric : metrics)
      if (!done.empty() && std::find(present.begin(), present.end(), metric) == present.end()) {
        std::string list;
        for (const auto& known : present) list += (list.empty() ? "" : ", ") + known;
        fail("--metric: no job in {} reports '{}' (known: {})", database.string(), metric, list);
      }
  }

  std::cout << fmt::format("{}: {} jobs, {} done, {} failed, {} pending, {} running\n", database.string(),
                           records.size(), counts[store::JobStatus::Done], counts[store::JobStatus::Failed],
                           counts[store::JobStatus::Pending], counts[store::JobStatus::Running]);
  if (done.empty()) {
    std::cout << "no finished jobs yet\n";
    return 0;
  }
  const auto groups = store::summarize(done, keys, metrics);
  std::cout << "mean ± sample std over the jobs of each group (n)\n" << store::format_table(groups, keys, metrics);
  const fs::path csv_path = csv ? *csv : database.parent_path() / "results.csv";
  write_file_atomic(csv_path, store::format_csv(groups, keys, metrics));
  std::cout << "wrote " << csv_path.string() << "\n";
  return 0;
}

}  // namespace

int sweep_command(const std::vector<std::string>& args, const EvaluateSweepFile& evaluate) {
  try {
    return run_sweep(args, evaluate);
  } catch (const UsageError& error) {
    return usage_error(error.what(), kSweepUsage);
  }
}

int results_command(const std::vector<std::string>& args) {
  try {
    return show_results(args);
  } catch (const UsageError& error) {
    return usage_error(error.what(), kResultsUsage);
  }
}

}  // namespace ts::sweep
