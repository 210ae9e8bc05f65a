#include "model/residual_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/cpu.h"
#include "core/error.h"
#include "model/dropout.h"
#include "model/row_blocks.h"
#include "model/vector_math.h"

namespace ts {
namespace {

struct ForwardArgs {
  float* sums;  // in: the product x · Wᵀ; out: s = dropout(product + bias) + residual, kept for backward
  const float* residual;
  const float* bias;
  const float* gamma;
  const float* beta;
  float* out;
  float* mean;
  float* rstd;
  int64_t cols;
  float eps;
  DropoutMask mask;
};

__attribute__((always_inline)) inline void forward_rows(const ForwardArgs& a, int64_t first, int64_t last) {
  const int64_t cols = a.cols;
  for (int64_t row = first; row < last; ++row) {
    float* __restrict s = a.sums + row * cols;
    float* __restrict out = a.out + row * cols;
    const float* __restrict residual = a.residual + row * cols;
    // In the unfused order: dropout(product + bias) + residual.
    for (int64_t c = 0; c < cols; ++c) s[c] += a.bias[c];
    // A threshold of 0 drops nothing and scales by 1: the pass is skipped.
    if (a.mask.threshold != 0) apply_dropout_mask(s, s, static_cast<uint64_t>(row * cols), cols, a.mask);
    for (int64_t c = 0; c < cols; ++c) s[c] += residual[c];
    Lanes sum;
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8)
      for (int lane = 0; lane < 8; ++lane) sum.value[lane] += s[c + lane];
    for (; c < cols; ++c) sum.value[0] += s[c];
    const float mean = sum.total() / static_cast<float>(cols);
    Lanes squares;
    for (c = 0; c + 8 <= cols; c += 8)
      for (int lane = 0; lane < 8; ++lane) {
        const float d = s[c + lane] - mean;
        squares.value[lane] += d * d;
      }
    for (; c < cols; ++c) squares.value[0] += (s[c] - mean) * (s[c] - mean);
    const float rstd = 1.0f / std::sqrt(squares.total() / static_cast<float>(cols) + a.eps);
    // torch's arithmetic: (x · rstd + (−mean · rstd)) · gamma + beta.
    const float shift = -mean * rstd;
    for (c = 0; c < cols; ++c) out[c] = (s[c] * rstd + shift) * a.gamma[c] + a.beta[c];
    a.mean[row] = mean;
    a.rstd[row] = rstd;
  }
}

struct BackwardArgs {
  const float* grad;  // of the output
  const float* sums;  // s, from forward
  const float* mean;
  const float* rstd;
  const float* gamma;
  float* grad_residual;  // null when the residual needs no gradient
  float* grad_product;   // the masked gradient of x · Wᵀ + b
  float* column_sums;    // per block: [3, cols]: LayerNorm's weight and bias gradients, the dense bias gradient
  int64_t cols;
  DropoutMask mask;
};

// ds = rstd · (dy·γ − mean(dy·γ) − x̂ · mean(dy·γ·x̂)) into grad_s; the row's terms of γ's and β's gradients.
__attribute__((always_inline)) inline void layer_norm_backward_row(
    const float* __restrict g, const float* __restrict s, const float* __restrict gamma, float* __restrict grad_s,
    float* __restrict grad_gamma, float* __restrict grad_beta, int64_t cols, float mean, float rstd, float mean_g,
    float mean_gx) {
  for (int64_t c = 0; c < cols; ++c) {
    const float xhat = (s[c] - mean) * rstd;
    grad_s[c] = rstd * (g[c] * gamma[c] - mean_g - xhat * mean_gx);
    grad_gamma[c] += g[c] * xhat;
    grad_beta[c] += g[c];
  }
}

__attribute__((always_inline)) inline void backward_rows(const BackwardArgs& a, int64_t first, int64_t last,
                                                         float* __restrict column_sums) {
  const int64_t cols = a.cols;
  float* __restrict grad_gamma = column_sums;
  float* __restrict grad_beta = column_sums + cols;
  float* __restrict grad_bias = column_sums + 2 * cols;
  std::fill(column_sums, column_sums + 3 * cols, 0.0f);
  const float inverse_cols = 1.0f / static_cast<float>(cols);
  for (int64_t row = first; row < last; ++row) {
    const float* __restrict g = a.grad + row * cols;
    const float* __restrict s = a.sums + row * cols;
    float* __restrict grad_product = a.grad_product + row * cols;
    const float mean = a.mean[row], rstd = a.rstd[row];
    Lanes dot_g, dot_gx;  // Σ dy·γ and Σ dy·γ·x̂
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8)
      for (int lane = 0; lane < 8; ++lane) {
        const float dxhat = g[c + lane] * a.gamma[c + lane];
        dot_g.value[lane] += dxhat;
        dot_gx.value[lane] += dxhat * ((s[c + lane] - mean) * rstd);
      }
    for (; c < cols; ++c) {
      const float dxhat = g[c] * a.gamma[c];
      dot_g.value[0] += dxhat;
      dot_gx.value[0] += dxhat * ((s[c] - mean) * rstd);
    }
    const float mean_g = dot_g.total() * inverse_cols, mean_gx = dot_gx.total() * inverse_cols;
    layer_norm_backward_row(g, s, a.gamma, grad_product, grad_gamma, grad_beta, cols, mean, rstd, mean_g, mean_gx);
    if (a.grad_residual) std::copy(grad_product, grad_product + cols, a.grad_residual + row * cols);
    // Dropout multiplied by 0 or the scale, and so does its gradient.
    if (a.mask.threshold != 0)
      apply_dropout_mask(grad_product, grad_product, static_cast<uint64_t>(row * cols), cols, a.mask);
    for (c = 0; c < cols; ++c) grad_bias[c] += grad_product[c];
  }
}

