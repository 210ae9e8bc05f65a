#pragma once
// Which OpenBLAS kernels run. OpenBLAS built with DYNAMIC_ARCH picks its kernels by CPU model when it is loaded,
// and a model it does not know gets old ones: Debian's 0.3.21 runs its Prescott (SSE3) kernels on Intel family 6
// model 207 (AVX-512), sgemm 1024³ at 45.6 GFLOP/s against 220.8 with SkylakeX's, which compute correctly there.
// So the host reads the CPU's features itself (CPUID, not the model name), and when OpenBLAS's choice is below what
// they allow, sets OPENBLAS_CORETYPE before OpenBLAS loads (a restart, with OMP_WAIT_POLICY's) and verifies the new
// kernels against a double-precision reference in the restarted process; a wrong result restarts once more with
// OpenBLAS's own choice. Nothing is cached: every start decides afresh for the machine it is on.
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ts::runtime {

struct CpuFeatures {
  bool sse3 = false, ssse3 = false, sse4_2 = false;
  bool avx = false, avx2 = false, fma = false;  // avx: the OS saves YMM state too
  bool avx512f = false, avx512cd = false, avx512bw = false, avx512dq = false, avx512vl = false;  // and ZMM state
  bool avx512_bf16 = false;
};

// This CPU's, from CPUID and XGETBV (register state the OS does not save counts as absent).
CpuFeatures cpu_features();

// The best OpenBLAS core type these features run, of those whose sgemm differs: SkylakeX (AVX-512 F, CD, BW, DQ,
// VL), Haswell (AVX2 + FMA), Sandybridge (AVX), Nehalem (SSE4.2), Core2 (SSSE3), Prescott (SSE3); "" for none.
// Cooperlake and SapphireRapids add bf16 kernels only, which torch does not call, and 0.3.21 cannot be forced to
// Cooperlake by name; AMX would also need the kernel's per-process permission.
std::string best_openblas_core(const CpuFeatures& features);

// Every core type these features run whose sgemm is its own, slowest first (the benchmarks time each to find the
// machine's real limit): Prescott, Core2, Nehalem, Sandybridge, Haswell and Zen (AVX2 + FMA kernels both, with
// their own blocking), SkylakeX; the same requirements as best_openblas_core.
std::vector<std::string> runnable_openblas_cores(const CpuFeatures& features);

// How good a core's sgemm is, for comparing OpenBLAS's choice with the best: 0 Prescott and older ... 5 SkylakeX
// and newer (Cooperlake, SapphireRapids); AMD's Zen counts as Haswell. -1 for a name this table does not know.
int openblas_core_rank(const std::string& name);

// --blas-core: "auto" (the default) chooses unless the user set OPENBLAS_CORETYPE; "as-is" leaves OpenBLAS's
// choice; a core name forces that core. An explicit --blas-core auto chooses even over the user's variable.
struct BlasCoreRequest {
  std::string mode = "auto";  // "auto", "as-is" or a core name
  bool explicit_flag = false;  // given on the command line
};

struct BlasCoreDecision {
  std::optional<std::string> set_core;  // OPENBLAS_CORETYPE to set before OpenBLAS loads; none: leave it
  std::string reason;                    // for the log and --version
};

// The decision, from what is known before a restart: the request, the user's OPENBLAS_CORETYPE (if any), the core
// OpenBLAS chose in this process ("" when the BLAS is not OpenBLAS) and the CPU's features.
BlasCoreDecision decide_blas_core(const BlasCoreRequest& request, const std::optional<std::string>& user_coretype,
                                  const std::string& active_core, const CpuFeatures& features);

// Column-major sgemm as the Fortran BLAS: C = alpha op(A) op(B) + beta C, op 'N' or 'T'.
using Sgemm = std::function<void(char transa, char transb, int m, int n, int k, float alpha, const float* a, int lda,
                                 const float* b, int ldb, float beta, float* c, int ldc)>;

// Checks `sgemm` on a few shapes (1 to 257, odd sizes, every transpose, alpha and beta not 1 and 0) against a
// double-precision product: each element within 1e-5 of the sum of |terms|. Returns "" when all pass, else the
// first failure.
std::string verify_sgemm(const Sgemm& sgemm);

// The loaded BLAS's sgemm_ (nullptr-backed empty function when there is none).
Sgemm loaded_sgemm();
// openblas_get_corename() of the loaded OpenBLAS, "" when the BLAS is another.
std::string openblas_core();

// Run at the start of `run`, `predict`, `sweep` and the benchmarks, before any BLAS work. Returns true when it set
// variables that need a restart (the caller re-executes, with OMP_WAIT_POLICY's restart). After a restart it
// verifies the chosen core and, if the check fails, prepares one more restart with OpenBLAS's own choice.
bool prepare_blas_core(const BlasCoreRequest& request);
// What was chosen and why, for the log's BLAS line and --version.
std::string blas_core_report();

// Takes "--blas-core VALUE" / "--blas-core=VALUE" out of `args`; throws ts::Error on a missing value.
BlasCoreRequest take_blas_core_flag(std::vector<std::string>& args);

}  // namespace ts::runtime
