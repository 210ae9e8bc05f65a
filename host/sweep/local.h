#pragma once
// Runs a sweep's jobs here, as child processes of the twostage executable, several at a time.
#include <filesystem>
#include <string>
#include <vector>

#include "store/results_store.h"
#include "sweep/plan.h"

namespace ts::sweep {

struct LocalOptions {
  std::filesystem::path executable;  // the twostage executable
  int parallel = 1;                  // --jobs N
  int cpus = 0;                      // CPUs to share among the jobs; 0: those this process may use
  int attempts = 2;                  // tries per job in one sweep run: a failed job is retried once
};

struct LocalSummary {
  int total = 0;                     // jobs in the plan
  int already_done = 0;              // skipped: done before this run
  int started = 0;                   // attempts started in this run
  int done = 0;                      // jobs that finished in this run
  std::vector<std::string> failed;   // ids of jobs that failed every attempt in this run
};

// Threads each job gets: max(1, cpus / parallel).
int threads_per_job(int cpus, int parallel);

// Runs every job of `jobs` that is not done in `store` (the sweep folder is `sweep_dir`), `parallel` at a time, and
// records each attempt in the store and in the job's folder. Failed jobs go to the back of the queue for their
// second attempt. The caller holds the sweep folder's lock.
LocalSummary run_local(store::ResultsStore& store, const std::vector<Job>& jobs,
                       const std::filesystem::path& sweep_dir, const LocalOptions& options);

}  // namespace ts::sweep
