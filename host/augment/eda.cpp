#include "augment/eda.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/options.h"

namespace ts::augment {
namespace {

std::vector<std::string> split_words(std::string_view sentence) {
  std::vector<std::string> words;
  std::size_t start = 0;
  while (start <= sentence.size()) {
    std::size_t end = sentence.find(' ', start);
    if (end == std::string_view::npos) end = sentence.size();
    if (end > start) words.emplace_back(sentence.substr(start, end - start));
    start = end + 1;
  }
  return words;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string joined;
  for (const auto& word : words) {
    if (!joined.empty()) joined.push_back(' ');
    joined += word;
  }
  return joined;
}

}  // namespace

EdaConfig EdaConfig::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"seed", "alpha", "alpha_sr", "alpha_ri", "alpha_rs", "p_rd", "wordnet"});
  const auto fraction = [&](const char* key, double fallback) {
    const double value = read.number(key).value_or(fallback);
    if (!(value >= 0 && value <= 1)) fail("{}: option '{}' must be in [0, 1], got {}", where, key, value);
    return value;
  };
  EdaConfig config;
  const double alpha = fraction("alpha", 0.1);
  config.options.alpha_sr = fraction("alpha_sr", alpha);
  config.options.alpha_ri = fraction("alpha_ri", alpha);
  config.options.alpha_rs = fraction("alpha_rs", alpha);
  config.options.p_rd = fraction("p_rd", alpha);
  config.seed = read.seed("seed").value_or(config.seed);
  config.wordnet = read.string("wordnet").value_or(config.wordnet);
  return config;
}

const std::unordered_set<std::string>& eda_stop_words() {
  static const std::unordered_set<std::string> kStopWords = {
      "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours", "yourself",
      "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself", "they",
      "them", "their", "theirs", "themselves", "what", "which", "who", "whom", "this", "that", "these", "those",
      "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "having", "do", "does", "did",
      "doing", "a", "an", "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at", "by",
      "for", "with", "about", "against", "between", "into", "through", "during", "before", "after", "above",
      "below", "to", "from", "up", "down", "in", "out", "on", "off", "over", "under", "again", "further", "then",
      "once", "here", "there", "when", "where", "why", "how", "all", "any", "both", "each", "few", "more", "most",
      "other", "some", "such", "no", "nor", "not", "only", "own", "same", "so", "than", "too", "very", "s", "t",
      "can", "will", "just", "don", "should", "now", ""};
  return kStopWords;
}

std::string eda_clean(std::string_view text) {
  std::string cleaned;
  cleaned.reserve(text.size());
  for (char c : text) {
    if (c == '\'') continue;
    c = char(std::tolower(static_cast<unsigned char>(c)));
    if (!(c >= 'a' && c <= 'z')) c = ' ';
    if (c == ' ' && (cleaned.empty() || cleaned.back() == ' ')) continue;
    cleaned.push_back(c);
  }
  while (!cleaned.empty() && cleaned.back() == ' ') cleaned.pop_back();
  return cleaned;
}

Eda::Eda(std::uint64_t seed, std::shared_ptr<const WordNet> wordnet) : rng_(seed), wordnet_(std::move(wordnet)) {
  if (!wordnet_) fail("EDA needs a WordNet database");
}

std::size_t Eda::index_below(std::size_t n) {
  // Rejection sampling on the raw 64-bit draws: unbiased, and unlike std::uniform_int_distribution, identical
  // across standard libraries.
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t draw;
  do draw = rng_();
  while (draw >= limit);
  return std::size_t(draw % n);
}

double Eda::unit() { return double(rng_() >> 11) * 0x1.0p-53; }

template <typename T>
void Eda::shuffle(std::vector<T>& items) {
  for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[index_below(i)]);
}

