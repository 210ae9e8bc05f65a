#pragma once
// Helpers the benchmarks share: option values, medians, interleaved timing, OpenBLAS's thread count.
#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/blas_core.h"
#include "runtime/environment.h"

namespace ts::bench {

// The process's peak resident memory so far, in MiB.
inline double peak_rss_mib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// "128,32" -> {128, 32}
inline std::vector<int64_t> parse_int_list(const std::string& value) {
  std::vector<int64_t> out;
  std::size_t start = 0;
  while (start <= value.size()) {
    const std::size_t comma = value.find(',', start);
    out.push_back(std::stoll(value.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// take(flag, value) for each "--flag value" pair of the command line, in order; usage(message) (which does not
// return) for a flag without a value.
template <class Take, class Usage>
void for_each_option(int argc, char** argv, const Take& take, const Usage& usage) {
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + flag).c_str());
    take(flag, std::string(argv[i + 1]));
  }
}

// OpenBLAS's kernels chosen as `twostage run` chooses them (--blas-core auto|as-is|NAME among the flags, which
// the benchmark's own parser then skips); restarts the process when that sets OPENBLAS_CORETYPE.
inline void choose_blas_kernels(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (ts::runtime::prepare_blas_core(ts::runtime::take_blas_core_flag(args))) ts::runtime::restart_process(argv);
  std::printf("BLAS kernels: %s\n", ts::runtime::blas_core_report().c_str());
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Median seconds of each contender, run in turn `repeats` times after one warm-up round, so that a change in the
// machine's load hits all alike.
inline std::vector<double> time_interleaved(const std::vector<std::function<void()>>& contenders, int repeats) {
  for (const auto& run : contenders) run();
  std::vector<std::vector<double>> seconds(contenders.size());
  for (int r = 0; r < repeats; ++r)
    for (std::size_t c = 0; c < contenders.size(); ++c) {
      const auto start = std::chrono::steady_clock::now();
      contenders[c]();
      seconds[c].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  std::vector<double> medians;
  for (auto& s : seconds) medians.push_back(median(s));
  return medians;
}

// OpenBLAS is reached through libblas.so.3; its thread count is set through the symbol when it is the provider.
inline bool set_openblas_threads(int threads) {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!set) return false;
  set(threads);
  return true;
}

}  // namespace ts::bench
