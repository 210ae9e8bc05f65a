#pragma once
// The machine's real limit for a benchmark's ratios: every OpenBLAS kernel this CPU runs
// (runtime::runnable_openblas_cores), each in a process of its own (OpenBLAS reads OPENBLAS_CORETYPE once, when it
// loads), checked against double precision (runtime::verify_sgemm) and timed on sgemm 1024³ and, when the benchmark
// gives them, on its own products. The best kernel that computes correctly is the limit; a ratio against the kernel
// that happens to run says nothing when a faster one was there.
//
// A benchmark calls run_probe_if_asked() first thing in main (the child's side), and measure_kernels() (the
// parent's side) before its own work.
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common.h"
#include "runtime/blas_core.h"

namespace ts::bench {

struct KernelRate {
  std::string core;          // the OPENBLAS_CORETYPE asked for
  std::string ran;           // what OpenBLAS reports it ran ("" when the probe failed)
  std::string wrong;         // the verification's first failure; "" when correct
  double sgemm_1024 = 0;     // GFLOP/s
  std::vector<double> own;   // GFLOP/s of the benchmark's own products, one per shape set (empty: not asked)
  bool verified() const { return !ran.empty() && wrong.empty() && ::strcasecmp(ran.c_str(), core.c_str()) == 0; }
};

// sgemm 1024³ through torch::mm_out (what the models call), median of `repeats` after one warm-up, in GFLOP/s.
inline double sgemm_1024_rate(int repeats = 7) {
  const auto a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
  auto c = torch::empty({1024, 1024});
  torch::mm_out(c, a, b);
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::mm_out(c, a, b);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 2.0 * 1024 * 1024 * 1024 / median(seconds) / 1e9;
}

// The child's side. When argv holds "--sgemm-probe sgemm|own", prints one line
//   probe <core OpenBLAS ran> <0|1 verified> <sgemm 1024³ GFLOP/s> [<own rate>...]  (then "wrong: ..." if wrong)
// and returns true: the benchmark then exits. `own_rates` times the benchmark's own products (empty: none asked).
inline bool run_probe_if_asked(int argc, char** argv, int blas_threads,
                               const std::function<std::vector<double>()>& own_rates) {
  bool probe = false, with_own = false;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--sgemm-probe") probe = true, with_own = std::string(argv[i + 1]) == "own";
  if (!probe) return false;
  set_openblas_threads(blas_threads);
  const std::string wrong = runtime::verify_sgemm(runtime::loaded_sgemm());
  const std::string core = runtime::openblas_core();
  std::printf("probe %s %d %.2f", core.empty() ? "not-OpenBLAS" : core.c_str(), wrong.empty() ? 1 : 0,
              wrong.empty() ? sgemm_1024_rate() : 0.0);
  if (wrong.empty() && with_own && own_rates)
    for (const double rate : own_rates()) std::printf(" %.2f", rate);
  std::printf("\n");
  if (!wrong.empty()) std::printf("wrong: %s\n", wrong.c_str());
  return true;
}

namespace detail {

inline std::string self_path() {
  char buffer[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

// Runs this executable under `core` with `args` and reads its probe line.
inline KernelRate probe(const std::string& core, const std::string& args, bool with_own) {
  KernelRate rate;
  rate.core = core;
  // The host's own restart state belongs to this process's choice, not the probe's.
  const std::string command = "env -u TWOSTAGE_BLAS_CORE_STATE -u TWOSTAGE_BLAS_CORE_USER OPENBLAS_CORETYPE=" + core +
                              " '" + self_path() + "' --blas-core as-is " +
                              (with_own ? "--sgemm-probe own" : "--sgemm-probe sgemm") + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return rate;
  char line[4096];
  while (std::fgets(line, sizeof line, pipe)) {
    std::istringstream in(line);
    std::string word;
    in >> word;
    if (word == "probe") {
      int verified = 0;
      in >> rate.ran >> verified >> rate.sgemm_1024;
      for (double own; in >> own;) rate.own.push_back(own);
    } else if (word == "wrong:") {
      rate.wrong = std::string(line + 7);
      if (!rate.wrong.empty() && rate.wrong.back() == '\n') rate.wrong.pop_back();
    }
  }
  ::pclose(pipe);
  return rate;
}

}  // namespace detail

// The parent's side: probes every kernel this CPU runs on sgemm 1024³, then times the benchmark's own products
// (passing `args` and --sgemm-probe own) under each verified kernel within 15% of the best 1024³ rate, `running`
// (the kernel of this process) included: the products alone in a fresh process run faster than beside a model's
// step, so only probes are compared with probes. Prints a table; returns the probes.
inline std::vector<KernelRate> measure_kernels(const std::string& args, const std::string& running, bool with_own) {
  std::vector<KernelRate> rates;
  for (const auto& core : runtime::runnable_openblas_cores(runtime::cpu_features()))
    rates.push_back(detail::probe(core, args, false));
  double best = 0;
  for (const auto& r : rates)
    if (r.verified()) best = std::max(best, r.sgemm_1024);
  if (with_own)
    for (auto& r : rates)
      if (r.verified() && r.sgemm_1024 >= 0.85 * best)
        r.own = detail::probe(r.core, args, true).own;
  std::printf("sgemm limit: each OpenBLAS kernel this CPU runs, in a process of its own, checked against double "
              "precision, sgemm 1024³ (median of 7):\n");
  for (const auto& r : rates) {
    std::string state = r.ran.empty()                                       ? "probe failed"
                        : ::strcasecmp(r.ran.c_str(), r.core.c_str()) != 0 ? "not taken (ran " + r.ran + ")"
                        : !r.wrong.empty()                                  ? "WRONG: " + r.wrong
                                                                            : "verified";
    std::string own;
    for (const double rate : r.own) own += (own.empty() ? "; own products " : ", ") + std::to_string(rate).substr(0, 5);
    std::printf("  %-12s %-10s %7.1f GFLOP/s%s%s\n", r.core.c_str(), state.c_str(), r.sgemm_1024, own.c_str(),
                ::strcasecmp(r.core.c_str(), running.c_str()) == 0 ? "   <- this process runs it" : "");
  }
  return rates;
}

// The best verified rate among `rates` by `value` (0 when none), and its kernel.
inline std::pair<double, std::string> best_verified(const std::vector<KernelRate>& rates,
                                                    const std::function<double(const KernelRate&)>& value) {
  std::pair<double, std::string> best{0.0, ""};
  for (const auto& r : rates)
    if (r.verified() && value(r) > best.first) best = {value(r), r.core};
  return best;
}

}  // namespace ts::bench
