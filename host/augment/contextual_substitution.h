#pragma once
// Contextual substitution (Kobayashi 2018; nlpaug's ContextualWordEmbsAug, action "substitute"): a text is
// augmented by masking a fraction of its words, all at once, and replacing each with a token that a BERT masked-LM
// head predicts there. Offline: it needs no API, only a BertForMaskedLM checkpoint and its vocabulary.
//
//   auto augmenter = ts::ContextualSubstitution::load("data/models/bert-mlm", /*seed=*/42);
//   for (auto& variant : augmenter.augment("a gripping , well-acted film .", 3)) use(variant);
//
// Words are the whitespace-separated chunks of the text with their leading and trailing ASCII punctuation left out
// ("film," is the word "film" and a comma that stays). A word must hold a letter or digit to be chosen. Each masked
// word becomes exactly one [MASK] token, however many WordPiece pieces it had, and its replacement is one whole
// vocabulary token: never a special token ([CLS], [unused0], ...), never a "##" continuation piece, never a token
// without a letter or digit, and never the word itself. Everything else in the text (spacing, punctuation, the other
// words) is kept byte for byte. With a lower-casing tokenizer, a replacement takes the case pattern of the word it
// replaces ("Movie" -> "Film", "USA" -> "UK").
//
// Randomness (which words, which of the top-k tokens) comes from one seeded std::mt19937_64, so the same seed and
// the same sequence of calls give the same outputs. The model runs in eval mode without gradients.
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/torch.h>

#include "model/bert.h"
#include "text/tokenizer.h"

namespace ts::augment {

struct ContextualSubstitutionOptions {
  double fraction = 0.15;    // share of the eligible words replaced: round(fraction * words), at least 1
  int top_k = 10;            // sample among the k most likely allowed tokens; 1 takes the most likely
  double temperature = 1.0;  // of the softmax over those k logits
  int max_length = 128;      // tokens per sequence, [CLS] and [SEP] included (at most the model's positions);
                             // words beyond are never masked
  int batch_size = 32;       // sequences per forward pass
};

// What a recipe's masked-LM augmenter is made with: the model folder, its generator's seed, the options, the device.
struct ContextualSubstitutionConfig {
  std::filesystem::path model;  // a Hugging Face BertForMaskedLM folder
  std::uint64_t seed = 42;
  ContextualSubstitutionOptions options;
  std::string device = "cpu";

  // {model = DIR (required), fraction = 0.15, top_k = 10, temperature = 1, seed = 42, max_length = 128,
  //  batch_size = 32, device = "cpu"}; unknown keys are errors naming `where`.
  static ContextualSubstitutionConfig from_json(const nlohmann::json& options, const std::string& where);
};

class ContextualSubstitution {
 public:
  // A word's byte span [begin, end) in its text.
  struct Word {
    std::size_t begin = 0;
    std::size_t end = 0;
  };

  // `model` stays on its device; inputs are moved there.
  ContextualSubstitution(BertForMaskedLM model, text::Tokenizer tokenizer, std::uint64_t seed,
                         ContextualSubstitutionOptions options = {});
  // A Hugging Face BertForMaskedLM folder (config.json, model.safetensors, vocab.txt).
  static ContextualSubstitution load(const std::filesystem::path& folder, std::uint64_t seed,
                                     ContextualSubstitutionOptions options = {},
                                     torch::Device device = torch::kCPU);

  // `n` variants of `text`, each with its own random choice of words (variants may coincide). Empty when the text
  // has no eligible word.
  std::vector<std::string> augment(std::string_view text, int n);
  // Many texts at once, batched: result[i] holds the variants of texts[i].
  std::vector<std::vector<std::string>> augment(const std::vector<std::string>& texts, int n);

  // The candidate words of `text` (see the header comment), in order.
  static std::vector<Word> words(std::string_view text);
  // Whether the model may put token `id` in place of a word (before excluding the word itself).
  bool allowed(std::int32_t id) const { return allowed_ids_.at(static_cast<std::size_t>(id)); }
  const ContextualSubstitutionOptions& options() const { return options_; }
  const text::Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  struct Masked;  // one variant being built: its token ids, masked words and their positions
  Masked mask_words(std::string_view text, const std::vector<Word>& words, std::size_t max_maskable);
  void predict(std::vector<Masked>& batch);
  std::string render(std::string_view text, const Masked& masked) const;
  std::string match_case(std::string_view original, const std::string& token) const;
  std::size_t index_below(std::size_t n);
  double unit();

  BertForMaskedLM model_;
  text::Tokenizer tokenizer_;
  ContextualSubstitutionOptions options_;
  std::mt19937_64 rng_;
  std::vector<bool> allowed_ids_;
  torch::Tensor disallowed_;  // [vocab] bool on the model's device: true where a token may never be chosen
};

}  // namespace ts::augment
