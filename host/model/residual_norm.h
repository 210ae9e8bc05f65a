#pragma once
// LayerNorm(dropout(x · Wᵀ + b) + residual), the end of each half of a BERT layer (BertSelfOutput, BertOutput), as
// one autograd node on the CPU.
//
// Why: as separate operators, forward copies the bias into the product's output, then dropout, the residual add and
// LayerNorm each read and write a [tokens, hidden] tensor; backward runs LayerNorm's gradient, dropout's, and the
// bias gradient's column sums as passes of their own, each an operator call with its allocations (bert-base: 24 of
// these blocks a step). Here the product is a plain mm; one pass per row adds the bias, applies the dropout mask,
// adds the residual and normalises; backward's one pass per row computes LayerNorm's gradient, the residual's, the
// masked gradient of the product, and the column sums for the bias, weight and shift of LayerNorm.
//
// The dropout mask is ts::dropout's (model/dropout.h: the same seed from torch's generator, the same bits per
// element), so the fused and unfused paths drop the same elements. LayerNorm's variance is taken about the row's
// mean, in a second pass over the row while it is in cache; column sums are added over fixed blocks of rows in a
// fixed order: the same whatever the thread count.
//
// Used for float32 CPU tensors; otherwise the operators one by one, the same function.
#include <torch/torch.h>

#include "model/fused_kernels.h"

namespace ts {

struct ResidualNormWeights {
  torch::Tensor weight, bias;            // the dense layer: [hidden, in], [hidden]
  torch::Tensor norm_weight, norm_bias;  // LayerNorm over the last dimension: [hidden], [hidden]
  double eps = 1e-12;
};

// x is [..., in], residual [..., hidden]; dropout with probability p when training.
torch::Tensor dense_dropout_residual_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                          const ResidualNormWeights& weights, double p, bool training);

// Whether dense_dropout_residual_norm takes its fused path for these operands (tests, benchmarks).
bool residual_norm_fuses(const torch::Tensor& x, const torch::Tensor& residual, const ResidualNormWeights& weights);


}  // namespace ts
