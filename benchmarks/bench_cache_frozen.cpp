// Stage 1 of the two-stage method (top encoder layer, pooler and head train; everything below is frozen) on SST-2 at
// rate 0.2, bert-base shape with random weights: the plain loop, which runs the whole model forward every step,
// against cache_frozen, which runs the frozen trunk once per row (eval mode, no gradients) and trains the top on the
// cached hidden states. Both use per-batch padding of shuffled batches, as the recipes do by default.
//
// Timed: `--steps` training steps of each (after `--warmup`), and building the cache for `--cache-rows` rows. An
// epoch is then projected: plain = batches x step time; cached = rows x cache time per row + batches x cached step
// time, for 1 and for 3 epochs (the cache is built once). Also prints the cache's memory for the whole training set
// and the process's peak resident memory.
//
//   bench_cache_frozen [--steps 5] [--warmup 1] [--cache-rows 512] [--layers 12] [--batch 16] [--threads 0]
//                      [--data ../shared/data/sst2/train.tsv] [--vocab ../shared/data/vocab/bert-base-uncased]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common.h"
#include "core/error.h"
#include "data/batching.h"
#include "data/loader.h"
#include "data/sampling.h"
#include "data/table.h"
#include "model/bert.h"
#include "text/tokenizer.h"
#include "train/frozen_trunk.h"
#include "train/losses.h"
#include "train/optim.h"

