// Bad input to the recipes, as a user mistypes it: each is a one-line error naming the setting, or the file, line
// and label, and exit status 1, before anything trains (each run here ends within its data checks).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "lua/executable.h"

namespace fs = std::filesystem;

namespace {

using ts::testing::Result;

// Every test's files, removed when the test process ends.
const fs::path kScratch = fs::temp_directory_path() / ("twostage-bad-input-" + std::to_string(::getpid()));
struct RemoveScratch {
  ~RemoveScratch() {
    std::error_code ignored;
    fs::remove_all(kScratch, ignored);
  }
} remove_scratch;

fs::path scratch() {
  fs::create_directories(kScratch);
  return kScratch;
}

// A GLUE-style TSV whose data rows (from line 2) have these labels.
std::string tsv(const std::string& name, const std::vector<std::string>& labels) {
  const auto path = scratch() / name;
  std::ofstream out(path);
  out << "sentence\tlabel\n";
  for (size_t i = 0; i < labels.size(); ++i) out << "a sentence numbered " << i << "\t" << labels[i] << "\n";
  return path.string();
}

Result run(const std::string& recipe, const std::string& name, const std::string& settings) {
  return ts::testing::run_twostage("run " + recipe + " --quiet --out " + (scratch() / name).string() + " " + settings);
}

// The line of `output` holding `part`, for a message that must stand on one line.
std::string line_with(const std::string& output, const std::string& part) {
  const auto at = output.find(part);
  if (at == std::string::npos) return "";
  const auto start = output.rfind('\n', at);
  const auto end = output.find('\n', at);
  return output.substr(start == std::string::npos ? 0 : start + 1, end == std::string::npos ? end : end - start - 1);
}

const std::vector<std::string> kBinary = {"0", "1", "0", "1", "1", "0", "1", "0"};

}  // namespace

TEST_CASE("a training label outside the file's classes is an error naming the file, the line and the label") {
  const auto test = tsv("test.tsv", kBinary);
  auto with = [&](const std::vector<std::string>& labels) {
    return "--set train=" + tsv("train.tsv", labels) + " --set test=" + test + " --set ratio=0 --set seeds=1";
  };
  const std::string train = (scratch() / "train.tsv").string();

  auto seven = kBinary;
  seven[3] = "7";  // line 5
  const auto stray_id = run("recipes/vanilla.lua", "seven", with(seven));
  INFO(stray_id.output);
  CHECK(stray_id.status == 1);
  CHECK_THAT(line_with(stray_id.output, "label \"7\""),
             Catch::Contains(train + ":5: label \"7\" leaves class ids 2..6 without a row; training labels are class "
                                     "ids 0..K-1, each with rows, or class names"));
  CHECK_FALSE(fs::exists(scratch() / "seven" / "metrics.json"));

  auto named = kBinary;
  named[2] = "positive";  // line 4
  const auto stray_name = run("recipes/two_stage_reweight.lua", "positive", with(named));
  INFO(stray_name.output);
  CHECK(stray_name.status == 1);
  CHECK_THAT(stray_name.output, Catch::Contains(train + ":4: label \"positive\" is not a class id, unlike the file's "
                                                        "other labels (0, 1)"));

  // Labels counted from 1: the first row is already wrong.
  const auto from_one = run("recipes/vanilla.lua", "from_one", with({"1", "2", "1", "2"}));
  INFO(from_one.output);
  CHECK(from_one.status == 1);
  CHECK_THAT(from_one.output, Catch::Contains(train + ":2: label \"1\" leaves class id 0 without a row (are the "
                                                      "labels counted from 1?)"));

  // The same check guards the training file of the augmentation recipe.
  const auto augment = run("recipes/augment_llm.lua", "augment",
                           "--set augmenter=eda --set ratio=1 --set train=" + tsv("train.tsv", seven));
  INFO(augment.output);
  CHECK(augment.status == 1);
  CHECK_THAT(augment.output, Catch::Contains(train + ":5: label \"7\" leaves class ids 2..6 without a row"));
  CHECK_FALSE(fs::exists(scratch() / "augment" / "aug.csv"));
}

TEST_CASE("ratio, max_length and seeds out of range are errors naming the setting, before anything trains") {
  const std::string data = "--set train=" + tsv("train.tsv", kBinary) + " --set test=" + tsv("test.tsv", kBinary);

  const auto ratio = run("recipes/vanilla.lua", "ratio", data + " --set ratio=-1");
  INFO(ratio.output);
  CHECK(ratio.status == 1);
  CHECK_THAT(ratio.output, Catch::Contains("setting 'ratio': -1; expected a minority/majority rate in (0, 1], or 0 to "
                                           "keep train as it is"));
  CHECK_THAT(run("recipes/vanilla.lua", "ratio2", data + " --set ratio=1.5").output,
             Catch::Contains("setting 'ratio': 1.5;"));
  const auto augment_ratio = run("recipes/augment_llm.lua", "augment_ratio", "--set augmenter=eda --set ratio=-1");
  CHECK(augment_ratio.status == 1);
  CHECK_THAT(augment_ratio.output, Catch::Contains("setting 'ratio': -1; expected a minority/majority rate in (0, 1]"));

  const auto length = run("recipes/two_stage_reweight.lua", "max_length", data + " --set max_length=100000");
  INFO(length.output);
  CHECK(length.status == 1);
  CHECK_THAT(length.output,
             Catch::Contains("setting 'max_length': 100000 is more than the model's max_position_embeddings, 512 "
                             "(data/models/all-minilm-l6-v2/config.json); expected at most 512 tokens per row"));
  CHECK_FALSE(fs::exists(scratch() / "max_length" / "metrics.json"));

  const auto seeds = run("recipes/vanilla.lua", "seeds", data + " --set seeds=");
  INFO(seeds.output);
  CHECK(seeds.status == 1);
  CHECK_THAT(seeds.output, Catch::Contains("setting 'seeds': no seeds given; expected one training seed or more"));
  CHECK_THAT(seeds.output, !Catch::Contains("mean over runs"));
}
