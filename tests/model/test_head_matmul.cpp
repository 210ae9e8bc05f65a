// Attention's per-head products against torch::matmul: values and both gradients, for Q Kᵀ and P V, on the head
// views attention makes, on contiguous and on transposed operands, small products (spread over threads) and large
// ones (threaded by BLAS), and the [batch, seq, heads, size] layout of the context.
#include <catch2/catch.hpp>

#include "model/head_matmul.h"

using namespace ts;

namespace {

// [batch, heads, seq, size] views of a [batch, seq, heads * size] tensor, as split_heads makes them.
torch::Tensor head_view(int64_t batch, int64_t seq, int64_t heads, int64_t size) {
  return torch::randn({batch, seq, heads * size}).view({batch, seq, heads, size}).permute({0, 2, 1, 3});
}

void check_against_matmul(const torch::Tensor& a_in, const torch::Tensor& b_in, bool transpose_b, bool heads_last) {
  const auto a = a_in.detach().clone().requires_grad_(true);
  const auto b = b_in.detach().clone().requires_grad_(true);
  const auto a_ref = a_in.detach().clone().requires_grad_(true);
  const auto b_ref = b_in.detach().clone().requires_grad_(true);
  // clone() keeps the operands' strides: the head views stay views of [batch, seq, heads * size].
  REQUIRE(a.strides() == a_in.strides());
  const auto out = head_matmul(a, b, transpose_b, heads_last);
  const auto expected = torch::matmul(a_ref, transpose_b ? b_ref.transpose(-1, -2) : b_ref);
  REQUIRE(out.sizes() == expected.sizes());
  CHECK(torch::allclose(out, expected, 1e-5, 1e-5));
  if (heads_last) CHECK(out.permute({0, 2, 1, 3}).is_contiguous());

  const auto upstream = torch::randn(expected.sizes());
  (out * upstream).sum().backward();
  (expected * upstream).sum().backward();
  CHECK(torch::allclose(a.grad(), a_ref.grad(), 1e-4, 1e-5));
  CHECK(torch::allclose(b.grad(), b_ref.grad(), 1e-4, 1e-5));
}

}  // namespace

TEST_CASE("head_matmul gives torch::matmul's products and gradients") {
  torch::manual_seed(7);
  // Whether this build calls BLAS itself: the comparisons hold either way, and in CI's build they test that path.
  INFO("BLAS path: " << head_matmul_uses_blas(torch::ones({1, 1, 1, 1}), torch::ones({1, 1, 1, 1})));
  for (const int64_t seq : {5, 96}) {  // 5: products spread over threads; 96 x 96 x 64: threaded by BLAS
    INFO("seq " << seq);
    const auto q = head_view(3, seq, 4, 64), k = head_view(3, seq, 4, 64), v = head_view(3, seq, 4, 64);
    check_against_matmul(q, k, /*transpose_b=*/true, false);                               // scores = Q Kᵀ
    const auto probs = torch::softmax(torch::randn({3, 4, seq, seq}), -1);
    check_against_matmul(probs, v, /*transpose_b=*/false, /*heads_last=*/true);            // context = P V
    check_against_matmul(probs, v, /*transpose_b=*/false, /*heads_last=*/false);
    check_against_matmul(q.transpose(-1, -2), probs, /*transpose_b=*/false, false);        // an operand with
    check_against_matmul(q, k.transpose(-1, -2).contiguous().transpose(-1, -2), true, false);  // other strides
  }
}

TEST_CASE("head_matmul falls back to torch::matmul for other dtypes, and refuses shapes that do not multiply") {
  const auto a = torch::randn({2, 3, 4, 5}, torch::kFloat64), b = torch::randn({2, 3, 6, 5}, torch::kFloat64);
  CHECK_FALSE(head_matmul_uses_blas(a, b));
  CHECK(torch::allclose(head_matmul(a, b, true), torch::matmul(a, b.transpose(-1, -2))));
  CHECK_THROWS_WITH(head_matmul(torch::randn({2, 3, 4, 5}), torch::randn({2, 3, 4, 6}), true),
                    Catch::Contains("do not multiply per head"));
  CHECK_THROWS_WITH(head_matmul(torch::randn({2, 3, 4, 5}), torch::randn({2, 2, 5, 6}), false),
                    Catch::Contains("do not multiply per head"));
}
