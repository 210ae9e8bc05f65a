// The process environment a run sets up: the allocator keeping freed memory, the thread split.
#include <catch2/catch.hpp>

#include <malloc.h>

#include <cstdlib>

#include "core/parallel.h"
#include "runtime/environment.h"

#if defined(__GLIBC__)
#if __GLIBC_PREREQ(2, 33)  // mallinfo2
TEST_CASE("keep_freed_memory serves large blocks from the heap and keeps them when freed", "[runtime]") {
  constexpr std::size_t kBlock = 64 << 20;  // above glibc's largest mmap threshold: always its own mapping by default
  const auto mapped_before = ::mallinfo2().hblks;
  void* mapped = std::malloc(kBlock);
  REQUIRE(mapped);
  CHECK(::mallinfo2().hblks == mapped_before + 1);  // glibc as it comes: a mapping of its own
  std::free(mapped);

  REQUIRE(ts::runtime::keep_freed_memory());
  void* block = std::malloc(kBlock);
  REQUIRE(block);
  CHECK(::mallinfo2().hblks == mapped_before);  // from the heap
  std::free(block);
  // Freed, it stays in the heap for the next allocation: the free top of the heap is not given back.
  CHECK(::mallinfo2().keepcost >= kBlock);
}
#endif
#endif

TEST_CASE("twostage's own loops get the cores the BLAS pool leaves", "[runtime]") {
  CHECK(ts::runtime::loop_threads_beside_blas(2, 2) == 1);
  CHECK(ts::runtime::loop_threads_beside_blas(16, 16) == 1);
  CHECK(ts::runtime::loop_threads_beside_blas(16, 8) == 9);
  CHECK(ts::runtime::loop_threads_beside_blas(4, 0) == 4);  // no pool of its own: every core
  CHECK(ts::runtime::loop_threads_beside_blas(1, 1) == 1);

  const ts::ScopedWorkerThreads restore(ts::worker_threads());
  const auto plan = ts::runtime::set_threads(2);
  CHECK(ts::worker_threads() == plan.loops);
  CHECK(plan.loops == ts::runtime::loop_threads_beside_blas(2, plan.blas));
}
