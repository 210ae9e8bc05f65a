// Sampling: numpy-compatible MT19937, the reference's down-sampling (pinned to pandas' output), long tails,
// stratified splits, samplers and batching.
#include <algorithm>
#include <numeric>
#include <set>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "data/batching.h"
#include "data/sampling.h"
#include "data/seed_streams.h"
#include "data/table.h"
#include <nlohmann/json.hpp>

using namespace ts::data;

TEST_CASE("MT19937 matches the reference generator and numpy's RandomState", "[sampling]") {
  // init_genrand(5489): the first outputs of the reference implementation (also numpy RandomState(5489)).
  Mt19937 mt(5489);
  CHECK(mt.next_u32() == 3499211612u);
  CHECK(mt.next_u32() == 581869302u);
  CHECK(mt.next_u32() == 3890346734u);
  // The 10000th output of std::mt19937 with the default seed, the C++ standard's check value.
  Mt19937 standard(5489);
  uint32_t value = 0;
  for (int i = 0; i < 10000; ++i) value = standard.next_u32();
  CHECK(value == 4123659995u);
  // numpy 1.24: RandomState(42).random_sample() and RandomState(42).permutation(10).
  CHECK(Mt19937(42).next_double() == 0.3745401188473625);
  NumpyRandomState random(42);
  CHECK(random.permutation(10) == std::vector<int64_t>{8, 1, 5, 0, 7, 2, 9, 4, 3, 6});
  CHECK_THROWS_AS(NumpyRandomState(1).choice_without_replacement(3, 4), ts::Error);
}

TEST_CASE("down-sampling SST-2 at rate 0.2 picks exactly pandas' rows", "[sampling][data]") {
  TableOptions options;
  options.text_column = "sentence";
  const Dataset train = read_table("../shared/data/sst2/train.tsv", options);

  // Recorded with numpy 1.24.2 / pandas 1.5.3 (indices are 0-based data rows, file line = index + 2):
  //   df = pd.read_csv("train.tsv", sep="\t"); pos = df[df.label == 1]
  //   neg = df[df.label == 0].sample(n=int(len(pos) * 0.2), random_state=42)
  //   out = pd.concat([neg, pos]).sample(frac=1, random_state=42)
  //   list(neg.index[:10]), list(out.index[:12]), list(out.index[-5:])
  DownsampleOptions unshuffled;
  unshuffled.shuffle = false;
  const auto combined = downsample_indices(train.labels, 2, unshuffled);
  REQUIRE(combined.size() == 45082);
  CHECK(std::vector<int64_t>(combined.begin(), combined.begin() + 10) ==
        std::vector<int64_t>{30440, 64285, 25294, 63724, 60515, 40570, 28619, 35173, 54341, 11698});

  const auto indices = downsample_indices(train.labels, 2);  // rate 0.2, minority {0}, seed 42, shuffled
  REQUIRE(indices.size() == 45082);
  CHECK(std::vector<int64_t>(indices.begin(), indices.begin() + 12) ==
        std::vector<int64_t>{25571, 44234, 2697, 30023, 52091, 65674, 23088, 52848, 8191, 64886, 57467, 48427});
  CHECK(std::vector<int64_t>(indices.end() - 5, indices.end()) ==
        std::vector<int64_t>{6815, 66711, 54866, 2615, 14955});
  // A checksum over the whole order: sum(out.index * (arange(len(out)) % 1000)).
  int64_t checksum = 0;
  for (size_t i = 0; i < indices.size(); ++i) checksum += indices[i] * static_cast<int64_t>(i % 1000);
  CHECK(checksum == 757514225802);

  const Dataset small = downsample(train);
  CHECK(small.class_counts() == std::vector<int64_t>{7513, 37569});
  CHECK(small.texts[0] ==
        "could i have been more geeked when i heard that apollo 13 was going to be released in imax format ");
  CHECK(small.row_numbers[0] == 25571 + 2);
}

