#pragma once
// The results store of a sweep: one SQLite file (`results.sqlite` in the sweep's folder) with a row per job.
//
//   jobs          id, method, recipe, settings (JSON), status, attempts, started_at, finished_at, duration_s,
//                 run_dir, error, metrics (the job's metrics.json as written)
//   job_settings  job_id, key, value (as typed on a command line: `0.2`, `7,42`), number (when numeric)
//   job_metrics   job_id, name, value: every top-level number of metrics.json, and f1_per_class[k] as f1_class_<k>
//
// The key-value tables make any setting or metric usable in SQL (`GROUP BY`), and summarize() groups in C++ with the
// same semantics. Only the sweep process writes; WAL mode lets `twostage results` read while a sweep runs.
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;

namespace ts::store {

enum class JobStatus { Pending, Running, Done, Failed };

const char* to_string(JobStatus status);
JobStatus parse_status(const std::string& text);  // throws ts::Error on anything else

// What a job is; fixed once the job exists.
struct JobSpec {
  std::string id;            // stable: the same method and settings always give the same id
  std::string method;        // e.g. "two_stage_reweight"
  std::string recipe;        // the recipe file the job runs
  nlohmann::json settings;   // object: setting -> value (number, string, boolean or list of those)
  std::string run_dir;       // the job's folder
};

// A job's row: its spec and where it stands.
struct JobRecord : JobSpec {
  JobStatus status = JobStatus::Pending;
  int attempts = 0;                      // runs that ended (done or failed); an interrupted run is not counted
  std::string started_at;                // ISO 8601 UTC, empty when never started
  std::string finished_at;               // ISO 8601 UTC, empty unless done or failed
  std::optional<double> duration_s;
  std::string error;                     // why the last attempt failed
  nlohmann::json metrics_json;           // metrics.json as the job wrote it (null until done)
  std::map<std::string, double> metrics; // flattened, see flatten_metrics
};

// The store's metrics of one metrics.json: each top-level number by its name, and f1_per_class[k] as f1_class_<k>.
// Non-numbers and nested objects (per_seed, std, confusion_matrix) stay in metrics_json only.
std::map<std::string, double> flatten_metrics(const nlohmann::json& metrics);

// A setting's value as typed on the command line: numbers in shortest round-trip form, lists comma-separated.
// Throws ts::Error naming `key` for objects or nested lists.
std::string setting_text(const std::string& key, const nlohmann::json& value);

// "2024-05-01T12:00:00.123Z" for now (UTC).
std::string utc_timestamp_now();

class ResultsStore {
 public:
  // Opens or creates the store at `path` (creating its folder). Throws ts::Error naming the file.
  explicit ResultsStore(const std::filesystem::path& path);
  ~ResultsStore();
  ResultsStore(const ResultsStore&) = delete;
  ResultsStore& operator=(const ResultsStore&) = delete;

  // Adds a pending row unless a row with this id exists; returns whether it added one. A row with the same id but
  // other settings means two different jobs collided on one id: an error.
  bool add_job(const JobSpec& spec);

  void mark_running(const std::string& id, const std::string& started_at);
  // Records a finished attempt: attempts + 1, times, duration, and the metrics (done) or the error (failed).
  void mark_done(const std::string& id, const std::string& started_at, const std::string& finished_at,
                 double duration_s, const nlohmann::json& metrics);
  void mark_failed(const std::string& id, const std::string& started_at, const std::string& finished_at,
                   double duration_s, const std::string& error);
  // Back to pending (a run that was interrupted before it ended); attempts unchanged.
  void mark_pending(const std::string& id);
  // Every running row back to pending; returns how many. For a sweep that starts while no other one runs.
  int reset_running();

  std::optional<JobRecord> job(const std::string& id) const;
  std::vector<JobRecord> jobs() const;  // in id order
  std::map<JobStatus, int> counts() const;

  const std::filesystem::path& path() const { return path_; }

 private:
  void exec(const std::string& sql) const;
  void finish(const std::string& id, JobStatus status, const std::string& started_at, const std::string& finished_at,
              double duration_s, const std::string& error, const nlohmann::json* metrics);
  std::vector<JobRecord> select(const std::string& where, const std::string& id) const;

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
};

}  // namespace ts::store
