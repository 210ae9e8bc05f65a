#include "data/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/options.h"

namespace ts::data {

// ---- MT19937 (Matsumoto & Nishimura's reference, as numpy's legacy generator uses it) ----

Mt19937::Mt19937(uint32_t seed) {
  state_[0] = seed;
  for (int i = 1; i < 624; ++i) {
    state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  index_ = 624;
}

uint32_t Mt19937::next_u32() {
  constexpr uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix = 0x9908b0dfu;
  if (index_ >= 624) {
    for (int i = 0; i < 624; ++i) {
      uint32_t y = (state_[i] & upper) | (state_[(i + 1) % 624] & lower);
      state_[i] = state_[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? matrix : 0u);
    }
    index_ = 0;
  }
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

double Mt19937::next_double() {
  const uint32_t a = next_u32() >> 5, b = next_u32() >> 6;
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

uint64_t Mt19937::interval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  uint64_t value;
  if (max <= 0xffffffffull) {
    while ((value = (next_u32() & mask)) > max) {
    }
  } else {
    while ((value = (((static_cast<uint64_t>(next_u32()) << 32) | next_u32()) & mask)) > max) {
    }
  }
  return value;
}

void NumpyRandomState::shuffle(std::vector<int64_t>& values) {
  if (values.size() < 2) return;
  for (size_t i = values.size() - 1; i >= 1; --i) {
    const auto j = static_cast<size_t>(mt_.interval(i));
    std::swap(values[i], values[j]);
  }
}

std::vector<int64_t> NumpyRandomState::permutation(int64_t n) {
  if (n < 0) fail("permutation of a negative length {}", n);
  std::vector<int64_t> out(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), 0);
  shuffle(out);
  return out;
}

std::vector<int64_t> NumpyRandomState::choice_without_replacement(int64_t n, int64_t k) {
  if (k < 0 || k > n) {
    fail("cannot take a sample of {} from {} rows without replacement", k, n);
  }
  auto out = permutation(n);
  out.resize(static_cast<size_t>(k));
  return out;
}

std::vector<int64_t> pandas_sample_positions(int64_t n, int64_t k, uint32_t seed) {
  NumpyRandomState random(seed);
  return random.choice_without_replacement(n, k);
}

// ---- down-sampling and long tails ----

namespace {

std::vector<std::vector<int64_t>> rows_by_class(const std::vector<int64_t>& labels, int64_t num_classes) {
  if (num_classes <= 0) fail("need at least one class, got {}", num_classes);
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      fail("row {} has label {}, outside the {} classes", i, labels[i], num_classes);
    }
    rows[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
  }
  return rows;
}

}  // namespace

std::vector<int64_t> downsample_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                        const DownsampleOptions& options) {
  if (!(options.rate > 0.0 && options.rate <= 1.0)) {
    fail("down-sampling rate {} is outside (0, 1]; it is minority / majority", options.rate);
  }
  const auto rows = rows_by_class(labels, num_classes);
  std::vector<bool> is_minority(static_cast<size_t>(num_classes), false);
  for (int64_t c : options.minority) {
    if (c < 0 || c >= num_classes) fail("minority class {} is outside the {} classes", c, num_classes);
    if (is_minority[static_cast<size_t>(c)]) fail("minority class {} is listed twice", c);
    is_minority[static_cast<size_t>(c)] = true;
  }
  if (options.minority.empty()) fail("no minority class given to down-sample");
  int64_t majority_count = -1;
  for (int64_t c = 0; c < num_classes; ++c) {
    if (!is_minority[static_cast<size_t>(c)]) {
      majority_count = std::max(majority_count, static_cast<int64_t>(rows[static_cast<size_t>(c)].size()));
    }
  }
  if (majority_count < 0) fail("every class is marked minority; at least one class must be kept whole");
  // Python's int(len(pos) * rate): a double product, truncated toward zero.
  const auto target = static_cast<int64_t>(static_cast<double>(majority_count) * options.rate);

  std::vector<int64_t> combined;
  for (int64_t c : options.minority) {
    const auto& class_rows = rows[static_cast<size_t>(c)];
    const auto available = static_cast<int64_t>(class_rows.size());
    if (target > available) {
      fail("class {} has {} rows, fewer than the {} needed for rate {} of the majority's {}", c, available, target,
           options.rate, majority_count);
    }
    for (int64_t position : pandas_sample_positions(available, target, options.seed)) {
      combined.push_back(class_rows[static_cast<size_t>(position)]);
    }
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!is_minority[static_cast<size_t>(labels[i])]) combined.push_back(static_cast<int64_t>(i));
  }
  if (!options.shuffle) return combined;
  std::vector<int64_t> out;
  out.reserve(combined.size());
  for (int64_t position : pandas_sample_positions(static_cast<int64_t>(combined.size()),
                                                  static_cast<int64_t>(combined.size()), options.seed)) {
    out.push_back(combined[static_cast<size_t>(position)]);
  }
  return out;
}

