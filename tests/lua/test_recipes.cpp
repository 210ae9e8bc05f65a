// The paper's recipes end to end with the twostage executable, on a tiny random BERT: run folders hold the
// contract's files and keys; the same seed and threads give the same metrics; the neighbours' recipes run.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <twostage/build_info.h>

#include <nlohmann/json.hpp>

#include "lua/executable.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using ts::testing::Result;

Result run(const std::string& arguments) { return ts::testing::run_twostage(arguments); }

fs::path scratch() {
  static const auto folder = [] {
    auto path = fs::temp_directory_path() / ("twostage-recipes-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
    return path;
  }();
  return folder;
}

// A tiny BERT folder (made once per process) with the given dropout.
std::string tiny_model(double dropout = 0.1) {
  const auto folder = scratch() / ("tiny-bert-dropout" + std::to_string(static_cast<int>(dropout * 100)));
  if (!fs::exists(folder / "config.json")) {
    const auto result = run("run tests/lua/fixtures/tiny_bert.lua --quiet --out " + (scratch() / "fixture").string() +
                            " --set out=" + folder.string() + " --set dropout=" + std::to_string(dropout) +
                            " --set vocab=../shared/data/vocab/bert-base-uncased");
    INFO(result.output);
    REQUIRE(result.status == 0);
  }
  return folder.string();
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return json::parse(in);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs a recipe into its own folder and returns that folder.
fs::path run_recipe(const std::string& recipe, const std::string& name, const std::string& settings) {
  const auto out = scratch() / name;
  const auto result = run("run recipes/" + recipe + " --quiet --threads 2 --out " + out.string() +
                          " --set model=" + tiny_model() + " " + settings);
  INFO(result.output);
  REQUIRE(result.status == 0);
  return out;
}

const char* kTrec = "--set train=../shared/data/trec/train.tsv --set test=../shared/data/trec/test.tsv "
                    "--set text_column=text --set label_column=coarse --set imbalance=10 --set seeds=3 ";

}  // namespace

TEST_CASE("the three reference recipes run end to end on SST-2 at rate 0.2 and write the contract's files") {
  // Stage 1 of the augmentation variant reads paraphrases: here the first 3000 rows of train stand in for aug.csv.
  const auto augmented = scratch() / "aug.csv";
  {
    std::ifstream train("data/sst2/train.tsv");
    std::ofstream out(augmented);
    out << "org_ind,text,label\n";
    std::string line;
    std::getline(train, line);
    for (int i = 0; i < 3000 && std::getline(train, line); ++i) {
      const auto tab = line.find('\t');
      out << i << ",\"" << line.substr(0, tab) << "\"," << line.substr(tab + 1) << "\n";
    }
  }
  // Large batches keep the three full epochs over 45,082 rows short on a busy machine; the contract is the same.
  const std::string common = "--set seeds=42 --set bucket=true --set batch_size=128 ";
  for (const std::string recipe : {"vanilla", "two_stage_reweight", "two_stage_augment"}) {
    SECTION(recipe) {
      const auto out = run_recipe(recipe + ".lua", recipe,
                                  common + (recipe == "two_stage_augment" ? "--set augmented=" + augmented.string() : ""));
      const auto metrics = read_json(out / "metrics.json");
      for (const char* key : {"accuracy", "macro_f1", "f1_per_class", "confusion_matrix", "train_class_counts",
                              "f1_minority", "per_seed", "std", "mean"})
        CHECK(metrics.contains(key));
      CHECK(metrics["train_class_counts"] == json::array({7513, 37569}));
      const auto& seed = metrics["per_seed"]["42"];
      for (const char* key : {"accuracy", "macro_f1", "f1_per_class", "confusion_matrix", "train_class_counts"})
        CHECK(seed.contains(key));
      int64_t evaluated = 0;
      for (const auto& row : seed["confusion_matrix"])
        for (const auto& count : row) evaluated += count.get<int64_t>();
      CHECK(evaluated == 872);
      CHECK(seed["stages"].size() == 2);
      CHECK(metrics["std"].is_null());  // one seed

      const auto config = read_json(out / "config.json");
      CHECK(config["settings"]["ratio"] == 0.2);
      CHECK(config["settings"]["seeds"] == json::array({42}));
      CHECK(config["run"].contains("libtorch_version"));
      CHECK(config["run"].contains("twostage_version"));

      const auto predictions = read_text(out / "predictions.csv");
      CHECK(predictions.rfind("seed,index,label,prediction,logit_0,logit_1\n", 0) == 0);
      CHECK(std::count(predictions.begin(), predictions.end(), '\n') == 873);
      CHECK(fs::exists(out / "log.txt"));
    }
  }
}

TEST_CASE("the same seed and threads give identical metrics twice, epochs 0 still evaluates") {
  const std::string settings = std::string(kTrec) + "--set epochs_stage2=0 --set lr_stage1=1e-3";
  const auto first = read_json(run_recipe("two_stage_reweight.lua", "same-a", settings) / "metrics.json");
  const auto second = read_json(run_recipe("two_stage_reweight.lua", "same-b", settings) / "metrics.json");
  auto strip_times = [](json metrics) {
    for (auto& [seed, record] : metrics["per_seed"].items()) {
      record.erase("seconds");
      for (auto& stage : record["stages"]) {
        stage.erase("seconds");
        stage.erase("ms_per_batch");
      }
    }
    return metrics;
  };
  CHECK(strip_times(first) == strip_times(second));
  const auto& stages = first["per_seed"]["3"]["stages"];
  REQUIRE(stages.size() == 2);
  CHECK(stages[1]["epochs"] == 0);
  CHECK(stages[1]["steps"] == 0);
  CHECK(stages[1].contains("macro_f1"));
  // The long tail: 6 TREC classes ranked by size, the largest 10 times the smallest.
  const auto counts = first["train_class_counts"].get<std::vector<int64_t>>();
  CHECK(*std::max_element(counts.begin(), counts.end()) >= 10 * *std::min_element(counts.begin(), counts.end()));
}

TEST_CASE("several seeds report each seed and their mean and standard deviation") {
  const auto metrics = read_json(
      run_recipe("vanilla.lua", "two-seeds", std::string(kTrec) + "--set seeds=1,2 --set lr_stage2=1e-3") /
      "metrics.json");
  REQUIRE(metrics["per_seed"].size() == 2);
  const double a = metrics["per_seed"]["1"]["macro_f1"], b = metrics["per_seed"]["2"]["macro_f1"];
  CHECK(metrics["macro_f1"].get<double>() == Approx((a + b) / 2));
  CHECK(metrics["std"]["macro_f1"].get<double>() == Approx(std::abs(a - b) / std::sqrt(2.0)));
  CHECK(metrics["f1_per_class"].size() == 6);
}

TEST_CASE("the neighbours' recipes run: LP-FT with a cached trunk, post-hoc logit adjustment, cRT") {
  SECTION("lp_ft") {
    const auto out = run_recipe("lp_ft.lua", "lp-ft", std::string(kTrec) + "--set cache_frozen=true");
    const auto log = read_text(out / "log.txt");
    CHECK(log.find("cached the frozen trunk below layer 2") != std::string::npos);
  }
  SECTION("logit_adjust") {
    const auto out = run_recipe("logit_adjust.lua", "logit-adjust", std::string(kTrec) + "--set adjust=post_hoc");
    CHECK(read_json(out / "metrics.json").contains("macro_f1"));
  }
  SECTION("crt") {
    const auto out = run_recipe("crt.lua", "crt", std::string(kTrec));
    const auto log = read_text(out / "log.txt");
    CHECK(log.find("classifier re-training") != std::string::npos);
  }
}

TEST_CASE("the reference's stage-1 schedule defect is reproduced only with faithful_schedule=true") {
  const auto augmented = scratch() / "aug-trec.csv";
  {
    std::ofstream out(augmented);
    out << "org_ind,text,label\n";
    for (int i = 0; i < 400; ++i) out << i << ",what is question number " << i << " ?," << (i % 6) << "\n";
  }
  // TREC's coarse labels are names; the paraphrase file uses their ids.
  const std::string settings = std::string(kTrec) + "--set augmented=" + augmented.string() + " --set epochs_stage2=0 ";
  const auto faithful = read_text(run_recipe("two_stage_augment.lua", "faithful", settings +
                                             "--set faithful_schedule=true") / "log.txt");
  const auto fixed = read_text(run_recipe("two_stage_augment.lua", "fixed", settings) / "log.txt");
  CHECK(fixed.find("stage 1: 1 epoch(s) of 25 batches, 25 optimiser steps") != std::string::npos);
  CHECK(faithful.find("stage 1: 1 epoch(s) of 25 batches, ") != std::string::npos);
  CHECK(faithful.find("stage 1: 1 epoch(s) of 25 batches, 25 optimiser steps") == std::string::npos);
}

TEST_CASE("probe_features: a linear probe of frozen features finds a label that one word decides") {
  // Texts of filler words with one sentiment word; even a random encoder's features separate them linearly.
  const char* positive[] = {"good", "great", "wonderful", "superb", "lovely"};
  const char* negative[] = {"bad", "awful", "terrible", "dreadful", "poor"};
  const char* filler[] = {"the film", "this story", "a plot", "the acting", "our evening", "that scene", "the music"};
  auto write = [&](const fs::path& path, int first, int rows) {
    std::ofstream out(path);
    out << "sentence\tlabel\n";
    for (int i = first; i < first + rows; ++i) {
      const bool is_positive = i % 2 == 0;
      out << filler[i % 7] << " was " << (is_positive ? positive : negative)[(i / 2) % 5] << " , " << filler[(i / 3) % 7]
          << "\t" << (is_positive ? 1 : 0) << "\n";
    }
  };
  const auto train = scratch() / "probe-train.tsv", test = scratch() / "probe-test.tsv";
  write(train, 0, 300);
  write(test, 1000, 100);
  const auto out = run_recipe("probe_features.lua", "probe",
                              "--set train=" + train.string() + " --set test=" + test.string() +
                                  " --set rows=300 --set iterations=500 --set init=pretrained");
  const auto metrics = read_json(out / "metrics.json");
  CHECK(metrics["rows"] == 300);
  for (const char* pooling : {"cls", "mean"}) {
    INFO(pooling);
    CHECK(metrics[pooling]["train_accuracy"].get<double>() > 0.95);
    CHECK(metrics[pooling]["test_accuracy"].get<double>() > 0.95);
  }
}
