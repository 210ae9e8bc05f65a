#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace ts {
namespace {
std::atomic<int> g_worker_threads{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
}

void set_worker_threads(int threads) { g_worker_threads = std::max(1, threads); }
int worker_threads() { return g_worker_threads; }

void parallel_ranges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t pieces = std::clamp<int64_t>(n / std::max<int64_t>(1, grain), 1, worker_threads());
  if (pieces == 1) {
    body(0, n);
    return;
  }
  const int64_t size = (n + pieces - 1) / pieces;
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(pieces - 1));
  for (int64_t begin = size; begin < n; begin += size)
    helpers.emplace_back([&body, begin, end = std::min(n, begin + size)] { body(begin, end); });
  body(0, std::min(n, size));
  for (auto& helper : helpers) helper.join();
}

}  // namespace ts