Dataset downsample(const Dataset& data, const DownsampleOptions& options) {
  return data.subset(downsample_indices(data.labels, data.num_classes(), options));
}

DownsampleOptions DownsampleOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"rate", "minority", "seed", "shuffle"});
  DownsampleOptions options;
  options.rate = read.number("rate").value_or(options.rate);
  options.seed = read.seed32("seed").value_or(options.seed);
  options.shuffle = read.boolean("shuffle").value_or(options.shuffle);
  if (const auto* minority = read.find("minority"); minority && minority->is_number())
    options.minority = {read.integer("minority").value()};
  else
    options.minority = read.integers("minority").value_or(options.minority);
  return options;
}

LongTailOptions LongTailOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"imbalance", "seed", "counts"});
  LongTailOptions options;
  options.seed = read.seed32("seed").value_or(options.seed);
  options.counts = read.integers("counts").value_or(options.counts);
  if (options.counts.empty()) {
    const auto imbalance = read.number("imbalance");
    if (!imbalance || !(*imbalance >= 1))
      fail("{}: needs 'imbalance' >= 1 (n_max / n_min) or explicit 'counts'", where);
    options.imbalance = *imbalance;
  }
  return options;
}

SplitOptions SplitOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"fraction", "seed"});
  SplitOptions options;
  options.fraction = read.number("fraction").value_or(options.fraction);
  if (!(options.fraction > 0 && options.fraction < 1))
    fail("{}: fraction {} must be in (0, 1)", where, options.fraction);
  options.seed = read.seed32("seed").value_or(options.seed);
  return options;
}

std::vector<int64_t> long_tail_counts(int64_t n_max, int64_t num_classes, double imbalance_factor) {
  if (num_classes < 1) fail("long-tail profile needs at least one class, got {}", num_classes);
  if (n_max < 1) fail("long-tail profile needs n_max >= 1, got {}", n_max);
  if (!(imbalance_factor >= 1.0)) fail("imbalance factor {} must be >= 1 (it is n_max / n_min)", imbalance_factor);
  std::vector<int64_t> counts;
  for (int64_t c = 0; c < num_classes; ++c) {
    const double exponent = num_classes == 1 ? 0.0 : static_cast<double>(c) / (num_classes - 1.0);
    counts.push_back(static_cast<int64_t>(n_max * std::pow(1.0 / imbalance_factor, exponent)));
  }
  return counts;
}

std::vector<int64_t> long_tail_indices(const std::vector<int64_t>& labels, const std::vector<int64_t>& counts,
                                       uint32_t seed, const std::vector<int64_t>& class_order) {
  int64_t num_classes = 0;
  for (int64_t label : labels) num_classes = std::max(num_classes, label + 1);
  std::vector<int64_t> order = class_order;
  if (order.empty()) {
    order.resize(counts.size());
    std::iota(order.begin(), order.end(), 0);
  }
  if (order.size() != counts.size()) {
    fail("long tail: {} counts but {} classes in the class order", counts.size(), order.size());
  }
  num_classes = std::max<int64_t>(num_classes, order.empty() ? 1 : *std::max_element(order.begin(), order.end()) + 1);
  const auto rows = rows_by_class(labels, num_classes);
  std::vector<bool> keep(labels.size(), false);
  for (size_t r = 0; r < order.size(); ++r) {
    const int64_t c = order[r];
    if (c < 0) fail("long tail: class {} in the class order is negative", c);
    const auto& class_rows = rows[static_cast<size_t>(c)];
    const auto available = static_cast<int64_t>(class_rows.size());
    if (counts[r] > available) {
      fail("long tail: class {} has {} rows, fewer than the {} asked for", c, available, counts[r]);
    }
    for (int64_t position : pandas_sample_positions(available, counts[r], seed)) {
      keep[static_cast<size_t>(class_rows[static_cast<size_t>(position)])] = true;
    }
  }
  std::vector<int64_t> out;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) out.push_back(static_cast<int64_t>(i));
  return out;
}

std::vector<int64_t> long_tail_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                       const LongTailOptions& options) {
  if (!options.counts.empty()) {
    if (static_cast<int64_t>(options.counts.size()) != num_classes)
      fail("long tail: {} counts for {} classes", options.counts.size(), num_classes);
    return long_tail_indices(labels, options.counts, options.seed);
  }
  const auto rows = rows_by_class(labels, num_classes);
  const auto present = [&](int64_t c) { return static_cast<double>(rows[static_cast<size_t>(c)].size()); };
  std::vector<int64_t> order(rows.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return present(a) > present(b); });
  double head = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < num_classes; ++r) {
    const double share =
        num_classes > 1 ? std::pow(1.0 / options.imbalance, static_cast<double>(r) / (num_classes - 1)) : 1.0;
    head = std::min(head, present(order[r]) / share);
  }
  const auto counts = long_tail_counts(static_cast<int64_t>(head), num_classes, options.imbalance);
  return long_tail_indices(labels, counts, options.seed, order);
}

