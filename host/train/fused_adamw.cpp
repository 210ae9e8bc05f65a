#include "train/fused_adamw.h"

#include <cmath>
#include <string>

#include "core/cpu.h"
#include "core/error.h"
#include "core/parallel.h"

namespace ts::train {
namespace {

struct Coefficients {
  float decay;        // 1 − lr λ before the step (torch), else 1
  float decay_after;  // − lr λ after the step (transformers), else 0
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;    // lr / (1 − β1^t) (torch); lr √(1 − β2^t) / (1 − β1^t) (transformers)
  float sqrt_bc2;     // √(1 − β2^t) (torch); 1 (transformers), a division that changes nothing
  float eps;
  float gradient_scale;  // clipping's coefficient, applied as torch's mul_ would (a float product)
};

// The coefficients are copied into locals and the arrays marked __restrict so that the compiler vectorises the
// loop (CMakeLists: -O3 -fno-math-errno for this file); vector sqrt and division round exactly as the scalar ones.
template <bool kScaled>
__attribute__((always_inline)) inline void update_range(float* __restrict p, const float* __restrict g,
                                                        float* __restrict m, float* __restrict v, int64_t begin,
                                                        int64_t end, const Coefficients& coefficients) {
  const Coefficients c = coefficients;
  for (int64_t i = begin; i < end; ++i) {
    const float grad = kScaled ? g[i] * c.gradient_scale : g[i];
    const float exp_avg = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    const float exp_avg_sq = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
    // In torch's order of operations, so that results agree to the rounding.
    const float denom = std::sqrt(exp_avg_sq) / c.sqrt_bc2 + c.eps;
    const float decayed = p[i] * c.decay;
    const float stepped = decayed - c.step_size * (exp_avg / denom);
    p[i] = stepped + stepped * c.decay_after;  // transformers' p.add_(p, alpha=-lr λ); + 0 otherwise
  }
}

// Twice: for the machine the build targets, and with AVX2 (eight lanes) where the CPU has it. Not FMA: a fused
// multiply-add would round differently from torch's kernels.
template <bool kScaled>
void update_generic(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                    const Coefficients& coefficients) {
  update_range<kScaled>(p, g, m, v, begin, end, coefficients);
}
#if defined(__x86_64__) && defined(__GNUC__)
template <bool kScaled>
__attribute__((target("avx2"))) void update_avx2(float* p, const float* g, float* m, float* v, int64_t begin,
                                                  int64_t end, const Coefficients& coefficients) {
  update_range<kScaled>(p, g, m, v, begin, end, coefficients);
}
#endif

template <bool kScaled>
void update(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end, const Coefficients& c) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return update_avx2<kScaled>(p, g, m, v, begin, end, c);
#endif
  update_generic<kScaled>(p, g, m, v, begin, end, c);
}

// Whether the row holds any gradient other than ±0 (NaN included). The bits without their sign are ORed, a loop
// that vectorises.
__attribute__((always_inline)) inline bool row_has_gradient(const float* __restrict g, int64_t cols) {
  using AliasedBits = uint32_t __attribute__((may_alias));
  const auto* bits = reinterpret_cast<const AliasedBits*>(g);
  uint32_t any = 0;
  for (int64_t i = 0; i < cols; ++i) any |= bits[i] << 1;
  return any != 0;
}

// Rows [first, last) of a [rows, cols] tensor: the update of live rows, in runs of consecutive ones. A row comes alive
// with its first nonzero gradient and stays so (its moments are no longer zero).
template <bool kScaled>
void update_live_rows(float* p, const float* g, float* m, float* v, uint8_t* live, int64_t first, int64_t last,
                      int64_t cols, const Coefficients& c) {
  int64_t run_start = first;
  for (int64_t row = first; row < last; ++row) {
    if (!live[row] && row_has_gradient(g + row * cols, cols)) live[row] = 1;
    if (live[row]) continue;
    if (run_start < row) update<kScaled>(p, g, m, v, run_start * cols, row * cols, c);
    run_start = row + 1;
  }
  if (run_start < last) update<kScaled>(p, g, m, v, run_start * cols, last * cols, c);
}

// Marks the rows whose moments are not all zero.
std::vector<uint8_t> rows_with_moments(const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq) {
  const torch::Tensor moving = (exp_avg.ne(0) | exp_avg_sq.ne(0)).any(1);
  const torch::Tensor flags = moving.to(torch::kUInt8).contiguous();
  return std::vector<uint8_t>(flags.data_ptr<uint8_t>(), flags.data_ptr<uint8_t>() + flags.numel());
}

// Tensors of a million elements or more are split over the run's cores: while the update runs, the BLAS threads
// idle.
constexpr int64_t kGrain = 1 << 19;

// Matrices of this many rows or more (word embeddings) are updated row by row, skipping rows that cannot change.
constexpr int64_t kRowsForSkipping = 4096;

}  // namespace

