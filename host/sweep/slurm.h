#pragma once
// Slurm: a sweep as one job array. `--emit slurm` writes an sbatch script whose array task i runs job i (the jobs
// not done yet); each task writes job.json beside the job's files as the local runner does, so `--collect` reads
// finished folders into the store whichever way they ran.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/results_store.h"
#include "sweep/plan.h"

namespace ts::sweep {

struct SlurmScript {
  std::filesystem::path path;
  int tasks = 0;
};

// The #SBATCH lines for the sweep's `slurm` table: each key becomes --key-with-dashes=value (true: a bare flag,
// false: left out), e.g. partition, time, cpus_per_task, mem, gres, account, qos. `max_parallel = P` limits the
// tasks running at once (--array=0-N%P). Throws ts::Error for keys or values sbatch could not take.
std::vector<std::string> sbatch_options(const nlohmann::json& slurm, int tasks, const std::string& job_name,
                                        const std::filesystem::path& log_dir);

// Writes `sweep_dir`/slurm/sweep.sbatch for `jobs` (task i runs jobs[i]) and slurm/tasks.json (task -> job id).
// Tasks cd to `working_dir` first, so relative paths in settings mean what they meant here, and run `executable`
// with --threads $SLURM_CPUS_PER_TASK.
SlurmScript write_slurm_script(const std::filesystem::path& sweep_dir, const std::string& sweep_name,
                               const std::vector<const Job*>& jobs, const nlohmann::json& slurm,
                               const std::filesystem::path& executable, const std::filesystem::path& working_dir,
                               const std::string& collect_command);

struct CollectSummary {
  int updated = 0;  // rows changed by this collect
  int done = 0, failed = 0, running = 0, not_started = 0;
};

// Reads every job folder of `jobs` into the store.
CollectSummary collect(store::ResultsStore& store, const std::vector<Job>& jobs,
                       const std::filesystem::path& sweep_dir);

}  // namespace ts::sweep
