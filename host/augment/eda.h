#pragma once
// EDA, "Easy Data Augmentation" (Wei & Zou, EMNLP 2019), as in its reference code (jasonwei20/eda_nlp, eda.py):
// synonym replacement (WordNet), random insertion, random swap and random deletion, each changing about alpha of
// the words, on text reduced to lower-case a-z and spaces. Differences from the reference, all about
// reproducibility: a seeded std::mt19937_64 with portable draws replaces Python's global `random`; where the
// reference picks an element of a set in hash order (the inserted synonym, the order of words to replace), this
// picks uniformly at random; the original sentence is returned only when asked for.
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "augment/wordnet.h"

namespace ts::augment {

struct EdaOptions {
  double alpha_sr = 0.1;  // synonym replacement: n = max(1, alpha * words)
  double alpha_ri = 0.1;  // random insertion
  double alpha_rs = 0.1;  // random swap
  double p_rd = 0.1;      // random deletion: each word's probability of being dropped
  double num_aug = 9;     // augmented sentences per input; below 1: the probability of keeping each
  bool include_original = false;  // append the (cleaned) input, as the reference's eda() does
};

// What a recipe's EDA augmenter is made with: its generator's seed, the WordNet folder, the operations' strengths.
struct EdaConfig {
  std::uint64_t seed = 42;
  std::string wordnet;  // a WordNet folder the user named; empty: WordNet::default_directory()
  EdaOptions options;

  // {seed = 42, alpha = 0.1, alpha_sr, alpha_ri, alpha_rs, p_rd, wordnet = DIR}: alpha sets all four operations'
  // strength (the EDA paper's α), the others override one each; each in [0, 1]. Unknown keys are errors naming
  // `where`.
  static EdaConfig from_json(const nlohmann::json& options, const std::string& where);
};

// The reference's stop words (never replaced by synonyms).
const std::unordered_set<std::string>& eda_stop_words();
// The reference's get_only_chars: drops apostrophes, hyphens and everything else not a-z become spaces, lower-case,
// runs of spaces collapsed (trimmed here at both ends).
std::string eda_clean(std::string_view text);

class Eda {
 public:
  explicit Eda(std::uint64_t seed, std::shared_ptr<const WordNet> wordnet = WordNet::shared());

  // Up to num_aug augmented versions of `sentence` (fewer only when the sentence is empty), in random order.
  std::vector<std::string> augment(std::string_view sentence, const EdaOptions& options = {});

  // The four operations, on words of a cleaned sentence.
  std::vector<std::string> synonym_replacement(const std::vector<std::string>& words, int n);
  std::vector<std::string> random_insertion(const std::vector<std::string>& words, int n);
  std::vector<std::string> random_swap(const std::vector<std::string>& words, int n);
  std::vector<std::string> random_deletion(const std::vector<std::string>& words, double p);

  const WordNet& wordnet() const { return *wordnet_; }

 private:
  std::size_t index_below(std::size_t n);  // uniform in [0, n), the same on every platform
  double unit();                           // uniform in [0, 1)
  template <typename T>
  void shuffle(std::vector<T>& items);

  std::mt19937_64 rng_;
  std::shared_ptr<const WordNet> wordnet_;
};

}  // namespace ts::augment
