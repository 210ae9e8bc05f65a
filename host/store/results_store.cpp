#include "store/results_store.h"

#include <chrono>
#include <cmath>
#include <ctime>

#include <sqlite3.h>

#include "core/error.h"

namespace ts::store {

const char* to_string(JobStatus status) {
  switch (status) {
    case JobStatus::Pending: return "pending";
    case JobStatus::Running: return "running";
    case JobStatus::Done: return "done";
    case JobStatus::Failed: return "failed";
  }
  return "?";
}

JobStatus parse_status(const std::string& text) {
  for (auto status : {JobStatus::Pending, JobStatus::Running, JobStatus::Done, JobStatus::Failed})
    if (text == to_string(status)) return status;
  fail("unknown job status '{}' (pending, running, done, failed)", text);
}

std::map<std::string, double> flatten_metrics(const nlohmann::json& metrics) {
  std::map<std::string, double> flat;
  if (!metrics.is_object()) return flat;
  for (const auto& [name, value] : metrics.items()) {
    if (value.is_number()) {
      flat[name] = value.get<double>();
    } else if (name == "f1_per_class" && value.is_array()) {
      for (size_t k = 0; k < value.size(); ++k)
        if (value[k].is_number()) flat["f1_class_" + std::to_string(k)] = value[k].get<double>();
    }
  }
  return flat;
}

namespace {

std::string scalar_text(const std::string& key, const nlohmann::json& value) {
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  if (value.is_number_float()) {
    const double number = value.get<double>();
    // Whole numbers print without ".0", as Lua and `--set` write them.
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 1e15)
      return std::to_string(static_cast<long long>(number));
    return fmt::format("{}", number);
  }
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_string()) return value.get<std::string>();
  fail("setting '{}': {} is not a number, string, boolean or list of those", key, value.dump());
}

}  // namespace

std::string setting_text(const std::string& key, const nlohmann::json& value) {
  if (!value.is_array()) return scalar_text(key, value);
  std::string joined;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i].is_array() || value[i].is_object())
      fail("setting '{}': lists of lists or tables cannot be passed as a setting ({})", key, value.dump());
    joined += (i ? "," : "") + scalar_text(key, value[i]);
  }
  return joined;
}

std::string utc_timestamp_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &utc);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{}.{:03d}Z", buffer, static_cast<int>(millis));
}

// ---- SQLite helpers ---------------------------------------------------------------------------------------------

namespace {

// One prepared statement, finalized on every path.
class Statement {
 public:
  Statement(sqlite3* db, const std::filesystem::path& file, const std::string& sql) : db_(db), file_(file) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement_, nullptr) != SQLITE_OK)
      fail("results store '{}': cannot prepare '{}': {}", file.string(), sql, sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, double number) {
    sqlite3_bind_double(statement_, index, number);
    return *this;
  }
  Statement& bind(int index, int number) {
    sqlite3_bind_int(statement_, index, number);
    return *this;
  }
  Statement& bind_null(int index) {
    sqlite3_bind_null(statement_, index);
    return *this;
  }
  // Steps once; true while a row is available.
  bool step() {
    const int code = sqlite3_step(statement_);
    if (code == SQLITE_ROW) return true;
    if (code == SQLITE_DONE) return false;
    fail("results store '{}': {}", file_.string(), sqlite3_errmsg(db_));
  }
  void run() {
    while (step()) {
    }
  }
  std::string text(int column) const {
    const auto* value = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return value ? std::string(value, sqlite3_column_bytes(statement_, column)) : std::string();
  }
  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  double number(int column) const { return sqlite3_column_double(statement_, column); }
  int integer(int column) const { return sqlite3_column_int(statement_, column); }

 private:
  sqlite3* db_;
  const std::filesystem::path& file_;
  sqlite3_stmt* statement_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back if anything throws in between.
class Transaction {
 public:
  explicit Transaction(const ResultsStore& store, sqlite3* db) : db_(db), path_(store.path()) {
    execute("BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    execute("COMMIT");
    committed_ = true;
  }

 private:
  void execute(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      const std::string reason = message ? message : "unknown error";
      sqlite3_free(message);
      fail("results store '{}': {} failed: {}", path_.string(), sql, reason);
    }
  }
  sqlite3* db_;
  std::filesystem::path path_;
  bool committed_ = false;
};