FusedAdamW::FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, torch::optim::AdamWOptions defaults,
                       AdamWArithmetic arithmetic)
    : Optimizer(std::move(groups), std::make_unique<torch::optim::AdamWOptions>(defaults)), arithmetic_(arithmetic) {
  const auto [beta1, beta2] = defaults.betas();
  if (defaults.lr() < 0 || defaults.eps() < 0 || defaults.weight_decay() < 0 || beta1 < 0 || beta1 >= 1 ||
      beta2 < 0 || beta2 >= 1)
    fail("AdamW: lr {}, eps {} and weight decay {} must be >= 0 and betas ({}, {}) in [0, 1)", defaults.lr(),
         defaults.eps(), defaults.weight_decay(), beta1, beta2);
  if (defaults.amsgrad()) fail("AdamW: amsgrad is not supported");
}

FusedAdamW::State& FusedAdamW::state_of(const torch::Tensor& parameter) {
  auto& state = moments_[parameter.unsafeGetTensorImpl()];
  if (!state.exp_avg.defined()) {
    state.exp_avg = torch::zeros_like(parameter, torch::MemoryFormat::Preserve);
    state.exp_avg_sq = torch::zeros_like(parameter, torch::MemoryFormat::Preserve);
  }
  return state;
}

void FusedAdamW::step_scaled(float gradient_scale) {
  gradient_scale_ = gradient_scale;
  try {
    step();
  } catch (...) {
    gradient_scale_ = 1.0f;
    throw;
  }
  gradient_scale_ = 1.0f;
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable_grad(true);
    loss = closure();
  }
  const bool scaled = gradient_scale_ != 1.0f;
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    const double lr = options.lr();
    const auto [beta1, beta2] = options.betas();
    for (auto& parameter : group.params()) {
      if (!parameter.grad().defined()) continue;
      if (parameter.grad().is_sparse()) fail("AdamW does not support sparse gradients");
      auto& state = state_of(parameter);
      state.step += 1;
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step));
      const bool transformers = arithmetic_ == AdamWArithmetic::Transformers;
      const double step_size =
          transformers ? lr * std::sqrt(bias_correction2) / bias_correction1 : lr / bias_correction1;
      const double decay_before = transformers ? 1.0 : 1 - lr * options.weight_decay();
      const double decay_after = transformers ? -lr * options.weight_decay() : 0.0;

      const bool fusable = parameter.device().is_cpu() && parameter.scalar_type() == torch::kFloat &&
                           parameter.grad().scalar_type() == torch::kFloat && parameter.is_contiguous() &&
                           parameter.grad().is_contiguous() &&
                           state.exp_avg.is_contiguous() && state.exp_avg_sq.is_contiguous();
      if (!fusable) {
        const auto grad = scaled ? parameter.grad() * gradient_scale_ : parameter.grad();
        parameter.mul_(decay_before);
        state.exp_avg.mul_(beta1).add_(grad, 1 - beta1);
        state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        const auto denom = transformers
                               ? state.exp_avg_sq.sqrt().add_(options.eps())
                               : (state.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options.eps());
        parameter.addcdiv_(state.exp_avg, denom, -step_size);
        if (decay_after != 0.0) parameter.add_(parameter, decay_after);
        continue;
      }
      const Coefficients c{static_cast<float>(decay_before),
                           static_cast<float>(decay_after),
                           static_cast<float>(beta1),
                           static_cast<float>(1 - beta1),
                           static_cast<float>(beta2),
                           static_cast<float>(1 - beta2),
                           static_cast<float>(step_size),
                           transformers ? 1.0f : static_cast<float>(std::sqrt(bias_correction2)),
                           static_cast<float>(options.eps()),
                           gradient_scale_};
      float* p = parameter.data_ptr<float>();
      const float* g = parameter.grad().data_ptr<float>();
      float* m = state.exp_avg.data_ptr<float>();
      float* v = state.exp_avg_sq.data_ptr<float>();
      const int64_t n = parameter.numel();
      // A row whose gradient and moments are all zero keeps its values when there is no weight decay: the step
      // adds 0 / ε. Most rows of a word embedding are such rows (tokens no batch has held yet); they are skipped.
      if (c.decay == 1.0f && c.decay_after == 0.0f && parameter.dim() == 2 && parameter.size(0) >= kRowsForSkipping) {
        if (state.live_rows.empty()) state.live_rows = rows_with_moments(state.exp_avg, state.exp_avg_sq);
        const int64_t cols = parameter.size(1);
        uint8_t* live = state.live_rows.data();
        parallel_ranges(parameter.size(0), std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                        [&](int64_t first, int64_t last) {
                          if (scaled)
                            update_live_rows<true>(p, g, m, v, live, first, last, cols, c);
                          else
                            update_live_rows<false>(p, g, m, v, live, first, last, cols, c);
                        });
        continue;
      }
      parallel_ranges(n, kGrain, [&](int64_t begin, int64_t end) {
        if (scaled)
          update<true>(p, g, m, v, begin, end, c);
        else
          update<false>(p, g, m, v, begin, end, c);
      });
    }
  }
  return loss;
}

