// BERT modules and config without golden files: activations, masks, running from a layer, initialisation.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/bert.h"
#include "model/bert_config.h"
#include "model/checkpoint.h"

namespace {

ts::BertConfig tiny_config() {
  ts::BertConfig config;
  config.vocab_size = 64;
  config.hidden_size = 16;
  config.num_hidden_layers = 3;
  config.num_attention_heads = 4;
  config.intermediate_size = 32;
  config.max_position_embeddings = 20;
  config.set_num_labels(3);
  return config;
}

}  // namespace

TEST_CASE("config: reads HF fields, keeps unknown ones, writes labels both ways", "[model][config]") {
  const auto json = nlohmann::json::parse(R"({
    "model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.2,
    "attention_probs_dropout_prob": 0.05, "max_position_embeddings": 64, "type_vocab_size": 1,
    "layer_norm_eps": 1e-7, "pad_token_id": 1, "classifier_dropout": 0.3, "num_labels": 7,
    "id2label": {"1": "positive", "0": "negative"}, "label2id": {"negative": 0, "positive": 1},
    "my_own_field": {"kept": [1, 2]}, "gradient_checkpointing": false
  })");
  const auto config = ts::BertConfig::from_json(json);
  CHECK(config.vocab_size == 100);
  CHECK(config.hidden_act == "gelu_new");
  CHECK(config.hidden_dropout_prob == 0.2);
  CHECK(config.attention_probs_dropout_prob == 0.05);
  CHECK(config.type_vocab_size == 1);
  CHECK(config.layer_norm_eps == 1e-7);
  CHECK(config.pad_token_id == 1);
  CHECK(config.effective_classifier_dropout() == 0.3);
  CHECK(config.id2label == std::vector<std::string>{"negative", "positive"});  // id2label wins over num_labels

  const auto written = config.to_json({"BertForSequenceClassification"});
  CHECK(written["my_own_field"] == json["my_own_field"]);
  CHECK(written["gradient_checkpointing"] == false);
  CHECK(written["label2id"] == nlohmann::json{{"negative", 0}, {"positive", 1}});
  CHECK_FALSE(written.contains("num_labels"));
  CHECK(written["architectures"][0] == "BertForSequenceClassification");
  const auto again = ts::BertConfig::from_json(written);
  CHECK(again.to_json({"BertForSequenceClassification"}) == written);

  const auto defaults = ts::BertConfig::from_json(nlohmann::json::parse(R"({"num_labels": 4, "classifier_dropout": null})"));
  CHECK(defaults.id2label == std::vector<std::string>{"LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"});
  CHECK(defaults.effective_classifier_dropout() == 0.1);
  CHECK(defaults.hidden_size == 768);
}

TEST_CASE("config: errors name the source and the field", "[model][config]") {
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"hidden_size": "big"})"), "x/config.json"),
                    Catch::Contains("x/config.json") && Catch::Contains("hidden_size"));
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"hidden_act": "mish"})")),
                    Catch::Contains("hidden_act 'mish'"));
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 100, "num_attention_heads": 12})")),
                    Catch::Contains("not a multiple"));
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"id2label": {"0": "a", "2": "b"}})")),
                    Catch::Contains("id2label"));
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"model_type": "roberta"})")),
                    Catch::Contains("roberta"));
  CHECK_THROWS_WITH(ts::BertConfig::from_json(nlohmann::json::parse(R"({"position_embedding_type": "relative_key"})")),
                    Catch::Contains("relative_key"));
}

TEST_CASE("activations are HF's", "[model]") {
  const torch::Tensor x = torch::linspace(-6, 6, 241, torch::kDouble);
  const torch::Tensor exact = 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0)));
  CHECK(torch::allclose(ts::bert_activation("gelu", x), exact, 0, 1e-12));
  const torch::Tensor tanh_form = 0.5 * x * (1 + torch::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x.pow(3))));
  CHECK(torch::allclose(ts::bert_activation("gelu_new", x), tanh_form, 0, 1e-12));
  CHECK_FALSE(torch::allclose(ts::bert_activation("gelu", x), tanh_form, 0, 1e-5));
  CHECK(torch::equal(ts::bert_activation("relu", x), torch::relu(x)));
  CHECK(torch::allclose(ts::bert_activation("silu", x), x * torch::sigmoid(x)));
  CHECK_THROWS_WITH(ts::bert_activation("mish", x), Catch::Contains("mish"));
}

TEST_CASE("extended attention mask adds finfo.min where masked", "[model]") {
  const auto mask = ts::extended_attention_mask(torch::tensor({{1, 1, 0}}), torch::kFloat32);
  CHECK(mask.sizes() == torch::IntArrayRef({1, 1, 1, 3}));
  CHECK(mask[0][0][0][0].item<float>() == 0.0f);
  CHECK(mask[0][0][0][2].item<float>() == std::numeric_limits<float>::lowest());
}

TEST_CASE("running from layer k equals the full forward", "[model]") {
  torch::manual_seed(1);
  auto model = ts::BertForSequenceClassification(tiny_config());
  model->eval();
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(1, 64, {3, 7}, torch::kLong);
  auto mask = torch::ones({3, 7}, torch::kLong);
  mask[1].slice(0, 4).fill_(0);
  const auto types = torch::cat({torch::zeros({3, 3}, torch::kLong), torch::ones({3, 4}, torch::kLong)}, 1);
  const auto full = model->forward(ids, mask, types);
  for (int64_t layer = 0; layer <= 3; ++layer) {
    INFO("layer " << layer);
    const auto hidden = model->bert->hidden_states_before(layer, ids, mask, types);
    const auto top = model->forward_from(layer, hidden, mask);
    CHECK(torch::allclose(top.logits, full.logits, 0, 1e-6));
    CHECK(torch::allclose(top.last_hidden_state, full.last_hidden_state, 0, 1e-6));
  }
  CHECK_THROWS_WITH(model->forward_from(4, full.last_hidden_state, mask), Catch::Contains("layers [4, 3)"));
  // token_type_ids matter, and their default is zeros.
  CHECK_FALSE(torch::allclose(model->forward(ids, mask).logits, full.logits));
  CHECK(torch::equal(model->forward(ids, mask).logits, model->forward(ids, mask, torch::zeros_like(ids)).logits));
}