namespace {

struct Args {
  int steps = 5;
  int warmup = 1;
  int64_t cache_rows = 512;
  int64_t layers = 12;
  int64_t batch = 16;
  int threads = 0;
  std::string data = "../shared/data/sst2/train.tsv";
  std::string vocab = "../shared/data/vocab/bert-base-uncased";
};

Args parse(int argc, char** argv) {
  Args a;
  const auto refuse = [](const char* message) { ts::fail("{}", message); };
  ts::bench::for_each_option(argc, argv, [&](const std::string& key, const std::string& value) {
    if (key == "--steps") a.steps = std::stoi(value);
    else if (key == "--warmup") a.warmup = std::stoi(value);
    else if (key == "--cache-rows") a.cache_rows = std::stoll(value);
    else if (key == "--layers") a.layers = std::stoll(value);
    else if (key == "--batch") a.batch = std::stoll(value);
    else if (key == "--threads") a.threads = std::stoi(value);
    else if (key == "--data") a.data = value;
    else if (key == "--vocab") a.vocab = value;
    else ts::fail("unknown option {}; see the comment at the top of bench_cache_frozen.cpp", key);
  }, refuse);
  if (a.steps < 1 || a.cache_rows < a.batch) ts::fail("--steps must be >= 1 and --cache-rows >= --batch");
  return a;
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  if (args.threads > 0) torch::set_num_threads(args.threads);

  ts::data::TableOptions table;
  table.text_column = "sentence";
  const auto train = ts::data::downsample(ts::data::read_table(args.data, table),
                                          ts::data::DownsampleOptions{0.2, {0}, 42, true});
  const auto tokenizer = ts::text::Tokenizer::from_folder(args.vocab);
  auto rows = ts::data::token_rows(tokenizer.encode_batch(train.texts, nullptr, 128, 2), false);
  rows.labels = train.labels;
  const auto lengths = rows.lengths();

  ts::BertConfig config;
  config.num_hidden_layers = args.layers;
  config.set_num_labels(2);
  config.head.type = "mlp";
  torch::manual_seed(42);
  ts::BertForSequenceClassification model(config);
  model->train();
  ts::train::set_trainable(*model, ts::train::top_layer_patterns(args.layers, 1));
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  ts::train::OptimizerConfig optimizer_config;
  optimizer_config.lr = 1e-4;
  auto optimizer = ts::train::make_optimizer(trainable, optimizer_config);

  ts::data::BatchingOptions batching;
  batching.batch_size = args.batch;
  const auto order = ts::data::Sampler(train.labels, 2, ts::data::SamplerKind::Random, 42).epoch(0);
  const auto plan = ts::data::plan_batches(order, lengths, batching, 0);
  const auto epoch_batches = static_cast<double>(plan.size());
  std::printf("data: %lld rows, %zu batches of %lld; %lld layers (bert-base width), stage 1 trains layer %lld, the "
              "pooler and the head; %d threads\n",
              static_cast<long long>(train.size()), plan.size(), static_cast<long long>(args.batch),
              static_cast<long long>(args.layers), static_cast<long long>(args.layers - 1), torch::get_num_threads());

  auto train_step = [&](auto&& logits_of, const std::vector<int64_t>& indices) {
    const auto start = Clock::now();
    const auto labels = torch::tensor(std::vector<int64_t>([&] {
      std::vector<int64_t> out;
      for (auto i : indices) out.push_back(rows.labels[static_cast<size_t>(i)]);
      return out;
    }()));
    auto loss = ts::train::cross_entropy(logits_of(indices), labels);
    loss.backward();
    ts::train::clip_grad_norm(trainable, 1.0);
    optimizer->step();
    optimizer->zero_grad();
    return since(start);
  };

  // The plain loop: the whole model forward in train mode, backward through the top only.
  double plain = 0;
  for (int step = 0; step < args.warmup + args.steps; ++step) {
    const double seconds = train_step(
        [&](const std::vector<int64_t>& indices) {
          const auto b = ts::data::collate(rows, indices, batching);
          return model->forward(b.input_ids, b.attention_mask, b.token_type_ids).logits;
        },
        plan[static_cast<size_t>(step)]);
    if (step >= args.warmup) plain += seconds / args.steps;
  }
  std::printf("plain stage 1:   %.3f s/step\n", plain);
  std::fflush(stdout);

  // cache_frozen: the trunk once over the first cache_rows rows of the epoch's order, then steps on those rows.
  ts::data::TokenRows subset;
  std::vector<int64_t> subset_order;
  for (int64_t i = 0; i < args.cache_rows; ++i) {
    const auto row = static_cast<size_t>(order[static_cast<size_t>(i)]);
    subset.input_ids.push_back(rows.input_ids[row]);
    subset.labels.push_back(rows.labels[row]);
    subset_order.push_back(i);
  }
  const auto cache_start = Clock::now();
  ts::train::FrozenTrunkCache cache(model, subset, args.layers - 1, 64);
  const double cache_per_row = since(cache_start) / static_cast<double>(args.cache_rows);
  const double bytes_per_row = static_cast<double>(cache.bytes()) / static_cast<double>(args.cache_rows);
  const auto subset_plan = ts::data::plan_batches(subset_order, subset.lengths(), batching, 0);
  if (static_cast<size_t>(args.warmup + args.steps) > subset_plan.size())
    ts::fail("--cache-rows {} gives only {} batches", args.cache_rows, subset_plan.size());
  const auto saved_labels = rows.labels;
  rows.labels = subset.labels;  // train_step reads labels by index into `rows`
  double cached = 0;
  for (int step = 0; step < args.warmup + args.steps; ++step) {
    const double seconds = train_step(
        [&](const std::vector<int64_t>& indices) {
          const auto hidden = cache.collate(indices);
          return model->forward_from(args.layers - 1, hidden.hidden_states, hidden.attention_mask).logits;
        },
        subset_plan[static_cast<size_t>(step)]);
    if (step >= args.warmup) cached += seconds / args.steps;
  }
  rows.labels = saved_labels;
  std::printf("cached stage 1:  %.3f s/step, building the cache %.2f ms/row, %.1f KiB/row\n", cached,
              cache_per_row * 1e3, bytes_per_row / 1024);

  const double rows_total = static_cast<double>(train.size());
  for (const int epochs : {1, 3}) {
    const double plain_total = epochs * epoch_batches * plain;
    const double cached_total = rows_total * cache_per_row + epochs * epoch_batches * cached;
    std::printf("projected stage 1 of %d epoch(s): plain %.0f s, cache_frozen %.0f s: %.2fx faster\n", epochs,
                plain_total, cached_total, plain_total / cached_total);
  }
  std::printf("the cache for all %.0f rows: %.0f MiB; peak resident memory of this run %.0f MiB\n", rows_total,
              rows_total * bytes_per_row / (1 << 20), ts::bench::peak_rss_mib());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_cache_frozen: %s\n", e.what());
  return 1;
}
