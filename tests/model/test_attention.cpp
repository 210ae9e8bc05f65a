// BertSelfAttention's fused path (packed projections, ts::packed_self_attention) against its operators: outputs and
// every gradient, with a padding mask, dropout, ragged sizes and a head size whose square root is not exact.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/parallel.h"
#include "model/attention.h"
#include "model/bert.h"

namespace {

ts::BertConfig small_config(int64_t hidden, int64_t heads, double dropout) {
  ts::BertConfig config;
  config.hidden_size = hidden;
  config.num_attention_heads = heads;
  config.attention_probs_dropout_prob = dropout;
  return config;
}

struct Results {
  torch::Tensor out, hidden, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias;
};

// Forward and backward through one BertSelfAttention, fused or through the operators, dropout seeded alike.
Results run(bool fused, ts::BertSelfAttention& attention, const torch::Tensor& hidden_in, const torch::Tensor& mask,
            const torch::Tensor& upstream) {
  ts::set_fused_kernels(fused);
  attention->zero_grad();
  const torch::Tensor hidden = hidden_in.clone().requires_grad_(true);
  torch::manual_seed(5);
  const torch::Tensor out = attention->forward(hidden, mask);
  (out * upstream).sum().backward();
  ts::set_fused_kernels(true);
  return {out.detach(),          hidden.grad(),
          attention->query->weight.grad().clone(), attention->query->bias.grad().clone(),
          attention->key->weight.grad().clone(),   attention->key->bias.grad().clone(),
          attention->value->weight.grad().clone(), attention->value->bias.grad().clone()};
}

void check_close(const Results& fused, const Results& reference, double tolerance) {
  const auto close = [&](const torch::Tensor& a, const torch::Tensor& b) {
    INFO("max difference " << (a - b).abs().max().item<double>());
    CHECK(torch::allclose(a, b, tolerance, tolerance));
  };
  close(fused.out, reference.out);
  close(fused.hidden, reference.hidden);
  close(fused.query_weight, reference.query_weight);
  close(fused.query_bias, reference.query_bias);
  close(fused.key_weight, reference.key_weight);
  close(fused.key_bias, reference.key_bias);
  close(fused.value_weight, reference.value_weight);
  close(fused.value_bias, reference.value_bias);
}

void check_equal(const Results& a, const Results& b) {
  CHECK(torch::equal(a.out, b.out));
  CHECK(torch::equal(a.hidden, b.hidden));
  CHECK(torch::equal(a.query_weight, b.query_weight));
  CHECK(torch::equal(a.key_bias, b.key_bias));
  CHECK(torch::equal(a.value_weight, b.value_weight));
}

// The additive [batch, 1, 1, seq] mask of rows with `lengths` real tokens.
torch::Tensor padding_mask(const std::vector<int64_t>& lengths, int64_t seq) {
  torch::Tensor mask = torch::zeros({static_cast<int64_t>(lengths.size()), seq}, torch::kLong);
  for (std::size_t row = 0; row < lengths.size(); ++row)
    mask[static_cast<int64_t>(row)].narrow(0, 0, lengths[row]).fill_(1);
  return ts::extended_attention_mask(mask, torch::kFloat);
}

}  // namespace

TEST_CASE("fused self-attention gives the operators' output and gradients", "[attention]") {
  torch::manual_seed(3);
  // Head size 6: √6 is not exact, so the division's rounding is tested. Sequence 37: rows longer than one vector,
  // with a tail.
  for (const int64_t seq : {5, 37}) {
    for (const bool training : {false, true}) {
      INFO("seq " << seq << (training ? ", training with dropout" : ", eval"));
      ts::BertSelfAttention attention(small_config(24, 4, 0.25));
      attention->train(training);
      const torch::Tensor hidden = torch::randn({3, seq, 24}) * 2;
      const torch::Tensor mask = padding_mask({seq, seq - 2, 1}, seq);
      const torch::Tensor upstream = torch::randn({3, seq, 24});
      REQUIRE(ts::packed_self_attention_fuses(hidden, mask, 0.25));
      const Results fused = run(true, attention, hidden, mask, upstream);
      const Results reference = run(false, attention, hidden, mask, upstream);
      check_close(fused, reference, 1e-5);
      // Without a mask too.
      check_close(run(true, attention, hidden, torch::Tensor(), upstream),
                  run(false, attention, hidden, torch::Tensor(), upstream), 1e-5);
    }
  }
}

TEST_CASE("fused self-attention drops the probabilities ts::dropout drops", "[attention]") {
  // With dropout at 0.5 the output depends on every mask bit; the same seed must give the operators' output, and
  // another seed another output.
  torch::manual_seed(4);
  ts::BertSelfAttention attention(small_config(16, 2, 0.5));
  attention->train();
  const torch::Tensor hidden = torch::randn({2, 9, 16});
  const torch::Tensor upstream = torch::randn({2, 9, 16});
  const Results fused = run(true, attention, hidden, torch::Tensor(), upstream);
  check_close(fused, run(false, attention, hidden, torch::Tensor(), upstream), 1e-5);
  ts::set_fused_kernels(true);
  torch::manual_seed(6);
  const torch::Tensor other = attention->forward(hidden, torch::Tensor()).detach();
  CHECK((other - fused.out).abs().max().item<double>() > 1e-2);
}

TEST_CASE("fused self-attention gives a padded row what it gets alone", "[attention]") {
  torch::manual_seed(8);
  ts::BertSelfAttention attention(small_config(24, 4, 0.1));
  attention->eval();
  const torch::Tensor hidden = torch::randn({2, 11, 24});
  const torch::NoGradGuard no_grad;
  const torch::Tensor padded = attention->forward(hidden, padding_mask({11, 6}, 11));
  const torch::Tensor alone = attention->forward(hidden[1].narrow(0, 0, 6).unsqueeze(0), torch::Tensor());
  CHECK(torch::allclose(padded[1].narrow(0, 0, 6), alone[0], 1e-6, 1e-6));
}