std::optional<double> as_number(const nlohmann::json& value) {
  if (value.is_number()) return value.get<double>();
  return std::nullopt;
}

constexpr const char* kSchema = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA foreign_keys=ON;
CREATE TABLE IF NOT EXISTS jobs (
  id          TEXT PRIMARY KEY,
  method      TEXT NOT NULL,
  recipe      TEXT NOT NULL,
  settings    TEXT NOT NULL,
  status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
  attempts    INTEGER NOT NULL DEFAULT 0,
  started_at  TEXT,
  finished_at TEXT,
  duration_s  REAL,
  run_dir     TEXT NOT NULL,
  error       TEXT,
  metrics     TEXT
);
CREATE TABLE IF NOT EXISTS job_settings (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  key    TEXT NOT NULL,
  value  TEXT NOT NULL,
  number REAL,
  PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS job_metrics (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  name   TEXT NOT NULL,
  value  REAL NOT NULL,
  PRIMARY KEY (job_id, name)
);
CREATE INDEX IF NOT EXISTS job_settings_by_key ON job_settings (key, value);
CREATE INDEX IF NOT EXISTS job_metrics_by_name ON job_metrics (name);
)sql";

}  // namespace

// ---- the store --------------------------------------------------------------------------------------------------

ResultsStore::ResultsStore(const std::filesystem::path& path) : path_(path) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const int opened = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (opened != SQLITE_OK) {
    const std::string reason = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(opened);
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot open results store '{}': {}", path.string(), reason);
  }
  sqlite3_busy_timeout(db_, 10000);
  try {
    exec(kSchema);
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

ResultsStore::~ResultsStore() { sqlite3_close(db_); }

void ResultsStore::exec(const std::string& sql) const {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string reason = message ? message : "unknown error";
    sqlite3_free(message);
    fail("results store '{}': {}", path_.string(), reason);
  }
}

bool ResultsStore::add_job(const JobSpec& spec) {
  if (!spec.settings.is_object()) fail("job '{}': settings must be an object, got {}", spec.id, spec.settings.dump());
  Transaction transaction(*this, db_);
  {
    Statement existing(db_, path_, "SELECT settings, method FROM jobs WHERE id = ?1");
    existing.bind(1, spec.id);
    if (existing.step()) {
      const auto stored = nlohmann::json::parse(existing.text(0), nullptr, false);
      if (stored != spec.settings || existing.text(1) != spec.method)
        fail("results store '{}': job id '{}' is already used by {} with settings {}, not {} with {}", path_.string(),
             spec.id, existing.text(1), existing.text(0), spec.method, spec.settings.dump());
      return false;
    }
  }
  Statement insert(db_, path_,
                   "INSERT INTO jobs (id, method, recipe, settings, status, attempts, run_dir) "
                   "VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5)");
  insert.bind(1, spec.id).bind(2, spec.method).bind(3, spec.recipe).bind(4, spec.settings.dump()).bind(5, spec.run_dir);
  insert.run();
  for (const auto& [key, value] : spec.settings.items()) {
    Statement setting(db_, path_, "INSERT INTO job_settings (job_id, key, value, number) VALUES (?1, ?2, ?3, ?4)");
    setting.bind(1, spec.id).bind(2, key).bind(3, setting_text(key, value));
    if (auto number = as_number(value)) {
      setting.bind(4, *number);
    } else {
      setting.bind_null(4);
    }
    setting.run();
  }
  transaction.commit();
  return true;
}

void ResultsStore::mark_running(const std::string& id, const std::string& started_at) {
  Statement update(db_, path_,
                   "UPDATE jobs SET status = 'running', started_at = ?2, finished_at = NULL, duration_s = NULL "
                   "WHERE id = ?1");
  update.bind(1, id).bind(2, started_at).run();
  if (sqlite3_changes(db_) != 1) fail("results store '{}': no job '{}'", path_.string(), id);
}

