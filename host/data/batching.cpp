#include "data/batching.h"

#include <algorithm>

#include "core/error.h"
#include "data/sampling.h"

namespace ts::data {

std::vector<int64_t> TokenRows::lengths() const {
  std::vector<int64_t> out;
  out.reserve(input_ids.size());
  for (const auto& ids : input_ids) out.push_back(static_cast<int64_t>(ids.size()));
  return out;
}

std::vector<std::vector<int64_t>> plan_batches(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                                               const BatchingOptions& options, uint32_t seed) {
  if (options.batch_size < 1) fail("batch size must be at least 1, got {}", options.batch_size);
  for (int64_t index : order) {
    if (index < 0 || index >= static_cast<int64_t>(lengths.size())) {
      fail("batch plan: row index {} is out of range for {} rows", index, lengths.size());
    }
  }
  const auto batch = static_cast<size_t>(options.batch_size);
  std::vector<std::vector<int64_t>> batches;
  auto cut = [&](std::vector<int64_t>::const_iterator begin, std::vector<int64_t>::const_iterator end) {
    for (auto it = begin; it < end; it += static_cast<std::ptrdiff_t>(std::min<size_t>(batch, end - it))) {
      auto stop = it + static_cast<std::ptrdiff_t>(std::min<size_t>(batch, end - it));
      batches.emplace_back(it, stop);
    }
  };
  if (!options.bucket_by_length) {
    cut(order.begin(), order.end());
  } else {
    if (options.bucket_window_batches < 1) {
      fail("bucket window must be at least 1 batch, got {}", options.bucket_window_batches);
    }
    const size_t window = batch * static_cast<size_t>(options.bucket_window_batches);
    std::vector<int64_t> sorted;
    for (size_t start = 0; start < order.size(); start += window) {
      const size_t stop = std::min(order.size(), start + window);
      sorted.assign(order.begin() + static_cast<std::ptrdiff_t>(start), order.begin() + static_cast<std::ptrdiff_t>(stop));
      std::stable_sort(sorted.begin(), sorted.end(), [&](int64_t a, int64_t b) {
        return lengths[static_cast<size_t>(a)] < lengths[static_cast<size_t>(b)];
      });
      cut(sorted.cbegin(), sorted.cend());
    }
    // Shuffle the batches so that an epoch does not run from short to long within each window.
    NumpyRandomState random(seed);
    const auto permutation = random.permutation(static_cast<int64_t>(batches.size()));
    std::vector<std::vector<int64_t>> shuffled;
    shuffled.reserve(batches.size());
    for (int64_t p : permutation) shuffled.push_back(std::move(batches[static_cast<size_t>(p)]));
    batches = std::move(shuffled);
  }
  if (options.drop_last) {
    batches.erase(std::remove_if(batches.begin(), batches.end(), [&](const auto& b) { return b.size() < batch; }),
                  batches.end());
  }
  return batches;
}

Batch collate(const TokenRows& rows, const std::vector<int64_t>& indices, const BatchingOptions& options) {
  if (indices.empty()) fail("cannot collate an empty batch");
  const bool has_types = !rows.token_type_ids.empty();
  const bool has_labels = !rows.labels.empty();
  if (has_types && rows.token_type_ids.size() != rows.input_ids.size()) {
    fail("token rows: {} input id rows but {} token type rows", rows.input_ids.size(), rows.token_type_ids.size());
  }
  if (has_labels && rows.labels.size() != rows.input_ids.size()) {
    fail("token rows: {} input id rows but {} labels", rows.input_ids.size(), rows.labels.size());
  }
  int64_t longest = 0;
  for (int64_t index : indices) {
    if (index < 0 || index >= rows.size()) fail("collate: row index {} is out of range for {} rows", index, rows.size());
    const auto& ids = rows.input_ids[static_cast<size_t>(index)];
    if (has_types && rows.token_type_ids[static_cast<size_t>(index)].size() != ids.size()) {
      fail("collate: row {} has {} input ids but {} token type ids", index, ids.size(),
           rows.token_type_ids[static_cast<size_t>(index)].size());
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(ids.size()));
  }
  int64_t width = longest;
  if (options.padding == Padding::Fixed) {
    if (longest > options.fixed_length) {
      fail("collate: a row has {} tokens, more than the fixed padding length {}; truncate when tokenizing", longest,
           options.fixed_length);
    }
    width = options.fixed_length;
  }
  const auto batch = static_cast<int64_t>(indices.size());
  auto long_options = torch::TensorOptions().dtype(torch::kInt64);
  Batch out;
  out.input_ids = torch::full({batch, width}, options.pad_id, long_options);
  out.attention_mask = torch::zeros({batch, width}, long_options);
  out.token_type_ids = torch::zeros({batch, width}, long_options);
  auto ids_access = out.input_ids.accessor<int64_t, 2>();
  auto mask_access = out.attention_mask.accessor<int64_t, 2>();
  auto types_access = out.token_type_ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto row = static_cast<size_t>(indices[static_cast<size_t>(b)]);
    const auto& ids = rows.input_ids[row];
    for (size_t t = 0; t < ids.size(); ++t) {
      ids_access[b][static_cast<int64_t>(t)] = ids[t];
      mask_access[b][static_cast<int64_t>(t)] = 1;
      if (has_types) types_access[b][static_cast<int64_t>(t)] = rows.token_type_ids[row][t];
    }
  }
  if (has_labels) {
    out.labels = torch::empty({batch}, long_options);
    auto labels_access = out.labels.accessor<int64_t, 1>();
    for (int64_t b = 0; b < batch; ++b) labels_access[b] = rows.labels[static_cast<size_t>(indices[static_cast<size_t>(b)])];
  }
  out.indices = indices;
  return out;
}

}  // namespace ts::data
