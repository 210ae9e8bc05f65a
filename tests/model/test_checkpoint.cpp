// Loading and saving Hugging Face checkpoint folders.
#include <catch2/catch.hpp>

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "model/bert.h"
#include "model/checkpoint.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

const fs::path kClassifierDir = "../shared/golden/bert-classifier";
const fs::path kMlmDir = "../shared/golden/bert-mlm";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("twostage_test_model_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

ts::SaveOptions saving(const fs::path& tokenizer_from, bool fp16 = false, bool do_lower_case = true) {
  ts::SaveOptions options;
  options.tokenizer_from = tokenizer_from;
  options.fp16 = fp16;
  options.do_lower_case = do_lower_case;
  return options;
}

ts::LoadOptions labels(int64_t num_labels, bool ignore_mismatched_sizes = false, const char* head = nullptr) {
  ts::LoadOptions options;
  options.num_labels = num_labels;
  options.ignore_mismatched_sizes = ignore_mismatched_sizes;
  if (head) options.head = head;
  return options;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

torch::Tensor sample_ids() {
  return torch::tensor({{101, 7592, 2088, 2003, 1037, 3231, 102, 0, 0}, {101, 2023, 2003, 2307, 999, 2009, 2001, 2307, 102}},
                       torch::kLong);
}
torch::Tensor sample_mask() { return (sample_ids() != 0).to(torch::kLong); }

// Copies a checkpoint folder's files, with its tensors renamed/converted by `transform` (name, tensor) -> keep?
void rewrite_checkpoint(const fs::path& from, const fs::path& to,
                        const std::function<bool(std::string&, torch::Tensor&)>& transform) {
  fs::create_directories(to);
  fs::copy_file(from / "config.json", to / "config.json");
  fs::copy_file(from / "vocab.txt", to / "vocab.txt");
  const auto file = ts::safetensors::File::open(from / "model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> kept;
  for (const auto& view : file.tensors()) {
    std::string name = view.name;
    torch::Tensor tensor =
        torch::from_blob(const_cast<void*>(view.data), view.shape, torch::kFloat32).clone();
    if (transform(name, tensor)) kept.emplace_back(name, tensor.contiguous());
  }
  std::vector<ts::safetensors::TensorToWrite> out;
  for (const auto& [name, tensor] : kept) {
    const auto dtype = tensor.scalar_type() == torch::kFloat16    ? ts::safetensors::DType::F16
                       : tensor.scalar_type() == torch::kBFloat16 ? ts::safetensors::DType::BF16
                                                                  : ts::safetensors::DType::F32;
    out.push_back({name, dtype, tensor.sizes().vec(), tensor.data_ptr(), tensor.nbytes()});
  }
  ts::safetensors::write(to / "model.safetensors", out);
}

}  // namespace

TEST_CASE("checkpoint: load, save, load again gives identical outputs and a complete HF folder", "[model][checkpoint]") {
  TempDir dir("roundtrip");
  auto model = ts::load_sequence_classifier(kClassifierDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto before = model->forward(sample_ids(), sample_mask());

  const fs::path saved = dir.path / "saved";
  ts::save_pretrained(model, saved, saving(kClassifierDir));
  for (const char* name : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})
    CHECK(fs::exists(saved / name));
  CHECK(ts::read_file(saved / "vocab.txt") == ts::read_file(kClassifierDir / "vocab.txt"));

  const auto config = nlohmann::json::parse(ts::read_file(saved / "config.json"));
  CHECK(config["architectures"] == nlohmann::json::array({"BertForSequenceClassification"}));
  CHECK(config["model_type"] == "bert");
  CHECK(config["id2label"] == nlohmann::json{{"0", "LABEL_0"}, {"1", "LABEL_1"}, {"2", "LABEL_2"}});
  CHECK(config["label2id"] == nlohmann::json{{"LABEL_0", 0}, {"LABEL_1", 1}, {"LABEL_2", 2}});
  CHECK(config["torch_dtype"] == "float32");
  CHECK(config["use_cache"] == true);  // a field the host does not model survives
  const auto tokenizer_config = nlohmann::json::parse(ts::read_file(saved / "tokenizer_config.json"));
  CHECK(tokenizer_config["do_lower_case"] == true);

  const auto file = ts::safetensors::File::open(saved / "model.safetensors");
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.names() == ts::safetensors::File::open(kClassifierDir / "model.safetensors").names());
  CHECK(file.at("bert.embeddings.word_embeddings.weight").dtype == ts::safetensors::DType::F32);

  ts::LoadReport report;
  auto reloaded = ts::load_sequence_classifier(saved, {}, &report);
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
  reloaded->eval();
  const auto after = reloaded->forward(sample_ids(), sample_mask());
  CHECK(torch::equal(before.logits, after.logits));
  CHECK(torch::equal(before.pooled, after.pooled));
}

TEST_CASE("checkpoint: a masked LM saves without its tied decoder and reloads identically", "[model][checkpoint]") {
  TempDir dir("mlm");
  auto model = ts::load_masked_lm(kMlmDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto before = model->forward(sample_ids(), sample_mask()).logits;
  ts::save_pretrained(model, dir.path, saving(kMlmDir));
  const auto file = ts::safetensors::File::open(dir.path / "model.safetensors");
  CHECK_FALSE(file.contains("cls.predictions.decoder.weight"));
  CHECK(file.contains("cls.predictions.bias"));
  auto reloaded = ts::load_masked_lm(dir.path);
  reloaded->eval();
  CHECK(torch::equal(before, reloaded->forward(sample_ids(), sample_mask()).logits));
  // Tied: the decoder follows the word embeddings.
  reloaded->bert->embeddings->word_embeddings->weight.mul_(2.0);
  CHECK_FALSE(torch::equal(before, reloaded->forward(sample_ids(), sample_mask()).logits));
}

TEST_CASE("checkpoint: fp16 save, and F16/BF16 files load upcast to float32", "[model][checkpoint]") {
  TempDir dir("half");
  auto model = ts::load_sequence_classifier(kClassifierDir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto reference = model->forward(sample_ids(), sample_mask()).logits;

  ts::save_pretrained(model, dir.path / "fp16", saving(kClassifierDir, /*fp16=*/true));
  CHECK(ts::safetensors::File::open(dir.path / "fp16" / "model.safetensors")
            .at("classifier.weight")
            .dtype == ts::safetensors::DType::F16);
  CHECK(nlohmann::json::parse(ts::read_file(dir.path / "fp16" / "config.json"))["torch_dtype"] == "float16");

  rewrite_checkpoint(kClassifierDir, dir.path / "bf16", [](std::string&, torch::Tensor& t) {
    t = t.to(torch::kBFloat16);
    return true;
  });
  for (const char* variant : {"fp16", "bf16"}) {
    INFO(variant);
    ts::LoadReport report;
    auto loaded = ts::load_sequence_classifier(dir.path / variant, {}, &report);
    CHECK(report.missing.empty());
    CHECK(report.converted.size() == report.loaded.size());
    CHECK(loaded->bert->embeddings->word_embeddings->weight.scalar_type() == torch::kFloat32);
    const auto expected_weight = model->classifier_linear->weight.to(
        std::string(variant) == "fp16" ? torch::kFloat16 : torch::kBFloat16).to(torch::kFloat32);
    CHECK(torch::equal(loaded->classifier_linear->weight, expected_weight));
    loaded->eval();
    const double difference = (loaded->forward(sample_ids(), sample_mask()).logits - reference).abs().max().item<double>();
    CHECK(difference > 0);
    CHECK(difference < 0.1);
  }
}

TEST_CASE("checkpoint: keys without the bert. prefix load into the trunk, the head is newly initialised",
          "[model][checkpoint]") {
  TempDir dir("prefix");
  rewrite_checkpoint(kClassifierDir, dir.path, [](std::string& name, torch::Tensor&) {
    if (name.rfind("bert.", 0) != 0) return false;  // a bare BertModel checkpoint: no head
    name = name.substr(5);
    return true;
  });
  torch::manual_seed(0);
  ts::LoadReport report;
  auto model = ts::load_sequence_classifier(dir.path, {}, &report);
  CHECK(report.unexpected.empty());
  CHECK(report.missing == std::vector<std::string>{"classifier.bias", "classifier.weight"});
  CHECK(report.loaded.size() == 39);
  auto reference = ts::load_sequence_classifier(kClassifierDir);
  CHECK(torch::equal(model->bert->encoder->layers[1]->output->dense->weight,
                     reference->bert->encoder->layers[1]->output->dense->weight));

  // And a checkpoint with the prefix loads into a bare BertModel, its head reported unused.
  ts::LoadReport bare_report;
  auto bare = ts::load_bert_model(kClassifierDir, {}, &bare_report);
  CHECK(bare_report.missing.empty());
  CHECK(bare_report.unexpected == std::vector<std::string>{"classifier.bias", "classifier.weight"});
  bare->eval();
  reference->eval();
  torch::NoGradGuard no_grad;
  CHECK(torch::equal(bare->forward(sample_ids(), sample_mask()).pooled,
                     reference->forward(sample_ids(), sample_mask()).pooled));
}

TEST_CASE("checkpoint: an MLM checkpoint loads into a classifier as transformers reports it", "[model][checkpoint]") {
  ts::LoadReport report;
  auto model = ts::load_sequence_classifier(kMlmDir, labels(2), &report);
  CHECK(report.missing ==
        std::vector<std::string>{"bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"});
  CHECK(contains(report.unexpected, "cls.predictions.bias"));
  CHECK(contains(report.unexpected, "cls.predictions.transform.dense.weight"));
  CHECK(report.unexpected.size() == 5);
  // Newly initialised as HF does: N(0, 0.02) weights, zero bias.
  CHECK(model->classifier_linear->bias.abs().max().item<double>() == 0.0);
  const double spread = model->bert->pooler->dense->weight.std().item<double>();
  CHECK(spread == Approx(0.02).epsilon(0.1));

  // The other way: a classifier checkpoint into an MLM; the pooler is ignored silently, the head is unused.
  ts::LoadReport mlm_report;
  ts::load_masked_lm(kClassifierDir, {}, &mlm_report);
  CHECK(mlm_report.unexpected == std::vector<std::string>{"classifier.bias", "classifier.weight"});
  CHECK(mlm_report.missing.size() == 5);
  CHECK(contains(mlm_report.missing, "cls.predictions.bias"));
}

TEST_CASE("checkpoint: a shape mismatch names the key and both shapes", "[model][checkpoint]") {
  try {
    ts::load_sequence_classifier(kClassifierDir, labels(5));
    FAIL("loaded a 3-label checkpoint into a 5-label model");
  } catch (const ts::Error& error) {
    const std::string message = error.what();
    INFO(message);
    CHECK(message.find("classifier.weight") != std::string::npos);
    CHECK(message.find("[3, 128]") != std::string::npos);
    CHECK(message.find("[5, 128]") != std::string::npos);
  }
  ts::LoadReport report;
  auto model = ts::load_sequence_classifier(kClassifierDir, labels(5, /*ignore_mismatched_sizes=*/true), &report);
  CHECK(report.mismatched.size() == 2);
  CHECK(model->classifier_linear->weight.size(0) == 5);
}

TEST_CASE("checkpoint: a folder with only pytorch_model.bin says how to convert it", "[model][checkpoint]") {
  TempDir dir("bin");
  fs::copy_file(kClassifierDir / "config.json", dir.path / "config.json");
  ts::write_file_atomic(dir.path / "pytorch_model.bin", "not really a pickle");
  CHECK_THROWS_WITH(ts::load_sequence_classifier(dir.path),
                    Catch::Contains("pytorch_model.bin") && Catch::Contains("save_file") &&
                        Catch::Contains("safe_serialization=True"));
  fs::remove(dir.path / "pytorch_model.bin");
  CHECK_THROWS_WITH(ts::load_sequence_classifier(dir.path), Catch::Contains("has no model.safetensors"));
  CHECK_THROWS_WITH(ts::load_sequence_classifier(dir.path / "absent"), Catch::Contains("does not exist"));
}

TEST_CASE("checkpoint: the paper's MLP head saves and reloads under classifier.0 / classifier.2", "[model][checkpoint]") {
  TempDir dir("mlp");
  ts::LoadReport report;
  auto model = ts::load_sequence_classifier(kClassifierDir, labels(2, false, "mlp"), &report);
  CHECK(report.unexpected == std::vector<std::string>{"classifier.bias", "classifier.weight"});
  CHECK(report.missing ==
        std::vector<std::string>{"classifier.0.bias", "classifier.0.weight", "classifier.2.bias", "classifier.2.weight"});
  const auto params = model->named_parameters();
  CHECK(params["classifier.0.weight"].sizes() == torch::IntArrayRef({50, 128}));
  CHECK(params["classifier.2.weight"].sizes() == torch::IntArrayRef({2, 50}));

  model->eval();
  torch::NoGradGuard no_grad;
  const auto before = model->forward(sample_ids(), sample_mask()).logits;
  CHECK(before.sizes() == torch::IntArrayRef({2, 2}));
  ts::save_pretrained(model, dir.path, saving(kClassifierDir));
  const auto config = nlohmann::json::parse(ts::read_file(dir.path / "config.json"));
  CHECK(config["twostage_head"] == nlohmann::json{{"type", "mlp"}, {"hidden_size", 50}});
  ts::LoadReport reloaded_report;
  auto reloaded = ts::load_sequence_classifier(dir.path, {}, &reloaded_report);
  CHECK(reloaded_report.missing.empty());
  CHECK(reloaded_report.unexpected.empty());
  reloaded->eval();
  CHECK(torch::equal(before, reloaded->forward(sample_ids(), sample_mask()).logits));
}

TEST_CASE("checkpoint: without a tokenizer folder, a tokenizer_config.json is still written", "[model][checkpoint]") {
  TempDir dir("notok");
  ts::BertConfig config;
  config.hidden_size = 32;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.intermediate_size = 64;
  config.vocab_size = 100;
  auto model = ts::BertForSequenceClassification(config);
  ts::save_pretrained(model, dir.path, saving({}, false, /*do_lower_case=*/false));
  const auto tokenizer_config = nlohmann::json::parse(ts::read_file(dir.path / "tokenizer_config.json"));
  CHECK(tokenizer_config["do_lower_case"] == false);
  CHECK(tokenizer_config["tokenizer_class"] == "BertTokenizer");
  CHECK_FALSE(fs::exists(dir.path / "vocab.txt"));
}

TEST_CASE("checkpoint: the tokenizer can be saved with the model", "[model][checkpoint]") {
  TempDir dir("tokenizer");
  auto model = ts::load_sequence_classifier(kClassifierDir);
  const auto tokenizer = ts::text::Tokenizer::from_folder(kClassifierDir);
  ts::SaveOptions options;
  options.tokenizer = &tokenizer;
  ts::save_pretrained(model, dir.path, options);
  CHECK(ts::read_file(dir.path / "vocab.txt") == ts::read_file(kClassifierDir / "vocab.txt"));
  CHECK(fs::exists(dir.path / "tokenizer_config.json"));
  const auto reloaded = ts::text::Tokenizer::from_folder(dir.path);
  CHECK(reloaded.vocab_size() == tokenizer.vocab_size());
}

// The shipped default (data/models/all-minilm-l6-v2) against transformers' outputs for it, kept as a fixture:
// tests/fixtures/default_model/make_expected.py says how they were made.
TEST_CASE("the shipped default model tokenizes and encodes as Hugging Face does", "[model][checkpoint]") {
  const fs::path folder = "data/models/all-minilm-l6-v2";
  for (const char* file : {"config.json", "vocab.txt", "tokenizer_config.json", "MODEL.md", "LICENSE"})
    CHECK(fs::exists(folder / file));
  CHECK(fs::file_size(folder / "model.safetensors") <= 50u * 1000 * 1000);

  ts::LoadReport report;
  auto model = ts::load_sequence_classifier(folder, {}, &report);
  CHECK(report.unexpected.empty());
  CHECK(report.mismatched.empty());
  // A BertModel checkpoint: everything but the classification head is in the file.
  for (const auto& key : report.missing) CHECK(key.rfind("classifier.", 0) == 0);
  CHECK(report.loaded.size() == 103);
  CHECK(model->config.num_hidden_layers == 6);
  CHECK(model->config.hidden_size == 384);
  model->eval();
  torch::NoGradGuard no_grad;

  const auto tokenizer = ts::text::Tokenizer::from_folder(folder);
  std::ifstream in("tests/fixtures/default_model/expected.jsonl");
  REQUIRE(in.good());
  int rows = 0;
  double worst_cls = 0, worst_pooled = 0, worst_mean = 0;
  for (std::string line; std::getline(in, line);) {
    const auto row = nlohmann::json::parse(line);
    INFO("input " << row["index"] << ": " << row["text"].get<std::string>());
    const auto encoding = tokenizer.encode(row["text"].get<std::string>());
    const std::vector<int64_t> ids(encoding.ids.begin(), encoding.ids.end());
    REQUIRE(ids == row["ids"].get<std::vector<int64_t>>());
    const auto out = model->forward(torch::tensor(ids, torch::kLong).unsqueeze(0));
    auto diff = [](const torch::Tensor& got, const nlohmann::json& expected) {
      return (got - torch::tensor(expected.get<std::vector<float>>())).abs().max().item<double>();
    };
    worst_cls = std::max(worst_cls, diff(out.last_hidden_state[0][0], row["cls_hidden"]));
    worst_pooled = std::max(worst_pooled, diff(out.pooled[0], row["pooled"]));
    worst_mean = std::max(worst_mean, diff(out.last_hidden_state[0].mean(0), row["mean_hidden"]));
    ++rows;
  }
  CHECK(rows == 28);
  INFO("largest differences: [CLS] " << worst_cls << ", pooled " << worst_pooled << ", mean " << worst_mean);
  CHECK(worst_cls < 1e-4);
  CHECK(worst_pooled < 1e-4);
  CHECK(worst_mean < 1e-4);
}

TEST_CASE("load options are read strictly: the paper's head or Hugging Face's, labels, device") {
  using nlohmann::json;
  using ts::LoadOptions;
  const auto options = LoadOptions::from_json(
      json{{"head", "paper"}, {"head_hidden", 50}, {"num_labels", 3}, {"device", "cpu"},
           {"ignore_mismatched_sizes", true}},
      "ts.load_classifier");
  CHECK(options.head == "mlp");
  CHECK(options.head_hidden_size == 50);
  CHECK(options.num_labels == 3);
  CHECK(options.device == torch::Device(torch::kCPU));
  CHECK(options.ignore_mismatched_sizes);
  CHECK(LoadOptions::from_json(json{{"head", "hf"}}, "ts.load_classifier").head == "linear");
  const auto defaults = LoadOptions::from_json(nullptr, "ts.load_classifier");
  CHECK_FALSE(defaults.head.has_value());
  CHECK_FALSE(defaults.num_labels.has_value());
  CHECK_THROWS_WITH(LoadOptions::from_json(json{{"heads", "hf"}}, "ts.load_classifier"),
                    "ts.load_classifier: unknown option 'heads' (known: head, head_hidden, num_labels, device, "
                    "ignore_mismatched_sizes)");
  CHECK_THROWS_WITH(LoadOptions::from_json(json{{"head", "cnn"}}, "ts.load_classifier"),
                    Catch::Contains("head 'cnn': expected \"paper\""));
  CHECK_THROWS_WITH(LoadOptions::from_json(json{{"num_labels", 2.5}}, "ts.load_classifier"),
                    Catch::Contains("option 'num_labels' expects an integer"));
}
