#pragma once
// Word vectors from the pretraining corpus itself, to start masked-LM from: skip-gram with negative sampling
// (word2vec; Mikolov et al., 2013) over the corpus's WordPiece ids.
//
// Why: on a few million tokens and a few hours of two cores, masked-LM learns topic and syntax but puts little of a
// word's meaning into its embedding, and a randomly initialised model fine-tuned on a labelled set learns its words
// as fast. Skip-gram learns a vector for every frequent token in minutes, and vectors like these are what lifted
// classifiers above random embeddings on sentiment tasks before BERT (Kim, 2014). Masked-LM then starts from them.
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "model/bert.h"
#include "train/mlm.h"

namespace ts::train {

struct SkipGramOptions {
  int64_t dimension = 256;
  int64_t window = 5;         // context up to this many tokens either side (the width drawn per token, as word2vec)
  int64_t negatives = 5;      // noise tokens per (token, context) pair, drawn from unigram counts to the power 0.75
  int64_t epochs = 5;
  double learning_rate = 0.025;  // decays linearly to 1e-4 of itself over the epochs
  double subsample = 1e-4;       // frequent tokens are skipped with word2vec's probability (0: never)
  int64_t min_count = 5;         // tokens seen fewer times get no vector
  uint64_t seed = 1;

  // {dimension = 256, window = 5, negatives = 5, epochs = 5, lr = 0.025, subsample = 1e-4, min_count = 5, seed = 1};
  // unknown keys are errors naming `where`.
  static SkipGramOptions from_json(const nlohmann::json& options, const std::string& where);
};

struct WordVectors {
  torch::Tensor vectors;  // [vocab, dimension] float32; rows of tokens under min_count are zero
  torch::Tensor counts;   // [vocab] int64: occurrences in the corpus
  int64_t min_count = 0;
};

// Trains on the corpus's blocks, each block a sentence; `ignored` ids ([CLS], [SEP], padding) are neither tokens nor
// contexts. One thread, so that the vectors are a function of corpus, options and seed alone.
WordVectors skip_gram(const PackedCorpus& corpus, int64_t vocab_size, const std::vector<int32_t>& ignored,
                      const SkipGramOptions& options);

// Overwrites the word embeddings of the tokens that have a vector (count >= min_count) with their vectors, centred
// and scaled to the standard deviation `deviation` (usually the initialiser range: position and token-type
// embeddings are added to them before LayerNorm, so a larger scale would drown the positions). The masked-LM
// decoder is tied to these weights. Returns the number of rows written.
int64_t set_word_embeddings(BertForMaskedLM& model, const WordVectors& vectors, double deviation);

}  // namespace ts::train
