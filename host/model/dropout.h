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
#include <algorithm>
#include <cstdint>

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

  // For autograd nodes whose backward hashes the same bits again: kept in forward's saved_data, read back there.
  void save_to(torch::autograd::AutogradContext& context) const;
  static DropoutMask saved_in(torch::autograd::AutogradContext& context);
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

// out[j] = in[j] · (bits(first_index + j) ≥ threshold ? scale : 0) for j in [0, count); out may be in. The multiply
// (not a select) keeps torch's input * noise: a NaN or inf dropped still gives NaN. Always inlined, so that each
// caller's loop vectorises for its own target.
__attribute__((always_inline)) inline void apply_dropout_mask(float* out, const float* in, uint64_t first_index,
                                                              int64_t count, const DropoutMask& mask) {
  const auto seed_low = static_cast<uint32_t>(mask.seed);
  const uint32_t threshold = mask.threshold;
  const float scale = mask.scale;
  int64_t done = 0;
  while (done < count) {
    // Within a run the index's high half is constant, so the loop runs on 32-bit lanes.
    const uint64_t index = first_index + static_cast<uint64_t>(done);
    const uint64_t to_boundary = (((index >> 32) + 1) << 32) - index;
    const auto run = static_cast<int64_t>(std::min<uint64_t>(static_cast<uint64_t>(count - done), to_boundary));
    const uint32_t round_key = dropout_round_key(mask.seed, index);
    const auto first = static_cast<uint32_t>(index);
    float* run_out = out + done;
    const float* run_in = in + done;
    for (int64_t j = 0; j < run; ++j) {
      const uint32_t bits = dropout_bits(seed_low, round_key, first + static_cast<uint32_t>(j));
      run_out[j] = run_in[j] * (bits >= threshold ? scale : 0.0f);
    }
    done += run;
  }
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
