// recipes/pretrain_mlm.lua at tiny scale: interrupted and resumed, it gives the losses of an uninterrupted run; the
// model it saves has Hugging Face's BertForMaskedLM layout.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <iterator>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "lua/executable.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path scratch(const std::string& name) {
  const auto path = fs::temp_directory_path() / ("twostage-pretrain-" + std::to_string(::getpid())) / name;
  fs::remove_all(path);
  fs::create_directories(path.parent_path());
  return path;
}

// A tiny model over the first rows of TREC, 12 steps, a checkpoint every 4.
const std::string kTiny =
    "run recipes/pretrain_mlm.lua --quiet --threads 1 --set corpus=data/trec/train.tsv:text --set layers=1 "
    "--set hidden=32 --set heads=2 --set intermediate=64 --set max_length=32 --set batch_size=8 --set steps=12 "
    "--set save_every=4 --set eval_every=6 --set log_every=100 --set heldout_fraction=0.05 --set seed=3 ";

json metrics_of(const fs::path& run) {
  std::ifstream in(run / "metrics.json");
  REQUIRE(in.good());
  return json::parse(in);
}

}  // namespace

TEST_CASE("pretraining interrupted and resumed gives the same losses as an uninterrupted run") {
  const auto whole = scratch("whole"), interrupted = scratch("interrupted");
  auto result = ts::testing::run_twostage(kTiny + "--out " + whole.string());
  INFO(result.output);
  REQUIRE(result.status == 0);

  // Stopped after step 7 (the last checkpoint is step 4), then run again with the same folder.
  result = ts::testing::run_twostage(kTiny + "--set stop_after=7 --out " + interrupted.string());
  REQUIRE(result.status == 0);
  CHECK_FALSE(fs::exists(interrupted / "metrics.json"));
  result = ts::testing::run_twostage(kTiny + "--out " + interrupted.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  std::ifstream log(interrupted / "log.txt");
  const std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK_THAT(log_text, Catch::Contains("resuming at step 4"));

  const auto expected = metrics_of(whole), resumed = metrics_of(interrupted);
  REQUIRE(expected["losses"].size() == 12);
  CHECK(resumed["losses"] == expected["losses"]);
  CHECK(resumed["heldout_loss"] == expected["heldout_loss"]);
  CHECK(resumed["heldout_accuracy"] == expected["heldout_accuracy"]);
  // It learns something even at this scale: the last losses are below the first.
  CHECK(expected["losses"].back().get<double>() < expected["losses"].front().get<double>());

  // The saved model is a BertForMaskedLM folder as Hugging Face writes it.
  const auto model = whole / "model";
  for (const char* file : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})
    CHECK(fs::exists(model / file));
  std::ifstream config_file(model / "config.json");
  const auto config = json::parse(config_file);
  CHECK(config["architectures"] == json::array({"BertForMaskedLM"}));
  const auto weights = ts::safetensors::File::open((model / "model.safetensors").string());
  bool has_bert = false, has_head = false, has_other = false;
  for (const auto& name : weights.names()) {
    if (name.rfind("bert.", 0) == 0)
      has_bert = true;
    else if (name.rfind("cls.predictions.", 0) == 0)
      has_head = true;
    else
      has_other = true;
  }
  CHECK(has_bert);
  CHECK(has_head);
  CHECK_FALSE(has_other);
}

