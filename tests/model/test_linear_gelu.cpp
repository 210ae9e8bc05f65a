// ts::linear_gelu: gelu(x · Wᵀ + b) as one node, against addmm and torch::gelu.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "core/parallel.h"
#include "model/linear_gelu.h"

namespace {

struct Gradients {
  torch::Tensor out, x, weight, bias;
};

// Forward and backward of gelu(linear) with an upstream gradient, fused or through torch's operators.
Gradients run(bool fused, const torch::Tensor& x_in, const torch::Tensor& weight_in, const torch::Tensor& bias_in,
              const torch::Tensor& upstream, bool weight_trainable = true) {
  ts::set_fused_kernels(fused);
  const torch::Tensor x = x_in.clone().requires_grad_(true);
  const torch::Tensor weight = weight_in.clone().requires_grad_(weight_trainable);
  const torch::Tensor bias = bias_in.clone().requires_grad_(weight_trainable);
  const torch::Tensor out = ts::linear_gelu(x, weight, bias);
  (out * upstream).sum().backward();
  ts::set_fused_kernels(true);
  return {out.detach(), x.grad(), weight.grad(), bias.grad()};
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

}  // namespace

TEST_CASE("linear_gelu takes the fused path for float32 CPU tensors only", "[linear_gelu]") {
  const torch::Tensor x = torch::randn({2, 3, 8});
  const torch::Tensor weight = torch::randn({5, 8});
  const torch::Tensor bias = torch::randn({5});
  CHECK(ts::linear_gelu_fuses(x, weight, bias));
  CHECK_FALSE(ts::linear_gelu_fuses(x.to(torch::kDouble), weight, bias));
  CHECK_FALSE(ts::linear_gelu_fuses(x, weight, torch::Tensor()));
  CHECK_FALSE(ts::linear_gelu_fuses(x, weight.t(), bias));
  ts::set_fused_kernels(false);
  CHECK_FALSE(ts::linear_gelu_fuses(x, weight, bias));
  ts::set_fused_kernels(true);
  // The fallback computes the same function.
  const torch::Tensor expected = torch::gelu(torch::addmm(bias, x.view({6, 8}), weight.t())).view({2, 3, 5});
  CHECK(max_difference(ts::linear_gelu(x.to(torch::kDouble), weight.to(torch::kDouble), bias.to(torch::kDouble)),
                       expected.to(torch::kDouble)) < 1e-5);
}

TEST_CASE("linear_gelu's output and gradients are torch's", "[linear_gelu]") {
  torch::manual_seed(5);
  // 77 rows: not a whole number of the kernel's row blocks. Pre-activations span [-15, 15], past where erf and the
  // density saturate.
  const torch::Tensor x = torch::randn({7, 11, 48});
  const torch::Tensor weight = torch::randn({96, 48}) * 0.6;
  const torch::Tensor bias = torch::linspace(-8, 8, 96);
  const torch::Tensor upstream = torch::randn({7, 11, 96});
  const Gradients fused = run(true, x, weight, bias, upstream);
  const Gradients reference = run(false, x, weight, bias, upstream);
  REQUIRE(fused.out.sizes() == reference.out.sizes());
  CHECK(reference.out.abs().max().item<double>() > 10);
  // Relative to the magnitudes: erf's polynomial is accurate to 1.5e-7, the products' rounding is BLAS's.
  CHECK(max_difference(fused.out, reference.out) < 2e-5);
  CHECK(max_difference(fused.x, reference.x) < 1e-4);
  CHECK(max_difference(fused.weight, reference.weight) < 1e-4);
  CHECK(max_difference(fused.bias, reference.bias) < 2e-5);
  // The saturated ends: gelu(u) = u far right, 0 far left, with derivative 1 and 0.
  const torch::Tensor pre = torch::tensor({-30.0f, -12.0f, -3.0f, -0.5f, 0.0f, 0.5f, 3.0f, 12.0f, 30.0f});
  const torch::Tensor identity = torch::eye(9);
  const Gradients ends = run(true, identity, identity, pre, torch::ones({9, 9}));
  const Gradients ends_reference = run(false, identity, identity, pre, torch::ones({9, 9}));
  CHECK(max_difference(ends.out, ends_reference.out) < 1e-6);
  CHECK(max_difference(ends.bias, ends_reference.bias) < 1e-5);
}

TEST_CASE("linear_gelu leaves frozen weights without gradients", "[linear_gelu]") {
  const torch::Tensor x = torch::randn({3, 40, 16});
  const torch::Tensor weight = torch::randn({24, 16});
  const torch::Tensor bias = torch::randn({24});
  const torch::Tensor upstream = torch::randn({3, 40, 24});
  const Gradients frozen = run(true, x, weight, bias, upstream, /*weight_trainable=*/false);
  const Gradients reference = run(false, x, weight, bias, upstream, /*weight_trainable=*/false);
  CHECK_FALSE(frozen.weight.defined());
  CHECK_FALSE(frozen.bias.defined());
  CHECK(max_difference(frozen.x, reference.x) < 1e-4);
}

TEST_CASE("linear_gelu's gradients do not depend on the thread count", "[linear_gelu]") {
  torch::manual_seed(9);
  const torch::Tensor x = torch::randn({600, 32});
  const torch::Tensor weight = torch::randn({64, 32});
  const torch::Tensor bias = torch::randn({64});
  const torch::Tensor upstream = torch::randn({600, 64});
  Gradients one, three;
  {
    ts::ScopedWorkerThreads threads(1);
    one = run(true, x, weight, bias, upstream);
  }
  {
    ts::ScopedWorkerThreads threads(3);
    three = run(true, x, weight, bias, upstream);
  }
  CHECK(torch::equal(one.out, three.out));
  CHECK(torch::equal(one.bias, three.bias));
  CHECK(torch::equal(one.x, three.x));
}
