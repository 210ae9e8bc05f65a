#pragma once
// An embedding lookup whose weight gradient reuses one buffer from step to step.
//
// Why: the dense gradient of bert-base's word embeddings is a 94 MB tensor, which torch's backward allocates with
// zeros every step: fresh memory from glibc each time, so some 23,000 page faults, about 60 ms of a 2.3 s training
// step at sequence length 32. Here the buffer is kept and zeroed in place (a few ms) whenever nothing else holds it
// any more, that is once the optimiser has cleared the gradient (set to none, as the host's loops do). While the
// previous gradient is alive (accumulation over micro-steps, a caller keeping it), a new one is allocated, as torch
// does. The sums are torch's: each row adds its tokens' gradients in token order.
#include <torch/torch.h>

#include "model/fused_kernels.h"

namespace ts {

class ReusedEmbeddingGradient {
 public:
  // weight[ids] as torch::embedding computes it; the padding_idx row (unless it is -1) gets no gradient. Reuses the
  // buffer when gradients are being recorded for a float32 CPU weight (and fused kernels are on), and is
  // torch::embedding otherwise.
  torch::Tensor lookup(const torch::Tensor& ids, const torch::Tensor& weight, int64_t padding_idx);

 private:
  torch::Tensor buffer_;
};

}  // namespace ts