// Each pass twice: for the machine the build targets, and with AVX2 and FMA where the CPU has them (chosen at run
// time).
void forward_generic(const ForwardArgs& a, int64_t first, int64_t last) { forward_rows(a, first, last); }
void backward_generic(const BackwardArgs& a, int64_t first, int64_t last, float* column_sums) {
  backward_rows(a, first, last, column_sums);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void forward_avx2(const ForwardArgs& a, int64_t first, int64_t last) {
  forward_rows(a, first, last);
}
__attribute__((target("avx2,fma"))) void backward_avx2(const BackwardArgs& a, int64_t first, int64_t last,
                                                        float* column_sums) {
  backward_rows(a, first, last, column_sums);
}
#endif

void forward_pass(const ForwardArgs& a, int64_t first, int64_t last) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return forward_avx2(a, first, last);
#endif
  forward_generic(a, first, last);
}

void backward_pass(const BackwardArgs& a, int64_t first, int64_t last, float* column_sums) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return backward_avx2(a, first, last, column_sums);
#endif
  backward_generic(a, first, last, column_sums);
}

std::vector<int64_t> with_last(const torch::Tensor& like, int64_t last) {
  std::vector<int64_t> shape = like.sizes().vec();
  shape.back() = last;
  return shape;
}

struct ResidualNormFunction : torch::autograd::Function<ResidualNormFunction> {
  // Inputs: x, weight, bias, residual, LayerNorm's weight and bias.
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& residual,
                               const torch::Tensor& norm_weight, const torch::Tensor& norm_bias, double eps, double p,
                               bool training) {
    const torch::Tensor rows_in = x.reshape({-1, x.size(-1)}).contiguous();
    torch::Tensor sums = torch::mm(rows_in, weight.t());
    const int64_t rows = sums.size(0), cols = sums.size(1);
    const torch::Tensor residual_rows = residual.reshape({rows, cols}).contiguous();
    const torch::Tensor bias_c = bias.contiguous(), gamma = norm_weight.contiguous(), beta = norm_bias.contiguous();
    torch::Tensor out = torch::empty_like(sums);
    torch::Tensor mean = torch::empty({rows}, sums.options());
    torch::Tensor rstd = torch::empty({rows}, sums.options());
    // As ts::dropout: no seed is drawn when nothing is dropped.
    const DropoutMask mask = training && p > 0 ? DropoutMask::draw(p) : DropoutMask::none();
    const ForwardArgs args{sums.data_ptr<float>(), residual_rows.data_ptr<float>(), bias_c.data_ptr<float>(),
                           gamma.data_ptr<float>(), beta.data_ptr<float>(), out.data_ptr<float>(),
                           mean.data_ptr<float>(), rstd.data_ptr<float>(), cols, static_cast<float>(eps), mask};
    for_each_row_block(rows, [&](int64_t, int64_t first, int64_t last) { forward_pass(args, first, last); });
    context->save_for_backward({rows_in, weight, sums, mean, rstd, gamma});
    mask.save_to(*context);
    context->saved_data["x_shape"] = x.sizes().vec();
    context->saved_data["residual_shape"] = residual.sizes().vec();
    return out.view(with_last(x, cols));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = context->get_saved_variables();
    const torch::Tensor &rows_in = saved[0], &weight = saved[1], &sums = saved[2], &mean = saved[3],
                        &rstd = saved[4], &gamma = saved[5];
    const int64_t rows = sums.size(0), cols = sums.size(1);
    const torch::Tensor grad = grad_outputs[0].reshape({rows, cols}).contiguous();
    const DropoutMask mask = DropoutMask::saved_in(*context);
    torch::Tensor grad_product = torch::empty_like(sums);
    torch::Tensor grad_residual;
    if (context->needs_input_grad(3)) grad_residual = torch::empty_like(sums);
    torch::Tensor column_sums = torch::empty({row_blocks(rows), 3, cols}, sums.options());
    const BackwardArgs args{grad.data_ptr<float>(), sums.data_ptr<float>(), mean.data_ptr<float>(),
                            rstd.data_ptr<float>(), gamma.data_ptr<float>(),
                            grad_residual.defined() ? grad_residual.data_ptr<float>() : nullptr,
                            grad_product.data_ptr<float>(), column_sums.data_ptr<float>(), cols, mask};
    float* block_sums = column_sums.data_ptr<float>();
    for_each_row_block(rows, [&](int64_t block, int64_t first, int64_t last) {
      backward_pass(args, first, last, block_sums + block * 3 * cols);
    });
    const torch::Tensor totals = sum_over_blocks(column_sums);
    torch::Tensor grad_x, grad_weight, grad_bias, grad_gamma, grad_beta;
    if (context->needs_input_grad(0))
      grad_x = torch::mm(grad_product, weight).view(context->saved_data["x_shape"].toIntVector());
    if (context->needs_input_grad(1)) grad_weight = torch::mm(grad_product.t(), rows_in);
    if (context->needs_input_grad(2)) grad_bias = totals[2];
    if (grad_residual.defined())
      grad_residual = grad_residual.view(context->saved_data["residual_shape"].toIntVector());
    if (context->needs_input_grad(4)) grad_gamma = totals[0];
    if (context->needs_input_grad(5)) grad_beta = totals[1];
    return {grad_x, grad_weight, grad_bias, grad_residual, grad_gamma, grad_beta,
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool residual_norm_fuses(const torch::Tensor& x, const torch::Tensor& residual, const ResidualNormWeights& w) {
  if (!fused_kernels_enabled()) return false;
  if (!fusable_tensor(x) || !fusable_tensor(residual) || !fusable_tensor(w.weight) || !fusable_tensor(w.bias) ||
      !fusable_tensor(w.norm_weight) || !fusable_tensor(w.norm_bias))
    return false;
  if (w.weight.dim() != 2 || x.dim() < 1 || x.size(-1) != w.weight.size(1) || x.numel() == 0) return false;
  const int64_t hidden = w.weight.size(0);
  const auto is_vector = [&](const torch::Tensor& t) { return t.dim() == 1 && t.size(0) == hidden; };
  if (!is_vector(w.bias) || !is_vector(w.norm_weight) || !is_vector(w.norm_bias)) return false;
  return residual.sizes() == c10::IntArrayRef(with_last(x, hidden));
}

torch::Tensor dense_dropout_residual_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                          const ResidualNormWeights& w, double p, bool training) {
  if (!(p >= 0 && p <= 1)) fail("dropout probability {} is not in [0, 1]", p);
  if (residual_norm_fuses(x, residual, w) && p < 1)
    return ResidualNormFunction::apply(x, w.weight, w.bias, residual, w.norm_weight, w.norm_bias, w.eps, p,
                                       training);
  const torch::Tensor dense = torch::nn::functional::linear(x, w.weight, w.bias);
  return torch::layer_norm(ts::dropout(dense, p, training) + residual, {w.weight.size(0)}, w.norm_weight,
                           w.norm_bias, w.eps);
}

}  // namespace ts
