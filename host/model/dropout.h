#pragma once
// Inverted dropout with torch.nn.Dropout's semantics (each element zeroed with probability p, the others scaled by
// 1 / (1 − p); identity in eval mode) and a faster mask on the CPU.
//
// Why: Debian's LibTorch (no MKL) draws torch's Bernoulli mask with one mt19937 number per element on its single
// intra-op thread; in a bert-base training step at sequence length 128 that was 1.1 s of 9.2. Here the mask bit of
// element i is a hash of (a seed drawn from torch's default generator, i), computed over the run's cores: the same
// distribution, still a function of torch::manual_seed, and the same whatever the thread count. The masks differ
// from torch's, as two seeds' do. Backward hashes the same bits again rather than keeping a mask: a hash is cheaper
// than writing and reading a byte per element (75 MB a bert-base step at sequence 128). CUDA tensors and dtypes
// other than float32 take torch::dropout.
#include <torch/torch.h>

namespace ts {

torch::Tensor dropout(const torch::Tensor& input, double p, bool training);

struct DropoutImpl : torch::nn::Cloneable<DropoutImpl> {
  explicit DropoutImpl(double p = 0.5);
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& input);
  void pretty_print(std::ostream& stream) const override;
  double p;
};
TORCH_MODULE(Dropout);

}  // namespace ts
