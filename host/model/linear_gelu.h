#pragma once
// gelu(x · Wᵀ + b), BERT's feed-forward up-projection, as one autograd node on the CPU.
//
// Why: as addmm followed by torch::gelu, the bias is copied into the output before the product, GELU reads and
// writes the product again, and backward makes three more passes over the [tokens, intermediate] activations
// (GELU's gradient, then the bias gradient's column sums). Debian's LibTorch's gelu_backward ran at about a third of
// its forward's speed. Here the product is a plain mm; one pass adds the bias, applies GELU and keeps GELU's slope in
// the product's buffer (one exp serves erf and the density), so that backward's one pass only multiplies by it and
// sums the bias gradient. The matrix products of backward are the ones addmm's would be.
//
// GELU is the exact (erf) form with the arithmetic of torch's vectorised CPU kernel (erf by Abramowitz and Stegun
// 7.1.26, |error| < 1.5e-7), which is also what transformers computes on the CPU. Bias gradients are summed over
// fixed blocks of rows in a fixed order: the same whatever the thread count.
//
// Used for float32 CPU tensors with a bias; otherwise torch::gelu(addmm), the same function.
#include <torch/torch.h>

#include "model/fused_kernels.h"

namespace ts {

// x is [..., in], weight [out, in], bias [out]; returns [..., out].
torch::Tensor linear_gelu(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// Whether linear_gelu takes its fused path for these operands (tests, benchmarks).
bool linear_gelu_fuses(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);


}  // namespace ts
