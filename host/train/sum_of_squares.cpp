#include "train/sum_of_squares.h"

#include <algorithm>
#include <vector>

#include "core/parallel.h"

namespace ts::train {
namespace {

constexpr int64_t kBlock = 1 << 16;

// Eight independent sums, so that the loop vectorises without reordering any one of them.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
double block_sum_of_squares(const float* __restrict data, int64_t count) {
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    for (int lane = 0; lane < 8; ++lane) {
      const double x = data[i + lane];
      lanes[lane] += x * x;
    }
  for (; i < count; ++i) {
    const double x = data[i];
    lanes[0] += x * x;
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

}  // namespace

double sum_of_squares(const float* data, int64_t count) {
  if (count <= kBlock) return block_sum_of_squares(data, count);
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  std::vector<double> sums(static_cast<std::size_t>(blocks));
  parallel_ranges(blocks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kBlock;
      sums[static_cast<std::size_t>(block)] = block_sum_of_squares(data + first, std::min(kBlock, count - first));
    }
  });
  double total = 0;
  for (const double sum : sums) total += sum;
  return total;
}

}  // namespace ts::train
