#pragma once
// What a job leaves in its folder besides the recipe's own files, and how the store learns of it. Both runners write
// the same `job.json`, so `--collect` reads a folder the same way whether the job ran here or under Slurm:
//
//   job.json     {"id", "status": "running"|"done"|"failed", "started_at", "finished_at", "duration_s",
//                 "exit_status", "runner": "local"|"slurm", "host", "error"?}     (written atomically)
//   output.txt   the job's stdout and stderr, every attempt appended after a line "== twostage sweep: attempt ..."
//   metrics.json written by the recipe; a job is done only when it exited with 0 and this is a JSON object
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "store/results_store.h"

namespace ts::sweep {

// Starts each attempt's section of output.txt.
inline constexpr const char* kAttemptMarker = "== twostage sweep: attempt";

struct JobFolder {
  enum class State { Missing, Running, Done, Failed } state = State::Missing;
  std::string started_at;
  std::string finished_at;
  double duration_s = 0;
  std::optional<int> exit_status;
  nlohmann::json metrics;  // when done
  std::string error;       // when failed
};

// Reads `dir`/job.json and, for a finished job, metrics.json. A job.json that says done but has no readable
// metrics.json is reported failed with that reason.
JobFolder read_job_folder(const std::filesystem::path& dir);

// metrics.json of `dir` if it is a JSON object; otherwise nullopt and `why` says what is wrong.
std::optional<nlohmann::json> read_metrics(const std::filesystem::path& dir, std::string* why = nullptr);

// The last lines of the latest attempt in `dir`/output.txt, after `reason` ("exit status 1"): the error a person
// needs to see first.
std::string failure_text(const std::filesystem::path& dir, const std::string& reason);

// Brings the store's row for `id` up to date with its folder; returns whether it changed anything. A finished
// attempt is recorded once, however often it is collected.
bool record_folder(store::ResultsStore& store, const std::string& id, const JobFolder& folder);

}  // namespace ts::sweep
