// parallel_ranges (core/parallel.h) on its pool of threads: every index once, the same pieces whoever runs them,
// loops started from inside a piece or from several threads at once, and a forked child.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "core/parallel.h"

using ts::parallel_ranges;

namespace {

// The pieces a loop was cut into, and how often each index was visited.
struct Visits {
  explicit Visits(int64_t n) : count(static_cast<size_t>(n)) {}
  std::vector<std::atomic<int>> count;
  std::mutex mutex;
  std::set<std::pair<int64_t, int64_t>> pieces;

  void operator()(int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) ++count[static_cast<size_t>(i)];
    std::lock_guard<std::mutex> lock(mutex);
    pieces.insert({begin, end});
  }
  bool each_once() const {
    for (const auto& c : count)
      if (c != 1) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("parallel_ranges visits every index once, in pieces that depend only on n, grain and the thread count") {
  for (const int threads : {1, 2, 3, 8}) {
    const ts::ScopedWorkerThreads scoped(threads);
    for (const int64_t n : {1, 2, 5, 7, 100, 4097}) {
      for (const int64_t grain : {1, 3, 64}) {
        Visits visits(n);
        parallel_ranges(n, grain, std::ref(visits));
        CHECK(visits.each_once());
        const int64_t pieces = std::clamp<int64_t>(n / grain, 1, threads);
        const int64_t size = (n + pieces - 1) / pieces;
        std::set<std::pair<int64_t, int64_t>> expected;
        for (int64_t begin = 0; begin < n; begin += size) expected.insert({begin, std::min(n, begin + size)});
        CHECK(visits.pieces == expected);
      }
    }
  }
}

TEST_CASE("a loop started inside a piece, or from several threads at once, runs to the end") {
  const ts::ScopedWorkerThreads scoped(4);
  std::atomic<int64_t> inner_total{0};
  parallel_ranges(8, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      parallel_ranges(100, 1, [&](int64_t b, int64_t e) { inner_total += e - b; });
  });
  CHECK(inner_total == 800);

  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int caller = 0; caller < 4; ++caller)
    callers.emplace_back([&] {
      for (int loop = 0; loop < 300; ++loop)
        parallel_ranges(1000, 10, [&](int64_t begin, int64_t end) { total += end - begin; });
    });
  for (auto& caller : callers) caller.join();
  CHECK(total == 4 * 300 * 1000);
}

TEST_CASE("a forked child runs loops of its own, without the parent's threads") {
  const ts::ScopedWorkerThreads scoped(2);
  std::atomic<int64_t> warm{0};
  parallel_ranges(10, 1, [&](int64_t begin, int64_t end) { warm += end - begin; });  // the pool has its threads
  REQUIRE(warm == 10);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    alarm(20);  // a loop waiting for a thread that does not exist here would hang: fail instead
    std::atomic<int64_t> total{0};
    for (int loop = 0; loop < 50; ++loop)
      parallel_ranges(1000, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
    _exit(total == 50 * 1000 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
