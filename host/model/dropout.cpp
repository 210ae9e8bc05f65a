#include "model/dropout.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "core/error.h"
#include "core/parallel.h"

namespace ts {
namespace {

// out[i] = in[i] · keep(i) for i in [begin, end), with model/dropout.h's mask. Forward and backward both call this,
// so backward needs only the seed, not a mask.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
void masked_scale(float* out, const float* in, int64_t begin, int64_t end, const DropoutMask& mask) {
  apply_dropout_mask(out + begin, in + begin, static_cast<uint64_t>(begin), end - begin, mask);
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

// The mask of `seed` at probability p (0 <= p < 1).
DropoutMask mask_of(uint64_t seed, double p) {
  DropoutMask mask;
  mask.seed = seed;
  // p · 2^32, clamped below 2^32 for a p just under 1.
  mask.threshold = static_cast<uint32_t>(std::min<double>(std::llround(p * 4294967296.0), 4294967295.0));
  mask.scale = 1.0f / static_cast<float>(1.0 - p);  // torch's noise.div_(1 − p), in float
  return mask;
}

struct DropoutFunction : torch::autograd::Function<DropoutFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& input, double p) {
    const torch::Tensor x = input.contiguous();
    torch::Tensor out = torch::empty_like(x);
    const DropoutMask mask = DropoutMask::draw(p);
    scale_kept(out, x, mask);
    mask.save_to(*context);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor grad = grad_outputs[0].contiguous();
    torch::Tensor grad_input = torch::empty_like(grad);
    scale_kept(grad_input, grad, DropoutMask::saved_in(*context));
    return {grad_input, torch::Tensor()};
  }

  static void scale_kept(torch::Tensor& out, const torch::Tensor& in, const DropoutMask& mask) {
    float* out_data = out.data_ptr<float>();
    const float* in_data = in.data_ptr<float>();
    parallel_ranges(in.numel(), kGrain, [&](int64_t begin, int64_t end) {
      masked_scale(out_data, in_data, begin, end, mask);
    });
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

DropoutMask DropoutMask::draw(double p) {
  check_probability(p);
  if (p >= 1) fail("a dropout mask needs p < 1, not {}", p);
  return mask_of(draw_seed(), p);
}

void DropoutMask::save_to(torch::autograd::AutogradContext& context) const {
  context.saved_data["dropout_seed"] = static_cast<int64_t>(seed);
  context.saved_data["dropout_threshold"] = static_cast<int64_t>(threshold);
  context.saved_data["dropout_scale"] = static_cast<double>(scale);
}

DropoutMask DropoutMask::saved_in(torch::autograd::AutogradContext& context) {
  DropoutMask mask;
  mask.seed = static_cast<uint64_t>(context.saved_data["dropout_seed"].toInt());
  mask.threshold = static_cast<uint32_t>(context.saved_data["dropout_threshold"].toInt());
  mask.scale = static_cast<float>(context.saved_data["dropout_scale"].toDouble());
  return mask;
}

DropoutImpl::DropoutImpl(double p_in) : p(p_in) { check_probability(p); }

torch::Tensor DropoutImpl::forward(const torch::Tensor& input) { return ts::dropout(input, p, is_training()); }

void DropoutImpl::pretty_print(std::ostream& stream) const { stream << "ts::Dropout(p=" << p << ")"; }

}  // namespace ts
