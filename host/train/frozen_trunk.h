#pragma once
// Stage 1 on cached activations: when everything below encoder layer k is frozen, the embeddings and layers [0, k)
// compute the same function every epoch, so they run once per row and the top (layers k.., pooler, head) trains on
// the stored hidden states.
//
// The trunk runs in eval mode (dropout off), as it must for its output to be a fixed function of the row: with
// dropout on, the uncached run would draw fresh dropout masks in the frozen layers each epoch. Results therefore
// differ from an uncached stage 1 by the dropout inside the frozen layers only; the trainable layers keep theirs.
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "data/batching.h"
#include "model/bert.h"

namespace ts::train {

struct HiddenBatch {
  torch::Tensor hidden_states;   // [B, T, H], zero on padding, on the model's device
  torch::Tensor attention_mask;  // [B, T] int64
};

class FrozenTrunkCache {
 public:
  // Runs the trunk below `start_layer` (1 <= start_layer <= num_hidden_layers) over every row of `rows`, in batches
  // of `batch_size` rows of similar length. Restores the model's train/eval mode afterwards.
  FrozenTrunkCache(BertForSequenceClassification& model, const data::TokenRows& rows, int64_t start_layer,
                   int64_t batch_size = 64, int64_t pad_id = 0);

  // The stored states of `indices`, padded to the longest row, for model->forward_from(start_layer(), ...).
  HiddenBatch collate(const std::vector<int64_t>& indices) const;

  int64_t start_layer() const { return start_layer_; }
  int64_t size() const { return static_cast<int64_t>(states_.size()); }
  // Memory held by the cached states.
  int64_t bytes() const;

 private:
  int64_t start_layer_;
  int64_t hidden_size_;
  torch::Device device_;
  std::vector<torch::Tensor> states_;  // one [T_i, H] tensor per row, on the CPU
};

}  // namespace ts::train
