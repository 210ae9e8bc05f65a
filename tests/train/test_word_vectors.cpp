// Skip-gram word vectors: tokens that share contexts end up close, the vectors are a function of the seed, rare and
// ignored tokens get none, and they go into a masked LM's word embeddings centred and scaled.
#include <catch2/catch.hpp>

#include "train/word_vectors.h"
#include <nlohmann/json.hpp>

using namespace ts;

namespace {

constexpr int32_t kCls = 1, kSep = 2;
constexpr int64_t kVocab = 40;

// Two topics that never meet: tokens 10..15 appear only with each other, tokens 20..25 likewise. Token 30 appears
// twice (under a min_count of 5), and every block has [CLS] ... [SEP].
train::PackedCorpus two_topics() {
  train::PackedCorpus corpus;
  uint64_t state = 7;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int32_t>((state >> 33) % 6);
  };
  for (int block = 0; block < 400; ++block) {
    const int32_t base = block % 2 == 0 ? 10 : 20;
    std::vector<int32_t> ids = {kCls};
    for (int i = 0; i < 12; ++i) ids.push_back(base + next());
    if (block < 2) ids.push_back(30);
    ids.push_back(kSep);
    corpus.blocks.push_back(ids);
  }
  return corpus;
}

train::SkipGramOptions small_options() {
  train::SkipGramOptions options;
  options.dimension = 16;
  options.window = 3;
  options.epochs = 3;
  options.subsample = 0;
  return options;
}

double cosine(const torch::Tensor& vectors, int64_t a, int64_t b) {
  return torch::cosine_similarity(vectors[a], vectors[b], 0).item<double>();
}

}  // namespace

TEST_CASE("skip-gram puts tokens that share contexts close together and apart from other topics") {
  const auto result = train::skip_gram(two_topics(), kVocab, {kCls, kSep, 0}, small_options());
  REQUIRE(result.vectors.sizes() == torch::IntArrayRef({kVocab, 16}));
  double within = 0, across = 0;
  int pairs = 0;
  for (int64_t a = 10; a < 16; ++a) {
    for (int64_t b = a + 1; b < 16; ++b) {
      within += cosine(result.vectors, a, b) + cosine(result.vectors, a + 10, b + 10);
      across += cosine(result.vectors, a, b + 10) + cosine(result.vectors, a + 10, b);
      pairs += 2;
    }
  }
  within /= pairs;
  across /= pairs;
  INFO("mean cosine within a topic " << within << ", across topics " << across);
  CHECK(within > 0.5);
  CHECK(across < 0.3);  // skip-gram vectors share a common direction, so unrelated tokens sit near 0.1, not below 0
}

TEST_CASE("skip-gram counts tokens, and leaves special and rare tokens without a vector") {
  const auto result = train::skip_gram(two_topics(), kVocab, {kCls, kSep, 0}, small_options());
  CHECK(result.counts[kCls].item<int64_t>() == 0);
  CHECK(result.counts[kSep].item<int64_t>() == 0);
  CHECK(result.counts[30].item<int64_t>() == 2);
  CHECK((result.counts.slice(0, 10, 16).sum() + result.counts.slice(0, 20, 26).sum()).item<int64_t>() == 400 * 12);
  CHECK(result.vectors[30].abs().sum().item<double>() == 0.0);
  CHECK(result.vectors[kCls].abs().sum().item<double>() == 0.0);
  CHECK(result.vectors[10].abs().sum().item<double>() > 0.0);
}

TEST_CASE("skip-gram's vectors are fixed by the seed") {
  auto options = small_options();
  options.subsample = 1e-2;  // the subsampling draws too
  const auto first = train::skip_gram(two_topics(), kVocab, {kCls, kSep}, options);
  const auto again = train::skip_gram(two_topics(), kVocab, {kCls, kSep}, options);
  CHECK(torch::equal(first.vectors, again.vectors));
  options.seed = 2;
  const auto other = train::skip_gram(two_topics(), kVocab, {kCls, kSep}, options);
  CHECK_FALSE(torch::equal(first.vectors, other.vectors));
}

