// Masked-LM pretraining pieces: packing, masking statistics and rules, step-determined batches, and the loss on
// masked positions against the loss over every position.
#include <catch2/catch.hpp>
#include <set>

#include "train/mlm.h"
#include <nlohmann/json.hpp>

using namespace ts;

namespace {

const text::Tokenizer& tokenizer() {
  static const auto instance = text::Tokenizer::from_path("../shared/data/vocab/bert-base-uncased");
  return instance;
}

// A one-layer, 16-wide masked LM over the real vocabulary, in eval mode, and two blocks masked at 50%.
struct TinyCase {
  BertForMaskedLM model{nullptr};
  train::PackedCorpus corpus;
  train::MaskedBatch batch;
};

TinyCase tiny_case() {
  const auto& tok = tokenizer();
  BertConfig config;
  config.vocab_size = tok.vocab_size();
  config.hidden_size = 16;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  torch::manual_seed(0);
  TinyCase out;
  out.model = BertForMaskedLM(config);
  out.model->eval();
  out.corpus = train::pack_texts(tok, {"a good film", "a bad film with a thin plot", "fine"}, 8);
  out.batch = train::Masker(tok, {0.5, 0.8, 0.1, false}).mask(out.corpus, {0, 1}, 3);
  return out;
}

}  // namespace

TEST_CASE("texts are packed into [CLS] a [SEP] b [SEP] blocks, and long texts are cut into pieces") {
  const auto& tok = tokenizer();
  const std::vector<std::string> texts = {"a good film", "bad", "", "the plot is thin"};
  const auto corpus = train::pack_texts(tok, texts, 8);
  // "a good film" (3) fits with [CLS] and [SEP]; "bad" (1) joins it: 1 + 4 + 2 = 7; "the plot is thin" (4) does not.
  REQUIRE(corpus.blocks.size() == 2);
  CHECK(corpus.blocks[0] == std::vector<int32_t>{tok.cls_id(), tok.token_to_id("a"), tok.token_to_id("good"),
                                                 tok.token_to_id("film"), tok.sep_id(), tok.token_to_id("bad"),
                                                 tok.sep_id()});
  CHECK(corpus.blocks[1].size() == 6);
  CHECK(corpus.tokens() == 13);

  const auto long_text = train::pack_texts(tok, {"one two three four five six seven eight nine ten eleven"}, 8);
  REQUIRE(long_text.blocks.size() == 2);  // 11 words in pieces of 6
  CHECK(long_text.blocks[0].size() == 8);
  CHECK(long_text.blocks[1].size() == 7);
  CHECK(long_text.blocks[1].front() == tok.cls_id());
  CHECK(long_text.blocks[1].back() == tok.sep_id());
}

