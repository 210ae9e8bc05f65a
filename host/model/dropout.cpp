#include "model/dropout.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>

#include "core/error.h"
#include "core/parallel.h"

namespace ts {
namespace {

// splitmix64's output function on the pair index: 64 well-mixed bits, 32 for each of two elements.
inline uint64_t mix(uint64_t seed, uint64_t pair) {
  uint64_t z = seed + (pair + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// keep[i] = 1 unless element i's 32 random bits fall below `threshold` = p · 2^32.
void fill_mask(uint8_t* keep, int64_t begin, int64_t end, uint64_t seed, uint64_t threshold) {
  int64_t i = begin;
  if (i < end && (i & 1)) {
    keep[i] = (mix(seed, static_cast<uint64_t>(i) >> 1) >> 32) >= threshold;
    ++i;
  }
  for (; i + 1 < end; i += 2) {
    const uint64_t bits = mix(seed, static_cast<uint64_t>(i) >> 1);
    keep[i] = (bits & 0xFFFFFFFFull) >= threshold;
    keep[i + 1] = (bits >> 32) >= threshold;
  }
  if (i < end) keep[i] = (mix(seed, static_cast<uint64_t>(i) >> 1) & 0xFFFFFFFFull) >= threshold;
}

// out = x · keep · scale, as torch's input * noise (so a NaN or inf dropped still gives NaN).
void apply_mask(float* out, const float* x, const uint8_t* keep, int64_t begin, int64_t end, float scale) {
  for (int64_t i = begin; i < end; ++i) out[i] = x[i] * (static_cast<float>(keep[i]) * scale);
}

constexpr int64_t kGrain = 1 << 16;

void check_probability(double p) {
  if (!(p >= 0 && p <= 1)) fail("dropout probability {} is not in [0, 1]", p);
}

uint64_t draw_seed() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
}

struct DropoutFunction : torch::autograd::Function<DropoutFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& input, double p) {
    const torch::Tensor x = input.contiguous();
    torch::Tensor keep = torch::empty(x.sizes(), x.options().dtype(torch::kUInt8));
    torch::Tensor out = torch::empty_like(x);
    const uint64_t seed = draw_seed();
    const auto threshold = static_cast<uint64_t>(std::llround(p * 4294967296.0));
    const float scale = 1.0f / static_cast<float>(1.0 - p);  // torch's noise.div_(1 − p), in float
    uint8_t* keep_data = keep.data_ptr<uint8_t>();
    const float* x_data = x.data_ptr<float>();
    float* out_data = out.data_ptr<float>();
    parallel_ranges(x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      fill_mask(keep_data, begin, end, seed, threshold);
      apply_mask(out_data, x_data, keep_data, begin, end, scale);
    });
    context->save_for_backward({keep});
    context->saved_data["scale"] = static_cast<double>(scale);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor keep = context->get_saved_variables()[0];
    const auto scale = static_cast<float>(context->saved_data["scale"].toDouble());
    const torch::Tensor grad = grad_outputs[0].contiguous();
    torch::Tensor grad_input = torch::empty_like(grad);
    const uint8_t* keep_data = keep.data_ptr<uint8_t>();
    const float* grad_data = grad.data_ptr<float>();
    float* out_data = grad_input.data_ptr<float>();
    parallel_ranges(grad.numel(), kGrain, [&](int64_t begin, int64_t end) {
      apply_mask(out_data, grad_data, keep_data, begin, end, scale);
    });
    return {grad_input, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor dropout(const torch::Tensor& input, double p, bool training) {
  check_probability(p);
  if (!training || p == 0 || input.numel() == 0) return input;
  if (p == 1) return input * 0;  // torch's answer, which keeps the graph
  if (!input.device().is_cpu() || input.scalar_type() != torch::kFloat) return torch::dropout(input, p, training);
  return DropoutFunction::apply(input, p);
}

DropoutImpl::DropoutImpl(double p_in) : p(p_in) { check_probability(p); }

torch::Tensor DropoutImpl::forward(const torch::Tensor& input) { return ts::dropout(input, p, is_training()); }

void DropoutImpl::pretty_print(std::ostream& stream) const { stream << "ts::Dropout(p=" << p << ")"; }

}  // namespace ts
