#include "train/frozen_trunk.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace ts::train {

FrozenTrunkCache::FrozenTrunkCache(BertForSequenceClassification& model, const data::TokenRows& rows,
                                   int64_t start_layer, int64_t batch_size, int64_t pad_id)
    : start_layer_(start_layer),
      hidden_size_(model->config.hidden_size),
      device_(model->parameters().front().device()) {
  const int64_t layers = model->config.num_hidden_layers;
  if (start_layer < 1 || start_layer > layers)
    fail("cache_trunk: start layer {} must be in 1..{} (the first trainable encoder layer, 0-based)", start_layer,
         layers);
  if (batch_size < 1) fail("cache_trunk: batch size {} must be at least 1", batch_size);

  // Rows sorted by length keep padding (wasted trunk compute) small; the states are stored per row, unpadded.
  const auto lengths = rows.lengths();
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] < lengths[b]; });

  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  data::BatchingOptions batching;
  batching.pad_id = pad_id;
  states_.resize(lengths.size());
  for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(order.size(), begin + static_cast<size_t>(batch_size));
    const std::vector<int64_t> indices(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                       order.begin() + static_cast<std::ptrdiff_t>(end));
    const auto batch = data::collate(rows, indices, batching);
    const auto hidden = model->bert->hidden_states_before(start_layer, batch.input_ids.to(device_),
                                                          batch.attention_mask.to(device_),
                                                          batch.token_type_ids.to(device_))
                            .to(torch::kCPU);
    for (size_t i = 0; i < indices.size(); ++i)
      states_[indices[i]] = hidden[static_cast<int64_t>(i)].narrow(0, 0, lengths[indices[i]]).clone();
  }
  model->train(was_training);
}

HiddenBatch FrozenTrunkCache::collate(const std::vector<int64_t>& indices) const {
  int64_t longest = 0;
  for (const auto index : indices) {
    if (index < 0 || index >= size()) fail("cache_trunk: row {} is outside the cache (0..{})", index, size() - 1);
    longest = std::max(longest, states_[index].size(0));
  }
  const auto batch = static_cast<int64_t>(indices.size());
  auto hidden = torch::zeros({batch, longest, hidden_size_}, 
                              torch::TensorOptions().dtype(states_.empty() ? torch::kFloat : states_[0].scalar_type()));
  auto mask = torch::zeros({batch, longest}, torch::kLong);
  for (int64_t i = 0; i < batch; ++i) {
    const auto& state = states_[indices[i]];
    hidden[i].narrow(0, 0, state.size(0)).copy_(state);
    mask[i].narrow(0, 0, state.size(0)).fill_(1);
  }
  return HiddenBatch{hidden.to(device_), mask.to(device_)};
}

int64_t FrozenTrunkCache::bytes() const {
  int64_t total = 0;
  for (const auto& state : states_) total += state.numel() * static_cast<int64_t>(state.element_size());
  return total;
}

}  // namespace ts::train
