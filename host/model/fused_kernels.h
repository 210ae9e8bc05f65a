#pragma once
// One switch for the host's own kernels that stand in for sequences of LibTorch operators on the CPU:
// model/linear_gelu.h, model/residual_norm.h, model/attention.h (with BertSelfAttention's packed projections) and
// model/embedding.h's reused gradient. Off, the model runs LibTorch's operators one by one (the same functions), so
// that benchmarks and tests compare the two in one binary. On by default.
namespace at {
class Tensor;
}

namespace ts {

bool fused_kernels_enabled();
void set_fused_kernels(bool enabled);

// A defined float32 tensor on the CPU: the kind of operand every fused kernel takes.
bool fusable_tensor(const at::Tensor& t);

}  // namespace ts
