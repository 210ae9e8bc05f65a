// The host's BERT against Hugging Face transformers 4.39 outputs in ../shared/golden (see its README).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/bert.h"
#include "model/checkpoint.h"

namespace {

const std::string kClassifierDir = "../shared/golden/bert-classifier";
const std::string kMlmDir = "../shared/golden/bert-mlm";
constexpr double kTolerance = 1e-4;

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

torch::Tensor ids_tensor(const nlohmann::json& ids) {
  return torch::tensor(ids.get<std::vector<int64_t>>(), torch::kLong).unsqueeze(0);
}

torch::Tensor floats(const nlohmann::json& values) { return torch::tensor(values.get<std::vector<float>>()); }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a - b).abs().max().item<double>();
}

// [rows, longest] ids padded with 0 and the matching attention mask.
std::pair<torch::Tensor, torch::Tensor> padded_batch(const std::vector<nlohmann::json>& rows) {
  std::size_t longest = 0;
  for (const auto& row : rows) longest = std::max(longest, row["ids"].size());
  torch::Tensor ids = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(longest)}, torch::kLong);
  torch::Tensor mask = torch::zeros_like(ids);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto values = rows[r]["ids"].get<std::vector<int64_t>>();
    for (std::size_t c = 0; c < values.size(); ++c) {
      ids[r][c] = values[c];
      mask[r][c] = 1;
    }
  }
  return {ids, mask};
}

}  // namespace

TEST_CASE("golden classifier: logits, pooled output and [CLS] hidden state of each input alone",
          "[model][golden]") {
  auto model = ts::load_sequence_classifier(kClassifierDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto rows = read_jsonl(kClassifierDir + "/expected.jsonl");
  REQUIRE(rows.size() == 40);
  double worst_logits = 0, worst_pooled = 0, worst_cls = 0;
  for (const auto& row : rows) {
    INFO("input " << row["index"]);
    const auto out = model->forward(ids_tensor(row["ids"]));
    worst_logits = std::max(worst_logits, max_abs_diff(out.logits[0], floats(row["logits"])));
    worst_pooled = std::max(worst_pooled, max_abs_diff(out.pooled[0], floats(row["pooled"])));
    worst_cls = std::max(worst_cls, max_abs_diff(out.last_hidden_state[0][0], floats(row["cls_hidden"])));
  }
  INFO("largest differences: logits " << worst_logits << ", pooled " << worst_pooled << ", cls " << worst_cls);
  CHECK(worst_logits < kTolerance);
  CHECK(worst_pooled < kTolerance);
  CHECK(worst_cls < kTolerance);
}

TEST_CASE("golden classifier: a padded batch gives each row what it gets alone", "[model][golden]") {
  auto model = ts::load_sequence_classifier(kClassifierDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto rows = read_jsonl(kClassifierDir + "/expected.jsonl");
  // Rows of different lengths together, so that most rows carry padding.
  const auto [ids, mask] = padded_batch(rows);
  REQUIRE(mask.sum().item<int64_t>() < mask.numel());
  const auto batch = model->forward(ids, mask);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    INFO("input " << r);
    const auto alone = model->forward(ids_tensor(rows[r]["ids"]));
    CHECK(max_abs_diff(batch.logits[r], alone.logits[0]) < 1e-5);
    CHECK(max_abs_diff(batch.pooled[r], alone.pooled[0]) < 1e-5);
    CHECK(max_abs_diff(batch.logits[r], floats(rows[r]["logits"])) < kTolerance);
  }
}

TEST_CASE("golden masked LM: top-5 ids identical and logits within 1e-4", "[model][golden]") {
  ts::LoadReport report;
  auto model = ts::load_masked_lm(kMlmDir, {}, &report);
  // The decoder is tied to the word embeddings and absent from the file; nothing may be reported missing.
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
  model->eval();
  torch::NoGradGuard no_grad;
  const auto rows = read_jsonl(kMlmDir + "/expected.jsonl");
  REQUIRE(!rows.empty());
  for (const auto& row : rows) {
    INFO("input " << row["index"]);
    const auto out = model->forward(ids_tensor(row["ids"]));
    const auto at_mask = out.logits[0][row["masked_position"].get<int64_t>()];
    const auto top = at_mask.topk(5);
    const auto top_ids = std::get<1>(top);
    const auto expected_ids = row["top5_ids"].get<std::vector<int64_t>>();
    for (int i = 0; i < 5; ++i) CHECK(top_ids[i].item<int64_t>() == expected_ids[i]);
    CHECK(max_abs_diff(std::get<0>(top), floats(row["top5_logits"])) < kTolerance);
  }
}

TEST_CASE("parameter names are Hugging Face's state_dict keys", "[model]") {
  const auto file = ts::safetensors::File::open(kClassifierDir + "/model.safetensors");
  auto classifier = ts::load_sequence_classifier(kClassifierDir);
  std::vector<std::string> names;
  for (const auto& item : classifier->named_parameters()) names.push_back(item.key());
  std::sort(names.begin(), names.end());
  CHECK(names == file.names());

  const auto mlm_file = ts::safetensors::File::open(kMlmDir + "/model.safetensors");
  auto mlm = ts::load_masked_lm(kMlmDir);
  std::vector<std::string> mlm_names;
  for (const auto& item : mlm->named_parameters()) mlm_names.push_back(item.key());
  std::sort(mlm_names.begin(), mlm_names.end());
  CHECK(mlm_names == mlm_file.names());
}

TEST_CASE("golden classifier: the comparison is sensitive to a wrong activation or a missing mask", "[model][golden]") {
  auto model = ts::load_sequence_classifier(kClassifierDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto rows = read_jsonl(kClassifierDir + "/expected.jsonl");
  const auto expected = floats(rows[0]["logits"]);
  for (auto& layer : model->bert->encoder->layers) layer->intermediate->activation = "gelu_new";
  CHECK(max_abs_diff(model->forward(ids_tensor(rows[0]["ids"])).logits[0], expected) > kTolerance);
  for (auto& layer : model->bert->encoder->layers) layer->intermediate->activation = "gelu";
  CHECK(max_abs_diff(model->forward(ids_tensor(rows[0]["ids"])).logits[0], expected) < kTolerance);

  const auto [ids, mask] = padded_batch(rows);
  const auto unmasked = model->forward(ids).logits;
  double worst = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) worst = std::max(worst, max_abs_diff(unmasked[r], floats(rows[r]["logits"])));
  CHECK(worst > kTolerance);
}
