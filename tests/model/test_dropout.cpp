// ts::Dropout: torch.nn.Dropout's semantics with its own mask.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/parallel.h"
#include "model/dropout.h"

TEST_CASE("dropout is the identity in eval mode and at p = 0", "[dropout]") {
  const torch::Tensor x = torch::randn({4, 5});
  CHECK(ts::dropout(x, 0.3, /*training=*/false).is_same(x));
  CHECK(ts::dropout(x, 0.0, /*training=*/true).is_same(x));
  CHECK(torch::equal(ts::dropout(x, 1.0, true), torch::zeros_like(x)));
  CHECK_THROWS_AS(ts::dropout(x, 1.5, true), ts::Error);
  CHECK_THROWS_AS(ts::dropout(x, -0.1, true), ts::Error);
}

TEST_CASE("dropout zeroes a share p and scales the rest as torch does", "[dropout]") {
  const double p = 0.1;
  const int64_t n = 1 << 21;
  const torch::Tensor x = torch::rand({n}) + 0.5;  // never 0, so zeros are drops
  torch::manual_seed(3);
  const torch::Tensor y = ts::dropout(x, p, true);
  const torch::Tensor dropped = y == 0;
  const double share = dropped.to(torch::kDouble).mean().item<double>();
  const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
  CHECK(std::abs(share - p) < 5 * sigma);
  // Kept elements are x · (1 / (1 − p)) with torch's float scale, bit for bit.
  const torch::Tensor noise = torch::ones({n}).div_(1 - p);
  CHECK(torch::equal(y.masked_select(~dropped), (x * noise).masked_select(~dropped)));
  // Neighbouring elements are not correlated (each has its own hash of the seed and its index).
  const torch::Tensor even = dropped.slice(0, 0, n, 2).to(torch::kDouble);
  const torch::Tensor odd = dropped.slice(0, 1, n, 2).to(torch::kDouble);
  const double both = (even * odd).mean().item<double>();
  CHECK(std::abs(both - p * p) < 5 * std::sqrt(p * p * (1 - p * p) / (n / 2.0)));
}

TEST_CASE("dropout masks follow torch::manual_seed, not the thread count", "[dropout]") {
  const torch::Tensor x = torch::randn({3, 70001});
  torch::manual_seed(11);
  const torch::Tensor first = ts::dropout(x, 0.25, true);
  const torch::Tensor second = ts::dropout(x, 0.25, true);
  CHECK_FALSE(torch::equal(first, second));  // a new mask per call
  torch::manual_seed(11);
  CHECK(torch::equal(ts::dropout(x, 0.25, true), first));
  {
    ts::ScopedWorkerThreads one(1);
    torch::manual_seed(11);
    CHECK(torch::equal(ts::dropout(x, 0.25, true), first));
  }
  {
    ts::ScopedWorkerThreads three(3);
    torch::manual_seed(11);
    CHECK(torch::equal(ts::dropout(x, 0.25, true), first));
  }
}

TEST_CASE("dropout's gradient is the same mask and scale", "[dropout]") {
  const torch::Tensor x = torch::randn({64, 33}).transpose(0, 1).requires_grad_(true);  // not contiguous
  const torch::Tensor weights = torch::randn({33, 64});
  torch::manual_seed(5);
  const torch::Tensor y = ts::dropout(x, 0.4, true);
  (y * weights).sum().backward();
  const torch::Tensor kept = (y != 0).to(torch::kFloat);
  const float scale = 1.0f / static_cast<float>(1.0 - 0.4);
  CHECK(torch::allclose(x.grad(), weights * kept * scale, 0, 0));
  CHECK(torch::allclose(y, x.detach() * kept * scale, 0, 0));
}

TEST_CASE("dropout propagates NaN and infinity as torch does", "[dropout]") {
  torch::Tensor x = torch::full({1 << 12}, std::numeric_limits<float>::infinity());
  torch::manual_seed(1);
  const torch::Tensor y = ts::dropout(x, 0.5, true);
  // Kept: inf; dropped: inf · 0 = NaN, as torch's input * noise gives.
  CHECK(torch::isinf(y).any().item<bool>());
  CHECK(torch::isnan(y).any().item<bool>());
  CHECK((torch::isinf(y) | torch::isnan(y)).all().item<bool>());
}

TEST_CASE("the Dropout module follows train and eval mode", "[dropout]") {
  ts::Dropout module(0.5);
  const torch::Tensor x = torch::ones({1000});
  module->eval();
  CHECK(torch::equal(module(x), x));
  module->train();
  const torch::Tensor y = module(x);
  CHECK((y == 0).any().item<bool>());
  CHECK((y == 2).any().item<bool>());
  CHECK_THROWS_AS(ts::Dropout(2.0), ts::Error);
}
