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

// The mask, for kernels that fuse dropout into a pass of their own (model/residual_norm.h): ts::dropout draws a
// DropoutMask::draw(p) and keeps element i of its contiguous input when
// dropout_bits(uint32(seed), dropout_round_key(seed, i), uint32(i)) >= threshold, multiplying kept elements by scale.
struct DropoutMask {
  uint64_t seed = 0;
  uint32_t threshold = 0;  // p · 2^32; 0 keeps everything
  float scale = 1.0f;      // 1 / (1 − p), in float as torch computes it

  static DropoutMask draw(double p);  // a fresh seed from torch's default generator
  static DropoutMask none() { return {}; }
};

// Wellons's lowbias32: a 32-bit hash with low bias and only 32-bit multiplies, so that loops over it vectorise.
inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Element i's 32 random bits hash the seed and i in two rounds. Within a run of indices that share their high 32
// bits, round_key is constant and the bits need only 32-bit lanes.
inline uint32_t dropout_round_key(uint64_t seed, uint64_t index) {
  return static_cast<uint32_t>(seed >> 32) + static_cast<uint32_t>(index >> 32) * 0x9E3779B9u;
}
inline uint32_t dropout_bits(uint32_t seed_low, uint32_t round_key, uint32_t index_low) {
  return lowbias32(lowbias32(index_low ^ seed_low) + round_key);
}

struct DropoutImpl : torch::nn::Cloneable<DropoutImpl> {
  explicit DropoutImpl(double p = 0.5);
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& input);
  void pretty_print(std::ostream& stream) const override;
  double p;
};
TORCH_MODULE(Dropout);

}  // namespace ts
