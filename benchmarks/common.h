#pragma once
// Helpers the benchmarks share: option values, medians, OpenBLAS's thread count.
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace ts::bench {

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

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
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
