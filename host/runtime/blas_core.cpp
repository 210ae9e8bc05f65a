#include "runtime/blas_core.h"

#include <dlfcn.h>
#include <strings.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <fmt/format.h>

#include "core/error.h"

namespace ts::runtime {
namespace {

// Set by the host across its own restart: "chosen:CORE:REASON" (to verify), "rejected:CORE:WHY" (the check failed,
// OpenBLAS's own choice runs). A sweep's jobs inherit it with OPENBLAS_CORETYPE, and so verify again themselves.
constexpr const char* kStateVariable = "TWOSTAGE_BLAS_CORE_STATE";
// The user's own OPENBLAS_CORETYPE when an explicit --blas-core replaced it, restored if the choice is rejected.
constexpr const char* kUserVariable = "TWOSTAGE_BLAS_CORE_USER";

std::string& report_text() {
  static std::string text = "not decided (prepare_blas_core was not called)";
  return text;
}

bool equal_ignoring_case(const std::string& a, const std::string& b) {
  return a.size() == b.size() && ::strncasecmp(a.c_str(), b.c_str(), a.size()) == 0;
}

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

// "a:b:rest" -> {a, b, rest}; the reason may itself hold colons.
std::vector<std::string> split_state(const std::string& state) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (int i = 0; i < 2; ++i) {
    const size_t colon = state.find(':', start);
    if (colon == std::string::npos) break;
    parts.push_back(state.substr(start, colon - start));
    start = colon + 1;
  }
  parts.push_back(state.substr(start));
  return parts;
}

}  // namespace

CpuFeatures cpu_features() {
  CpuFeatures features;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return features;
  features.sse3 = ecx & bit_SSE3;
  features.ssse3 = ecx & bit_SSSE3;
  features.sse4_2 = ecx & bit_SSE4_2;
  const bool osxsave = ecx & bit_OSXSAVE;
  const bool cpu_avx = ecx & bit_AVX;
  const bool cpu_fma = ecx & bit_FMA;
  uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  }
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;     // SSE and AVX state
  const bool zmm_saved = (xcr0 & 0xe6) == 0xe6;   // and opmask, ZMM0-15 upper halves, ZMM16-31
  features.avx = cpu_avx && ymm_saved;
  features.fma = cpu_fma && ymm_saved;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    features.avx2 = (ebx & bit_AVX2) && ymm_saved;
    features.avx512f = (ebx & bit_AVX512F) && zmm_saved;
    features.avx512cd = (ebx & bit_AVX512CD) && zmm_saved;
    features.avx512bw = (ebx & bit_AVX512BW) && zmm_saved;
    features.avx512dq = (ebx & bit_AVX512DQ) && zmm_saved;
    features.avx512vl = (ebx & bit_AVX512VL) && zmm_saved;
  }
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) features.avx512_bf16 = (eax & (1u << 5)) && zmm_saved;
#endif
  return features;
}

std::string best_openblas_core(const CpuFeatures& f) {
  if (f.avx512f && f.avx512cd && f.avx512bw && f.avx512dq && f.avx512vl) return "SkylakeX";
  if (f.avx2 && f.fma) return "Haswell";
  if (f.avx) return "Sandybridge";
  if (f.sse4_2) return "Nehalem";
  if (f.ssse3) return "Core2";
  if (f.sse3) return "Prescott";
  return "";
}

std::vector<std::string> runnable_openblas_cores(const CpuFeatures& f) {
  std::vector<std::string> cores;
  if (f.sse3) cores.push_back("Prescott");
  if (f.ssse3) cores.push_back("Core2");
  if (f.sse4_2) cores.push_back("Nehalem");
  if (f.avx) cores.push_back("Sandybridge");
  if (f.avx2 && f.fma) cores.insert(cores.end(), {"Haswell", "Zen"});
  if (f.avx512f && f.avx512cd && f.avx512bw && f.avx512dq && f.avx512vl) cores.push_back("SkylakeX");
  return cores;
}

int openblas_core_rank(const std::string& name) {
  static const std::vector<std::pair<std::string, int>> ranks = {
      {"Katmai", 0},      {"Coppermine", 0},  {"Northwood", 0},      {"Prescott", 0},   {"Banias", 0},
      {"Atom", 0},        {"Athlon", 0},      {"Opteron", 0},        {"Opteron_SSE3", 0}, {"Barcelona", 0},
      {"Nano", 0},        {"Core2", 1},       {"Penryn", 1},         {"Dunnington", 1}, {"Nehalem", 2},
      {"Sandybridge", 3}, {"Bulldozer", 3},   {"Piledriver", 3},     {"Steamroller", 3}, {"Excavator", 3},
      {"Haswell", 4},     {"Zen", 4},         {"SkylakeX", 5},       {"Cooperlake", 5}, {"SapphireRapids", 5},
  };
  for (const auto& [core, rank] : ranks)
    if (equal_ignoring_case(core, name)) return rank;
  return -1;
}

