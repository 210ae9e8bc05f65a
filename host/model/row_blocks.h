#pragma once
// Rows in fixed blocks, for the fused kernels (model/linear_gelu.h, model/residual_norm.h): the unit of their
// parallel work and of their column sums' partial sums. The blocks do not depend on the thread count, and neither do
// sums added block by block in order.
#include <algorithm>
#include <cstdint>

#include <torch/torch.h>

#include "core/parallel.h"

namespace ts {

constexpr int64_t kRowsPerBlock = 32;

inline int64_t row_blocks(int64_t rows) { return (rows + kRowsPerBlock - 1) / kRowsPerBlock; }

// body(block, first_row, last_row) for every block of `rows` rows, the blocks shared among the run's cores.
template <class Body>
void for_each_row_block(int64_t rows, const Body& body) {
  parallel_ranges(row_blocks(rows), 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block)
      body(block, block * kRowsPerBlock, std::min(rows, (block + 1) * kRowsPerBlock));
  });
}

// partials [blocks, ...] (float32, contiguous) summed over the blocks, in block order.
inline torch::Tensor sum_over_blocks(const torch::Tensor& partials) {
  torch::Tensor total = torch::zeros(partials.sizes().slice(1), partials.options());
  const int64_t width = total.numel();
  const float* part = partials.data_ptr<float>();
  float* out = total.data_ptr<float>();
  for (int64_t block = 0; block < partials.size(0); ++block)
    for (int64_t i = 0; i < width; ++i) out[i] += part[block * width + i];
  return total;
}

}  // namespace ts
