#pragma once
// Maths written so that loops over it vectorise, for the fused kernels (model/linear_gelu.h, model/residual_norm.h,
// model/attention.h): no branches, no library calls. Always inlined: GCC would otherwise call the functions from the
// kernels' AVX2 copies, and their loops would not vectorise.
#include <cstdint>
#include <cstring>

namespace ts {

// Eight running values, so that reductions over a row vectorise without reordering any one of them.
struct Lanes {
  float value[8];
  explicit Lanes(float initial = 0.0f) {
    for (float& v : value) v = initial;
  }
  float total() const {
    return ((value[0] + value[1]) + (value[2] + value[3])) + ((value[4] + value[5]) + (value[6] + value[7]));
  }
  float largest() const {
    float best = value[0];
    for (const float v : value) best = v > best ? v : best;
    return best;
  }
};

// e^x for x <= 0: Cephes expf's range reduction and polynomial (about 1 ulp); torch's kernels call SLEEF for this,
// which a host build cannot count on. Below -87, e^-87 (to keep 2^n normal): under every float the GELU adds it to.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 · 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// e^x for x <= 0, and exactly 0 below -87 (where expf's result is at most subnormal): softmax's weights of masked
// positions are then 0, as torch's are.
__attribute__((always_inline)) inline float exp_nonpositive_or_zero(float x) {
  const float e = exp_nonpositive(x);
  return x < -87.0f ? 0.0f : e;
}

}  // namespace ts