// Marks an archive as this optimiser's, so that a file from another optimiser is refused rather than read as empty.
constexpr const char* kFormatKey = "twostage.fused_adamw.v1";

void FusedAdamW::save(torch::serialize::OutputArchive& archive) const {
  archive.write(kFormatKey, torch::tensor(int64_t{1}));
  const auto& groups = param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto found = moments_.find(params[i].unsafeGetTensorImpl());
      if (found == moments_.end()) continue;
      const std::string key = std::to_string(g) + "." + std::to_string(i);
      archive.write("step." + key, torch::tensor(found->second.step));
      archive.write("exp_avg." + key, found->second.exp_avg, /*is_buffer=*/true);
      archive.write("exp_avg_sq." + key, found->second.exp_avg_sq, /*is_buffer=*/true);
    }
  }
}

void FusedAdamW::load(torch::serialize::InputArchive& archive) {
  torch::Tensor format;
  if (!archive.try_read(kFormatKey, format))
    fail("the optimizer state was not saved by twostage's AdamW (another optimiser or version)");
  moments_.clear();
  const auto& groups = param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string key = std::to_string(g) + "." + std::to_string(i);
      torch::Tensor step;
      if (!archive.try_read("step." + key, step)) continue;  // never stepped when saved
      State state;
      state.step = step.item<int64_t>();
      archive.read("exp_avg." + key, state.exp_avg, /*is_buffer=*/true);
      archive.read("exp_avg_sq." + key, state.exp_avg_sq, /*is_buffer=*/true);
      if (!state.exp_avg.sizes().equals(params[i].sizes()))
        fail("optimizer state {} has shape {}, its parameter {}", key, c10::str(state.exp_avg.sizes()),
             c10::str(params[i].sizes()));
      state.exp_avg = state.exp_avg.to(params[i].device());
      state.exp_avg_sq = state.exp_avg_sq.to(params[i].device());
      moments_[params[i].unsafeGetTensorImpl()] = std::move(state);
    }
  }
}

}  // namespace ts::train