TEST_CASE("dynamic masking selects 15% of tokens, 80/10/10, never special tokens, and is fixed by its seed") {
  const auto& tok = tokenizer();
  std::vector<std::string> texts;
  for (int i = 0; i < 400; ++i) texts.push_back("the quick brown fox jumps over the lazy dog near the river bank today");
  const auto corpus = train::pack_texts(tok, texts, 128);
  std::vector<int64_t> all(corpus.blocks.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  const train::Masker masker(tok, {});
  const auto batch = masker.mask(corpus, all, 7);

  const auto original = batch.labels.ne(-100);
  const auto selected = original.sum().item<int64_t>();
  int64_t specials = 0, maskable = 0, masked = 0, kept = 0;
  for (const auto index : all)
    for (const auto id : corpus.blocks[static_cast<size_t>(index)]) {
      const bool special = id == tok.cls_id() || id == tok.sep_id();
      specials += special;
      maskable += !special;
    }
  const auto inputs = batch.input_ids.masked_select(original);
  const auto targets = batch.labels.masked_select(original);
  masked = inputs.eq(tok.mask_id()).sum().item<int64_t>();
  kept = inputs.eq(targets).sum().item<int64_t>();
  INFO("selected " << selected << " of " << maskable);
  CHECK(std::abs(static_cast<double>(selected) / maskable - 0.15) < 0.01);
  CHECK(std::abs(static_cast<double>(masked) / selected - 0.8) < 0.03);
  CHECK(std::abs(static_cast<double>(kept) / selected - 0.1) < 0.03);  // kept, plus the odd random draw of itself
  // Special tokens and padding are never selected.
  const auto special_positions =
      batch.input_ids.eq(tok.cls_id()).logical_or(batch.input_ids.eq(tok.sep_id())).logical_or(batch.attention_mask.eq(0));
  CHECK(batch.labels.masked_select(special_positions).eq(-100).all().item<bool>());
  CHECK(specials > 0);

  CHECK(masker.mask(corpus, all, 7).input_ids.equal(batch.input_ids));
  CHECK_FALSE(masker.mask(corpus, all, 8).input_ids.equal(batch.input_ids));
}

TEST_CASE("whole-word masking selects a word's ## pieces with it") {
  const auto& tok = tokenizer();
  std::vector<std::string> texts(200, "unbelievably tokenization embeddings");
  const auto corpus = train::pack_texts(tok, texts, 128);
  std::vector<int64_t> all(corpus.blocks.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  train::MaskingOptions options;
  options.whole_word = true;
  options.probability = 0.3;
  const auto batch = train::Masker(tok, options).mask(corpus, all, 1);
  const auto labels = batch.labels.contiguous();
  int64_t words_checked = 0;
  for (int64_t r = 0; r < labels.size(0); ++r) {
    const auto& block = corpus.blocks[static_cast<size_t>(r)];
    for (size_t t = 1; t < block.size(); ++t) {
      if (tok.id_to_token(block[t]).rfind("##", 0) != 0) continue;
      CHECK((labels[r][static_cast<int64_t>(t)].item<int64_t>() == -100) ==
            (labels[r][static_cast<int64_t>(t) - 1].item<int64_t>() == -100));
      ++words_checked;
    }
  }
  CHECK(words_checked > 100);
}

TEST_CASE("each pass over the corpus visits every block once, in an order fixed by seed and pass") {
  const int64_t blocks = 10, batch_size = 3;  // 3 batches a pass; the 10th block waits for another pass
  std::set<int64_t> seen;
  for (int64_t step = 0; step < 3; ++step)
    for (const auto block : train::blocks_for_step(blocks, batch_size, step, 5)) CHECK(seen.insert(block).second);
  CHECK(seen.size() == 9);
  CHECK(train::blocks_for_step(blocks, batch_size, 4, 5) == train::blocks_for_step(blocks, batch_size, 4, 5));
  CHECK(train::blocks_for_step(blocks, batch_size, 0, 5) != train::blocks_for_step(blocks, batch_size, 3, 5));
}

TEST_CASE("the loss on masked positions equals cross-entropy over all positions with the rest ignored") {
  auto [model, corpus, batch] = tiny_case();
  const auto result = train::masked_lm_loss(model, batch);
  const auto logits = model->forward(batch.input_ids, batch.attention_mask).logits;
  const auto expected = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), batch.labels.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  CHECK(result.count == batch.labels.ne(-100).sum().item<int64_t>());
  CHECK(result.count > 0);
  CHECK(result.loss.item<double>() == Approx(expected.item<double>()).epsilon(1e-5));
}

TEST_CASE("the bag-of-words loss is the [CLS] prediction's cross-entropy over every original word of the block") {
  const auto& tok = tokenizer();
  auto [model, corpus, batch] = tiny_case();
  const auto cls_log_probabilities =
      torch::log_softmax(model->forward(batch.input_ids, batch.attention_mask).logits.select(1, 0), -1);
  double total = 0;
  int64_t words = 0;
  for (int64_t row = 0; row < 2; ++row) {
    const auto& block = corpus.blocks[static_cast<size_t>(row)];
    for (size_t t = 0; t < block.size(); ++t) {
      const bool special = block[t] == tok.cls_id() || block[t] == tok.sep_id();
      // the original token, whatever the masking made of the input
      CHECK(batch.words[row][static_cast<int64_t>(t)].item<int64_t>() == (special ? -100 : block[t]));
      if (special) continue;
      total -= cls_log_probabilities[row][block[t]].item<double>();
      ++words;
    }
  }
  REQUIRE(words > 0);
  const auto result = train::masked_lm_loss(model, batch, 0.5);
  const auto masked_lm_only = train::masked_lm_loss(model, batch);
  CHECK(result.bag_of_words.item<double>() == Approx(total / static_cast<double>(words)).epsilon(1e-5));
  CHECK(result.loss.item<double>() ==
        Approx(masked_lm_only.loss.item<double>() + 0.5 * total / static_cast<double>(words)).epsilon(1e-5));
  CHECK_FALSE(masked_lm_only.bag_of_words.defined());
  CHECK_THROWS_WITH(train::masked_lm_loss(model, batch, -1.0), Catch::Contains("must be >= 0"));
}

TEST_CASE("replaced-token detection: the generator's draws replace the selected tokens, the head scores them all") {
  auto [model, corpus, batch] = tiny_case();
  train::DetectionHead head(model->config);
  // A generator that always proposes "plot": its decoder bias leaves no other token a chance.
  auto generator = tiny_case().model;
  const int64_t proposal = tokenizer().token_to_id("plot");
  {
    torch::NoGradGuard no_grad;
    generator->cls->predictions->bias.fill_(-1e4);
    generator->cls->predictions->bias[proposal].fill_(1e4);
  }
  const auto result = train::replaced_token_loss(model, head, generator, batch, 2.0, 11);

  const auto selected = batch.labels.ne(-100);
  const auto original = torch::where(selected, batch.labels, batch.input_ids);
  const auto seen = torch::where(selected, torch::full_like(batch.input_ids, proposal), batch.input_ids);
  const auto outputs = model->forward(seen, batch.attention_mask);
  const auto real = batch.attention_mask.ne(0);
  const auto scores = head(outputs.last_hidden_state).masked_select(real);
  const auto is_replaced = seen.ne(original).masked_select(real);
  const auto detection = torch::binary_cross_entropy_with_logits(scores, is_replaced.to(torch::kFloat));
  const auto masked_lm =
      torch::nn::functional::cross_entropy(outputs.logits.index({selected}), batch.labels.index({selected}));

  REQUIRE(result.count == selected.sum().item<int64_t>());
  REQUIRE(result.count > 0);
  CHECK(result.tokens == real.sum().item<int64_t>());
  CHECK(result.tokens < batch.attention_mask.numel());  // the shorter block is padded, and padding is not scored
  CHECK(result.replaced == (selected & original.ne(proposal)).sum().item<int64_t>());
  CHECK(result.replaced > 0);
  CHECK(result.replaced < result.tokens);
  CHECK(result.detected == scores.gt(0).eq(is_replaced).sum().item<int64_t>());
  CHECK(result.detection.item<double>() == Approx(detection.item<double>()).epsilon(1e-5));
  CHECK(result.masked_lm.item<double>() == Approx(masked_lm.item<double>()).epsilon(1e-5));
  CHECK(result.loss.item<double>() ==
        Approx(masked_lm.item<double>() + 2.0 * detection.item<double>()).epsilon(1e-5));
}

TEST_CASE("the generator's draws are fixed by the seed, and only the model and the head learn") {
  auto [model, corpus, batch] = tiny_case();
  train::DetectionHead head(model->config);
  auto generator = tiny_case().model;
  generator->train();
  const auto first = train::replaced_token_loss(model, head, generator, batch, 50.0, 7);
  const auto again = train::replaced_token_loss(model, head, generator, batch, 50.0, 7);
  const auto other = train::replaced_token_loss(model, head, generator, batch, 50.0, 8);
  CHECK(first.loss.item<double>() == again.loss.item<double>());
  CHECK(first.replaced == again.replaced);
  CHECK(first.loss.item<double>() != other.loss.item<double>());
  {
    // A generator that proposes "plot" 84% of the time at temperature 1, and almost never at 4.
    torch::NoGradGuard no_grad;
    generator->cls->predictions->bias[tokenizer().token_to_id("plot")].fill_(12.0);
  }
  const auto sharp = train::replaced_token_loss(model, head, generator, batch, 50.0, 7);
  const auto flat = train::replaced_token_loss(model, head, generator, batch, 50.0, 7, 4.0);
  CHECK(sharp.loss.item<double>() != flat.loss.item<double>());
  CHECK(generator->is_training());  // its mode is left as it was

  first.loss.backward();
  for (const auto& parameter : model->parameters()) CHECK(parameter.grad().defined());
  for (const auto& parameter : head->parameters()) CHECK(parameter.grad().defined());
  for (const auto& parameter : generator->parameters()) CHECK_FALSE(parameter.grad().defined());

  CHECK_THROWS_WITH(train::replaced_token_loss(model, head, generator, batch, -1.0, 7),
                    Catch::Contains("must be >= 0"));
  CHECK_THROWS_WITH(train::replaced_token_loss(model, head, generator, batch, 1.0, 7, 0.0),
                    Catch::Contains("temperature 0 must be > 0"));
  auto config = model->config;
  config.vocab_size = 100;
  BertForMaskedLM small_vocabulary(config);
  CHECK_THROWS_WITH(train::replaced_token_loss(model, head, small_vocabulary, batch, 1.0, 7),
                    Catch::Contains("generator's vocabulary has 100 tokens"));
}

TEST_CASE("masking options are read strictly") {
  using nlohmann::json;
  const auto options = train::MaskingOptions::from_json(
      json{{"probability", 0.2}, {"mask_share", 0.5}, {"random_share", 0.25}, {"whole_word", true}}, "ts.masker");
  CHECK(options.probability == 0.2);
  CHECK(options.mask_share == 0.5);
  CHECK(options.random_share == 0.25);
  CHECK(options.whole_word);
  CHECK(train::MaskingOptions::from_json(nullptr, "ts.masker").probability == 0.15);
  CHECK_THROWS_WITH(train::MaskingOptions::from_json(json{{"prob", 0.15}}, "ts.masker"),
                    "ts.masker: unknown option 'prob' (known: probability, mask_share, random_share, whole_word)");
  CHECK_THROWS_WITH(train::MaskingOptions::from_json(json{{"whole_word", 1}}, "ts.masker"),
                    Catch::Contains("option 'whole_word' expects a boolean"));
}
