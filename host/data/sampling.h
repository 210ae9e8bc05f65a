#pragma once
// Sampling: a numpy-compatible random generator, the reference's down-sampling (bit-for-bit the rows pandas picks),
// long-tailed profiles, stratified splits and epoch-wise index samplers. No torch here; batching is in batching.h.
#include <cstdint>
#include <string>
#include <vector>

#include "data/table.h"

namespace ts::data {

// MT19937 exactly as numpy's legacy RandomState: an int seed goes through init_genrand(seed).
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed = 5489);
  uint32_t next_u32();
  // numpy's random_sample(): 53-bit double in [0, 1) from two 32-bit draws.
  double next_double();
  // numpy's legacy random_interval(max): uniform in [0, max] by masked rejection.
  uint64_t interval(uint64_t max);

 private:
  uint32_t state_[624];
  int index_;
};

// The pieces of numpy.random.RandomState(seed) that pandas' sample() uses.
class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}
  // RandomState.shuffle on a 1-d array: for i = n-1 down to 1, swap(i, random_interval(i)).
  void shuffle(std::vector<int64_t>& values);
  // RandomState.permutation(n) = shuffle(arange(n)).
  std::vector<int64_t> permutation(int64_t n);
  // RandomState.choice(n, k, replace=False) = permutation(n)[:k].
  std::vector<int64_t> choice_without_replacement(int64_t n, int64_t k);
  Mt19937& generator() { return mt_; }

 private:
  Mt19937 mt_;
};

// pandas DataFrame.sample(n=k, random_state=seed) on a frame of n rows: the positions taken, in sample order.
std::vector<int64_t> pandas_sample_positions(int64_t n, int64_t k, uint32_t seed);

struct DownsampleOptions {
  double rate = 0.2;                         // minority / majority
  std::vector<int64_t> minority = {0};       // the classes to down-sample (the reference: label 0)
  uint32_t seed = 42;
  bool shuffle = true;                       // shuffle the combined rows (the reference does)

  // {rate = 0.2, minority = class id | {ids}, seed = 42, shuffle = true}; unknown keys are errors naming `where`.
  static DownsampleOptions from_json(const nlohmann::json& options, const std::string& where);
};

// The reference's down-sampling, generalised to N classes:
//   majority = the largest class NOT in `minority`; target = int(count(majority) * rate) (truncated as Python int())
//   for each class c in `minority` (in the order given): rows_c.sample(n=target, random_state=seed)
//   rest = every row whose class is not in `minority`, in file order
//   out = concat([sampled classes..., rest]).sample(frac=1, random_state=seed)     (when shuffle)
// For binary SST-2 with minority {0} this is, bit for bit,
//   neg = df[df.label==0].sample(n=int(len(pos)*rate), random_state=42)
//   pd.concat([neg, pos]).sample(frac=1, random_state=42)
// Returns indices into `labels`. Throws ts::Error if a class has fewer rows than the target, or the rate is not in
// (0, 1].
std::vector<int64_t> downsample_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                        const DownsampleOptions& options = {});
Dataset downsample(const Dataset& data, const DownsampleOptions& options = {});

// Exponential long-tail profile: n_c = int(n_max * (1/imbalance_factor)^(c/(C-1))), c = 0..C-1 (as Cao et al.'s
// LDAM code, truncating). imbalance_factor >= 1 is n_max / n_min.
std::vector<int64_t> long_tail_counts(int64_t n_max, int64_t num_classes, double imbalance_factor);

// Keeps counts[r] rows of class class_order[r] (default order: class r), chosen per class as
// pandas_sample_positions(rows of that class, counts[r], seed); the result keeps file order. Classes past
// counts.size() are dropped entirely. Throws ts::Error if a class has fewer rows than asked.
std::vector<int64_t> long_tail_indices(const std::vector<int64_t>& labels, const std::vector<int64_t>& counts,
                                       uint32_t seed, const std::vector<int64_t>& class_order = {});

// A long-tailed subset: explicit per-class counts, or the exponential profile of an imbalance factor.
struct LongTailOptions {
  double imbalance = 0;         // n_max / n_min, at least 1; not used when `counts` is given
  std::vector<int64_t> counts;  // rows to keep per class id; empty: the profile of `imbalance`
  uint32_t seed = 42;

  // {imbalance = 10, seed = 42} or {counts = {...}, seed = 42}; unknown keys are errors naming `where`.
  static LongTailOptions from_json(const nlohmann::json& options, const std::string& where);
};

// The rows of the long-tailed subset, in file order. With `counts`: counts[c] rows of class c. Otherwise the
// profile n_r = int(n_max (1/imbalance)^(r/(C-1))) over the classes ranked by their size (largest first, ties by
// id), with the largest n_max every class can supply.
std::vector<int64_t> long_tail_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                       const LongTailOptions& options);

struct SplitIndices {
  std::vector<int64_t> train, validation;  // each in ascending index order
};
// Stratified split: from each class, round(n_c * validation_fraction) rows (at least 1 when n_c >= 2, and never all
// of a class) go to validation, chosen by a seeded permutation of that class's rows.
SplitIndices stratified_split(const std::vector<int64_t>& labels, int64_t num_classes, double validation_fraction,
                              uint32_t seed);

struct SplitOptions {
  double fraction = 0.1;  // the validation share, in (0, 1)
  uint32_t seed = 42;

  // {fraction = 0.1, seed = 42}; unknown keys are errors naming `where`.
  static SplitOptions from_json(const nlohmann::json& options, const std::string& where);
};

enum class SamplerKind {
  Sequential,     // 0..n-1 every epoch
  Random,         // a fresh permutation every epoch
  ClassBalanced,  // each draw: a class uniformly, then a row of it uniformly (with replacement)
  SquareRoot,     // each draw: class c with probability ∝ sqrt(n_c), then a row of it uniformly
};

SamplerKind sampler_kind_from_name(const std::string& name);  // "sequential", "random", "balanced", "sqrt"

// Epoch-wise index streams. epoch(e) depends only on (seed, e), so a run can resume at any epoch and two samplers
// with the same seed agree.
class Sampler {
 public:
  // num_samples < 0: one pass worth (labels.size()).
  Sampler(std::vector<int64_t> labels, int64_t num_classes, SamplerKind kind, uint64_t seed,
          int64_t num_samples = -1);
  std::vector<int64_t> epoch(int64_t epoch) const;
  int64_t num_samples() const { return num_samples_; }
  SamplerKind kind() const { return kind_; }
  // The probability of drawing each class (for Random/Sequential: the empirical class frequencies).
  std::vector<double> class_probabilities() const;

 private:
  std::vector<int64_t> labels_;
  std::vector<std::vector<int64_t>> rows_by_class_;
  SamplerKind kind_;
  uint64_t seed_;
  int64_t num_samples_;
};

// splitmix64 (Steele, Lea and Flood, 2014): the 64-bit output for state z. As a generator, the state then
// advances by kSplitMixStep.
constexpr uint64_t kSplitMixStep = 0x9e3779b97f4a7c15ull;
uint64_t splitmix64(uint64_t z);

// A 32-bit seed for epoch `epoch` of a stream seeded `seed` (splitmix64 of both), used by Sampler and batching.
uint32_t derive_seed(uint64_t seed, int64_t stream);

}  // namespace ts::data
