#pragma once
// What the CPU running the process can do, for kernels compiled twice (for the build's target and with AVX2 + FMA).
namespace ts {

// AVX2 and FMA both present. Detected once, on first use: a namespace-scope initialiser could run before the
// compiler's own CPU detection and read false.
bool cpu_has_avx2_fma();

}  // namespace ts