TEST_CASE("skip-gram refuses bad options and ids outside the vocabulary") {
  const auto corpus = two_topics();
  auto options = small_options();
  options.dimension = 0;
  CHECK_THROWS_WITH(train::skip_gram(corpus, kVocab, {}, options), Catch::Contains("dimension"));
  options = small_options();
  options.window = 0;
  CHECK_THROWS_WITH(train::skip_gram(corpus, kVocab, {}, options), Catch::Contains("window"));
  options = small_options();
  options.learning_rate = -1;
  CHECK_THROWS_WITH(train::skip_gram(corpus, kVocab, {}, options), Catch::Contains("learning rate"));
  CHECK_THROWS_WITH(train::skip_gram(corpus, 26, {}, small_options()), Catch::Contains("outside the vocabulary of 26"));
}

TEST_CASE("word vectors go into a masked LM's word embeddings centred and scaled, other rows stay") {
  BertConfig config;
  config.vocab_size = kVocab;
  config.hidden_size = 16;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  torch::manual_seed(0);
  BertForMaskedLM model(config);
  const auto before = model->bert->embeddings->word_embeddings->weight.detach().clone();
  const auto vectors = train::skip_gram(two_topics(), kVocab, {kCls, kSep, 0}, small_options());

  CHECK(train::set_word_embeddings(model, vectors, 0.02) == 12);
  const auto after = model->bert->embeddings->word_embeddings->weight.detach();
  const auto rows = torch::cat({torch::arange(10, 16), torch::arange(20, 26)});
  const auto written = after.index_select(0, rows);
  CHECK(written.mean(0).abs().max().item<double>() < 1e-6);
  CHECK(written.std().item<double>() == Approx(0.02).epsilon(1e-4));
  // The same directions as the vectors, up to centring: the topics stay apart.
  CHECK(torch::cosine_similarity(after[10], after[11], 0).item<double>() > 0.5);
  CHECK(torch::cosine_similarity(after[10], after[21], 0).item<double>() < 0.3);
  // Rare, special and unused tokens keep their initialisation, and the decoder stays tied.
  for (int64_t id : {0, 1, 2, 5, 30, 39}) CHECK(torch::equal(after[id], before[id]));
  CHECK(model->cls->predictions->decoder_weight.data_ptr() == after.data_ptr());

  BertConfig wider = config;
  wider.hidden_size = 32;
  BertForMaskedLM other(wider);
  CHECK_THROWS_WITH(train::set_word_embeddings(other, vectors, 0.02), Catch::Contains("do not fit"));
  CHECK_THROWS_WITH(train::set_word_embeddings(model, vectors, 0.0), Catch::Contains("standard deviation"));
}

TEST_CASE("skip-gram options are read strictly") {
  using nlohmann::json;
  const auto options = train::SkipGramOptions::from_json(
      json{{"dimension", 32}, {"window", 2}, {"negatives", 3}, {"epochs", 1}, {"lr", 0.05}, {"subsample", 0},
           {"min_count", 1}, {"seed", 8}},
      "corpus:word_vectors");
  CHECK(options.dimension == 32);
  CHECK(options.window == 2);
  CHECK(options.negatives == 3);
  CHECK(options.epochs == 1);
  CHECK(options.learning_rate == 0.05);
  CHECK(options.subsample == 0);
  CHECK(options.min_count == 1);
  CHECK(options.seed == 8u);
  CHECK(train::SkipGramOptions::from_json(nullptr, "corpus:word_vectors").dimension == 256);
  CHECK_THROWS_WITH(train::SkipGramOptions::from_json(json{{"dim", 8}}, "corpus:word_vectors"),
                    Catch::Contains("corpus:word_vectors: unknown option 'dim'"));
  CHECK_THROWS_WITH(train::SkipGramOptions::from_json(json{{"window", 1.5}}, "corpus:word_vectors"),
                    Catch::Contains("option 'window' expects an integer"));
}
