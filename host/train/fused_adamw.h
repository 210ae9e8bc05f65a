#pragma once
// AdamW (Loshchilov & Hutter; torch.optim.AdamW's algorithm, amsgrad off) with the update of each float32 CPU tensor
// done in one pass over its memory, the largest tensors split over the run's cores.
//
// Why: torch's AdamW runs six elementwise kernels per tensor, each a full pass over parameters, gradients or moments,
// on torch's single intra-op thread (OpenBLAS gets the cores, see runtime/environment.h). For a model whose
// word embeddings dominate its size, that update costs more than the forward and backward of a short batch. The
// fused loop computes the same per element:
//   p ← p (1 − lr λ);  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
//   p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
// With AdamWArithmetic::Transformers the update is transformers.AdamW's (correct_bias=True), which the two-stage
// authors used: ε is added to √v itself, the bias correction is folded into the step size, and weight decay comes
// after the step:
//   p ← p − lr √(1 − β2^t) / (1 − β1^t) · m / (√v + ε);  p ← p − lr λ p
// Early in training, while √v is of the order of ε, the two take visibly different steps.
// Other tensors (CUDA, other dtypes, sparse gradients) take the same formula as tensor operations. Without weight
// decay, rows of a large matrix whose gradient and moments are all zero are left out: the formula leaves them as
// they are (p − lr · 0 / ε), and in a word embedding most rows are such until a batch holds their token.
#include <torch/torch.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace ts::train {

enum class AdamWArithmetic {
  Torch,         // torch.optim.AdamW
  Transformers,  // transformers.AdamW (deprecated there; the reference code's optimiser)
};

class FusedAdamW : public torch::optim::Optimizer {
 public:
  FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, torch::optim::AdamWOptions defaults,
             AdamWArithmetic arithmetic = AdamWArithmetic::Torch);

  torch::Tensor step(LossClosure closure = nullptr) override;
  // One step as if every gradient had first been multiplied by `gradient_scale` (gradient clipping's coefficient),
  // bit for bit, without that pass over the gradients; they are left as they are.
  void step_scaled(float gradient_scale);
  // The moments and step counts, by group and position: load() expects the same parameters in the same order.
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  struct State {
    int64_t step = 0;
    torch::Tensor exp_avg, exp_avg_sq;
    // Large matrices (word embeddings): whether each row's moments may be nonzero; empty until the first step.
    std::vector<uint8_t> live_rows;
  };
  State& state_of(const torch::Tensor& parameter);
  std::unordered_map<const void*, State> moments_;
  AdamWArithmetic arithmetic_;
  float gradient_scale_ = 1.0f;
};

}  // namespace ts::train