TEST_CASE("fused self-attention's results do not depend on the thread count", "[attention]") {
  torch::manual_seed(9);
  ts::BertSelfAttention attention(small_config(32, 4, 0.1));
  attention->train();
  const torch::Tensor hidden = torch::randn({4, 33, 32});
  const torch::Tensor mask = padding_mask({33, 20, 7, 33}, 33);
  const torch::Tensor upstream = torch::randn({4, 33, 32});
  Results one, two;
  {
    ts::ScopedWorkerThreads threads(1);
    one = run(true, attention, hidden, mask, upstream);
  }
  {
    ts::ScopedWorkerThreads threads(2);
    two = run(true, attention, hidden, mask, upstream);
  }
  check_equal(one, two);
}

TEST_CASE("fused self-attention runs only where it can, and refuses packed tensors of the wrong shape",
          "[attention]") {
  const torch::Tensor hidden = torch::randn({2, 5, 8});
  CHECK(ts::packed_self_attention_fuses(hidden, torch::Tensor(), 0.1));
  CHECK_FALSE(ts::packed_self_attention_fuses(hidden.to(torch::kDouble), torch::Tensor(), 0.1));
  CHECK_FALSE(ts::packed_self_attention_fuses(hidden, torch::zeros({2, 1, 5, 5}), 0.1));  // a mask per query
  CHECK_FALSE(ts::packed_self_attention_fuses(hidden, torch::Tensor(), 1.0));
  ts::set_fused_kernels(false);
  CHECK_FALSE(ts::packed_self_attention_fuses(hidden, torch::Tensor(), 0.1));
  ts::set_fused_kernels(true);
  CHECK_THROWS_WITH(ts::packed_self_attention(torch::randn({2, 5, 10}), 2, torch::Tensor(), 0.1, true),
                    Catch::Contains("[batch, seq, 3 · hidden]"));
  CHECK_THROWS_WITH(ts::packed_self_attention(torch::randn({2, 5, 24}), 2, torch::Tensor(), 1.5, true),
                    Catch::Contains("not in [0, 1)"));
}

TEST_CASE("the packed projection gives three linears' outputs and gradients, packed in place or not", "[attention]") {
  torch::manual_seed(10);
  const torch::Tensor x_in = torch::randn({2, 7, 12});
  const torch::Tensor upstream = torch::randn({2, 7, 3 * 8});
  for (const bool in_place : {true, false}) {
    INFO((in_place ? "weights side by side" : "weights apart"));
    std::array<torch::Tensor, 3> weights, biases;
    for (auto& w : weights) w = torch::randn({8, 12}).requires_grad_(true);
    for (auto& b : biases) b = torch::randn({8}).requires_grad_(true);
    if (in_place) {
      ts::place_side_by_side({weights[0], weights[1], weights[2]});
      ts::place_side_by_side({biases[0], biases[1], biases[2]});
      CHECK(weights[1].data_ptr<float>() == weights[0].data_ptr<float>() + 8 * 12);
      CHECK(biases[2].data_ptr<float>() == biases[0].data_ptr<float>() + 2 * 8);
      CHECK(weights[0].is_leaf());
    }
    const torch::Tensor x = x_in.clone().requires_grad_(true);
    const torch::Tensor packed = ts::packed_projection(x, weights, biases);
    (packed * upstream).sum().backward();

    const torch::Tensor x_ref = x_in.clone().requires_grad_(true);
    std::vector<torch::Tensor> outs, leaves;
    for (int i = 0; i < 3; ++i) {
      leaves.push_back(weights[i].detach().clone().requires_grad_(true));
      leaves.push_back(biases[i].detach().clone().requires_grad_(true));
      outs.push_back(torch::nn::functional::linear(x_ref, leaves[2 * i], leaves[2 * i + 1]));
    }
    const torch::Tensor expected = torch::cat(outs, -1);
    (expected * upstream).sum().backward();
    CHECK(torch::allclose(packed, expected, 1e-5, 1e-5));
    CHECK(torch::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-5));
    for (int i = 0; i < 3; ++i) {
      CHECK(torch::allclose(weights[i].grad(), leaves[2 * i].grad(), 1e-5, 1e-5));
      CHECK(torch::allclose(biases[i].grad(), leaves[2 * i + 1].grad(), 1e-5, 1e-5));
    }
  }
}

TEST_CASE("the packed projection notices a weight changed in place before backward", "[attention]") {
  ts::BertSelfAttention attention(small_config(16, 2, 0.0));
  const torch::Tensor hidden = torch::randn({2, 5, 16});
  const torch::Tensor out = attention->forward(hidden, torch::Tensor());
  {
    const torch::NoGradGuard no_grad;
    attention->key->weight.mul_(2);
  }
  CHECK_THROWS_WITH(out.sum().backward(), Catch::Contains("modified by an inplace operation"));
}

TEST_CASE("BertSelfAttention keeps its projections side by side through a copy into them", "[attention]") {
  ts::BertSelfAttention attention(small_config(16, 2, 0.0));
  const float* query = attention->query->weight.data_ptr<float>();
  CHECK(attention->key->weight.data_ptr<float>() == query + 16 * 16);
  CHECK(attention->value->weight.data_ptr<float>() == query + 2 * 16 * 16);
  {
    const torch::NoGradGuard no_grad;
    attention->value->weight.copy_(torch::randn({16, 16}));  // as loading a checkpoint does
  }
  CHECK(attention->value->weight.data_ptr<float>() == query + 2 * 16 * 16);
}
