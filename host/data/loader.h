#pragma once
// The batch pipeline, in one place: a dataset is tokenized once into token rows; each epoch a seeded sampler gives
// the row order, the plan cuts it into batches (bucketed by length if asked) and each batch is collated as it is
// asked for: token ids, or, once the frozen trunk is cached, its hidden states. Recipes reach it through ts.loader;
// `twostage predict` and tokenizer:batch use its token_rows and collate.
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/batching.h"
#include "data/sampling.h"
#include "data/table.h"
#include "model/bert.h"
#include "text/tokenizer.h"

namespace ts::train {
class FrozenTrunkCache;
}

namespace ts::data {

// The tokenizer's encodings as token rows: ids, and type ids when `with_type_ids` (rows with a text pair need them;
// without, collate writes zeros). No labels.
TokenRows token_rows(const std::vector<text::Encoding>& encodings, bool with_type_ids);

struct LoaderOptions {
  int64_t batch_size = 16;
  int max_length = 128;                  // tokens per row, [CLS] and [SEP] included; longer rows are truncated
  SamplerKind sampler = SamplerKind::Random;
  uint64_t seed = 0;
  Padding padding = Padding::Longest;
  int64_t pad_to = 0;                    // Padding::Fixed's length; 0: max_length
  bool bucket = false;                   // rows of similar length together (BatchingOptions::bucket_by_length)
  bool drop_last = false;
  int64_t num_samples = -1;              // rows an epoch draws (class-aware samplers); -1: the dataset's size
  int threads = 1;                       // tokenizing threads

  // {batch_size, max_length, sampler = "random" | "sequential" | "balanced" | "sqrt", seed, padding = "longest" |
  //  "fixed", pad_to, bucket, drop_last, num_samples, threads}; an unknown key or a value of the wrong type is an
  // error naming `where`.
  static LoaderOptions from_json(const nlohmann::json& options, const std::string& where);
};

// The random streams of a loader, each named and derived from its seed, so that no caller adds or mixes seeds.
struct LoaderSeeds {
  uint64_t seed = 0;
  // The sampler's row order of epoch `epoch` (Sampler::epoch draws from this).
  uint32_t order(int64_t epoch) const { return derive_seed(seed, epoch); }
  // The shuffle of bucketed batches. It is the order's stream, as it always was: recorded runs with bucket = true
  // (the main comparison's) reproduce bit for bit.
  uint32_t buckets(int64_t epoch) const { return derive_seed(seed, epoch); }
};

class EpochBatches;

class Loader {
 public:
  Loader(const Dataset& dataset, const text::Tokenizer& tokenizer, const LoaderOptions& options);
  ~Loader();
  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;

  // The rows (0-based) of each batch of epoch `epoch` (1-based in recipes; any integer works): it depends only on
  // the seed and the epoch.
  std::vector<std::vector<int64_t>> plan(int64_t epoch) const;
  // The batch of `rows`: token ids, or the cached trunk's hidden states after cache_trunk.
  Batch batch(const std::vector<int64_t>& rows) const;
  // The batches of epoch `epoch` in plan order, each collated only when it is reached:
  //   for (const data::Batch& batch : loader.batches(epoch)) ...
  EpochBatches batches(int64_t epoch) const;

  // Runs the model's embeddings and layers below `start_layer` once per row, in eval mode and without gradients,
  // and keeps their hidden states; from then on batches carry them, so the model runs only the layers from
  // start_layer up. Valid only while those lower layers stay frozen. Returns the bytes the states hold.
  int64_t cache_trunk(BertForSequenceClassification& model, int64_t start_layer, int64_t batch_size = 64);
  void drop_trunk();

  int64_t size() const { return rows_.size(); }
  int64_t tokens() const;  // in all rows, before padding
  const TokenRows& rows() const { return rows_; }
  const BatchingOptions& batching() const { return batching_; }

 private:
  TokenRows rows_;
  std::vector<int64_t> lengths_;
  BatchingOptions batching_;
  LoaderSeeds seeds_;
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<train::FrozenTrunkCache> trunk_;
};

// One epoch's plan and the loader that collates it. It refers to the loader, which must outlive it; a batch is made
// when it is reached, so a cached trunk's states are copied one batch at a time, never all at once.
class EpochBatches {
 public:
  EpochBatches(const Loader& loader, std::vector<std::vector<int64_t>> plan)
      : loader_(&loader), plan_(std::move(plan)) {}

  size_t size() const { return plan_.size(); }
  const std::vector<std::vector<int64_t>>& plan() const { return plan_; }
  Batch operator[](size_t position) const { return loader_->batch(plan_.at(position)); }

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = Batch;

    Batch operator*() const { return (*batches_)[position_]; }
    iterator& operator++() {
      ++position_;
      return *this;
    }
    bool operator==(const iterator& other) const { return position_ == other.position_; }
    bool operator!=(const iterator& other) const { return position_ != other.position_; }

   private:
    friend class EpochBatches;
    iterator(const EpochBatches* batches, size_t position) : batches_(batches), position_(position) {}
    const EpochBatches* batches_;
    size_t position_;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, plan_.size()}; }

 private:
  const Loader* loader_;
  std::vector<std::vector<int64_t>> plan_;
};

// The model on a batch, whichever it carries: token ids run the whole model, cached hidden states only the layers
// from the batch's start_layer up. The tensors move to the model's device.
SequenceClassifierOutputs forward(BertForSequenceClassification& model, const Batch& batch);

}  // namespace ts::data
