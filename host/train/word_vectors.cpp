#include "train/word_vectors.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/options.h"
#include "data/sampling.h"

namespace ts::train {

SkipGramOptions SkipGramOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where,
                          {"dimension", "window", "negatives", "epochs", "lr", "subsample", "min_count", "seed"});
  SkipGramOptions options;
  options.dimension = read.integer("dimension").value_or(options.dimension);
  options.window = read.integer("window").value_or(options.window);
  options.negatives = read.integer("negatives").value_or(options.negatives);
  options.epochs = read.integer("epochs").value_or(options.epochs);
  options.min_count = read.integer("min_count").value_or(options.min_count);
  options.seed = read.seed("seed").value_or(options.seed);
  options.learning_rate = read.number("lr").value_or(options.learning_rate);
  options.subsample = read.number("subsample").value_or(options.subsample);
  return options;
}
namespace {

// splitmix64 as a generator: its whole state is one word, so every draw is a function of the seed.
struct Random {
  uint64_t state;
  uint64_t next() {
    const uint64_t out = data::splitmix64(state);
    state += data::kSplitMixStep;
    return out;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  uint64_t below(uint64_t n) { return next() % n; }
};

// Walker's alias table: noise tokens in constant time, from unigram counts to the power 0.75.
class NoiseDistribution {
 public:
  explicit NoiseDistribution(const std::vector<int64_t>& counts, int64_t min_count) {
    std::vector<double> weights;
    for (size_t id = 0; id < counts.size(); ++id) {
      if (counts[id] < min_count) continue;
      ids_.push_back(static_cast<int32_t>(id));
      weights.push_back(std::pow(static_cast<double>(counts[id]), 0.75));
    }
    const auto n = weights.size();
    double sum = 0;
    for (double w : weights) sum += w;
    probability_.assign(n, 0.0);
    alias_.assign(n, 0);
    std::vector<size_t> small, large;
    for (size_t i = 0; i < n; ++i) {
      weights[i] *= static_cast<double>(n) / sum;
      (weights[i] < 1.0 ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
      const auto s = small.back(), l = large.back();
      small.pop_back();
      probability_[s] = weights[s];
      alias_[s] = static_cast<int32_t>(l);
      weights[l] -= 1.0 - weights[s];
      if (weights[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    for (auto i : small) probability_[i] = 1.0;  // rounding leftovers
    for (auto i : large) probability_[i] = 1.0;
  }
  bool empty() const { return ids_.empty(); }
  int32_t draw(Random& random) const {
    const auto column = random.below(ids_.size());
    return ids_[random.uniform() < probability_[column] ? column : static_cast<size_t>(alias_[column])];
  }

 private:
  std::vector<int32_t> ids_;
  std::vector<double> probability_;
  std::vector<int32_t> alias_;
};

// Eight partial sums, so that the compiler can vectorise the sum without reordering it itself.
float dot_product(const float* a, const float* b, int64_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += a[k + j] * b[k + j];
  }
  float sum = 0.0f;
  for (; k < n; ++k) sum += a[k] * b[k];
  for (float p : partial) sum += p;
  return sum;
}

void check_options(const SkipGramOptions& options) {
  if (options.dimension < 1) fail("skip-gram: dimension {} must be positive", options.dimension);
  if (options.window < 1) fail("skip-gram: window {} must be positive", options.window);
  if (options.negatives < 1) fail("skip-gram: negatives {} must be positive", options.negatives);
  if (options.epochs < 1) fail("skip-gram: epochs {} must be positive", options.epochs);
  if (!(options.learning_rate > 0)) fail("skip-gram: learning rate {} must be positive", options.learning_rate);
  if (!(options.subsample >= 0)) fail("skip-gram: subsample {} must be 0 or more", options.subsample);
  if (options.min_count < 1) fail("skip-gram: min_count {} must be at least 1", options.min_count);
}

}  // namespace

WordVectors skip_gram(const PackedCorpus& corpus, int64_t vocab_size, const std::vector<int32_t>& ignored,
                      const SkipGramOptions& options) {
  check_options(options);
  if (vocab_size < 1) fail("skip-gram: vocabulary size {} must be positive", vocab_size);
  std::vector<bool> is_ignored(static_cast<size_t>(vocab_size), false);
  for (auto id : ignored) {
    if (id >= 0 && id < vocab_size) is_ignored[static_cast<size_t>(id)] = true;
  }
  std::vector<int64_t> counts(static_cast<size_t>(vocab_size), 0);
  for (const auto& block : corpus.blocks) {
    for (auto id : block) {
      if (id < 0 || id >= vocab_size) fail("skip-gram: token id {} is outside the vocabulary of {}", id, vocab_size);
      if (!is_ignored[static_cast<size_t>(id)]) ++counts[static_cast<size_t>(id)];
    }
  }
  int64_t total = 0;
  for (auto count : counts) {
    if (count >= options.min_count) total += count;
  }

  const auto dimension = options.dimension;
  Random random{options.seed};
  // Inputs start small and random, outputs at zero (word2vec's initialisation).
  std::vector<float> input(static_cast<size_t>(vocab_size * dimension), 0.0f);
  std::vector<float> output(static_cast<size_t>(vocab_size * dimension), 0.0f);
  for (int64_t id = 0; id < vocab_size; ++id) {
    if (counts[static_cast<size_t>(id)] < options.min_count) continue;
    for (int64_t k = 0; k < dimension; ++k) {
      input[static_cast<size_t>(id * dimension + k)] = static_cast<float>((random.uniform() - 0.5) / dimension);
    }
  }
  const NoiseDistribution noise(counts, options.min_count);

  // word2vec's subsampling: a token of frequency f is kept with probability (sqrt(f / t) + 1) t / f.
  std::vector<double> keep(static_cast<size_t>(vocab_size), 1.0);
  if (options.subsample > 0) {
    const double threshold = options.subsample * static_cast<double>(total);
    for (size_t id = 0; id < counts.size(); ++id) {
      if (counts[id] == 0) continue;
      const double count = static_cast<double>(counts[id]);
      keep[id] = std::min(1.0, (std::sqrt(count / threshold) + 1.0) * threshold / count);
    }
  }

  const double planned = static_cast<double>(total) * static_cast<double>(options.epochs) + 1.0;
  int64_t processed = 0;
  double rate = options.learning_rate;
  std::vector<float> gradient(static_cast<size_t>(dimension));
  std::vector<int32_t> sentence;
  if (!noise.empty()) {
    for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
      for (const auto& block : corpus.blocks) {
        sentence.clear();
        for (auto id : block) {
          const auto index = static_cast<size_t>(id);
          if (counts[index] < options.min_count) continue;  // ignored ids were never counted
          ++processed;
          if (keep[index] < 1.0 && random.uniform() >= keep[index]) continue;
          sentence.push_back(id);
        }
        rate = options.learning_rate * std::max(1e-4, 1.0 - static_cast<double>(processed) / planned);
        const auto length = static_cast<int64_t>(sentence.size());
        for (int64_t position = 0; position < length; ++position) {
          const auto center = sentence[static_cast<size_t>(position)];
          const auto width = options.window - static_cast<int64_t>(random.below(static_cast<uint64_t>(options.window)));
          const auto first = std::max<int64_t>(0, position - width);
          const auto last = std::min<int64_t>(length - 1, position + width);
          for (int64_t other = first; other <= last; ++other) {
            if (other == position) continue;
            float* context = &input[static_cast<size_t>(sentence[static_cast<size_t>(other)]) * dimension];
            std::fill(gradient.begin(), gradient.end(), 0.0f);
            for (int64_t draw = 0; draw <= options.negatives; ++draw) {
              int32_t target = center;
              float label = 1.0f;
              if (draw > 0) {
                target = noise.draw(random);
                if (target == center) continue;
                label = 0.0f;
              }
              float* target_vector = &output[static_cast<size_t>(target) * dimension];
              const float dot = dot_product(context, target_vector, dimension);
              const float step = static_cast<float>(rate) * (label - 1.0f / (1.0f + std::exp(-dot)));
              for (int64_t k = 0; k < dimension; ++k) {
                gradient[static_cast<size_t>(k)] += step * target_vector[k];
                target_vector[k] += step * context[k];
              }
            }
            for (int64_t k = 0; k < dimension; ++k) context[k] += gradient[static_cast<size_t>(k)];
          }
        }
      }
      log::info("skip_gram", fmt::format("skip-gram: epoch {} of {} done, learning rate {:.5f}", epoch + 1,
                                         options.epochs, rate),
                {{"epoch", epoch + 1}, {"learning_rate", rate}});
    }
  }

  WordVectors result;
  result.vectors = torch::from_blob(input.data(), {vocab_size, dimension}, torch::kFloat32).clone();
  result.counts = torch::from_blob(counts.data(), {vocab_size}, torch::kInt64).clone();
  result.min_count = options.min_count;
  return result;
}

int64_t set_word_embeddings(BertForMaskedLM& model, const WordVectors& vectors, double deviation) {
  auto& weight = model->bert->embeddings->word_embeddings->weight;
  if (!vectors.vectors.defined() || vectors.vectors.dim() != 2 || !vectors.counts.defined() ||
      vectors.counts.size(0) != vectors.vectors.size(0)) {
    fail("set_word_embeddings: expected vectors [vocab, dimension] and counts [vocab]");
  }
  if (vectors.vectors.sizes() != weight.sizes()) {
    fail("set_word_embeddings: vectors of shape [{}, {}] do not fit word embeddings of shape [{}, {}]",
         vectors.vectors.size(0), vectors.vectors.size(1), weight.size(0), weight.size(1));
  }
  if (!(deviation > 0)) fail("set_word_embeddings: standard deviation {} must be positive", deviation);
  const auto rows = (vectors.counts >= std::max<int64_t>(1, vectors.min_count)).nonzero().squeeze(1);
  if (rows.numel() < 2) return 0;
  torch::NoGradGuard no_grad;
  auto chosen = vectors.vectors.index_select(0, rows).to(torch::kFloat64);
  chosen = chosen - chosen.mean(0, true);
  chosen = chosen * (deviation / chosen.std().item<double>());
  weight.index_copy_(0, rows.to(weight.device()), chosen.to(weight.options()));
  return rows.numel();
}

}  // namespace ts::train
