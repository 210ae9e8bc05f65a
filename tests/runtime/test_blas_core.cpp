// The OpenBLAS kernel choice (runtime/blas_core.h): features to core types, the decision, and the verification.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "runtime/blas_core.h"

using namespace ts::runtime;

namespace {

CpuFeatures with(std::initializer_list<bool CpuFeatures::*> flags) {
  CpuFeatures features;
  for (auto flag : flags) features.*flag = true;
  return features;
}

using F = CpuFeatures;
const CpuFeatures kSse3 = with({&F::sse3});
const CpuFeatures kAvx2 = with({&F::sse3, &F::ssse3, &F::sse4_2, &F::avx, &F::avx2, &F::fma});
const CpuFeatures kAvx512 = with({&F::sse3, &F::ssse3, &F::sse4_2, &F::avx, &F::avx2, &F::fma, &F::avx512f,
                                  &F::avx512cd, &F::avx512bw, &F::avx512dq, &F::avx512vl, &F::avx512_bf16});

// A correct column-major sgemm, the reference BLAS's loops.
void reference_sgemm(char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                     int ldb, float beta, float* c, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float sum = 0;
      for (int p = 0; p < k; ++p)
        sum += (ta == 'N' ? a[i + p * lda] : a[p + i * lda]) * (tb == 'N' ? b[p + j * ldb] : b[j + p * ldb]);
      c[i + j * ldc] = alpha * sum + beta * c[i + j * ldc];
    }
}

}  // namespace

TEST_CASE("CPU features map to the best OpenBLAS core type they run", "[runtime][blas]") {
  struct Row {
    CpuFeatures features;
    const char* core;
  };
  CpuFeatures avx512_without_vl = kAvx512;
  avx512_without_vl.avx512vl = false;  // Xeon Phi's AVX-512 lacks VL/BW/DQ: not SkylakeX
  CpuFeatures avx_without_os_state;  // what cpu_features() reports when the OS does not save YMM: no AVX at all
  avx_without_os_state.sse3 = avx_without_os_state.ssse3 = avx_without_os_state.sse4_2 = true;
  const Row rows[] = {
      {CpuFeatures{}, ""},
      {kSse3, "Prescott"},
      {with({&F::sse3, &F::ssse3}), "Core2"},
      {with({&F::sse3, &F::ssse3, &F::sse4_2}), "Nehalem"},
      {with({&F::sse3, &F::ssse3, &F::sse4_2, &F::avx}), "Sandybridge"},
      {with({&F::sse3, &F::ssse3, &F::sse4_2, &F::avx, &F::avx2}), "Sandybridge"},  // AVX2 without FMA
      {kAvx2, "Haswell"},
      {avx512_without_vl, "Haswell"},
      {kAvx512, "SkylakeX"},
      {avx_without_os_state, "Nehalem"},
  };
  for (const auto& row : rows) CHECK(best_openblas_core(row.features) == row.core);
  // The machine running the test maps to some core type, and the table ranks it.
  const std::string here = best_openblas_core(cpu_features());
  INFO("this CPU: " << here);
  CHECK((here.empty() || openblas_core_rank(here) >= 0));
}

TEST_CASE("the core types a CPU runs, for the benchmarks' limit: every one its features allow, slowest first",
          "[runtime][blas]") {
  using Cores = std::vector<std::string>;
  CHECK(runnable_openblas_cores(CpuFeatures{}).empty());
  CHECK(runnable_openblas_cores(kSse3) == Cores{"Prescott"});
  CHECK(runnable_openblas_cores(kAvx2) == Cores{"Prescott", "Core2", "Nehalem", "Sandybridge", "Haswell", "Zen"});
  CHECK(runnable_openblas_cores(kAvx512) ==
        Cores{"Prescott", "Core2", "Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX"});
  CpuFeatures avx2_without_fma = kAvx2;
  avx2_without_fma.fma = false;
  CHECK(runnable_openblas_cores(avx2_without_fma).back() == "Sandybridge");
  // The best of them is the one the host chooses.
  for (const auto& features : {kSse3, kAvx2, kAvx512, avx2_without_fma, cpu_features()}) {
    const auto cores = runnable_openblas_cores(features);
    if (cores.empty()) continue;
    CHECK(openblas_core_rank(cores.back()) == openblas_core_rank(best_openblas_core(features)));
  }
}

TEST_CASE("core ranks order OpenBLAS's names, unknown names rank -1", "[runtime][blas]") {
  CHECK(openblas_core_rank("Prescott") < openblas_core_rank("Haswell"));
  CHECK(openblas_core_rank("Haswell") < openblas_core_rank("SkylakeX"));
  CHECK(openblas_core_rank("Cooperlake") == openblas_core_rank("SkylakeX"));
  CHECK(openblas_core_rank("Zen") == openblas_core_rank("Haswell"));
  CHECK(openblas_core_rank("skylakex") == openblas_core_rank("SkylakeX"));  // OpenBLAS's names in any case
  CHECK(openblas_core_rank("Pentium9") == -1);
}

