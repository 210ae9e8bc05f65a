#pragma once
// Batching of tokenized rows: plan which rows go together (optionally bucketed by length), then collate a batch into
// int64 tensors padded to the longest row in it (dynamic) or to a fixed length (the reference pads to 128).
#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace ts::data {

// Token ids per row, as the tokenizer produced them ([CLS] ... [SEP], already truncated).
struct TokenRows {
  std::vector<std::vector<int64_t>> input_ids;
  std::vector<std::vector<int64_t>> token_type_ids;  // empty: all zeros; else one vector per row, same lengths
  std::vector<int64_t> labels;                       // empty: no labels in the batch

  int64_t size() const { return static_cast<int64_t>(input_ids.size()); }
  std::vector<int64_t> lengths() const;
};

enum class Padding {
  Longest,  // pad each batch to its longest row (the attention mask makes results the same)
  Fixed,    // pad every batch to `fixed_length` (the reference behaviour, 128)
};

struct BatchingOptions {
  int64_t batch_size = 16;
  Padding padding = Padding::Longest;
  int64_t fixed_length = 128;  // Padding::Fixed only; a longer row is an error (truncate when tokenizing)
  int64_t pad_id = 0;
  // Bucketing: the epoch order is cut into windows of `bucket_window_batches * batch_size` rows; each window is
  // sorted by length (stable) and cut into batches; then all batches are shuffled with `seed`. Off: the order is cut
  // into batches as it comes (a shuffled sampler order gives the reference's shuffled batches).
  bool bucket_by_length = false;
  int64_t bucket_window_batches = 100;
  bool drop_last = false;
};

// Groups an epoch's row order (from a Sampler) into batches of row indices. `lengths[i]` is row i's token count.
// `seed` only matters when bucketing (it shuffles the batches); derive it per epoch (derive_seed(seed, epoch)).
std::vector<std::vector<int64_t>> plan_batches(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                                               const BatchingOptions& options, uint32_t seed);

// A batch carries token ids, or (from a loader with a cached frozen trunk, data/loader.h) the trunk's hidden states
// for the layers from `start_layer` up; data::forward runs the model on either.
struct Batch {
  torch::Tensor input_ids;       // [B, T] int64; undefined when hidden_states carry the batch
  torch::Tensor attention_mask;  // [B, T] int64, 1 on tokens, 0 on padding
  torch::Tensor token_type_ids;  // [B, T] int64; undefined with hidden_states
  torch::Tensor hidden_states;   // [B, T, H], the output of layer start_layer - 1; undefined with token ids
  int64_t start_layer = 0;
  torch::Tensor labels;          // [B] int64, undefined when the rows have no labels
  std::vector<int64_t> indices;  // the rows, in batch order

  bool cached() const { return hidden_states.defined(); }
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

// Builds the tensors for `indices` (on the CPU; move them with .to(device)).
Batch collate(const TokenRows& rows, const std::vector<int64_t>& indices, const BatchingOptions& options);

}  // namespace ts::data
