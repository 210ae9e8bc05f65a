// Contextual substitution with a tiny random BertForMaskedLM on the bert-base-uncased vocabulary: which words are
// chosen, which tokens may replace them, seeding, case, truncation and batching.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/bert.h"
#include "augment/contextual_substitution.h"
#include "text/tokenizer.h"
#include <nlohmann/json.hpp>

using ts::augment::ContextualSubstitution;
using ts::augment::ContextualSubstitutionOptions;

namespace {

const char* kVocab = "../shared/data/vocab/bert-base-uncased";

const ts::text::Tokenizer& vocabulary() {
  static const auto tokenizer = ts::text::Tokenizer::from_path(kVocab);
  return tokenizer;
}

ts::BertForMaskedLM tiny_model(std::uint64_t seed = 1) {
  torch::manual_seed(seed);
  ts::BertConfig config;
  config.vocab_size = static_cast<int64_t>(vocabulary().vocab_size());
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 2;
  config.intermediate_size = 64;
  config.max_position_embeddings = 64;
  return ts::BertForMaskedLM(config);
}

ContextualSubstitution augmenter(std::uint64_t seed, ContextualSubstitutionOptions options = {},
                                 ts::BertForMaskedLM model = tiny_model()) {
  return ContextualSubstitution(model, vocabulary(), seed, options);
}

std::vector<std::string> split_spaces(const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  for (char c : text) {
    if (c == ' ') {
      parts.push_back(part);
      part.clear();
    } else {
      part.push_back(c);
    }
  }
  parts.push_back(part);
  return parts;
}

std::vector<std::string> spans(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& word : ContextualSubstitution::words(text)) out.push_back(text.substr(word.begin, word.end - word.begin));
  return out;
}

}  // namespace

TEST_CASE("Words are whitespace chunks without their outer punctuation, and must hold a letter or digit",
          "[model][augment]") {
  CHECK(spans("It's a well-made film, isn't it?") ==
        std::vector<std::string>{"It's", "a", "well-made", "film", "isn't", "it"});
  CHECK(spans("  ... -- !! ") == std::vector<std::string>{});
  CHECK(spans("\"Amélie\" (2001) ...") == std::vector<std::string>{"Amélie", "2001"});
  CHECK(spans("") == std::vector<std::string>{});
}

TEST_CASE("Only whole-word vocabulary tokens may replace a word", "[model][augment]") {
  auto substitution = augmenter(7);
  const auto& tokens = vocabulary();
  CHECK(substitution.allowed(*tokens.find_id("film")));
  CHECK(substitution.allowed(*tokens.find_id("2001")));
  CHECK_FALSE(substitution.allowed(*tokens.find_id("##ing")));
  CHECK_FALSE(substitution.allowed(tokens.cls_id()));
  CHECK_FALSE(substitution.allowed(tokens.mask_id()));
  CHECK_FALSE(substitution.allowed(tokens.unk_id()));
  CHECK_FALSE(substitution.allowed(tokens.pad_id()));
  CHECK_FALSE(substitution.allowed(*tokens.find_id("[unused5]")));
  CHECK_FALSE(substitution.allowed(*tokens.find_id(",")));
  CHECK_FALSE(substitution.allowed(*tokens.find_id("\"")));
}

TEST_CASE("A fraction of the words is replaced, the rest of the text kept byte for byte", "[model][augment]") {
  ContextualSubstitutionOptions options;
  options.fraction = 0.25;
  auto substitution = augmenter(3, options);
  const std::string text = "the acting is superb , but the plot drags on far too long .";
  const auto original = split_spaces(text);
  const auto variants = substitution.augment(text, 8);
  REQUIRE(variants.size() == 8);
  std::set<std::string> distinct;
  for (const auto& variant : variants) {
    INFO(variant);
    const auto parts = split_spaces(variant);
    REQUIRE(parts.size() == original.size());  // one token replaces one word; spacing kept
    int changed = 0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i] == original[i]) continue;
      ++changed;
      CHECK(original[i] != "," );  // punctuation is never chosen
      CHECK(original[i] != ".");
      const auto id = vocabulary().find_id(parts[i]);
      REQUIRE(id.has_value());
      CHECK(substitution.allowed(*id));
    }
    CHECK(changed == 3);  // round(0.25 * 12 words)
    distinct.insert(variant);
  }
  CHECK(distinct.size() > 1);
}

TEST_CASE("The same seed gives the same variants, another seed other ones", "[model][augment]") {
  const auto model = tiny_model();
  const std::string text = "an intelligent and moving portrait of a family in crisis";
  auto first = augmenter(11, {}, model);
  auto second = augmenter(11, {}, model);
  auto other = augmenter(12, {}, model);
  const auto a = first.augment(text, 6);
  CHECK(a == second.augment(text, 6));
  CHECK(a != other.augment(text, 6));
  CHECK(first.augment(text, 6) != a);  // the generator moves on between calls
}

TEST_CASE("The prediction skips special tokens, pieces, punctuation and the word itself, and follows its case",
          "[model][augment]") {
  auto model = tiny_model();
  const auto& tokens = vocabulary();
  {
    // Make the head all but certain of tokens that must never be chosen, and a little less of "splendid".
    torch::NoGradGuard no_grad;
    auto& bias = model->cls->predictions->bias;
    for (const char* forbidden : {"[CLS]", "[MASK]", "[unused0]", "##ing", ","}) bias[*tokens.find_id(forbidden)] = 100.0;
    bias[*tokens.find_id("splendid")] = 60.0;
  }
  ContextualSubstitutionOptions options;
  options.fraction = 1.0;  // every word
  options.top_k = 1;
  auto substitution = augmenter(5, options, model);
  CHECK(substitution.augment("The MOVIE is, well, a Movie.", 1) ==
        std::vector<std::string>{"Splendid SPLENDID splendid, splendid, splendid Splendid."});
  {
    torch::NoGradGuard no_grad;
    model->cls->predictions->bias[*tokens.find_id("movie")] = 80.0;
  }
  // "movie" now wins everywhere except in place of itself, where the next best allowed token does.
  CHECK(substitution.augment("a Movie", 1) == std::vector<std::string>{"movie Splendid"});
}