TEST_CASE("the decision: choose when OpenBLAS picked below the CPU, respect the user, obey --blas-core",
          "[runtime][blas]") {
  const BlasCoreRequest automatic;
  // OpenBLAS 0.3.21 on Intel family 6 model 207: Prescott on an AVX-512 CPU.
  auto decision = decide_blas_core(automatic, std::nullopt, "Prescott", kAvx512);
  REQUIRE(decision.set_core);
  CHECK(*decision.set_core == "SkylakeX");
  // Already the best: nothing to do. Cooperlake counts as SkylakeX.
  CHECK_FALSE(decide_blas_core(automatic, std::nullopt, "Cooperlake", kAvx512).set_core);
  CHECK_FALSE(decide_blas_core(automatic, std::nullopt, "Haswell", kAvx2).set_core);
  // A name the table does not know is left alone.
  CHECK_FALSE(decide_blas_core(automatic, std::nullopt, "FutureLake", kAvx512).set_core);
  // Not OpenBLAS.
  CHECK_FALSE(decide_blas_core(automatic, std::nullopt, "", kAvx512).set_core);

  // The user's OPENBLAS_CORETYPE is respected, and the log says what the CPU could run.
  decision = decide_blas_core(automatic, std::string("Haswell"), "Haswell", kAvx512);
  CHECK_FALSE(decision.set_core);
  CHECK_THAT(decision.reason, Catch::Contains("set by the user") && Catch::Contains("SkylakeX"));
  // ... unless --blas-core auto is given explicitly.
  BlasCoreRequest explicit_auto;
  explicit_auto.explicit_flag = true;
  decision = decide_blas_core(explicit_auto, std::string("Haswell"), "Haswell", kAvx512);
  REQUIRE(decision.set_core);
  CHECK(*decision.set_core == "SkylakeX");

  // --blas-core as-is leaves everything, whatever OpenBLAS chose.
  BlasCoreRequest as_is{"as-is", true};
  CHECK_FALSE(decide_blas_core(as_is, std::nullopt, "Prescott", kAvx512).set_core);
  CHECK_FALSE(decide_blas_core(as_is, std::string("Prescott"), "Prescott", kAvx512).set_core);
  // --blas-core NAME forces NAME.
  decision = decide_blas_core(BlasCoreRequest{"Haswell", true}, std::nullopt, "Prescott", kAvx512);
  REQUIRE(decision.set_core);
  CHECK(*decision.set_core == "Haswell");
  CHECK_THROWS_AS(decide_blas_core(BlasCoreRequest{"Pentium9", true}, std::nullopt, "Prescott", kAvx512),
                  ts::Error);
}

TEST_CASE("the sgemm check passes a correct product and rejects a kernel that computes wrong", "[runtime][blas]") {
  CHECK(verify_sgemm(reference_sgemm) == "");
  // The BLAS this process loaded, whatever kernels it runs.
  if (const auto loaded = loaded_sgemm()) CHECK(verify_sgemm(loaded) == "");

  // Wrong in one element of one transposed shape only.
  const Sgemm off_by_a_little = [](char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                                   const float* b, int ldb, float beta, float* c, int ldc) {
    reference_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (ta == 'T' && tb == 'T') c[3] *= 1.001f;
  };
  CHECK_THAT(verify_sgemm(off_by_a_little), Catch::Contains("sgemm TT"));
  // Ignoring beta (C overwritten instead of accumulated).
  const Sgemm no_beta = [](char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                           const float* b, int ldb, float, float* c, int ldc) {
    reference_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
  };
  CHECK_FALSE(verify_sgemm(no_beta).empty());
  // NaNs.
  const Sgemm nan = [](char, char, int m, int n, int, float, const float*, int, const float*, int, float, float* c,
                       int ldc) { c[0] = std::nanf(""); };
  CHECK_FALSE(verify_sgemm(nan).empty());
}

TEST_CASE("the flag --blas-core is taken out of the arguments", "[runtime][blas]") {
  std::vector<std::string> args = {"recipe.lua", "--blas-core", "as-is", "--threads", "2"};
  auto request = take_blas_core_flag(args);
  CHECK(request.mode == "as-is");
  CHECK(request.explicit_flag);
  CHECK(args == std::vector<std::string>{"recipe.lua", "--threads", "2"});
  args = {"--blas-core=SkylakeX"};
  CHECK(take_blas_core_flag(args).mode == "SkylakeX");
  CHECK(args.empty());
  args = {"recipe.lua"};
  request = take_blas_core_flag(args);
  CHECK(request.mode == "auto");
  CHECK_FALSE(request.explicit_flag);
  args = {"--blas-core"};
  CHECK_THROWS_AS(take_blas_core_flag(args), ts::Error);
  args = {"--blas-core", "fastest"};
  CHECK_THROWS_AS(take_blas_core_flag(args), ts::Error);
}