BlasCoreDecision decide_blas_core(const BlasCoreRequest& request, const std::optional<std::string>& user_coretype,
                                  const std::string& active_core, const CpuFeatures& features) {
  BlasCoreDecision decision;
  if (active_core.empty()) {
    decision.reason = "the BLAS is not OpenBLAS";
    return decision;
  }
  if (request.mode == "as-is") {
    decision.reason = user_coretype ? fmt::format("OPENBLAS_CORETYPE={} as set, --blas-core as-is", *user_coretype)
                                    : "OpenBLAS's own choice, --blas-core as-is";
    return decision;
  }
  if (request.mode != "auto") {
    if (openblas_core_rank(request.mode) < 0)
      fail("--blas-core {}: not an OpenBLAS core type this host knows (auto, as-is, or e.g. SkylakeX, Haswell)",
           request.mode);
    if (equal_ignoring_case(request.mode, active_core)) {
      decision.reason = "--blas-core " + request.mode;
      return decision;
    }
    decision.set_core = request.mode;
    decision.reason = "--blas-core " + request.mode;
    return decision;
  }
  const std::string best = best_openblas_core(features);
  if (user_coretype && !request.explicit_flag) {
    decision.reason = fmt::format("OPENBLAS_CORETYPE={} set by the user", *user_coretype);
    if (!best.empty() && openblas_core_rank(best) > openblas_core_rank(active_core))
      decision.reason += fmt::format("; this CPU runs {} (faster: unset the variable or pass --blas-core auto)", best);
    return decision;
  }
  const int active_rank = openblas_core_rank(active_core);
  if (best.empty() || active_rank < 0 || openblas_core_rank(best) <= active_rank) {
    decision.reason = active_rank < 0 ? fmt::format("OpenBLAS's own choice ({} is not in the host's table)",
                                                    active_core)
                                      : "OpenBLAS's own choice, the best this CPU runs";
    return decision;
  }
  decision.set_core = best;
  decision.reason = fmt::format("OpenBLAS chose {}, below what this CPU's features run", active_core);
  return decision;
}

std::string verify_sgemm(const Sgemm& sgemm) {
  if (!sgemm) return "no sgemm to check";
  struct Shape {
    int m, n, k;
    char ta, tb;
    float alpha, beta;
  };
  const Shape shapes[] = {{1, 1, 1, 'N', 'N', 1.0f, 0.0f},     {17, 33, 9, 'N', 'N', 1.0f, 0.0f},
                          {64, 64, 64, 'T', 'N', 1.0f, 0.0f},  {129, 67, 255, 'N', 'T', 0.5f, 1.0f},
                          {96, 257, 31, 'T', 'T', -1.0f, 0.25f}, {256, 48, 384, 'N', 'N', 1.0f, 0.0f},
                          {7, 200, 129, 'T', 'N', 2.0f, -1.0f}};
  std::mt19937 generator(1234);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const auto& s : shapes) {
    // op(A) is m x k, op(B) is k x n; A is stored m x k ('N') or k x m ('T'), column-major.
    const int a_rows = s.ta == 'N' ? s.m : s.k, a_cols = s.ta == 'N' ? s.k : s.m;
    const int b_rows = s.tb == 'N' ? s.k : s.n, b_cols = s.tb == 'N' ? s.n : s.k;
    std::vector<float> a(static_cast<size_t>(a_rows) * a_cols), b(static_cast<size_t>(b_rows) * b_cols),
        c(static_cast<size_t>(s.m) * s.n);
    for (auto& x : a) x = uniform(generator);
    for (auto& x : b) x = uniform(generator);
    for (auto& x : c) x = uniform(generator);
    const std::vector<float> c_before = c;
    sgemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, a.data(), a_rows, b.data(), b_rows, s.beta, c.data(), s.m);
    auto a_at = [&](int i, int p) { return s.ta == 'N' ? a[i + static_cast<size_t>(p) * a_rows]
                                                       : a[p + static_cast<size_t>(i) * a_rows]; };
    auto b_at = [&](int p, int j) { return s.tb == 'N' ? b[p + static_cast<size_t>(j) * b_rows]
                                                       : b[j + static_cast<size_t>(p) * b_rows]; };
    for (int j = 0; j < s.n; ++j) {
      for (int i = 0; i < s.m; ++i) {
        double sum = 0, magnitude = 0;
        for (int p = 0; p < s.k; ++p) {
          const double term = static_cast<double>(a_at(i, p)) * b_at(p, j);
          sum += term;
          magnitude += std::abs(term);
        }
        const double before = c_before[i + static_cast<size_t>(j) * s.m];
        const double expected = s.alpha * sum + s.beta * before;
        const double scale = std::abs(s.alpha) * magnitude + std::abs(s.beta * before) + 1e-30;
        const double got = c[i + static_cast<size_t>(j) * s.m];
        if (!(std::abs(got - expected) <= 1e-5 * scale))
          return fmt::format("sgemm {}{} {}x{}x{}: C[{},{}] = {} where double precision gives {}", s.ta, s.tb, s.m,
                             s.n, s.k, i, j, got, expected);
      }
    }
  }
  return "";
}

