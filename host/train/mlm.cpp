#include "train/mlm.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "core/options.h"
#include "data/sampling.h"

namespace ts::train {

MaskingOptions MaskingOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"probability", "mask_share", "random_share", "whole_word"});
  MaskingOptions options;
  options.probability = read.number("probability").value_or(options.probability);
  options.mask_share = read.number("mask_share").value_or(options.mask_share);
  options.random_share = read.number("random_share").value_or(options.random_share);
  options.whole_word = read.boolean("whole_word").value_or(options.whole_word);
  return options;
}

int64_t PackedCorpus::tokens() const {
  int64_t total = 0;
  for (const auto& block : blocks) total += static_cast<int64_t>(block.size());
  return total;
}

PackedCorpus pack_texts(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts, int64_t max_length,
                        int threads) {
  if (max_length < 8) fail("pack_texts: max_length {} is too short for a block", max_length);
  const auto encodings = tokenizer.encode_batch(texts, nullptr, 0, threads);
  const auto cls = tokenizer.cls_id(), sep = tokenizer.sep_id();
  const auto room = static_cast<size_t>(max_length - 2);
  PackedCorpus corpus;
  std::vector<int32_t> block = {cls};
  auto flush = [&] {
    if (block.size() > 1) corpus.blocks.push_back(block);
    block.assign(1, cls);
  };
  for (const auto& encoding : encodings) {
    // The encoding is [CLS] text [SEP]; the text alone is in between.
    const auto begin = encoding.ids.begin() + 1, end = encoding.ids.end() - 1;
    const auto length = static_cast<size_t>(end - begin);
    if (length == 0) continue;
    if (length > room) {
      flush();
      for (auto piece = begin; piece < end;) {
        const auto piece_end = piece + std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(room), end - piece);
        block.insert(block.end(), piece, piece_end);
        block.push_back(sep);
        flush();
        piece = piece_end;
      }
      continue;
    }
    if (block.size() + length + 1 > static_cast<size_t>(max_length)) flush();
    block.insert(block.end(), begin, end);
    block.push_back(sep);
  }
  flush();
  return corpus;
}

void split_heldout(PackedCorpus& corpus, PackedCorpus& heldout, double fraction, uint64_t seed) {
  if (!(fraction >= 0 && fraction < 1)) fail("held-out fraction {} must be in [0, 1)", fraction);
  const auto count = static_cast<int64_t>(corpus.blocks.size());
  const auto take = static_cast<int64_t>(static_cast<double>(count) * fraction);
  data::NumpyRandomState random(data::derive_seed(seed, -1));
  auto chosen = random.choice_without_replacement(count, take);
  std::sort(chosen.begin(), chosen.end());
  std::vector<bool> is_heldout(static_cast<size_t>(count), false);
  for (const auto index : chosen) is_heldout[static_cast<size_t>(index)] = true;
  PackedCorpus kept;
  for (int64_t i = 0; i < count; ++i)
    (is_heldout[static_cast<size_t>(i)] ? heldout : kept).blocks.push_back(std::move(corpus.blocks[static_cast<size_t>(i)]));
  corpus = std::move(kept);
}

Masker::Masker(const text::Tokenizer& tokenizer, MaskingOptions options)
    : options_(options),
      cls_(tokenizer.cls_id()),
      sep_(tokenizer.sep_id()),
      pad_(tokenizer.pad_id()),
      mask_(tokenizer.mask_id()),
      vocab_size_(static_cast<int32_t>(tokenizer.vocab_size())) {
  if (!(options.probability > 0 && options.probability < 1))
    fail("masking probability {} must be in (0, 1)", options.probability);
  if (options.mask_share < 0 || options.random_share < 0 || options.mask_share + options.random_share > 1)
    fail("mask share {} and random share {} must be >= 0 and sum to at most 1", options.mask_share,
         options.random_share);
  continuation_.resize(static_cast<size_t>(vocab_size_));
  for (int32_t id = 0; id < vocab_size_; ++id) continuation_[static_cast<size_t>(id)] = tokenizer.id_to_token(id).rfind("##", 0) == 0;
}

