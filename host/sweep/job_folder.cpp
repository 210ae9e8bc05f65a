#include "sweep/job_folder.h"

#include <deque>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "sweep/process.h"

namespace ts::sweep {

namespace fs = std::filesystem;
using nlohmann::json;

std::optional<json> read_metrics(const fs::path& dir, std::string* why) {
  const fs::path file = dir / "metrics.json";
  auto explain = [&](const std::string& reason) -> std::optional<json> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (!fs::exists(file)) return explain("the job finished without writing metrics.json");
  json metrics = json::parse(read_file(file), nullptr, false);
  if (metrics.is_discarded()) return explain("metrics.json is not valid JSON");
  if (!metrics.is_object()) return explain("metrics.json is not a JSON object");
  return metrics;
}

std::string failure_text(const fs::path& dir, const std::string& reason) {
  const std::string output = read_from(dir / "output.txt", 0);
  const size_t marker = output.rfind(kAttemptMarker);
  std::istringstream attempt(marker == std::string::npos ? output : output.substr(marker));
  std::deque<std::string> lines;
  std::string line;
  bool first = marker != std::string::npos;
  while (std::getline(attempt, line)) {
    if (first) {  // the marker line itself
      first = false;
      continue;
    }
    if (line.empty() || line.rfind("   command: ", 0) == 0) continue;
    lines.push_back(line);
    if (lines.size() > 12) lines.pop_front();
  }
  std::string text = reason;
  for (const auto& kept : lines) text += "\n" + kept;
  if (text.size() > 4000) text = text.substr(0, 4000) + "...";
  return text;
}

JobFolder read_job_folder(const fs::path& dir) {
  JobFolder folder;
  const fs::path record_file = dir / "job.json";
  if (!fs::exists(record_file)) return folder;
  const json record = json::parse(read_file(record_file), nullptr, false);
  if (record.is_discarded() || !record.is_object()) {
    folder.state = JobFolder::State::Failed;
    folder.error = "job.json in " + dir.string() + " is not a JSON object";
    return folder;
  }
  folder.started_at = record.value("started_at", "");
  folder.finished_at = record.value("finished_at", "");
  folder.duration_s = record.value("duration_s", 0.0);
  if (record.contains("exit_status") && record["exit_status"].is_number_integer())
    folder.exit_status = record["exit_status"].get<int>();
  const std::string status = record.value("status", "");
  if (status == "running") {
    folder.state = JobFolder::State::Running;
    return folder;
  }
  if (status == "done") {
    std::string why;
    if (auto metrics = read_metrics(dir, &why)) {
      folder.state = JobFolder::State::Done;
      folder.metrics = std::move(*metrics);
      return folder;
    }
    folder.state = JobFolder::State::Failed;
    folder.error = why;
    return folder;
  }
  folder.state = JobFolder::State::Failed;
  folder.error = record.value("error", "");
  if (folder.error.empty())
    folder.error = failure_text(dir, folder.exit_status ? fmt::format("exit status {}", *folder.exit_status)
                                                        : std::string("failed"));
  return folder;
}

bool record_folder(store::ResultsStore& store, const std::string& id, const JobFolder& folder) {
  const auto row = store.job(id);
  if (!row) return false;
  switch (folder.state) {
    case JobFolder::State::Missing:
      return false;
    case JobFolder::State::Running:
      if (row->status == store::JobStatus::Running && row->started_at == folder.started_at) return false;
      store.mark_running(id, folder.started_at);
      return true;
    case JobFolder::State::Done:
    case JobFolder::State::Failed: {
      const bool done = folder.state == JobFolder::State::Done;
      const auto status = done ? store::JobStatus::Done : store::JobStatus::Failed;
      if (row->status == status && row->finished_at == folder.finished_at) return false;  // collected before
      if (done) {
        store.mark_done(id, folder.started_at, folder.finished_at, folder.duration_s, folder.metrics);
      } else {
        store.mark_failed(id, folder.started_at, folder.finished_at, folder.duration_s, folder.error);
      }
      return true;
    }
  }
  return false;
}

}  // namespace ts::sweep
