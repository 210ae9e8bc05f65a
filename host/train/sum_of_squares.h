#pragma once
// Σ xᵢ² of a float array, for gradient clipping's global norm.
//
// Why: torch's norm made clipping's first pass over bert-base's 110M gradients take about 70 ms a step on these
// machines, for a pass memory can serve in half that. Here the squares are summed in double (no float
// accumulation error over millions of terms), over fixed blocks that the run's cores share, and the blocks' sums
// are added in order: the result does not depend on the thread count.
#include <cstdint>

namespace ts::train {

double sum_of_squares(const float* data, int64_t count);

}  // namespace ts::train
