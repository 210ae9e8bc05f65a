// ts::ReusedEmbeddingGradient: torch::embedding's values and gradients, with the gradient's memory reused.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "model/embedding.h"

namespace {

torch::Tensor torch_gradient(const torch::Tensor& weight, const torch::Tensor& ids, const torch::Tensor& upstream,
                             int64_t padding_idx) {
  const torch::Tensor w = weight.detach().clone().requires_grad_(true);
  (torch::embedding(w, ids, padding_idx) * upstream).sum().backward();
  return w.grad();
}

}  // namespace

TEST_CASE("the embedding's values and gradients are torch::embedding's, bit for bit", "[embedding]") {
  torch::manual_seed(1);
  const torch::Tensor weight = torch::randn({50, 6}).requires_grad_(true);
  // Repeated ids (their gradients add up), and the padding id 0.
  const torch::Tensor ids = torch::tensor({{3, 0, 3, 49}, {7, 3, 0, 12}}, torch::kLong);
  const torch::Tensor upstream = torch::randn({2, 4, 6});
  ts::ReusedEmbeddingGradient embedding;
  const torch::Tensor out = embedding.lookup(ids, weight, 0);
  CHECK(torch::equal(out, torch::embedding(weight, ids, 0)));
  (out * upstream).sum().backward();
  CHECK(torch::equal(weight.grad(), torch_gradient(weight, ids, upstream, 0)));
  CHECK(weight.grad()[0].abs().sum().item<float>() == 0);  // padding gets no gradient
  CHECK(weight.grad()[3].abs().sum().item<float>() > 0);
  // Without a padding id, row 0 is trained like any other.
  weight.mutable_grad().reset();
  ts::ReusedEmbeddingGradient unpadded;
  (unpadded.lookup(ids, weight, -1) * upstream).sum().backward();
  CHECK(torch::equal(weight.grad(), torch_gradient(weight, ids, upstream, -1)));
  // Without gradients, a plain lookup.
  torch::NoGradGuard no_grad;
  CHECK(torch::equal(embedding.lookup(ids, weight, 0), out));
}

TEST_CASE("a cleared gradient's memory is reused, a live one is never overwritten", "[embedding]") {
  torch::manual_seed(2);
  const torch::Tensor weight = torch::randn({40, 8}).requires_grad_(true);
  ts::ReusedEmbeddingGradient embedding;
  const torch::Tensor first_ids = torch::tensor({{1, 2, 3}}, torch::kLong);
  const torch::Tensor second_ids = torch::tensor({{3, 4, 5}}, torch::kLong);
  const torch::Tensor upstream = torch::randn({1, 3, 8});
  (embedding.lookup(first_ids, weight, -1) * upstream).sum().backward();
  const torch::Tensor first = weight.grad().clone();
  const void* memory = weight.grad().data_ptr();

  // Cleared (set to none, as the optimisers do): the next gradient lands in the same memory, with nothing left of
  // the first.
  weight.mutable_grad().reset();
  (embedding.lookup(second_ids, weight, -1) * upstream).sum().backward();
  CHECK(weight.grad().data_ptr() == memory);
  CHECK(torch::equal(weight.grad(), torch_gradient(weight, second_ids, upstream, -1)));

  // Kept (accumulation): the third gradient is added to it, and the kept tensor is not clobbered mid-way.
  const torch::Tensor kept = weight.grad();
  const torch::Tensor second = kept.clone();
  (embedding.lookup(first_ids, weight, -1) * upstream).sum().backward();
  CHECK(torch::allclose(weight.grad(), second + first));
  CHECK(weight.grad().data_ptr() == memory);  // accumulated in place, as autograd does
}