TEST_CASE("down-sampling generalises to several classes and checks its inputs", "[sampling]") {
  // Classes 0..2 with 10, 20, 40 rows; down-sample 0 and 1 to int(40 * 0.25) = 10 each.
  std::vector<int64_t> labels;
  for (int c = 0; c < 3; ++c) labels.insert(labels.end(), static_cast<size_t>(10 << c), c);
  DownsampleOptions options;
  options.rate = 0.25;
  options.minority = {1, 0};
  const auto indices = downsample_indices(labels, 3, options);
  std::vector<int64_t> counts(3, 0);
  for (int64_t i : indices) ++counts[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  CHECK(counts == std::vector<int64_t>{10, 10, 40});
  CHECK(std::set<int64_t>(indices.begin(), indices.end()).size() == indices.size());
  // The same options give the same rows; another seed gives others.
  CHECK(downsample_indices(labels, 3, options) == indices);
  options.seed = 7;
  CHECK(downsample_indices(labels, 3, options) != indices);

  options.rate = 0.5;  // class 0 would need 20 rows but has 10
  CHECK_THROWS_WITH(downsample_indices(labels, 3, options), Catch::Contains("fewer than the 20 needed"));
  options.rate = 0.0;
  CHECK_THROWS_AS(downsample_indices(labels, 3, options), ts::Error);
}

TEST_CASE("long-tail profile and selection", "[sampling]") {
  // Cao et al.'s CIFAR-10-LT at imbalance 100.
  CHECK(long_tail_counts(5000, 10, 100.0) ==
        std::vector<int64_t>{5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50});
  std::vector<int64_t> labels;
  for (int i = 0; i < 300; ++i) labels.push_back(i % 3);
  const auto counts = long_tail_counts(100, 3, 10.0);
  CHECK(counts == std::vector<int64_t>{100, 31, 10});
  const auto kept = long_tail_indices(labels, counts, 0, {2, 0, 1});  // class 2 is the head
  std::vector<int64_t> per_class(3, 0);
  for (int64_t i : kept) ++per_class[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  CHECK(per_class == std::vector<int64_t>{31, 10, 100});
  CHECK(std::is_sorted(kept.begin(), kept.end()));
  CHECK_THROWS_AS(long_tail_indices(labels, {101, 1, 1}, 0), ts::Error);
}

TEST_CASE("stratified split keeps class proportions and is seeded", "[sampling]") {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i < 900 ? 0 : 1);
  const auto split = stratified_split(labels, 2, 0.1, 42);
  CHECK(split.train.size() + split.validation.size() == 1000);
  int64_t validation_minority = 0;
  for (int64_t i : split.validation) validation_minority += labels[static_cast<size_t>(i)];
  CHECK(split.validation.size() == 100);
  CHECK(validation_minority == 10);
  std::vector<int64_t> all = split.train;
  all.insert(all.end(), split.validation.begin(), split.validation.end());
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expected(1000);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(all == expected);
  CHECK(stratified_split(labels, 2, 0.1, 42).validation == split.validation);
  CHECK(stratified_split(labels, 2, 0.1, 43).validation != split.validation);
}

TEST_CASE("samplers: epoch streams are seeded and follow their class distribution", "[sampling]") {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 10 == 0 ? 1 : 0);  // 900 vs 100

  Sampler random(labels, 2, SamplerKind::Random, 42);
  auto e0 = random.epoch(0), e1 = random.epoch(1);
  CHECK(e0 != e1);
  CHECK(Sampler(labels, 2, SamplerKind::Random, 42).epoch(0) == e0);
  std::sort(e0.begin(), e0.end());
  CHECK(e0 == Sampler(labels, 2, SamplerKind::Sequential, 0).epoch(5));

  auto minority_share = [&](const Sampler& sampler) {
    double minority = 0;
    const auto drawn = sampler.epoch(0);
    for (int64_t i : drawn) minority += static_cast<double>(labels[static_cast<size_t>(i)]);
    return minority / static_cast<double>(drawn.size());
  };
  Sampler balanced(labels, 2, SamplerKind::ClassBalanced, 1, 20000);
  CHECK(balanced.class_probabilities() == std::vector<double>{0.5, 0.5});
  CHECK(minority_share(balanced) == Approx(0.5).margin(0.02));
  Sampler root(labels, 2, SamplerKind::SquareRoot, 1, 20000);  // sqrt(900) : sqrt(100) = 3 : 1
  CHECK(root.class_probabilities()[1] == Approx(0.25));
  CHECK(minority_share(root) == Approx(0.25).margin(0.02));
  CHECK(sampler_kind_from_name("sqrt") == SamplerKind::SquareRoot);
  CHECK_THROWS_AS(sampler_kind_from_name("uniform"), ts::Error);
}

