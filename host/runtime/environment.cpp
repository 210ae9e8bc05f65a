#include "runtime/environment.h"

#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <strings.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include <torch/torch.h>
#include <torch/version.h>
#include <twostage/build_info.h>

#include "core/error.h"
#include "core/parallel.h"
#include "runtime/blas_core.h"

namespace ts::runtime {
namespace {

using openblas_set_threads_fn = void (*)(int);
using openblas_get_config_fn = char* (*)();
using openblas_get_parallel_fn = int (*)();

template <typename Fn>
Fn find_symbol(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, name));
}

// The file behind the loaded libblas.so.3 (Debian's alternatives pick OpenBLAS, BLIS or the reference BLAS).
std::string loaded_blas_path() {
  std::string found;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name && std::strstr(info->dlpi_name, "libblas.so")) {
          char resolved[4096];
          const char* path = realpath(info->dlpi_name, resolved) ? resolved : info->dlpi_name;
          *static_cast<std::string*>(data) = path;
          return 1;
        }
        return 0;
      },
      &found);
  return found;
}

}  // namespace

std::string blas_description() {
  if (auto config = find_symbol<openblas_get_config_fn>("openblas_get_config")) {
    std::string text = std::string("OpenBLAS ") + config();
    if (auto parallel = find_symbol<openblas_get_parallel_fn>("openblas_get_parallel")) {
      const int mode = parallel();
      text += mode == 0 ? " (sequential)" : mode == 1 ? " (pthreads)" : " (OpenMP)";
    }
    return text;
  }
  if (find_symbol<void*>("mkl_get_max_threads")) return "Intel MKL";
  const std::string path = loaded_blas_path();
  if (path.find("/blas/") != std::string::npos)
    return "reference BLAS " + path + " (about 35 times slower: apt-get install libopenblas0-pthread)";
  if (!path.empty()) return path;
  return "built into LibTorch";
}

bool blas_is_reference() { return blas_description().rfind("reference BLAS", 0) == 0; }

namespace {
bool asked_passive_openmp = false;
}  // namespace

bool ask_passive_openmp() {
  if (std::getenv("OMP_WAIT_POLICY")) return false;
  asked_passive_openmp = ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0;
  return asked_passive_openmp;
}

void restart_process(char** argv) {
  ::execv("/proc/self/exe", argv);
  if (asked_passive_openmp) ::unsetenv("OMP_WAIT_POLICY");
}

bool openmp_is_passive() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  return policy && ::strcasecmp(policy, "passive") == 0;
}

bool keep_freed_memory() {
#if defined(__GLIBC__)
  return ::mallopt(M_MMAP_MAX, 0) == 1 && ::mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
#else
  return false;
#endif
}

ThreadPlan set_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPlan plan;
  auto openblas_set = find_symbol<openblas_set_threads_fn>("openblas_set_num_threads");
  if (openblas_set) {
    const bool passive = openmp_is_passive();
    plan.torch_intra_op = passive ? threads : 1;
    plan.blas = threads;
    openblas_set(threads);
    plan.reason = passive
                      ? "OpenBLAS and torch each get every core: idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE)"
                      : "OpenBLAS has its own thread pool: matrix products use it, torch's own kernels one thread "
                        "(idle OpenMP threads would spin: OMP_WAIT_POLICY is not PASSIVE)";
  } else {
    plan.torch_intra_op = threads;
    plan.blas = 0;
    plan.reason = "the BLAS follows torch's thread pool";
  }
  at::set_num_threads(plan.torch_intra_op);
  plan.loops = loop_threads_beside_blas(threads, plan.blas);
  set_worker_threads(plan.loops);
  return plan;
}

int loop_threads_beside_blas(int threads, int blas_threads) {
  if (blas_threads <= 0) return std::max(1, threads);
  return std::max(1, threads - blas_threads + 1);
}

std::string torch_version() {
  return fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
}

std::string cuda_report() {
  if (!TWOSTAGE_TORCH_HAS_CUDA) return "CPU only: no CUDA compiled in";
  if (!torch::cuda::is_available()) return "CUDA compiled in; no GPU visible";
  return fmt::format("CUDA compiled in; {} GPU(s) visible", torch::cuda::device_count());
}

std::string version_report(const std::string& luajit_version) {
  return fmt::format("twostage {}\nLibTorch {} ({})\n{}\nBLAS {}\nBLAS kernels {}\n", TWOSTAGE_VERSION,
                     torch_version(), cuda_report(), luajit_version, blas_description(), blas_core_report());
}

std::string check_device(const std::string& device) {
  if (device == "cpu") return device;
  if (device.rfind("cuda", 0) == 0) {
    if (!TWOSTAGE_TORCH_HAS_CUDA)
      fail("--device {}: this build's LibTorch {} has no CUDA; build against a CUDA LibTorch (-DTorch_DIR=..., see "
           "setup_libtorch2.sh) or use --device cpu",
           device, torch_version());
    if (!torch::cuda::is_available())
      fail("--device {}: LibTorch {} has CUDA, but no GPU is visible (driver, CUDA_VISIBLE_DEVICES); use --device cpu",
           device, torch_version());
    torch::Device parsed(device);  // validates "cuda:N"
    if (parsed.has_index() && parsed.index() >= static_cast<int>(torch::cuda::device_count()))
      fail("--device {}: only {} CUDA device(s) visible", device, torch::cuda::device_count());
    return device;
  }
  fail("--device expects cpu, cuda or cuda:N, got '{}'", device);
}

void manual_seed(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace ts::runtime