TEST_CASE("bad inputs are errors, not crashes", "[model]") {
  auto model = ts::BertForSequenceClassification(tiny_config());
  CHECK_THROWS_WITH(model->forward(torch::tensor({{1, 64}}, torch::kLong)), Catch::Contains("vocab_size"));
  CHECK_THROWS_WITH(model->forward(torch::ones({1, 21}, torch::kLong)), Catch::Contains("max_position_embeddings"));
  CHECK_THROWS_WITH(model->forward(torch::ones({1, 4}, torch::kLong), torch::ones({1, 3})), Catch::Contains("attention_mask"));
  CHECK_THROWS_WITH(model->forward(torch::ones({4}, torch::kLong)), Catch::Contains("[batch, seq]"));
}

TEST_CASE("new models are initialised as HF does", "[model]") {
  torch::manual_seed(3);
  ts::BertConfig config = tiny_config();
  config.hidden_size = 64;
  config.intermediate_size = 256;
  config.vocab_size = 400;
  auto model = ts::BertForSequenceClassification(config);
  const auto params = model->named_parameters();
  for (const auto& item : params) {
    INFO(item.key());
    const auto& value = item.value();
    if (item.key().find("LayerNorm.weight") != std::string::npos) {
      CHECK(torch::equal(value, torch::ones_like(value)));
    } else if (item.key().find("bias") != std::string::npos) {
      CHECK(torch::equal(value, torch::zeros_like(value)));
    } else if (value.numel() >= 4000) {
      CHECK(value.std().item<double>() == Approx(0.02).epsilon(0.1));
    }
  }
  // The padding row of the word embeddings is zero, and gets no gradient.
  const auto& words = model->bert->embeddings->word_embeddings->weight;
  CHECK(words[0].abs().max().item<double>() == 0.0);
  model->train();
  const auto out = model->forward(torch::tensor({{5, 0, 7}}, torch::kLong));
  out.logits.sum().backward();
  CHECK(words.grad()[0].abs().max().item<double>() == 0.0);
  CHECK(words.grad()[5].abs().max().item<double>() > 0.0);
}

TEST_CASE("dropout is active only in training mode", "[model]") {
  torch::manual_seed(5);
  auto model = ts::BertForSequenceClassification(tiny_config());
  const auto ids = torch::randint(1, 64, {2, 6}, torch::kLong);
  model->train();
  const auto a = model->forward(ids).logits;
  const auto b = model->forward(ids).logits;
  CHECK_FALSE(torch::equal(a, b));
  model->eval();
  CHECK(torch::equal(model->forward(ids).logits, model->forward(ids).logits));
}

// The authors built their head as plain nn.Linear modules: kaiming_uniform(a = √5) weights, which is U(−b, b) with
// b = 1/√fan_in, and biases U(−b, b) too; mean 0, standard deviation b/√3. The moments of a large head must match.
TEST_CASE("the paper head keeps torch.nn.Linear's initialisation and reads the pooler undropped", "[model]") {
  torch::manual_seed(11);
  ts::BertConfig config = tiny_config();
  config.hidden_size = 768;
  config.num_attention_heads = 12;
  config.intermediate_size = 64;
  config.head.type = "mlp";
  config.head.hidden_size = 400;
  config.set_num_labels(200);
  auto model = ts::BertForSequenceClassification(config);
  auto check_uniform = [](const torch::Tensor& values, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    CHECK(values.abs().max().item<double>() <= bound);
    CHECK(values.abs().max().item<double>() > 0.99 * bound);
    CHECK(std::abs(values.mean().item<double>()) < 0.02 * bound);
    CHECK(values.std().item<double>() == Approx(bound / std::sqrt(3.0)).epsilon(0.02));
  };
  const auto params = model->named_parameters();
  check_uniform(params["classifier.0.weight"], 768);   // 400 x 768
  check_uniform(params["classifier.2.weight"], 400);   // 200 x 400
  // Biases are few; their range still tells uniform(±b) from zeros.
  CHECK(params["classifier.0.bias"].abs().max().item<double>() <= 1 / std::sqrt(768.0));
  CHECK(params["classifier.0.bias"].abs().max().item<double>() > 0.9 / std::sqrt(768.0));
  CHECK(params["classifier.2.bias"].abs().max().item<double>() > 0.9 / std::sqrt(400.0));
  // BERT's own layers keep BERT's initialisation.
  CHECK(params["bert.pooler.dense.weight"].std().item<double>() == Approx(0.02).epsilon(0.05));

  // No dropout between the pooler and the head, in training too; the linear head keeps HF's dropout.
  model->train();
  const auto pooled = torch::randn({8, 768});
  CHECK(torch::equal(model->classify(pooled), model->classify(pooled)));
  ts::BertConfig linear_config = tiny_config();
  auto linear = ts::BertForSequenceClassification(linear_config);
  linear->train();
  const auto small = torch::randn({64, linear_config.hidden_size});
  CHECK_FALSE(torch::equal(linear->classify(small), linear->classify(small)));
}
