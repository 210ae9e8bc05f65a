#pragma once
// Masked-LM pretraining pieces: text packed into fixed-length blocks, BERT's dynamic masking (optionally of whole
// words), and the loss on the masked positions.
//
// Everything random here is a function of (seed, step), not of a running generator, so an interrupted run that
// resumes at step s draws exactly the batches and masks the uninterrupted run drew.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/torch.h>

#include "model/bert.h"
#include "text/tokenizer.h"

namespace ts::train {

// Blocks of at most `max_length` token ids: [CLS] s1 [SEP] s2 [SEP] ... filled with whole texts while they fit (a
// text longer than a block is cut into pieces of max_length − 2 tokens, each its own block). Blocks are not padded.
struct PackedCorpus {
  std::vector<std::vector<int32_t>> blocks;
  int64_t tokens() const;
};

PackedCorpus pack_texts(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts, int64_t max_length,
                        int threads = 1);

// Splits off every k-th block (a deterministic, seeded choice of `fraction` of the blocks) for held-out evaluation.
void split_heldout(PackedCorpus& corpus, PackedCorpus& heldout, double fraction, uint64_t seed);

struct MaskingOptions {
  double probability = 0.15;   // share of (non-special) tokens, or of words, selected
  double mask_share = 0.8;     // of the selected: replaced by [MASK]
  double random_share = 0.1;   // of the selected: replaced by a random token (the rest keep their token)
  bool whole_word = false;     // select words (a token and the "##" pieces after it) instead of tokens

  // {probability = 0.15, mask_share = 0.8, random_share = 0.1, whole_word = false}; unknown keys are errors naming
  // `where`.
  static MaskingOptions from_json(const nlohmann::json& options, const std::string& where);
};

struct MaskedBatch {
  torch::Tensor input_ids;       // [B, T] int64, masked
  torch::Tensor attention_mask;  // [B, T] int64
  torch::Tensor labels;          // [B, T] int64: the original id where selected, −100 elsewhere
  torch::Tensor words;           // [B, T] int64: the original id of every text token, −100 at [CLS], [SEP], padding
};

// Masks the blocks `indices` of `corpus` as Hugging Face's DataCollatorForLanguageModeling (or ...ForWholeWordMask):
// each token (word) is selected with `probability`; [CLS], [SEP] and padding never are. `seed` fixes every draw.
class Masker {
 public:
  Masker(const text::Tokenizer& tokenizer, MaskingOptions options);
  MaskedBatch mask(const PackedCorpus& corpus, const std::vector<int64_t>& indices, uint64_t seed) const;

 private:
  MaskingOptions options_;
  int32_t cls_, sep_, pad_, mask_;
  int32_t vocab_size_;
  std::vector<bool> continuation_;  // per id: a "##" piece that continues the previous token's word
};

// Blocks of step `step` for batches of `batch_size` over `blocks` blocks: a seeded permutation per pass over the
// corpus, so step s of any run with the same seed reads the same blocks.
std::vector<int64_t> blocks_for_step(int64_t blocks, int64_t batch_size, int64_t step, uint64_t seed);

struct MaskedLMLoss {
  torch::Tensor loss;            // masked-LM loss, plus the weighted bag-of-words loss when asked for
  torch::Tensor masked_lm;       // mean cross-entropy over the masked positions
  torch::Tensor bag_of_words;    // mean cross-entropy of the block's words from [CLS] (undefined at weight 0)
  int64_t correct = 0;  // masked positions whose top prediction is the original token
  int64_t count = 0;    // masked positions
};

// The decoder runs on the masked positions only (the loss is the same as over all positions with −100 ignored, at a
// fraction of the vocabulary projection's cost).
//
// `bag_of_words_weight` > 0 adds a sentence-level task for [CLS], whose last-layer output masked-LM never trains:
// through the same prediction head, [CLS] predicts every word of its block (seen partly masked), the mean
// cross-entropy over the block's words. Fine-tuning classifies from [CLS], and a [CLS] trained only as a key for the
// other tokens attends to a few of them; this one has to gather the whole text. No new weights: the model keeps the
// BertForMaskedLM layout.
MaskedLMLoss masked_lm_loss(BertForMaskedLM& model, const MaskedBatch& batch, double bag_of_words_weight = 0.0);

// ELECTRA's discriminator head (ElectraDiscriminatorPredictions): dense (H to H), the model's activation, then
// dense_prediction (H to 1), the logit that a token was replaced. It is trained with the model but is no part of
// BertForMaskedLM, so the pretraining recipe keeps it in its checkpoint and leaves it out of the final model.
struct DetectionHeadImpl : torch::nn::Module {
  explicit DetectionHeadImpl(const BertConfig& config);  // initialised as BERT's weights (seed torch first)
  torch::Tensor forward(const torch::Tensor& hidden_states);  // [..., H] -> [...]

  std::string activation;
  torch::nn::Linear dense{nullptr}, dense_prediction{nullptr};
};
TORCH_MODULE(DetectionHead);

struct ReplacedTokenLoss {
  torch::Tensor loss;       // masked-LM + detection_weight x detection
  torch::Tensor masked_lm;  // cross-entropy of the original tokens at the selected positions, seen replaced
  torch::Tensor detection;  // mean binary cross-entropy of "replaced or original" over the blocks' tokens
  int64_t correct = 0;      // selected positions whose top prediction is the original token
  int64_t count = 0;        // selected positions
  int64_t detected = 0;     // tokens rightly called replaced or original
  int64_t tokens = 0;       // tokens (padding excluded)
  int64_t replaced = 0;     // tokens the generator changed
};

// ELECTRA's replaced-token detection (Clark et al., 2020) with a frozen generator.
//
// A generator (a masked-LM model, run without gradients in eval mode) fills every selected position of `batch` with
// a token sampled from its prediction (Gumbel-max, seeded by `seed`); the model reads the result and `head` tells,
// at every token, replaced from original (a sampled token equal to the original counts as original). Masked-LM
// learns from the 15% of positions it predicts; detection learns from all of them. The masked-LM loss at the
// selected positions (the original token, predicted from the replaced text) keeps the model's own head trained.
// A `temperature` above 1 flattens the generator's distribution: a weaker generator, whose replacements are easier
// to tell (ELECTRA trains its generator with the model, so that the task starts easy and gets harder).
ReplacedTokenLoss replaced_token_loss(BertForMaskedLM& model, DetectionHead& head, BertForMaskedLM& generator,
                                      const MaskedBatch& batch, double detection_weight, uint64_t seed,
                                      double temperature = 1.0);

}  // namespace ts::train
