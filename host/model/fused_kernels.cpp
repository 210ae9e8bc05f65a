#include "model/fused_kernels.h"

#include <atomic>

namespace ts {
namespace {
std::atomic<bool> enabled{true};
}  // namespace

bool fused_kernels_enabled() { return enabled.load(std::memory_order_relaxed); }
void set_fused_kernels(bool on) { enabled.store(on, std::memory_order_relaxed); }

}  // namespace ts
