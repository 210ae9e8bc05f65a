// EDA and the WordNet reader, against Debian's wordnet-base (WordNet 3.0, as NLTK uses).
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "augment/eda.h"
#include <nlohmann/json.hpp>

using namespace ts::augment;

namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (c == ' ') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(word);
  return words;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

}  // namespace

TEST_CASE("WordNet lookups match NLTK's synsets and morphy", "[llm][eda][wordnet]") {
  const auto wordnet = WordNet::shared();
  CHECK(wordnet->lemma_count() > 140000);
  // NLTK: {l.name() for s in wn.synsets('movie') for l in s.lemmas()} - {'movie'}
  CHECK(wordnet->synonyms("movie") ==
        std::vector<std::string>{"film", "flick", "motion picture", "motion picture show", "moving picture",
                                 "moving picture show", "pic", "picture", "picture show"});
  // Inflected forms reach their base form: morphy('dogs', n) = dog; 'ran' via verb.exc = run.
  CHECK(wordnet->base_forms("dogs", 0) == std::vector<std::string>{"dog"});
  CHECK(wordnet->base_forms("ran", 1) == std::vector<std::string>{"run"});
  CHECK(wordnet->base_forms("churches", 0) == std::vector<std::string>{"church"});
  CHECK(wordnet->base_forms("better", 2) == std::vector<std::string>{"better", "good", "well"});
  CHECK(contains(wordnet->synonyms("dogs"), "domestic dog"));
  CHECK(contains(wordnet->synonyms("ran"), "operate"));
  // Adjective markers like "galore(ip)" are stripped; hyphens become spaces.
  CHECK(contains(wordnet->synonyms("abounding"), "galore"));
  CHECK(contains(wordnet->synonyms("wonderful"), "wondrous"));
  CHECK_FALSE(contains(wordnet->synonyms("movie"), "movie"));
  CHECK(wordnet->synonyms("zzzqqq").empty());
  CHECK(wordnet->synonyms("the").empty());
}

TEST_CASE("eda_clean keeps only lower-case letters and single spaces", "[llm][eda]") {
  CHECK(eda_clean("It's a well-made, 2-hour FILM!\t") == "its a well made hour film");
  CHECK(eda_clean("  ...  ") == "");
  CHECK(eda_stop_words().count("the"));
  CHECK(eda_stop_words().count("very"));
  CHECK_FALSE(eda_stop_words().count("movie"));
  CHECK(eda_stop_words().size() == 128);
}

TEST_CASE("The four EDA operations do what they say", "[llm][eda]") {
  Eda eda(7);
  const std::vector<std::string> words = words_of("the movie was a wonderful surprise for the whole family");

  SECTION("random swap keeps the words, changes the order") {
    const auto swapped = eda.random_swap(words, 2);
    CHECK(std::is_permutation(swapped.begin(), swapped.end(), words.begin(), words.end()));
    CHECK(swapped != words);
  }
  SECTION("random deletion drops about p of the words, never all") {
    std::size_t kept = 0, trials = 400;
    for (std::size_t t = 0; t < trials; ++t) {
      const auto left = eda.random_deletion(words, 0.1);
      CHECK(!left.empty());
      for (const auto& word : left) CHECK(contains(words, word));
      kept += left.size();
    }
    const double kept_share = double(kept) / double(trials * words.size());
    CHECK(kept_share > 0.85);
    CHECK(kept_share < 0.95);
    CHECK(eda.random_deletion({"alone"}, 0.99) == std::vector<std::string>{"alone"});
  }
  SECTION("random insertion adds a synonym of a word in the sentence") {
    const auto longer = eda.random_insertion(words, 1);
    CHECK(longer.size() == words.size() + 1);
    std::vector<std::string> added;
    for (const auto& word : longer)
      if (!contains(words, word)) added.push_back(word);
    REQUIRE(added.size() == 1);
    bool is_synonym = false;
    for (const auto& word : words) is_synonym |= contains(eda.wordnet().synonyms(word), added[0]);
    CHECK(is_synonym);
  }
  SECTION("synonym replacement never touches stop words") {
    const auto replaced = eda.synonym_replacement(words, 1);
    const std::string joined = [&] {
      std::string text;
      for (const auto& word : replaced) text += word + " ";
      return text;
    }();
    CHECK(joined.rfind("the ", 0) == 0);
    CHECK(contains(replaced, "a"));
    CHECK(contains(replaced, "for"));
    CHECK(replaced != words);
  }
}

TEST_CASE("EDA augments reproducibly from its seed", "[llm][eda]") {
  const std::string sentence = "A gorgeous, witty, seductive movie that never loses its charm.";
  EdaOptions options;
  options.num_aug = 9;
  const auto first = Eda(42).augment(sentence, options);
  const auto again = Eda(42).augment(sentence, options);
  const auto other = Eda(43).augment(sentence, options);
  CHECK(first.size() == 9);
  CHECK(first == again);
  CHECK(first != other);
  const std::string cleaned = eda_clean(sentence);
  std::set<std::string> distinct(first.begin(), first.end());
  CHECK(distinct.size() >= 5);
  for (const auto& text : first) {
    CHECK(text == eda_clean(text));  // already in the cleaned alphabet
    CHECK_FALSE(text.empty());
  }
  options.include_original = true;
  options.num_aug = 2;
  const auto with_original = Eda(1).augment(sentence, options);
  REQUIRE(with_original.size() == 3);
  CHECK(with_original.back() == cleaned);
  options.include_original = false;
  options.num_aug = 0.5;  // keep each of the 4 candidates with probability 1/8
  std::size_t total = 0;
  Eda sampler(5);
  for (int i = 0; i < 200; ++i) total += sampler.augment(sentence, options).size();
  CHECK(total > 50);
  CHECK(total < 150);
  CHECK(Eda(1).augment("!!!", {}).empty());
}

TEST_CASE("EDA's options are read strictly: alpha for all four operations, each overridable, within [0, 1]") {
  using nlohmann::json;
  const auto config = EdaConfig::from_json(json{{"alpha", 0.2}, {"p_rd", 0.05}, {"seed", 9}, {"wordnet", "wn"}}, "eda");
  CHECK(config.options.alpha_sr == 0.2);
  CHECK(config.options.alpha_ri == 0.2);
  CHECK(config.options.alpha_rs == 0.2);
  CHECK(config.options.p_rd == 0.05);
  CHECK(config.seed == 9u);
  CHECK(config.wordnet == "wn");
  const auto defaults = EdaConfig::from_json(nullptr, "eda");
  CHECK(defaults.options.alpha_sr == 0.1);
  CHECK(defaults.seed == 42u);
  CHECK(defaults.wordnet.empty());
  CHECK_THROWS_WITH(EdaConfig::from_json(json{{"alpah", 0.1}}, "eda"), Catch::Contains("eda: unknown option 'alpah'"));
  CHECK_THROWS_WITH(EdaConfig::from_json(json{{"alpha_rs", 1.5}}, "eda"),
                    "eda: option 'alpha_rs' must be in [0, 1], got 1.5");
  CHECK_THROWS_WITH(EdaConfig::from_json(json{{"seed", -1}}, "eda"), Catch::Contains("seed must be a whole number"));
}
