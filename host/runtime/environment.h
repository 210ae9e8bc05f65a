#pragma once
// The numeric environment of a run: threads, BLAS, device, seeds and versions.
#include <string>

namespace ts::runtime {

struct ThreadPlan {
  int torch_intra_op = 1;
  int blas = 1;          // 0 when the BLAS has no pool of its own (it then follows torch)
  int loops = 1;         // twostage's own loops (core/parallel.h: dropout, fused kernels, AdamW)
  std::string reason;    // why this split, for the log
};

// The BLAS that LibTorch calls, e.g. "OpenBLAS 0.3.21 (pthread)" or "reference BLAS (slow: install
// libopenblas0-pthread)". Found by looking at the symbols and libraries loaded in this process.
std::string blas_description();
bool blas_is_reference();

// libgomp (torch's OpenMP) reads OMP_WAIT_POLICY once, when it is loaded, before main. Unset, its idle threads
// spin and take the cores from OpenBLAS's threads; PASSIVE, they sleep, and torch and OpenBLAS can both have every
// core. ask_passive_openmp sets OMP_WAIT_POLICY=PASSIVE when the variable is unset and says whether it did; the
// caller then restarts (restart_process), with any other variable it set for the libraries' loading.
bool ask_passive_openmp();
bool openmp_is_passive();
// Re-executes the program (/proc/self/exe, the same arguments) so that the libraries load again under the
// variables set. Returns only when the exec failed, having taken back the OMP_WAIT_POLICY that ask_passive_openmp
// set: this process's libgomp still spins.
void restart_process(char** argv);

// glibc maps every block above its mmap threshold (128 KiB, adapting up to 32 MiB) on its own and unmaps it when
// freed, and returns the top of the heap to the kernel past 128 KiB free. A training step allocates and frees
// hundreds of MiB of activations and gradients, so each step faulted in and zeroed those pages afresh (bert-base,
// batch 16, sequence 128: the forward took 4.8 s rather than 3.7 s, and zeroing the 94 MB word-embedding gradient
// 0.24 s). This keeps freed memory for reuse: every block comes from the heap, and the heap is never trimmed. The
// process's resident size then stays near its peak. Returns false, changing nothing, where the C library is not
// glibc.
bool keep_freed_memory();

// Chooses and applies the thread split for `threads` cores (0: all of them). With a BLAS that has its own pool
// (OpenBLAS), the BLAS gets `threads`, and so does torch when OpenMP threads sleep when idle (above); otherwise
// torch gets one intra-op thread: on Debian's LibTorch 1.13 on 2 cores, both pools at 2 with spinning OpenMP
// threads was 1.5 to 2 times slower. With a BLAS that follows torch (MKL) torch gets `threads`. Twostage's own loops
// get loop_threads_beside_blas.
ThreadPlan set_threads(int threads);

// Threads for twostage's own loops on `threads` cores beside a BLAS pool of blas_threads (0: no pool of its own):
// the cores the pool's idle threads leave. OpenBLAS's threads spin for a while after every product, and training
// runs products every few milliseconds, so loops on more threads fight them for the cores (bench_train_step on 2
// cores, bert-base: loops on 1 thread against 2, 90.3% and 90.3% against 88.7% and 84.1% of the matmul reference
// at sequence 32, 93.8% against 92.6% at 128).
int loop_threads_beside_blas(int threads, int blas_threads);

std::string torch_version();
// "CPU only: no CUDA compiled in", "CUDA compiled in; no GPU visible" or "...; N GPU(s) visible".
std::string cuda_report();
std::string version_report(const std::string& luajit_version);

// "cpu", "cuda" or "cuda:N". Throws ts::Error when CUDA is asked for and this LibTorch has none.
std::string check_device(const std::string& device);

void manual_seed(uint64_t seed);

}  // namespace ts::runtime
