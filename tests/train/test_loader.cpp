// The batch pipeline (data/loader.h): token rows from encodings, a seeded plan per epoch, batches of token ids or of
// cached trunk states that the model's forward takes alike, and options read strictly.
#include <algorithm>

#include <catch2/catch.hpp>

#include "data/loader.h"
#include "train/frozen_trunk.h"

using namespace ts;

namespace {

const text::Tokenizer& tokenizer() {
  static const auto instance = text::Tokenizer::from_path("../shared/data/vocab/bert-base-uncased");
  return instance;
}

data::Dataset small_dataset() {
  data::Dataset data;
  data.texts = {"a fine film", "dull", "the plot goes nowhere at all", "warm and funny", "too long by an hour",
                "bad", "a quiet triumph of a movie", "meh", "sharp writing", "it never lifts off"};
  data.labels = {1, 0, 0, 1, 0, 0, 1, 0, 1, 0};
  data.class_names = {"negative", "positive"};
  data.row_numbers.resize(data.texts.size());
  return data;
}

BertConfig tiny_config() {
  BertConfig config;
  config.vocab_size = static_cast<int64_t>(tokenizer().vocab_size());
  config.hidden_size = 16;
  config.num_hidden_layers = 3;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  config.set_num_labels(2);
  return config;
}

}  // namespace

TEST_CASE("token_rows copies ids, and type ids only when asked") {
  const auto encodings = tokenizer().encode_batch(std::vector<std::string>{"a b", "c"}, nullptr, 16, 1);
  const auto with_types = data::token_rows(encodings, true);
  REQUIRE(with_types.size() == 2);
  CHECK(with_types.input_ids[0] == std::vector<int64_t>(encodings[0].ids.begin(), encodings[0].ids.end()));
  CHECK(with_types.token_type_ids.size() == 2);
  CHECK(data::token_rows(encodings, false).token_type_ids.empty());
}

TEST_CASE("a loader's plan covers every row once an epoch, depends only on seed and epoch, and its batches collate "
          "the rows' tokens and labels") {
  const auto data = small_dataset();
  data::LoaderOptions options;
  options.batch_size = 4;
  options.seed = 5;
  const data::Loader loader(data, tokenizer(), options);
  CHECK(loader.size() == 10);
  const auto first = loader.plan(1);
  CHECK(first.size() == 3);
  CHECK(first == data::Loader(data, tokenizer(), options).plan(1));
  CHECK(first != loader.plan(2));
  std::vector<int64_t> seen;
  for (const auto& batch : first) seen.insert(seen.end(), batch.begin(), batch.end());
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

  const auto batch = loader.batch(first[0]);
  CHECK_FALSE(batch.cached());
  CHECK(batch.indices == first[0]);
  for (int64_t b = 0; b < batch.size(); ++b) {
    const auto row = first[0][b];
    CHECK(batch.labels[b].item<int64_t>() == data.labels[row]);
    const auto ids = tokenizer().encode(data.texts[row], {}, 128).ids;
    CHECK(batch.input_ids[b].narrow(0, 0, static_cast<int64_t>(ids.size())).equal(
        torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()))));
    CHECK(batch.attention_mask[b].sum().item<int64_t>() == static_cast<int64_t>(ids.size()));
  }
}

TEST_CASE("batches(epoch) gives the plan's batches in order, each collated as batch(rows) collates it") {
  const auto data = small_dataset();
  data::LoaderOptions options;
  options.batch_size = 3;
  options.seed = 9;
  const data::Loader loader(data, tokenizer(), options);
  const auto plan = loader.plan(2);
  const auto epoch = loader.batches(2);
  REQUIRE(epoch.size() == plan.size());
  CHECK(epoch.plan() == plan);
  size_t position = 0;
  for (const data::Batch& batch : epoch) {
    REQUIRE(position < plan.size());
    CHECK(batch.indices == plan[position]);
    CHECK(batch.input_ids.equal(loader.batch(plan[position]).input_ids));
    ++position;
  }
  CHECK(position == plan.size());
  CHECK(loader.batches(3).plan() != plan);
}

TEST_CASE("the named seed streams are the ones recorded runs used: order and buckets of an epoch from derive_seed") {
  const data::LoaderSeeds seeds{7042};
  CHECK(seeds.order(3) == data::derive_seed(7042, 3));
  CHECK(seeds.buckets(3) == data::derive_seed(7042, 3));
  CHECK(seeds.order(3) != seeds.order(4));
}

TEST_CASE("after cache_trunk a loader's batches carry hidden states, and forward gives the token ids' logits") {
  torch::manual_seed(11);
  BertForSequenceClassification model(tiny_config());
  model->eval();
  const auto data = small_dataset();
  data::LoaderOptions options;
  options.batch_size = 5;
  options.sampler = data::SamplerKind::Sequential;
  data::Loader loader(data, tokenizer(), options);
  const auto rows = loader.plan(1)[1];
  const auto by_ids = loader.batch(rows);
  CHECK(loader.cache_trunk(model, 2, 3) > 0);
  const auto by_states = loader.batch(rows);
  REQUIRE(by_states.cached());
  CHECK(by_states.start_layer == 2);
  CHECK_FALSE(by_states.input_ids.defined());
  CHECK(by_states.labels.equal(by_ids.labels));
  CHECK(by_states.attention_mask.equal(by_ids.attention_mask));
  torch::NoGradGuard no_grad;
  CHECK(torch::allclose(data::forward(model, by_states).logits, data::forward(model, by_ids).logits, 1e-5, 1e-5));
  loader.drop_trunk();
  CHECK_FALSE(loader.batch(rows).cached());
}

TEST_CASE("loader options are read strictly: a misspelt key names itself and the known ones, types are checked") {
  using nlohmann::json;
  const auto options = data::LoaderOptions::from_json(
      json{{"batch_size", 8}, {"sampler", "balanced"}, {"padding", "fixed"}, {"bucket", true}}, "ts.loader");
  CHECK(options.batch_size == 8);
  CHECK(options.sampler == data::SamplerKind::ClassBalanced);
  CHECK(options.padding == data::Padding::Fixed);
  CHECK(options.bucket);
  CHECK(data::LoaderOptions::from_json(nullptr, "ts.loader").batch_size == 16);
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"batchsize", 32}}, "ts.loader"),
                    Catch::Contains("ts.loader: unknown option 'batchsize'") && Catch::Contains("batch_size"));
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"batch_size", 2.5}}, "ts.loader"),
                    Catch::Contains("'batch_size' expects an integer"));
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"bucket", "yes"}}, "ts.loader"),
                    Catch::Contains("'bucket' expects a boolean"));
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"padding", "max"}}, "ts.loader"),
                    Catch::Contains("padding 'max'"));
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"batch_size", 0}}, "ts.loader"),
                    Catch::Contains("at least 1"));
  CHECK(data::LoaderOptions::from_json(json{{"seed", 7042}}, "ts.loader").seed == 7042u);
  CHECK_THROWS_WITH(data::LoaderOptions::from_json(json{{"seed", -1}}, "ts.loader"),
                    "ts.loader: seed must be a whole number of 0 or more, got -1");
}