MaskedBatch Masker::mask(const PackedCorpus& corpus, const std::vector<int64_t>& indices, uint64_t seed) const {
  size_t longest = 0;
  for (const auto index : indices) {
    if (index < 0 || index >= static_cast<int64_t>(corpus.blocks.size()))
      fail("block {} is outside the corpus ({} blocks)", index, corpus.blocks.size());
    longest = std::max(longest, corpus.blocks[static_cast<size_t>(index)].size());
  }
  const auto rows = static_cast<int64_t>(indices.size()), width = static_cast<int64_t>(longest);
  auto input_ids = torch::full({rows, width}, static_cast<int64_t>(pad_), torch::kLong);
  auto attention_mask = torch::zeros({rows, width}, torch::kLong);
  auto labels = torch::full({rows, width}, int64_t{-100}, torch::kLong);
  auto words = torch::full({rows, width}, int64_t{-100}, torch::kLong);
  auto* ids = input_ids.data_ptr<int64_t>();
  auto* mask = attention_mask.data_ptr<int64_t>();
  auto* label = labels.data_ptr<int64_t>();
  auto* word = words.data_ptr<int64_t>();

  std::mt19937_64 random(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int32_t> any_token(0, vocab_size_ - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const auto& block = corpus.blocks[static_cast<size_t>(indices[static_cast<size_t>(r)])];
    int64_t* row_ids = ids + r * width;
    int64_t* row_labels = label + r * width;
    bool word_selected = false;
    for (size_t t = 0; t < block.size(); ++t) {
      const int32_t token = block[t];
      row_ids[t] = token;
      mask[r * width + static_cast<int64_t>(t)] = 1;
      if (token == cls_ || token == sep_ || token == pad_) {
        word_selected = false;
        continue;
      }
      word[r * width + static_cast<int64_t>(t)] = token;
      // A "##" piece follows its word's choice under whole-word masking; otherwise every token draws.
      const bool continues = options_.whole_word && continuation_[static_cast<size_t>(token)] && t > 0;
      const bool selected = continues ? word_selected : uniform(random) < options_.probability;
      word_selected = selected;
      if (!selected) continue;
      row_labels[t] = token;
      const double action = uniform(random);
      if (action < options_.mask_share)
        row_ids[t] = mask_;
      else if (action < options_.mask_share + options_.random_share)
        row_ids[t] = any_token(random);
    }
  }
  return {input_ids, attention_mask, labels, words};
}

std::vector<int64_t> blocks_for_step(int64_t blocks, int64_t batch_size, int64_t step, uint64_t seed) {
  if (blocks < 1) fail("the corpus has no blocks");
  if (batch_size < 1) fail("batch size {} must be at least 1", batch_size);
  const int64_t batches_per_pass = std::max<int64_t>(1, blocks / batch_size);  // the incomplete last batch is dropped
  const int64_t pass = step / batches_per_pass, position = step % batches_per_pass;
  data::NumpyRandomState random(data::derive_seed(seed, pass));
  const auto order = random.permutation(blocks);
  std::vector<int64_t> out;
  for (int64_t i = position * batch_size; i < std::min(blocks, (position + 1) * batch_size); ++i)
    out.push_back(order[static_cast<size_t>(i)]);
  return out;
}

namespace {

// Masked-LM cross-entropy of the labels at the `selected` rows of [tokens, H] hidden states, and how many of them the
// top prediction gets right. With nothing selected, a zero that keeps the graph.
std::pair<torch::Tensor, int64_t> selected_positions_loss(BertForMaskedLM& model, const torch::Tensor& hidden,
                                                          const torch::Tensor& labels, const torch::Tensor& selected) {
  if (selected.numel() == 0) return {hidden.sum() * 0.0, 0};
  const auto logits = model->cls(hidden.index_select(0, selected));
  const auto targets = labels.index_select(0, selected);
  return {torch::nn::functional::cross_entropy(logits, targets), logits.argmax(-1).eq(targets).sum().item<int64_t>()};
}

}  // namespace

MaskedLMLoss masked_lm_loss(BertForMaskedLM& model, const MaskedBatch& batch, double bag_of_words_weight) {
  if (bag_of_words_weight < 0) fail("bag-of-words weight {} must be >= 0", bag_of_words_weight);
  const auto device = model->parameters().front().device();
  const auto hidden =
      model->bert->forward(batch.input_ids.to(device), batch.attention_mask.to(device)).last_hidden_state;
  const auto labels = batch.labels.to(device).reshape({-1});
  const auto selected = labels.ne(-100).nonzero().squeeze(1);
  MaskedLMLoss out;
  out.count = selected.numel();
  std::tie(out.masked_lm, out.correct) =
      selected_positions_loss(model, hidden.reshape({-1, hidden.size(-1)}), labels, selected);
  out.loss = out.masked_lm;
  if (bag_of_words_weight > 0) {
    if (!batch.words.defined()) fail("the batch has no words for the bag-of-words loss");
    const auto words = batch.words.to(device);
    const auto log_probabilities = torch::log_softmax(model->cls(hidden.select(1, 0)), -1);  // [B, V] from [CLS]
    out.bag_of_words = -log_probabilities.gather(1, words.clamp_min(0)).masked_select(words.ne(-100)).mean();
    out.loss = out.loss + bag_of_words_weight * out.bag_of_words;
  }
  return out;
}

DetectionHeadImpl::DetectionHeadImpl(const BertConfig& config) : activation(config.hidden_act) {
  dense = register_module("dense", torch::nn::Linear(config.hidden_size, config.hidden_size));
  dense_prediction = register_module("dense_prediction", torch::nn::Linear(config.hidden_size, 1));
  init_bert_weights(*this, config);
}

torch::Tensor DetectionHeadImpl::forward(const torch::Tensor& hidden_states) {
  return dense_prediction(bert_activation(activation, dense(hidden_states))).squeeze(-1);
}

ReplacedTokenLoss replaced_token_loss(BertForMaskedLM& model, DetectionHead& head, BertForMaskedLM& generator,
                                      const MaskedBatch& batch, double detection_weight, uint64_t seed,
                                      double temperature) {
  if (detection_weight < 0) fail("replaced-token detection weight {} must be >= 0", detection_weight);
  if (!(temperature > 0)) fail("generator temperature {} must be > 0", temperature);
  if (generator->config.vocab_size != model->config.vocab_size)
    fail("the generator's vocabulary has {} tokens, the model's {}", generator->config.vocab_size,
         model->config.vocab_size);
  const auto device = model->parameters().front().device();
  const auto input_ids = batch.input_ids.to(device);
  const auto attention_mask = batch.attention_mask.to(device);
  const auto labels = batch.labels.to(device).reshape({-1});
  const auto selected = labels.ne(-100).nonzero().squeeze(1);
  const auto original = torch::where(labels.ne(-100), labels, input_ids.reshape({-1}));

  auto seen = input_ids.reshape({-1}).clone();
  if (selected.numel() > 0) {
    torch::NoGradGuard no_grad;
    const bool was_training = generator->is_training();
    generator->eval();
    const auto generator_device = generator->parameters().front().device();
    const auto hidden = generator->bert->forward(input_ids.to(generator_device), attention_mask.to(generator_device))
                            .last_hidden_state;
    const auto logits =
        generator->cls(hidden.reshape({-1, hidden.size(-1)}).index_select(0, selected.to(generator_device)));
    // Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits). The noise has its own generator, so
    // the draws depend on the seed alone, as the masks do.
    auto noise_generator = at::detail::createCPUGenerator(seed);
    const auto uniform = torch::rand(logits.sizes(), noise_generator, torch::kFloat32);
    const auto gumbel = -torch::log(-torch::log(uniform));
    seen.index_put_({selected}, (logits.to(torch::kCPU) / temperature + gumbel).argmax(-1).to(device));
    generator->train(was_training);
  }
  const auto real = attention_mask.reshape({-1}).ne(0).nonzero().squeeze(1);

  const auto hidden =
      model->bert->forward(seen.reshape(input_ids.sizes()), attention_mask).last_hidden_state;
  const auto flat = hidden.reshape({-1, hidden.size(-1)});
  ReplacedTokenLoss out;
  out.count = selected.numel();
  std::tie(out.masked_lm, out.correct) = selected_positions_loss(model, flat, labels, selected);
  const auto scores = head(flat.index_select(0, real));
  const auto is_replaced = seen.ne(original).index_select(0, real);
  out.detection = torch::binary_cross_entropy_with_logits(scores, is_replaced.to(scores.dtype()));
  out.tokens = real.numel();
  out.replaced = is_replaced.sum().item<int64_t>();
  out.detected = scores.gt(0).eq(is_replaced).sum().item<int64_t>();
  out.loss = out.masked_lm + detection_weight * out.detection;
  return out;
}

}  // namespace ts::train
