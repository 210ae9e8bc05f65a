#include "model/fused_kernels.h"

#include <atomic>

#include <torch/torch.h>

namespace ts {
namespace {
std::atomic<bool> enabled{true};
}  // namespace

bool fused_kernels_enabled() { return enabled.load(std::memory_order_relaxed); }
void set_fused_kernels(bool on) { enabled.store(on, std::memory_order_relaxed); }

bool fusable_tensor(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat;
}

}  // namespace ts