std::vector<std::string> Eda::synonym_replacement(const std::vector<std::string>& words, int n) {
  std::vector<std::string> new_words = words;
  std::vector<std::string> candidates;
  for (const auto& word : words)
    if (!eda_stop_words().count(word) && std::find(candidates.begin(), candidates.end(), word) == candidates.end())
      candidates.push_back(word);
  shuffle(candidates);
  int replaced = 0;
  for (const auto& candidate : candidates) {
    const auto& synonyms = wordnet_->synonyms(candidate);
    if (!synonyms.empty()) {
      const std::string& synonym = synonyms[index_below(synonyms.size())];
      for (auto& word : new_words)
        if (word == candidate) word = synonym;
      ++replaced;
    }
    if (replaced >= n) break;
  }
  return split_words(join_words(new_words));  // multi-word synonyms become several words
}

std::vector<std::string> Eda::random_insertion(const std::vector<std::string>& words, int n) {
  std::vector<std::string> new_words = words;
  for (int inserted = 0; inserted < n && !new_words.empty(); ++inserted) {
    const std::vector<std::string>* synonyms = nullptr;
    for (int tries = 0; tries < 10; ++tries) {
      synonyms = &wordnet_->synonyms(new_words[index_below(new_words.size())]);
      if (!synonyms->empty()) break;
    }
    if (synonyms->empty()) continue;
    const std::string synonym = (*synonyms)[index_below(synonyms->size())];
    new_words.insert(new_words.begin() + std::ptrdiff_t(index_below(new_words.size())), synonym);
  }
  return new_words;
}

std::vector<std::string> Eda::random_swap(const std::vector<std::string>& words, int n) {
  std::vector<std::string> new_words = words;
  if (new_words.empty()) return new_words;
  for (int swap = 0; swap < n; ++swap) {
    const std::size_t first = index_below(new_words.size());
    std::size_t second = first;
    int tries = 0;
    bool found = true;
    while (second == first) {
      second = index_below(new_words.size());
      if (++tries > 3) {
        found = false;
        break;
      }
    }
    if (found) std::swap(new_words[first], new_words[second]);
  }
  return new_words;
}

std::vector<std::string> Eda::random_deletion(const std::vector<std::string>& words, double p) {
  if (words.size() <= 1) return words;
  std::vector<std::string> kept;
  for (const auto& word : words)
    if (unit() > p) kept.push_back(word);
  if (kept.empty()) return {words[index_below(words.size())]};
  return kept;
}

std::vector<std::string> Eda::augment(std::string_view sentence, const EdaOptions& options) {
  const std::string cleaned = eda_clean(sentence);
  const std::vector<std::string> words = split_words(cleaned);
  std::vector<std::string> augmented;
  if (words.empty()) return augmented;
  const int count = int(words.size());
  const int per_technique = int(options.num_aug / 4) + 1;
  if (options.alpha_sr > 0) {
    const int n = std::max(1, int(options.alpha_sr * count));
    for (int i = 0; i < per_technique; ++i) augmented.push_back(join_words(synonym_replacement(words, n)));
  }
  if (options.alpha_ri > 0) {
    const int n = std::max(1, int(options.alpha_ri * count));
    for (int i = 0; i < per_technique; ++i) augmented.push_back(join_words(random_insertion(words, n)));
  }
  if (options.alpha_rs > 0) {
    const int n = std::max(1, int(options.alpha_rs * count));
    for (int i = 0; i < per_technique; ++i) augmented.push_back(join_words(random_swap(words, n)));
  }
  if (options.p_rd > 0)
    for (int i = 0; i < per_technique; ++i) augmented.push_back(join_words(random_deletion(words, options.p_rd)));
  for (auto& text : augmented) text = eda_clean(text);
  shuffle(augmented);
  if (options.num_aug >= 1) {
    augmented.resize(std::min(augmented.size(), std::size_t(options.num_aug)));
  } else if (!augmented.empty()) {
    const double keep = options.num_aug / double(augmented.size());
    std::vector<std::string> kept;
    for (auto& text : augmented)
      if (unit() < keep) kept.push_back(std::move(text));
    augmented = std::move(kept);
  }
  if (options.include_original) augmented.push_back(cleaned);
  return augmented;
}

}  // namespace ts::augment
