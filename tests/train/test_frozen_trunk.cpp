// Stage 1 on cached trunk activations computes what the full model computes, and frozen layers get no gradients.
#include <catch2/catch.hpp>

#include "train/frozen_trunk.h"
#include "train/optim.h"

using namespace ts;

namespace {

BertConfig tiny_config() {
  BertConfig config;
  config.vocab_size = 50;
  config.hidden_size = 16;
  config.num_hidden_layers = 3;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  config.set_num_labels(3);
  return config;
}

data::TokenRows rows_of_different_lengths() {
  data::TokenRows rows;
  rows.input_ids = {{2, 7, 9, 3}, {2, 11, 3}, {2, 5, 6, 8, 10, 12, 3}, {2, 4, 3}, {2, 13, 14, 15, 3}};
  rows.labels = {0, 1, 2, 1, 0};
  return rows;
}

}  // namespace

TEST_CASE("the top run on cached trunk states gives the full model's logits, rows padded or not") {
  torch::manual_seed(3);
  BertForSequenceClassification model(tiny_config());
  model->eval();
  const auto rows = rows_of_different_lengths();
  train::FrozenTrunkCache cache(model, rows, 2, /*batch_size=*/2);
  CHECK(cache.size() == rows.size());
  CHECK(cache.bytes() == (4 + 3 + 7 + 3 + 5) * 16 * 4);

  const std::vector<int64_t> indices = {2, 0, 4};
  const auto batch = data::collate(rows, indices, {});
  const auto hidden = cache.collate(indices);
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits;
  const auto cached = model->forward_from(2, hidden.hidden_states, hidden.attention_mask).logits;
  CHECK(torch::allclose(cached, expected, 1e-5, 1e-5));
  CHECK(hidden.attention_mask.equal(batch.attention_mask));
}

TEST_CASE("caching the trunk leaves the model's training mode as it was and rejects layers outside the model") {
  BertForSequenceClassification model(tiny_config());
  model->train();
  const auto rows = rows_of_different_lengths();
  train::FrozenTrunkCache cache(model, rows, 3);
  CHECK(model->is_training());
  CHECK_THROWS_WITH(train::FrozenTrunkCache(model, rows, 0), Catch::Contains("1..3"));
  CHECK_THROWS_WITH(train::FrozenTrunkCache(model, rows, 4), Catch::Contains("1..3"));
}

TEST_CASE("stage 1 never backpropagates into frozen layers") {
  BertForSequenceClassification model(tiny_config());
  train::set_trainable(*model, train::top_layer_patterns(3, 1));
  const auto rows = rows_of_different_lengths();
  const auto batch = data::collate(rows, {0, 1, 2, 3, 4}, {});
  const auto logits = model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits;
  torch::nn::functional::cross_entropy(logits, batch.labels).backward();
  int64_t with_gradient = 0;
  for (const auto& item : model->named_parameters()) {
    const bool trainable = train::name_matches(item.key(), "bert.encoder.layer.2") ||
                           train::name_matches(item.key(), "bert.pooler") ||
                           train::name_matches(item.key(), "classifier");
    INFO(item.key());
    CHECK(item.value().grad().defined() == trainable);
    with_gradient += item.value().grad().defined();
  }
  CHECK(with_gradient == 16 + 2 + 2);  // a layer's 16 tensors, the pooler's and the classifier's weight and bias
}