TEST_CASE("steps=0 only evaluates a model: the held-out figures of its run at any batch size, nothing trained") {
  const auto run = scratch("run"), evaluation = scratch("evaluation");
  auto result = ts::testing::run_twostage(kTiny + "--out " + run.string());
  INFO(result.output);
  REQUIRE(result.status == 0);

  // The float32 checkpoint of the last step, on the same held-out blocks and masks: the run's final figures, also
  // with another batch size.
  result = ts::testing::run_twostage(kTiny + "--set steps=0 --set batch_size=3 --set from=" +
                                     (run / "checkpoint").string() + " --out " + evaluation.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto trained = metrics_of(run), evaluated = metrics_of(evaluation);
  CHECK(evaluated["steps"] == 0);
  CHECK(evaluated["heldout_loss"] == trained["heldout_loss"]);
  CHECK(evaluated["heldout_accuracy"] == trained["heldout_accuracy"]);
  CHECK_FALSE(fs::exists(evaluation / "checkpoint"));
  CHECK_FALSE(fs::exists(evaluation / "model"));
}

TEST_CASE("the [CLS] bag-of-words task is added to the masked-LM loss and learnt, the model keeps its layout") {
  const auto plain = scratch("plain"), with_task = scratch("bag-of-words");
  const std::string longer = kTiny + "--set steps=24 --set eval_every=12 ";
  auto result = ts::testing::run_twostage(longer + "--out " + plain.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  result = ts::testing::run_twostage(longer + "--set cls_bag_of_words=1 --out " + with_task.string());
  INFO(result.output);
  REQUIRE(result.status == 0);

  const auto without = metrics_of(plain), with = metrics_of(with_task);
  // Same seed, so the same blocks and masks: the first losses differ by the bag-of-words loss of an untrained
  // [CLS], about ln(30522) = 10.3 nats.
  const double added = with["losses"].front().get<double>() - without["losses"].front().get<double>();
  CHECK(added > 8.0);
  CHECK(added < 12.0);
  CHECK_FALSE(without.contains("heldout_bag_of_words"));
  const auto& evaluations = with["evaluations"];
  REQUIRE(evaluations.size() == 3);  // steps 12 and 24, and the final one
  CHECK(evaluations[1]["bag_of_words"].get<double>() < evaluations[0]["bag_of_words"].get<double>());
  CHECK(with["heldout_bag_of_words"] == evaluations[2]["bag_of_words"]);

  const auto keys = [](const fs::path& run) {
    return ts::safetensors::File::open((run / "model" / "model.safetensors").string()).names();
  };
  CHECK(keys(with_task) == keys(plain));
}

TEST_CASE("replaced-token detection: resumed exactly (its head too), learnt, and the head stays out of the model") {
  const auto generator = scratch("generator"), whole = scratch("electra-whole"),
             interrupted = scratch("electra-interrupted");
  auto result = ts::testing::run_twostage(kTiny + "--out " + generator.string());
  INFO(result.output);
  REQUIRE(result.status == 0);

  const std::string electra = kTiny + "--set steps=24 --set eval_every=12 --set from=" +
                              (generator / "model").string() + " --set generator=" + (generator / "model").string() +
                              " --set seed=5 ";
  result = ts::testing::run_twostage(electra + "--out " + whole.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  result = ts::testing::run_twostage(electra + "--set stop_after=7 --out " + interrupted.string());
  REQUIRE(result.status == 0);
  CHECK(fs::exists(interrupted / "checkpoint" / "detection_head.safetensors"));
  result = ts::testing::run_twostage(electra + "--out " + interrupted.string());
  INFO(result.output);
  REQUIRE(result.status == 0);

  const auto expected = metrics_of(whole), resumed = metrics_of(interrupted);
  REQUIRE(expected["losses"].size() == 24);
  CHECK(resumed["losses"] == expected["losses"]);
  CHECK(resumed["heldout_detection"] == expected["heldout_detection"]);
  const auto& evaluations = expected["evaluations"];
  REQUIRE(evaluations.size() == 3);  // steps 12 and 24, and the final one
  CHECK(evaluations[1]["detection"].get<double>() < evaluations[0]["detection"].get<double>());
  CHECK(expected["heldout_detection_accuracy"].get<double>() > 0.5);

  const auto keys = [](const fs::path& run) {
    return ts::safetensors::File::open((run / "model" / "model.safetensors").string()).names();
  };
  CHECK(keys(whole) == keys(generator));
}

TEST_CASE("word_vectors starts masked-LM from skip-gram vectors of the training blocks, not with `from`") {
  const auto plain = scratch("plain-embeddings"), with_vectors = scratch("word-vectors");
  auto result = ts::testing::run_twostage(kTiny + "--out " + plain.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  const std::string vectors = kTiny + "--set word_vectors=true --set word_vector_epochs=2 --set word_vector_min_count=3 ";
  result = ts::testing::run_twostage(vectors + "--out " + with_vectors.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  std::ifstream log(with_vectors / "log.txt");
  const std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK_THAT(log_text, Catch::Contains("skip-gram vectors"));
  // The same seed, blocks and masks, and other word embeddings: another first loss.
  CHECK(metrics_of(with_vectors)["losses"].front() != metrics_of(plain)["losses"].front());

  // steps=0 saves the new model untrained.
  const auto initial = scratch("word-vectors-initial");
  result = ts::testing::run_twostage(vectors + "--set steps=0 --out " + initial.string());
  REQUIRE(result.status == 0);
  CHECK(fs::exists(initial / "model" / "model.safetensors"));

  result = ts::testing::run_twostage(vectors + "--set from=" + (plain / "model").string() + " --out " +
                                     scratch("refused").string());
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("does not combine with `from`"));
}

TEST_CASE("freeze keeps the named parameters as they were (the tied decoder too), a misspelt pattern is an error") {
  const auto initial = scratch("freeze-initial"), frozen = scratch("freeze-trained");
  auto result = ts::testing::run_twostage(kTiny + "--set steps=0 --out " + initial.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  result = ts::testing::run_twostage(kTiny + "--set from=" + (initial / "model").string() +
                                     " --set freeze=bert.embeddings.word_embeddings --out " + frozen.string());
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto before = ts::safetensors::File::open((initial / "model" / "model.safetensors").string());
  const auto after = ts::safetensors::File::open((frozen / "model" / "model.safetensors").string());
  const auto same = [&](const std::string& name) {
    const auto &a = before.at(name), &b = after.at(name);
    return a.size_bytes == b.size_bytes && std::memcmp(a.data, b.data, a.size_bytes) == 0;
  };
  CHECK(same("bert.embeddings.word_embeddings.weight"));
  CHECK_FALSE(same("bert.embeddings.position_embeddings.weight"));
  CHECK_FALSE(same("bert.encoder.layer.0.output.dense.weight"));
  CHECK_FALSE(same("cls.predictions.bias"));

  result = ts::testing::run_twostage(kTiny + "--set freeze=bert.embedings --out " + scratch("misspelt").string());
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("matches none of the model's"));
}