void ResultsStore::finish(const std::string& id, JobStatus status, const std::string& started_at,
                          const std::string& finished_at, double duration_s, const std::string& error,
                          const nlohmann::json* metrics) {
  Transaction transaction(*this, db_);
  Statement update(db_, path_,
                   "UPDATE jobs SET status = ?2, attempts = attempts + 1, started_at = ?3, finished_at = ?4, "
                   "duration_s = ?5, error = ?6, metrics = ?7 WHERE id = ?1");
  update.bind(1, id).bind(2, std::string(to_string(status))).bind(3, started_at).bind(4, finished_at).bind(5, duration_s);
  if (error.empty()) {
    update.bind_null(6);
  } else {
    update.bind(6, error);
  }
  if (metrics) {
    update.bind(7, metrics->dump());
  } else {
    update.bind_null(7);
  }
  update.run();
  if (sqlite3_changes(db_) != 1) fail("results store '{}': no job '{}'", path_.string(), id);
  Statement clear(db_, path_, "DELETE FROM job_metrics WHERE job_id = ?1");
  clear.bind(1, id).run();
  if (metrics) {
    for (const auto& [name, value] : flatten_metrics(*metrics)) {
      if (!std::isfinite(value)) continue;  // NOT NULL: a NaN metric is left out rather than stored as NULL
      Statement insert(db_, path_, "INSERT INTO job_metrics (job_id, name, value) VALUES (?1, ?2, ?3)");
      insert.bind(1, id).bind(2, name).bind(3, value).run();
    }
  }
  transaction.commit();
}

void ResultsStore::mark_done(const std::string& id, const std::string& started_at, const std::string& finished_at,
                             double duration_s, const nlohmann::json& metrics) {
  finish(id, JobStatus::Done, started_at, finished_at, duration_s, "", &metrics);
}

void ResultsStore::mark_failed(const std::string& id, const std::string& started_at, const std::string& finished_at,
                               double duration_s, const std::string& error) {
  finish(id, JobStatus::Failed, started_at, finished_at, duration_s, error.empty() ? "failed" : error, nullptr);
}

void ResultsStore::mark_pending(const std::string& id) {
  Statement update(db_, path_, "UPDATE jobs SET status = 'pending' WHERE id = ?1");
  update.bind(1, id).run();
}

int ResultsStore::reset_running() {
  Statement update(db_, path_, "UPDATE jobs SET status = 'pending' WHERE status = 'running'");
  update.run();
  return sqlite3_changes(db_);
}

std::vector<JobRecord> ResultsStore::select(const std::string& where, const std::string& id) const {
  Statement query(db_, path_,
                  "SELECT id, method, recipe, settings, status, attempts, started_at, finished_at, duration_s, "
                  "run_dir, error, metrics FROM jobs " + where + " ORDER BY id");
  if (!id.empty()) query.bind(1, id);
  std::vector<JobRecord> records;
  while (query.step()) {
    JobRecord record;
    record.id = query.text(0);
    record.method = query.text(1);
    record.recipe = query.text(2);
    record.settings = nlohmann::json::parse(query.text(3), nullptr, false);
    if (record.settings.is_discarded()) fail("results store '{}': job '{}' has unreadable settings", path_.string(), record.id);
    record.status = parse_status(query.text(4));
    record.attempts = query.integer(5);
    record.started_at = query.text(6);
    record.finished_at = query.text(7);
    if (!query.is_null(8)) record.duration_s = query.number(8);
    record.run_dir = query.text(9);
    record.error = query.text(10);
    if (!query.is_null(11)) {
      record.metrics_json = nlohmann::json::parse(query.text(11), nullptr, false);
      if (record.metrics_json.is_discarded()) record.metrics_json = nullptr;
      record.metrics = flatten_metrics(record.metrics_json);
    }
    records.push_back(std::move(record));
  }
  return records;
}

std::optional<JobRecord> ResultsStore::job(const std::string& id) const {
  auto found = select("WHERE id = ?1", id);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::vector<JobRecord> ResultsStore::jobs() const { return select("", ""); }

std::map<JobStatus, int> ResultsStore::counts() const {
  std::map<JobStatus, int> counts;
  Statement query(db_, path_, "SELECT status, COUNT(*) FROM jobs GROUP BY status");
  while (query.step()) counts[parse_status(query.text(0))] = query.integer(1);
  return counts;
}

}  // namespace ts::store
