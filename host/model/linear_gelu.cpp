#include "model/linear_gelu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/cpu.h"
#include "model/row_blocks.h"
#include "model/vector_math.h"

namespace ts {
namespace {

constexpr float kSqrtHalf = 0.70710678118654752440f;
constexpr float kInvSqrtTwoPi = 0.39894228040143267794f;

// erf(x), given e^(−x²), as torch's Vectorized<float>::erf computes it.
__attribute__((always_inline)) inline float erf_given_exp(float x, float exp_neg_square) {
  const float t = 1.0f / (0.3275911f * std::fabs(x) + 1.0f);
  float r = 1.061405429f * t + -1.453152027f;
  r = r * t + 1.421413741f;
  r = r * t + -0.284496736f;
  r = r * t + 0.254829592f;
  return std::copysign(1.0f - exp_neg_square * t * r, x);
}

// Rows [first, last) of the [rows, cols] product: out = gelu(pre + bias), and pre becomes GELU's slope there, all
// backward needs (erf and its exp are computed once, here, rather than again in backward).
__attribute__((always_inline)) inline void bias_gelu_rows(float* __restrict pre, float* __restrict out,
                                                          const float* __restrict bias, int64_t first, int64_t last,
                                                          int64_t cols) {
  for (int64_t row = first; row < last; ++row) {
    float* pre_row = pre + row * cols;
    float* out_row = out + row * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float u = pre_row[c] + bias[c];
      const float x = u * kSqrtHalf;
      const float e = exp_nonpositive(-(x * x));  // e^(−u²/2): erf's factor and the density's
      const float erf = erf_given_exp(x, e);
      out_row[c] = u * 0.5f * (1.0f + erf);  // torch's order of operations
      pre_row[c] = 0.5f * (1.0f + erf) + u * (kInvSqrtTwoPi * e);
    }
  }
}

// Rows [first, last): grad_pre = grad · slope, and their column sums (this block's share of the bias gradient) into
// bias_sums.
__attribute__((always_inline)) inline void gelu_backward_rows(const float* __restrict grad,
                                                              const float* __restrict slope, float* __restrict grad_pre,
                                                              float* __restrict bias_sums, int64_t first, int64_t last,
                                                              int64_t cols) {
  std::fill(bias_sums, bias_sums + cols, 0.0f);
  for (int64_t row = first; row < last; ++row) {
    const float* grad_row = grad + row * cols;
    const float* slope_row = slope + row * cols;
    float* out_row = grad_pre + row * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float g = grad_row[c] * slope_row[c];
      out_row[c] = g;
      bias_sums[c] += g;
    }
  }
}

// Each kernel twice: for the machine the build targets, and with AVX2 and FMA where the CPU has them (chosen at run
// time; target_clones' "arch=haswell" would test for that CPU model, not its features).
void bias_gelu_generic(float* pre, float* out, const float* bias, int64_t first, int64_t last, int64_t cols) {
  bias_gelu_rows(pre, out, bias, first, last, cols);
}
void gelu_backward_generic(const float* grad, const float* slope, float* grad_pre, float* bias_sums, int64_t first,
                           int64_t last, int64_t cols) {
  gelu_backward_rows(grad, slope, grad_pre, bias_sums, first, last, cols);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void bias_gelu_avx2(float* pre, float* out, const float* bias, int64_t first,
                                                         int64_t last, int64_t cols) {
  bias_gelu_rows(pre, out, bias, first, last, cols);
}
__attribute__((target("avx2,fma"))) void gelu_backward_avx2(const float* grad, const float* slope, float* grad_pre,
                                                             float* bias_sums, int64_t first, int64_t last,
                                                             int64_t cols) {
  gelu_backward_rows(grad, slope, grad_pre, bias_sums, first, last, cols);
}
#endif

void bias_gelu(float* pre, float* out, const float* bias, int64_t first, int64_t last, int64_t cols) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return bias_gelu_avx2(pre, out, bias, first, last, cols);
#endif
  bias_gelu_generic(pre, out, bias, first, last, cols);
}

void gelu_backward(const float* grad, const float* slope, float* grad_pre, float* bias_sums, int64_t first,
                   int64_t last, int64_t cols) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return gelu_backward_avx2(grad, slope, grad_pre, bias_sums, first, last, cols);
#endif
  gelu_backward_generic(grad, slope, grad_pre, bias_sums, first, last, cols);
}

struct LinearGeluFunction : torch::autograd::Function<LinearGeluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    const torch::Tensor rows_in = x.reshape({-1, x.size(-1)}).contiguous();
    // The product's buffer becomes GELU's slope, kept for backward.
    torch::Tensor slope = torch::mm(rows_in, weight.t());
    torch::Tensor out = torch::empty_like(slope);
    const int64_t rows = slope.size(0), cols = slope.size(1);
    float* slope_data = slope.data_ptr<float>();
    float* out_data = out.data_ptr<float>();
    const torch::Tensor bias_contiguous = bias.contiguous();
    const float* bias_data = bias_contiguous.data_ptr<float>();
    for_each_row_block(rows, [&](int64_t, int64_t first, int64_t last) {
      bias_gelu(slope_data, out_data, bias_data, first, last, cols);
    });
    context->save_for_backward({rows_in, weight, slope});
    context->saved_data["shape"] = x.sizes().vec();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = cols;
    return out.view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = context->get_saved_variables();
    const torch::Tensor& rows_in = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& slope = saved[2];
    const int64_t rows = slope.size(0), cols = slope.size(1);
    const torch::Tensor grad = grad_outputs[0].reshape({rows, cols}).contiguous();
    torch::Tensor grad_pre = torch::empty_like(slope);
    torch::Tensor sums = torch::empty({row_blocks(rows), cols}, slope.options());
    const float* grad_data = grad.data_ptr<float>();
    const float* slope_data = slope.data_ptr<float>();
    float* grad_pre_data = grad_pre.data_ptr<float>();
    float* sums_data = sums.data_ptr<float>();
    for_each_row_block(rows, [&](int64_t block, int64_t first, int64_t last) {
      gelu_backward(grad_data, slope_data, grad_pre_data, sums_data + block * cols, first, last, cols);
    });
    torch::Tensor grad_x, grad_weight, grad_bias;
    if (context->needs_input_grad(0))
      grad_x = torch::mm(grad_pre, weight).view(context->saved_data["shape"].toIntVector());
    if (context->needs_input_grad(1)) grad_weight = torch::mm(grad_pre.t(), rows_in);
    if (context->needs_input_grad(2)) grad_bias = sum_over_blocks(sums);
    return {grad_x, grad_weight, grad_bias};
  }
};

}  // namespace

bool linear_gelu_fuses(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return fused_kernels_enabled() && fusable_tensor(x) && fusable_tensor(weight) && fusable_tensor(bias) &&
         x.dim() >= 1 && weight.dim() == 2 && bias.dim() == 1 && x.size(-1) == weight.size(1) &&
         bias.size(0) == weight.size(0) && x.numel() > 0;
}

torch::Tensor linear_gelu(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (linear_gelu_fuses(x, weight, bias)) return LinearGeluFunction::apply(x, weight, bias);
  return torch::gelu(torch::nn::functional::linear(x, weight, bias));
}

}  // namespace ts