TEST_CASE("Texts without words give no variants, long texts mask only what fits", "[model][augment]") {
  ContextualSubstitutionOptions options;
  options.fraction = 1.0;
  options.max_length = 8;  // [CLS] + 6 tokens + [SEP]
  auto substitution = augmenter(9, options);
  CHECK(substitution.augment("... !!", 3).empty());
  CHECK(substitution.augment("", 3).empty());
  const std::string text = "one two three four five six seven eight nine ten";
  const auto variants = substitution.augment(text, 2);
  REQUIRE(variants.size() == 2);
  for (const auto& variant : variants) {
    const auto parts = split_spaces(variant);
    const auto original = split_spaces(text);
    REQUIRE(parts.size() == original.size());
    for (std::size_t i = 0; i < parts.size(); ++i) {
      INFO(variant);
      if (i < 6)
        CHECK(parts[i] != original[i]);  // within the 6 tokens that fit: all replaced
      else
        CHECK(parts[i] == original[i]);  // truncated away: untouched
    }
  }
}

TEST_CASE("A text longer than the model's positions is read up to them", "[model][augment]") {
  ContextualSubstitutionOptions options;
  options.fraction = 1.0;  // max_length stays 128: the model's 64 positions bound it
  auto substitution = augmenter(4, options);
  std::string text;
  for (int i = 0; i < 100; ++i) text += i ? " film" : "film";
  const auto variants = substitution.augment(text, 1);
  REQUIRE(variants.size() == 1);
  const auto parts = split_spaces(variants[0]);
  REQUIRE(parts.size() == 100);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    INFO(i);
    CHECK((parts[i] != "film") == (i < 62));  // [CLS] + 62 words + [SEP]
  }
}

TEST_CASE("Many texts are augmented in batches, each getting its own variants", "[model][augment]") {
  ContextualSubstitutionOptions options;
  options.batch_size = 3;
  auto substitution = augmenter(21, options);
  const std::vector<std::string> texts = {"a charming little film", "...", "dull , lifeless and far too long",
                                          "the best comedy of the year"};
  const auto results = substitution.augment(texts, 2);
  REQUIRE(results.size() == 4);
  CHECK(results[0].size() == 2);
  CHECK(results[1].empty());
  CHECK(results[2].size() == 2);
  CHECK(results[3].size() == 2);
  for (std::size_t t = 0; t < texts.size(); ++t)
    for (const auto& variant : results[t]) CHECK(split_spaces(variant).size() == split_spaces(texts[t]).size());
}

TEST_CASE("Bad options and folders are errors that name them", "[model][augment]") {
  ContextualSubstitutionOptions options;
  options.fraction = 0;
  CHECK_THROWS_WITH(augmenter(1, options), Catch::Contains("fraction"));
  options = {};
  options.top_k = 0;
  CHECK_THROWS_WITH(augmenter(1, options), Catch::Contains("top_k"));
  options = {};
  options.max_length = 2;
  CHECK_THROWS_WITH(augmenter(1, options), Catch::Contains("max_length 2"));
  CHECK_THROWS_WITH(ContextualSubstitution::load("/nonexistent/mlm-folder", 1),
                    Catch::Contains("/nonexistent/mlm-folder"));
}

TEST_CASE("The golden masked LM loads as an augmenter", "[model][augment]") {
  auto substitution = ContextualSubstitution::load("../shared/golden/bert-mlm", 42);
  const auto variants = substitution.augment("a gripping , well-acted thriller .", 2);
  REQUIRE(variants.size() == 2);
  for (const auto& variant : variants) CHECK(variant != "a gripping , well-acted thriller .");
}

TEST_CASE("the masked-LM augmenter's options are read strictly and need a model folder") {
  using nlohmann::json;
  using ts::augment::ContextualSubstitutionConfig;
  const auto config = ContextualSubstitutionConfig::from_json(
      json{{"model", "m"}, {"fraction", 0.3}, {"top_k", 5}, {"temperature", 0.5}, {"seed", 4}, {"max_length", 64},
           {"batch_size", 8}, {"device", "cpu"}},
      "contextual_augmenter");
  CHECK(config.model == "m");
  CHECK(config.options.fraction == 0.3);
  CHECK(config.options.top_k == 5);
  CHECK(config.options.temperature == 0.5);
  CHECK(config.options.max_length == 64);
  CHECK(config.options.batch_size == 8);
  CHECK(config.seed == 4u);
  CHECK(config.device == "cpu");
  CHECK_THROWS_WITH(ContextualSubstitutionConfig::from_json(nullptr, "contextual_augmenter"),
                    Catch::Contains("contextual_augmenter: model = DIR is required"));
  CHECK_THROWS_WITH(ContextualSubstitutionConfig::from_json(json{{"model", "m"}, {"topk", 3}}, "contextual_augmenter"),
                    Catch::Contains("unknown option 'topk'"));
  CHECK_THROWS_WITH(ContextualSubstitutionConfig::from_json(json{{"model", "m"}, {"top_k", 2.5}}, "augmenter"),
                    Catch::Contains("option 'top_k' expects an integer"));
}