SplitIndices stratified_split(const std::vector<int64_t>& labels, int64_t num_classes, double validation_fraction,
                              uint32_t seed) {
  if (!(validation_fraction > 0.0 && validation_fraction < 1.0)) {
    fail("validation fraction {} is outside (0, 1)", validation_fraction);
  }
  const auto rows = rows_by_class(labels, num_classes);
  std::vector<bool> to_validation(labels.size(), false);
  for (size_t c = 0; c < rows.size(); ++c) {
    const auto n = static_cast<int64_t>(rows[c].size());
    if (n < 2) continue;
    int64_t k = std::llround(static_cast<double>(n) * validation_fraction);
    k = std::clamp<int64_t>(k, 1, n - 1);
    // One generator per class, seeded from (seed, class), so adding a class does not move the others' picks.
    NumpyRandomState random(derive_seed(seed, static_cast<int64_t>(c)));
    for (int64_t position : random.choice_without_replacement(n, k)) {
      to_validation[static_cast<size_t>(rows[c][static_cast<size_t>(position)])] = true;
    }
  }
  SplitIndices out;
  for (size_t i = 0; i < labels.size(); ++i) {
    (to_validation[i] ? out.validation : out.train).push_back(static_cast<int64_t>(i));
  }
  return out;
}

// ---- samplers ----

uint64_t splitmix64(uint64_t z) {
  z += kSplitMixStep;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint32_t derive_seed(uint64_t seed, int64_t stream) {
  return static_cast<uint32_t>(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(stream)) >> 32);
}

SamplerKind sampler_kind_from_name(const std::string& name) {
  if (name == "sequential") return SamplerKind::Sequential;
  if (name == "random") return SamplerKind::Random;
  if (name == "balanced" || name == "class_balanced") return SamplerKind::ClassBalanced;
  if (name == "sqrt" || name == "square_root") return SamplerKind::SquareRoot;
  fail("unknown sampler \"{}\"; expected sequential, random, balanced or sqrt", name);
}

Sampler::Sampler(std::vector<int64_t> labels, int64_t num_classes, SamplerKind kind, uint64_t seed,
                 int64_t num_samples)
    : labels_(std::move(labels)), kind_(kind), seed_(seed) {
  rows_by_class_ = rows_by_class(labels_, num_classes);
  num_samples_ = num_samples < 0 ? static_cast<int64_t>(labels_.size()) : num_samples;
  if ((kind_ == SamplerKind::Sequential || kind_ == SamplerKind::Random) &&
      num_samples_ != static_cast<int64_t>(labels_.size())) {
    fail("a {} sampler draws each row once per epoch; num_samples must be {} (got {})",
         kind_ == SamplerKind::Random ? "random" : "sequential", labels_.size(), num_samples_);
  }
  if (labels_.empty() && num_samples_ > 0) fail("cannot sample {} rows from an empty dataset", num_samples_);
}

std::vector<double> Sampler::class_probabilities() const {
  std::vector<double> p(rows_by_class_.size(), 0.0);
  double total = 0.0;
  for (size_t c = 0; c < rows_by_class_.size(); ++c) {
    const auto n = static_cast<double>(rows_by_class_[c].size());
    if (n == 0) continue;
    switch (kind_) {
      case SamplerKind::Sequential:
      case SamplerKind::Random: p[c] = n; break;
      case SamplerKind::ClassBalanced: p[c] = 1.0; break;
      case SamplerKind::SquareRoot: p[c] = std::sqrt(n); break;
    }
    total += p[c];
  }
  for (auto& v : p) v /= total;
  return p;
}

std::vector<int64_t> Sampler::epoch(int64_t epoch) const {
  std::vector<int64_t> out;
  if (kind_ == SamplerKind::Sequential) {
    out.resize(labels_.size());
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  NumpyRandomState random(derive_seed(seed_, epoch));
  if (kind_ == SamplerKind::Random) return random.permutation(static_cast<int64_t>(labels_.size()));
  // Inverse-CDF over the class probabilities, then a uniform row of that class.
  const auto p = class_probabilities();
  std::vector<double> cumulative(p.size());
  std::partial_sum(p.begin(), p.end(), cumulative.begin());
  out.reserve(static_cast<size_t>(num_samples_));
  for (int64_t i = 0; i < num_samples_; ++i) {
    const double u = random.generator().next_double();
    auto c = static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
    if (c >= p.size()) c = p.size() - 1;
    while (rows_by_class_[c].empty()) c = (c + p.size() - 1) % p.size();  // only reached by rounding at the top
    const auto& rows = rows_by_class_[c];
    out.push_back(rows[static_cast<size_t>(random.generator().interval(rows.size() - 1))]);
  }
  return out;
}

}  // namespace ts::data
