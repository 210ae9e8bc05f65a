// ts::dense_dropout_residual_norm: LayerNorm(dropout(x · Wᵀ + b) + residual) as one node, against the operators.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/parallel.h"
#include "model/residual_norm.h"

namespace {

struct Inputs {
  torch::Tensor x, residual, weight, bias, gamma, beta, upstream;
};

Inputs make_inputs(int64_t batch, int64_t seq, int64_t in, int64_t hidden) {
  Inputs inputs;
  inputs.x = torch::randn({batch, seq, in});
  inputs.residual = torch::randn({batch, seq, hidden}) * 2 + 0.5;
  inputs.weight = torch::randn({hidden, in}) * 0.3;
  inputs.bias = torch::randn({hidden});
  inputs.gamma = torch::rand({hidden}) + 0.5;
  inputs.beta = torch::randn({hidden}) * 0.1;
  inputs.upstream = torch::randn({batch, seq, hidden});
  return inputs;
}

struct Results {
  torch::Tensor out, x, residual, weight, bias, gamma, beta;
};

// Forward and backward with a seed for dropout's mask, fused or through the operators.
Results run(bool fused, const Inputs& in, double p, bool training, bool trainable = true) {
  ts::set_fused_kernels(fused);
  const auto leaf = [](const torch::Tensor& t, bool grad) { return t.clone().requires_grad_(grad); };
  const torch::Tensor x = leaf(in.x, true), residual = leaf(in.residual, trainable);
  ts::ResidualNormWeights weights{leaf(in.weight, trainable), leaf(in.bias, trainable), leaf(in.gamma, trainable),
                                  leaf(in.beta, trainable), 1e-12};
  torch::manual_seed(21);
  const torch::Tensor out = ts::dense_dropout_residual_norm(x, residual, weights, p, training);
  (out * in.upstream).sum().backward();
  ts::set_fused_kernels(true);
  return {out.detach(), x.grad(), residual.grad(), weights.weight.grad(), weights.bias.grad(),
          weights.norm_weight.grad(), weights.norm_bias.grad()};
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

void check_close(const Results& fused, const Results& reference) {
  CHECK(max_difference(fused.out, reference.out) < 2e-5);
  CHECK(max_difference(fused.x, reference.x) < 1e-4);
  CHECK(max_difference(fused.residual, reference.residual) < 2e-5);
  CHECK(max_difference(fused.weight, reference.weight) < 2e-4);
  CHECK(max_difference(fused.bias, reference.bias) < 5e-5);
  CHECK(max_difference(fused.gamma, reference.gamma) < 1e-4);
  CHECK(max_difference(fused.beta, reference.beta) < 5e-5);
}

}  // namespace

TEST_CASE("residual_norm takes the fused path for float32 CPU tensors of matching shapes", "[residual_norm]") {
  const Inputs in = make_inputs(2, 3, 8, 16);
  ts::ResidualNormWeights weights{in.weight, in.bias, in.gamma, in.beta};
  CHECK(ts::residual_norm_fuses(in.x, in.residual, weights));
  CHECK_FALSE(ts::residual_norm_fuses(in.x, in.residual.to(torch::kDouble), weights));
  CHECK_FALSE(ts::residual_norm_fuses(in.x, in.residual.slice(2, 0, 8), weights));
  ts::ResidualNormWeights no_bias = weights;
  no_bias.bias = torch::Tensor();
  CHECK_FALSE(ts::residual_norm_fuses(in.x, in.residual, no_bias));
  ts::set_fused_kernels(false);
  CHECK_FALSE(ts::residual_norm_fuses(in.x, in.residual, weights));
  ts::set_fused_kernels(true);
  CHECK_THROWS_AS(ts::dense_dropout_residual_norm(in.x, in.residual, weights, 1.5, true), ts::Error);
  // p = 1 drops everything: LayerNorm of the residual alone, through the operators.
  const torch::Tensor all_dropped = ts::dense_dropout_residual_norm(in.x, in.residual, weights, 1.0, true);
  CHECK(max_difference(all_dropped, torch::layer_norm(in.residual, {16}, in.gamma, in.beta, 1e-12)) < 1e-5);
}

TEST_CASE("residual_norm in eval mode: output and gradients are the operators'", "[residual_norm]") {
  torch::manual_seed(3);
  // 5 · 13 = 65 rows (not whole blocks of the kernel), hidden 40 (not whole vectors).
  const Inputs in = make_inputs(5, 13, 24, 40);
  check_close(run(true, in, 0.1, /*training=*/false), run(false, in, 0.1, false));
  check_close(run(true, in, 0.0, /*training=*/true), run(false, in, 0.0, true));
}

TEST_CASE("residual_norm drops the elements ts::dropout drops", "[residual_norm]") {
  torch::manual_seed(4);
  const Inputs in = make_inputs(3, 50, 32, 64);
  const Results fused = run(true, in, 0.25, /*training=*/true);
  const Results reference = run(false, in, 0.25, true);
  check_close(fused, reference);
  // Dropout did act: the output differs from eval mode's.
  CHECK(max_difference(fused.out, run(true, in, 0.25, false).out) > 0.1);
  // Another seed, another mask: the fused path follows torch::manual_seed as ts::dropout does.
  ts::ResidualNormWeights weights{in.weight, in.bias, in.gamma, in.beta, 1e-12};
  torch::manual_seed(22);
  const torch::Tensor other = ts::dense_dropout_residual_norm(in.x, in.residual, weights, 0.25, true);
  CHECK(max_difference(other, fused.out) > 0.1);
}

TEST_CASE("residual_norm leaves frozen tensors without gradients", "[residual_norm]") {
  torch::manual_seed(5);
  const Inputs in = make_inputs(2, 40, 16, 32);
  const Results frozen = run(true, in, 0.1, true, /*trainable=*/false);
  const Results reference = run(false, in, 0.1, true, false);
  CHECK_FALSE(frozen.weight.defined());
  CHECK_FALSE(frozen.bias.defined());
  CHECK_FALSE(frozen.residual.defined());
  CHECK_FALSE(frozen.gamma.defined());
  CHECK(max_difference(frozen.x, reference.x) < 1e-4);
}

TEST_CASE("residual_norm's results do not depend on the thread count", "[residual_norm]") {
  torch::manual_seed(6);
  const Inputs in = make_inputs(4, 75, 16, 48);
  Results one, three;
  {
    ts::ScopedWorkerThreads threads(1);
    one = run(true, in, 0.1, true);
  }
  {
    ts::ScopedWorkerThreads threads(3);
    three = run(true, in, 0.1, true);
  }
  CHECK(torch::equal(one.out, three.out));
  CHECK(torch::equal(one.residual, three.residual));
  CHECK(torch::equal(one.gamma, three.gamma));
  CHECK(torch::equal(one.bias, three.bias));
}