TEST_CASE("batching: length buckets and padding to the longest row", "[batching]") {
  TokenRows rows;
  for (int i = 0; i < 100; ++i) {
    const int length = 3 + (i * 37) % 60;
    std::vector<int64_t> ids(static_cast<size_t>(length), 1000 + i);
    ids.front() = 101;
    ids.back() = 102;
    rows.input_ids.push_back(ids);
    rows.labels.push_back(i % 2);
  }
  const auto lengths = rows.lengths();
  std::vector<int64_t> order(100);
  std::iota(order.begin(), order.end(), 0);

  BatchingOptions plain;
  plain.batch_size = 16;
  auto batches = plan_batches(order, lengths, plain, 0);
  REQUIRE(batches.size() == 7);
  CHECK(batches[0] == std::vector<int64_t>(order.begin(), order.begin() + 16));
  CHECK(batches.back().size() == 4);
  plain.drop_last = true;
  CHECK(plan_batches(order, lengths, plain, 0).size() == 6);

  BatchingOptions bucketed;
  bucketed.batch_size = 10;
  bucketed.bucket_by_length = true;
  bucketed.bucket_window_batches = 5;  // windows of 50 rows
  batches = plan_batches(order, lengths, bucketed, 3);
  REQUIRE(batches.size() == 10);
  std::vector<int64_t> seen;
  int64_t padded_tokens = 0;
  for (const auto& batch : batches) {
    seen.insert(seen.end(), batch.begin(), batch.end());
    int64_t longest = 0;
    for (int64_t i : batch) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
    padded_tokens += longest * static_cast<int64_t>(batch.size());
    // Each batch is a run of the window's rows sorted by length.
    for (size_t k = 1; k < batch.size(); ++k) CHECK(lengths[static_cast<size_t>(batch[k - 1])] <= lengths[static_cast<size_t>(batch[k])]);
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen == order);
  int64_t plain_padded = 0;
  for (const auto& batch : plan_batches(order, lengths, BatchingOptions{10}, 0)) {
    int64_t longest = 0;
    for (int64_t i : batch) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
    plain_padded += longest * static_cast<int64_t>(batch.size());
  }
  CHECK(padded_tokens < plain_padded);
  CHECK(plan_batches(order, lengths, bucketed, 3) == batches);
  CHECK(plan_batches(order, lengths, bucketed, 4) != batches);

  Batch batch = collate(rows, {0, 1, 2}, BatchingOptions{});
  // Rows 0, 1, 2 have 3, 40 and 17 tokens.
  CHECK(batch.input_ids.sizes() == torch::IntArrayRef({3, 40}));
  CHECK(batch.input_ids.scalar_type() == torch::kInt64);
  CHECK(batch.attention_mask.sum(1).equal(torch::tensor({3, 40, 17}, torch::kInt64)));
  CHECK(batch.input_ids[0][2].item<int64_t>() == 102);
  CHECK(batch.input_ids[0][3].item<int64_t>() == 0);  // pad id
  CHECK(batch.token_type_ids.sum().item<int64_t>() == 0);
  CHECK(batch.labels.equal(torch::tensor({0, 1, 0}, torch::kInt64)));

  BatchingOptions fixed;
  fixed.padding = Padding::Fixed;
  fixed.fixed_length = 128;
  Batch wide = collate(rows, {0, 1}, fixed);
  CHECK(wide.input_ids.sizes() == torch::IntArrayRef({2, 128}));
  CHECK(wide.attention_mask.sum().item<int64_t>() == 43);
  fixed.fixed_length = 20;
  CHECK_THROWS_WITH(collate(rows, {1}, fixed), Catch::Contains("40 tokens"));
}

