#include "sweep/slurm.h"

#include <cctype>

#include "core/error.h"
#include "core/fs.h"
#include "sweep/job_folder.h"
#include "sweep/process.h"

namespace ts::sweep {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// sbatch splits an #SBATCH line into words itself, without a shell: blanks separate words, '"' and '\'' quote,
// '\\' escapes and '#' starts a comment. A value is therefore written in double quotes whenever it holds anything
// but plain characters, and the characters that could end those quotes or escape them are refused outright, with
// '$' and '`': no sbatch option needs them, and a value holding them reads as an attempt to reach a shell.
std::string sbatch_value(const std::string& key, const std::string& text) {
  if (text.empty()) fail("slurm.{}: an sbatch option value cannot be empty", key);
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\' || c == '$' || c == '`' || byte < 0x20 || byte == 0x7f)
      fail("slurm.{}: {} cannot be an sbatch option value: it holds {}", key, json(text).dump(),
           byte < 0x20 || byte == 0x7f ? fmt::format("the control character 0x{:02x}", byte)
                                       : fmt::format("'{}'", c));
  }
  static const char* plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=,:+@%";
  if (text.find_first_not_of(plain) == std::string::npos) return text;
  return "\"" + text + "\"";
}

}  // namespace

std::vector<std::string> sbatch_options(const json& slurm, int tasks, const std::string& job_name,
                                        const fs::path& log_dir) {
  std::string array = fmt::format("0-{}", tasks - 1);
  json options = {{"job_name", job_name}, {"output", (log_dir / "%A_%a.out").string()}};
  for (const auto& [key, value] : slurm.items()) {
    for (char c : key)
      if (!std::islower(static_cast<unsigned char>(c)) && !std::isdigit(static_cast<unsigned char>(c)) && c != '_' &&
          c != '-')
        fail("slurm.{}: an sbatch option name has only lower-case letters, digits, '_' and '-'", key);
    if (key == "array") fail("slurm.array: the array is the sweep's jobs; use max_parallel to limit running tasks");
    if (key == "max_parallel") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1) fail("slurm.max_parallel must be a positive integer");
      array += "%" + std::to_string(value.get<int64_t>());
      continue;
    }
    options[key] = value;
  }
  std::vector<std::string> lines = {"#SBATCH --array=" + array};
  for (const auto& [key, value] : options.items()) {
    std::string flag = "--" + key;
    for (auto& c : flag)
      if (c == '_') c = '-';
    if (value.is_boolean()) {
      if (value.get<bool>()) lines.push_back("#SBATCH " + flag);
      continue;
    }
    lines.push_back("#SBATCH " + flag + "=" + sbatch_value(key, store::setting_text("slurm." + key, value)));
  }
  return lines;
}

namespace {

// Comment lines of the script for `text`. A line break in a name or a --set value would otherwise end the comment
// and make the rest a command; every line gets "# ", not "#", so that no line reads as an #SBATCH option either.
std::string comment(const std::string& text) {
  std::string lines = "# ";
  for (char c : text) lines += c == '\n' ? std::string("\n# ") : std::string(1, c);
  return lines + "\n";
}

constexpr const char* kTaskFunctions = R"bash(
now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# write_record DIR ID STATUS STARTED [FINISHED DURATION EXIT_STATUS]: job.json, as the local runner writes it.
write_record() {
  local tmp="$1/job.json.tmp.$$"
  {
    printf '{\n  "id": "%s",\n  "status": "%s",\n  "started_at": "%s",\n' "$2" "$3" "$4"
    if [ $# -ge 7 ]; then
      printf '  "finished_at": "%s",\n  "duration_s": %s,\n  "exit_status": %s,\n' "$5" "$6" "$7"
    fi
    printf '  "runner": "slurm",\n  "host": "%s",\n  "slurm_job": "%s_%s"\n}\n' \
      "$(hostname)" "${SLURM_ARRAY_JOB_ID:-}" "${SLURM_ARRAY_TASK_ID:-}"
  } > "$tmp" && mv -f "$tmp" "$1/job.json"
}

# run_job ID RECIPE [--set key=value]...: one job in $SWEEP/jobs/ID.
run_job() {
  local id=$1 recipe=$2
  shift 2
  local dir="$SWEEP/jobs/$id"
  mkdir -p "$dir" || return 1
  rm -f "$dir/metrics.json"
  local started t0
  started=$(now)
  t0=$(date +%s.%N)
  write_record "$dir" "$id" running "$started"
  echo "== twostage sweep: attempt started $started on $(hostname) (Slurm ${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID:-}) ==" >> "$dir/output.txt"
  "$TWOSTAGE" run "$recipe" "$@" --out "$dir" --threads "$THREADS" --quiet >> "$dir/output.txt" 2>&1 < /dev/null
  local status=$?
  local finished duration state=failed
  finished=$(now)
  duration=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
  [ "$status" -eq 0 ] && [ -s "$dir/metrics.json" ] && state=done
  write_record "$dir" "$id" "$state" "$started" "$finished" "$duration" "$status"
  echo "job $id: $state (exit status $status) in ${duration} s"
  return "$status"
}
)bash";

}  // namespace

SlurmScript write_slurm_script(const fs::path& sweep_dir, const std::string& sweep_name,
                               const std::vector<const Job*>& jobs, const json& slurm, const fs::path& executable,
                               const fs::path& working_dir, const std::string& collect_command) {
  if (jobs.empty()) fail("no jobs to emit");
  const fs::path slurm_dir = fs::absolute(sweep_dir) / "slurm";
  fs::create_directories(slurm_dir);
  SlurmScript result{slurm_dir / "sweep.sbatch", static_cast<int>(jobs.size())};

  std::string script = "#!/bin/bash\n";
  for (const auto& line : sbatch_options(slurm, result.tasks, "twostage-" + sweep_name, slurm_dir))
    script += line + "\n";
  script += "#\n";
  script += comment(fmt::format("Sweep '{}': {} jobs, one array task each, written by `twostage sweep --emit slurm` "
                                "on {}.",
                                sweep_name, jobs.size(), store::utc_timestamp_now()));
  script += comment("Submit:  sbatch " + shell_quote(result.path.string()));
  script += comment("Then:    " + collect_command);
  script += "set -u\n";
  script += "cd " + shell_quote(fs::absolute(working_dir).string()) + " || exit 1\n";
  script += "TWOSTAGE=" + shell_quote(fs::absolute(executable).string()) + "\n";
  script += "SWEEP=" + shell_quote(fs::absolute(sweep_dir).string()) + "\n";
  script += "THREADS=${SLURM_CPUS_PER_TASK:-1}\n";
  script += kTaskFunctions;
  script += "\ncase \"${SLURM_ARRAY_TASK_ID:?this script runs as a Slurm array task: sbatch it}\" in\n";
  json tasks = json::object();
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Job& job = *jobs[i];
    std::string line = fmt::format("  {}) run_job {} {}", i, shell_quote(job.id), shell_quote(job.recipe_path.string()));
    for (const auto& [key, value] : job.settings.items())
      line += " --set " + shell_quote(key + "=" + store::setting_text(key, value));
    // As job_arguments says it to a local job: the sweep file's values open no path or endpoint on a cluster either.
    if (!job.sweep_file_settings.empty()) {
      std::string keys;
      for (const auto& key : job.sweep_file_settings) keys += (keys.empty() ? "" : ",") + key;
      line += " --sweep-file-settings " + shell_quote(keys);
    }
    script += line + " ;;\n";
    tasks[std::to_string(i)] = job.id;
  }
  script += "  *) echo \"no job for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n";
  write_file_atomic(result.path, script);
  fs::permissions(result.path, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::add);
  write_file_atomic(slurm_dir / "tasks.json", tasks.dump(2) + "\n");
  return result;
}

CollectSummary collect(store::ResultsStore& store, const std::vector<Job>& jobs, const fs::path& sweep_dir) {
  CollectSummary summary;
  for (const auto& job : jobs) {
    const auto folder = read_job_folder(sweep_dir / job.run_dir);
    if (record_folder(store, job.id, folder)) ++summary.updated;
    switch (folder.state) {
      case JobFolder::State::Missing: ++summary.not_started; break;
      case JobFolder::State::Running: ++summary.running; break;
      case JobFolder::State::Done: ++summary.done; break;
      case JobFolder::State::Failed: ++summary.failed; break;
    }
  }
  return summary;
}

}  // namespace ts::sweep
