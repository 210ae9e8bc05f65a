#pragma once
// Loops of ours (dropout masks, the AdamW update) split over the cores a run was given. Not at::parallel_for: torch
// keeps to one intra-op thread when OpenMP threads would spin (runtime/environment.h), and these loops should use
// the cores either way.
#include <cstdint>
#include <functional>

namespace ts {

// How many threads parallel_ranges may use: the machine's cores until runtime::set_threads sets it from --threads.
void set_worker_threads(int threads);
int worker_threads();

// Sets the worker thread count for a scope and restores it after (tests: results that must not depend on it).
class ScopedWorkerThreads {
 public:
  explicit ScopedWorkerThreads(int threads) : saved_(worker_threads()) { set_worker_threads(threads); }
  ~ScopedWorkerThreads() { set_worker_threads(saved_); }
  ScopedWorkerThreads(const ScopedWorkerThreads&) = delete;
  ScopedWorkerThreads& operator=(const ScopedWorkerThreads&) = delete;

 private:
  int saved_;
};

// Calls body(begin, end) on contiguous pieces of [0, n), at most worker_threads() of them at once, the calling
// thread running the first. Pieces are at least `grain` long, so that short loops stay on the calling thread.
// `body` must not throw.
void parallel_ranges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace ts