Sgemm loaded_sgemm() {
  using Fortran = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                           const int*, const float*, const int*, const float*, float*, const int*);
  auto fn = reinterpret_cast<Fortran>(::dlsym(RTLD_DEFAULT, "sgemm_"));
  if (!fn) return {};
  return [fn](char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
              float beta, float* c, int ldc) { fn(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc); };
}

std::string openblas_core() {
  using CoreName = char* (*)();
  auto fn = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!fn) return "";
  const char* name = fn();
  return name ? std::string(name) : std::string();
}

bool prepare_blas_core(const BlasCoreRequest& request) {
  const std::string active = openblas_core();
  const auto state = environment(kStateVariable);
  if (state && state->rfind("chosen:", 0) == 0) {
    const auto parts = split_state(*state);
    const std::string core = parts.size() > 1 ? parts[1] : "";
    const std::string reason = parts.size() > 2 ? parts[2] : "";
    if (!equal_ignoring_case(core, active)) {
      report_text() = fmt::format("{} (OpenBLAS did not take OPENBLAS_CORETYPE={}: {})", active, core, reason);
      return false;
    }
    const std::string wrong = verify_sgemm(loaded_sgemm());
    if (wrong.empty()) {
      report_text() = fmt::format("{} (chosen by twostage: {}; sgemm verified against double precision)", active,
                                  reason);
      return false;
    }
    // Wrong results: back to what OpenBLAS (or the user) had chosen, in one more restart.
    if (const auto user = environment(kUserVariable))
      ::setenv("OPENBLAS_CORETYPE", user->c_str(), 1);
    else
      ::unsetenv("OPENBLAS_CORETYPE");
    ::setenv(kStateVariable, fmt::format("rejected:{}:{}", core, wrong).c_str(), 1);
    report_text() = fmt::format("{} (computes wrong results, {}; the restart back failed)", active, wrong);
    return true;
  }
  if (state && state->rfind("rejected:", 0) == 0) {
    const auto parts = split_state(*state);
    report_text() = fmt::format("{} (OpenBLAS's choice: {} computed wrong results, {})", active,
                                parts.size() > 1 ? parts[1] : "", parts.size() > 2 ? parts[2] : "");
    return false;
  }
  const auto user = environment("OPENBLAS_CORETYPE");
  const auto decision = decide_blas_core(request, user, active, cpu_features());
  if (!decision.set_core) {
    report_text() = active.empty() ? decision.reason : fmt::format("{} ({})", active, decision.reason);
    return false;
  }
  if (user) ::setenv(kUserVariable, user->c_str(), 1);
  ::setenv("OPENBLAS_CORETYPE", decision.set_core->c_str(), 1);
  ::setenv(kStateVariable, fmt::format("chosen:{}:{}", *decision.set_core, decision.reason).c_str(), 1);
  // Seen only if the restart fails: this process keeps the kernels it loaded.
  report_text() = fmt::format("{} (the restart for {} failed)", active, *decision.set_core);
  return true;
}

std::string blas_core_report() { return report_text(); }

BlasCoreRequest take_blas_core_flag(std::vector<std::string>& args) {
  BlasCoreRequest request;
  for (size_t i = 0; i < args.size();) {
    std::optional<std::string> value;
    size_t taken = 1;
    if (args[i] == "--blas-core") {
      if (i + 1 >= args.size()) fail("--blas-core needs a value: auto, as-is or an OpenBLAS core type");
      value = args[i + 1];
      taken = 2;
    } else if (args[i].rfind("--blas-core=", 0) == 0) {
      value = args[i].substr(12);
    }
    if (!value) {
      ++i;
      continue;
    }
    request.mode = *value;
    request.explicit_flag = true;
    args.erase(args.begin() + static_cast<std::ptrdiff_t>(i), args.begin() + static_cast<std::ptrdiff_t>(i + taken));
  }
  if (request.mode != "auto" && request.mode != "as-is" && openblas_core_rank(request.mode) < 0)
    fail("--blas-core {}: expected auto, as-is or an OpenBLAS core type (e.g. SkylakeX, Haswell, Prescott)",
         request.mode);
  return request;
}

}  // namespace ts::runtime
