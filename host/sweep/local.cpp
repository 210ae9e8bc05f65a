#include "sweep/local.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "sweep/job_folder.h"
#include "sweep/process.h"

namespace ts::sweep {

namespace fs = std::filesystem;
using nlohmann::json;

int threads_per_job(int cpus, int parallel) { return std::max(1, cpus / std::max(1, parallel)); }

namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "";
  return name;
}

// A short line for the terminal: the report's metrics when present.
std::string metrics_line(const json& metrics) {
  std::string line;
  for (const char* name : {"macro_f1", "f1_minority", "accuracy"})
    if (metrics.contains(name) && metrics[name].is_number())
      line += fmt::format("{}{} {:.4f}", line.empty() ? "" : ", ", name, metrics[name].get<double>());
  return line;
}

struct Running {
  const Job* job;
  int attempt;  // 1-based, in this sweep run
  std::string command;
  std::string started_at;
  std::chrono::steady_clock::time_point started;
  fs::path dir;
};

}  // namespace

LocalSummary run_local(store::ResultsStore& store, const std::vector<Job>& jobs, const fs::path& sweep_dir,
                       const LocalOptions& options) {
  LocalSummary summary;
  summary.total = static_cast<int>(jobs.size());
  const int parallel = std::max(1, options.parallel);
  const int threads = threads_per_job(options.cpus > 0 ? options.cpus : usable_cpus(), parallel);
  const std::string host = host_name();

  struct Queued {
    const Job* job;
    int attempt;
  };
  std::deque<Queued> queue;
  for (const auto& job : jobs) {
    const auto row = store.job(job.id);
    if (row && row->status == store::JobStatus::Done) {
      ++summary.already_done;
    } else {
      queue.push_back({&job, 1});
    }
  }
  const int to_run = static_cast<int>(queue.size());
  log::info("sweep_start",
            fmt::format("{} jobs: {} done before, {} to run, {} at a time with {} thread{} each", summary.total,
                        summary.already_done, to_run, parallel, threads, threads == 1 ? "" : "s"),
            {{"total", summary.total}, {"already_done", summary.already_done}, {"to_run", to_run},
             {"parallel", parallel}, {"threads", threads}});

  std::map<pid_t, Running> running;
  int finished = 0;
  const auto sweep_started = std::chrono::steady_clock::now();
  // Time left, from the pace so far: the jobs of a sweep are alike, so the mean wall time per finished job (with
  // `parallel` running at once) times the jobs left.
  auto time_left = [&]() -> std::string {
    const int left = to_run - finished;
    if (finished == 0 || left <= 0) return "";
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - sweep_started).count();
    const auto seconds = static_cast<int64_t>(elapsed / finished * left + 0.5);
    return seconds >= 3600 ? fmt::format("; ETA {}h{:02}m", seconds / 3600, seconds % 3600 / 60)
                           : fmt::format("; ETA {}m{:02}s", seconds / 60, seconds % 60);
  };
  while (!queue.empty() || !running.empty()) {
    while (!queue.empty() && static_cast<int>(running.size()) < parallel) {
      const Queued next = queue.front();
      queue.pop_front();
      const Job& job = *next.job;
      const fs::path dir = sweep_dir / job.run_dir;
      fs::create_directories(dir);
      fs::remove(dir / "metrics.json");  // a stale one must never pass for this attempt's
      const auto arguments = job_arguments(job, fs::absolute(dir), threads);
      std::string command = shell_quote(options.executable.string());
      for (const auto& argument : arguments) command += " " + shell_quote(argument);
      Running entry{&job, next.attempt, command, store::utc_timestamp_now(), std::chrono::steady_clock::now(), dir};
      write_file_atomic(dir / "job.json", json{{"id", job.id},
                                               {"status", "running"},
                                               {"started_at", entry.started_at},
                                               {"runner", "local"},
                                               {"host", host},
                                               {"attempt", next.attempt},
                                               {"command", command}}
                                              .dump(2) + "\n");
      {
        std::ofstream output(dir / "output.txt", std::ios::app);
        output << kAttemptMarker << " " << next.attempt << " started " << entry.started_at << " on " << host
               << " ==\n   command: " << command << "\n";
      }
      const pid_t pid = start_process(options.executable, arguments, dir / "output.txt");
      store.mark_running(job.id, entry.started_at);
      ++summary.started;
      running.emplace(pid, std::move(entry));
      log::info("job_start",
                fmt::format("[{}/{}] start {}{}", finished + static_cast<int>(running.size()), to_run, job.id,
                            next.attempt > 1 ? fmt::format(" (attempt {})", next.attempt) : ""),
                {{"job", job.id}, {"attempt", next.attempt}});
    }

    const ProcessExit exit = wait_process(-1);
    auto found = running.find(exit.pid);
    if (found == running.end()) continue;  // not one of ours
    Running entry = std::move(found->second);
    running.erase(found);
    const Job& job = *entry.job;
    const double duration =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.started).count();
    JobFolder folder;
    folder.started_at = entry.started_at;
    folder.finished_at = store::utc_timestamp_now();
    folder.duration_s = duration;
    if (exit.signal == 0) folder.exit_status = exit.exit_status;
    std::string why;
    std::optional<json> metrics;
    if (exit.exit_status == 0) metrics = read_metrics(entry.dir, &why);
    if (metrics) {
      folder.state = JobFolder::State::Done;
      folder.metrics = std::move(*metrics);
    } else {
      folder.state = JobFolder::State::Failed;
      folder.error = failure_text(entry.dir, exit.exit_status == 0 ? why : exit.describe());
    }
    json record = {{"id", job.id},
                   {"status", folder.state == JobFolder::State::Done ? "done" : "failed"},
                   {"started_at", folder.started_at},
                   {"finished_at", folder.finished_at},
                   {"duration_s", folder.duration_s},
                   {"exit_status", folder.exit_status ? json(*folder.exit_status) : json(nullptr)},
                   {"runner", "local"},
                   {"host", host},
                   {"attempt", entry.attempt},
                   {"command", entry.command}};
    if (!folder.error.empty()) record["error"] = folder.error;
    write_file_atomic(entry.dir / "job.json", record.dump(2) + "\n");
    record_folder(store, job.id, folder);

    if (folder.state == JobFolder::State::Done) {
      ++finished;
      ++summary.done;
      log::info("job_done", fmt::format("[{}/{}] done {} in {:.1f} s{}{}{}", finished, to_run, job.id, duration,
                                        folder.metrics.empty() ? "" : ": ", metrics_line(folder.metrics),
                                        time_left()),
                {{"job", job.id}, {"duration_s", duration}});
    } else if (entry.attempt < options.attempts) {
      log::event(spdlog::level::warn, "job_retry",
                 fmt::format("job {} failed (attempt {} of {}), will retry: {}", job.id, entry.attempt,
                             options.attempts, folder.error.substr(0, folder.error.find('\n'))),
                 {{"job", job.id}, {"attempt", entry.attempt}, {"error", folder.error}});
      queue.push_back({&job, entry.attempt + 1});
    } else {
      ++finished;
      summary.failed.push_back(job.id);
      log::event(spdlog::level::err, "job_failed",
                 fmt::format("[{}/{}] failed {} after {} attempts: {}\n{}", finished, to_run, job.id, entry.attempt,
                             (entry.dir / "output.txt").string(), folder.error),
                 {{"job", job.id}, {"attempts", entry.attempt}, {"error", folder.error}});
    }
  }
  return summary;
}

}  // namespace ts::sweep