TEST_CASE("down-sampling, long-tail and split options are read strictly", "[sampling]") {
  using nlohmann::json;
  const auto down = DownsampleOptions::from_json(json{{"rate", 0.1}, {"minority", 1}, {"seed", 7}}, "ts.downsample");
  CHECK(down.rate == 0.1);
  CHECK(down.minority == std::vector<int64_t>{1});
  CHECK(down.seed == 7u);
  CHECK(down.shuffle);
  CHECK(DownsampleOptions::from_json(json{{"minority", {0, 2}}}, "ts.downsample").minority ==
        std::vector<int64_t>{0, 2});
  CHECK(DownsampleOptions::from_json(nullptr, "ts.downsample").minority == std::vector<int64_t>{0});
  CHECK_THROWS_WITH(DownsampleOptions::from_json(json{{"ratio", 0.2}}, "ts.downsample"),
                    "ts.downsample: unknown option 'ratio' (known: rate, minority, seed, shuffle)");
  CHECK_THROWS_WITH(DownsampleOptions::from_json(json{{"seed", -3}}, "ts.downsample"), Catch::Contains("got -3"));

  const auto tail = LongTailOptions::from_json(json{{"imbalance", 10}, {"seed", 3}}, "ts.long_tail");
  CHECK(tail.imbalance == 10);
  CHECK(tail.counts.empty());
  CHECK(tail.seed == 3u);
  CHECK(LongTailOptions::from_json(json{{"counts", {5, 2}}}, "ts.long_tail").counts == std::vector<int64_t>{5, 2});
  CHECK_THROWS_WITH(LongTailOptions::from_json(nullptr, "ts.long_tail"),
                    "ts.long_tail: needs 'imbalance' >= 1 (n_max / n_min) or explicit 'counts'");
  CHECK_THROWS_WITH(LongTailOptions::from_json(json{{"imbalance", 0.5}}, "ts.long_tail"),
                    Catch::Contains("needs 'imbalance' >= 1"));
  CHECK_THROWS_WITH(LongTailOptions::from_json(json{{"imbalanced", 10}}, "ts.long_tail"),
                    Catch::Contains("unknown option 'imbalanced'"));

  const auto split = SplitOptions::from_json(json{{"fraction", 0.25}, {"seed", 1}}, "ts.split");
  CHECK(split.fraction == 0.25);
  CHECK(split.seed == 1u);
  CHECK(SplitOptions::from_json(nullptr, "ts.split").fraction == 0.1);
  CHECK_THROWS_WITH(SplitOptions::from_json(json{{"fraction", 1}}, "ts.split"),
                    "ts.split: fraction 1 must be in (0, 1)");
}

TEST_CASE("a long tail from an imbalance factor ranks classes by size and takes the largest head all can supply",
          "[sampling]") {
  // 50 rows of class 0, 80 of class 1, 30 of class 2: ranked 1, 0, 2. With imbalance 10 the shares are 1, 0.316,
  // 0.1, so the head is min(80 / 1, 50 / 0.316, 30 / 0.1) = 80 and the profile int(80 * share) = 80, 25, 8.
  std::vector<int64_t> labels;
  for (const auto& [label, count] : std::vector<std::pair<int64_t, int>>{{0, 50}, {1, 80}, {2, 30}})
    labels.insert(labels.end(), count, label);
  LongTailOptions options;
  options.imbalance = 10;
  options.seed = 5;
  const auto rows = long_tail_indices(labels, 3, options);
  std::vector<int64_t> kept(3, 0);
  for (const auto row : rows) ++kept[labels[row]];
  CHECK(kept == std::vector<int64_t>{25, 80, 8});
  CHECK(std::is_sorted(rows.begin(), rows.end()));
  // The same rows as the explicit profile in that class order, with the same seed.
  CHECK(rows == long_tail_indices(labels, long_tail_counts(80, 3, 10), 5, {1, 0, 2}));
  // Explicit counts are by class id, one per class.
  options.counts = {10, 20, 5};
  const auto explicit_rows = long_tail_indices(labels, 3, options);
  CHECK(explicit_rows == long_tail_indices(labels, options.counts, 5));
  options.counts = {10, 20};
  CHECK_THROWS_WITH(long_tail_indices(labels, 3, options), "long tail: 2 counts for 3 classes");
}

TEST_CASE("the named seed streams keep the values recorded runs were made with", "[sampling]") {
  namespace streams = ts::data::seed_streams;
  // The arithmetic they replaced, in experiment.lua, pretrain.lua, augment.lua and the masker's binding.
  CHECK(streams::stage_loader(7, 1) == 7001);
  CHECK(streams::stage_loader(190, 2) == 190002);
  CHECK(streams::pretraining_dropout(42, 0) == 42000126);
  CHECK(streams::pretraining_dropout(42, 5) == 42 * 1000003ull + 5);
  CHECK(streams::pretraining_replacements(42, 5) == 42 * 1000003ull + 5 + 0x5eed);
  CHECK(streams::training_masks(42, 3) == derive_seed(42 ^ 0x6d61736bull, 3));
  CHECK(streams::heldout_masks(42, 3) == derive_seed(42, 3));
  CHECK(streams::training_masks(42, 3) != streams::heldout_masks(42, 3));
  CHECK(streams::paraphrase_request(1000, 2, 3) == 1006);
  // Different stages, steps and passes never share a seed.
  std::set<uint64_t> seen;
  for (int64_t stage = 1; stage <= 3; ++stage) seen.insert(streams::stage_loader(7, stage));
  for (int64_t pass = 0; pass < 4; ++pass)
    for (int64_t choice = 0; choice < 3; ++choice) seen.insert(streams::paraphrase_request(50, pass, 3) + choice);
  CHECK(seen.size() == 3 + 12);
}
