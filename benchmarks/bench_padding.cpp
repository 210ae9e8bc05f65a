// Stage 2 training steps on SST-2 at imbalance rate 0.2 with the bert-base shape (random weights, the paper's MLP
// head): the reference's fixed padding to 128 against length buckets with dynamic padding (and, for reference, dynamic
// padding of shuffled batches without buckets). Each mode runs `--steps` timed steps (after `--warmup` untimed ones)
// on the first batches of the same epoch plan a training run would use: forward, cross-entropy, backward, clipping at
// 1.0, AdamW, linear schedule. Prints time/step, tokens/step, the speed-up over fixed padding (target >= 5x), the
// padded-token ratio over the whole epoch, an epoch time projected from the time per padded token, and peak memory.
//
//   bench_padding [--steps 3] [--warmup 1] [--batch 16] [--rate 0.2] [--layers 12] [--threads 0] [--device cpu]
//                 [--data ../shared/data/sst2/train.tsv] [--vocab ../shared/data/vocab/bert-base-uncased]
//
// Peak memory is the process's peak resident set (VmHWM), which only grows: modes run from the cheapest to the
// dearest so that each figure is that mode's own peak. With --device cuda it is host memory only (GPU memory is not
// measured).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/batching.h"
#include "data/sampling.h"
#include "data/table.h"
#include "model/bert.h"
#include "text/tokenizer.h"
#include "train/losses.h"
#include "train/optim.h"

namespace {

struct Args {
  int steps = 3;
  int warmup = 1;
  int64_t batch = 16;
  double rate = 0.2;
  int64_t layers = 12;
  int threads = 0;
  std::string device = "cpu";
  std::string data = "../shared/data/sst2/train.tsv";
  std::string vocab = "../shared/data/vocab/bert-base-uncased";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (i + 1 >= argc) ts::fail("{} needs a value", key);
    const std::string value = argv[++i];
    if (key == "--steps") a.steps = std::stoi(value);
    else if (key == "--warmup") a.warmup = std::stoi(value);
    else if (key == "--batch") a.batch = std::stoll(value);
    else if (key == "--rate") a.rate = std::stod(value);
    else if (key == "--layers") a.layers = std::stoll(value);
    else if (key == "--threads") a.threads = std::stoi(value);
    else if (key == "--device") a.device = value;
    else if (key == "--data") a.data = value;
    else if (key == "--vocab") a.vocab = value;
    else ts::fail("unknown option {}; see the comment at the top of bench_padding.cpp", key);
  }
  if (a.steps < 1) ts::fail("--steps must be >= 1");
  return a;
}

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1.0;
}

struct Mode {
  const char* name;
  ts::data::BatchingOptions batching;
};

struct Result {
  double seconds_per_step = 0;
  double tokens_per_step = 0;     // padded positions per timed step (batch × width)
  double epoch_padded_tokens = 0;  // over every batch of the epoch
  int64_t epoch_batches = 0;
  double peak_mib = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  if (args.threads > 0) torch::set_num_threads(args.threads);
  const torch::Device device(args.device);
  torch::manual_seed(42);

  // Data as the reference prepares it: SST-2 train, negatives down-sampled to rate × positives, shuffled (seed 42).
  ts::data::TableOptions table;
  table.text_column = "sentence";
  const auto train = ts::data::downsample(ts::data::read_table(args.data, table),
                                          ts::data::DownsampleOptions{args.rate, {0}, 42, true});
  const auto tokenizer = ts::text::Tokenizer::from_folder(args.vocab);
  const auto encodings = tokenizer.encode_batch(train.texts, nullptr, 128, 2);
  ts::data::TokenRows rows;
  for (const auto& e : encodings) {
    rows.input_ids.emplace_back(e.ids.begin(), e.ids.end());
    rows.token_type_ids.emplace_back(e.type_ids.begin(), e.type_ids.end());
  }
  rows.labels = train.labels;
  const auto lengths = rows.lengths();
  double mean_length = 0;
  for (int64_t n : lengths) mean_length += static_cast<double>(n);
  mean_length /= static_cast<double>(lengths.size());
  std::printf("data: %lld rows (%lld + %lld), mean %.1f tokens, longest %lld; bert-base shape, %lld layers, batch %lld, "
              "%d threads, %s\n",
              static_cast<long long>(train.size()), static_cast<long long>(train.class_counts()[0]),
              static_cast<long long>(train.class_counts()[1]), mean_length,
              static_cast<long long>(*std::max_element(lengths.begin(), lengths.end())),
              static_cast<long long>(args.layers), static_cast<long long>(args.batch), torch::get_num_threads(),
              args.device.c_str());

  ts::BertConfig config;
  config.num_hidden_layers = args.layers;
  config.set_num_labels(2);
  config.head.type = "mlp";
  config.head.hidden_size = 50;

  const ts::data::Sampler sampler(train.labels, 2, ts::data::SamplerKind::Random, 42);
  const auto order = sampler.epoch(0);

  ts::data::BatchingOptions fixed;
  fixed.batch_size = args.batch;
  fixed.padding = ts::data::Padding::Fixed;
  fixed.fixed_length = 128;
  ts::data::BatchingOptions dynamic = fixed;
  dynamic.padding = ts::data::Padding::Longest;
  ts::data::BatchingOptions bucketed = dynamic;
  bucketed.bucket_by_length = true;
  const std::vector<Mode> modes = {
      {"buckets + dynamic padding", bucketed},
      {"dynamic padding, no buckets", dynamic},
      {"fixed padding to 128", fixed},
  };

  std::map<std::string, Result> results;
  for (const auto& mode : modes) {
    torch::manual_seed(42);
    ts::BertForSequenceClassification model(config);
    model->to(device);
    model->train();
    const auto parameters = model->parameters();
    ts::train::OptimizerConfig optimizer_config;
    optimizer_config.lr = 1e-5;
    auto optimizer = ts::train::make_optimizer(parameters, optimizer_config);

    const auto plan = ts::data::plan_batches(order, lengths, mode.batching, ts::data::derive_seed(42, 0));
    ts::train::LrScheduler scheduler(*optimizer, {ts::train::ScheduleKind::Linear, 0, static_cast<int64_t>(plan.size())},
                                     1e-5);
    Result result;
    result.epoch_batches = static_cast<int64_t>(plan.size());
    for (const auto& batch : plan) {
      int64_t width = 0;
      for (int64_t i : batch) width = std::max(width, lengths[static_cast<size_t>(i)]);
      if (mode.batching.padding == ts::data::Padding::Fixed) width = mode.batching.fixed_length;
      result.epoch_padded_tokens += static_cast<double>(width * static_cast<int64_t>(batch.size()));
    }
    if (static_cast<size_t>(args.warmup + args.steps) > plan.size()) ts::fail("the epoch has only {} batches", plan.size());

    double timed = 0;
    for (int step = 0; step < args.warmup + args.steps; ++step) {
      auto b = ts::data::collate(rows, plan[static_cast<size_t>(step)], mode.batching);
      const auto start = std::chrono::steady_clock::now();
      auto out = model->forward(b.input_ids.to(device), b.attention_mask.to(device), b.token_type_ids.to(device));
      auto loss = ts::train::cross_entropy(out.logits, b.labels.to(device));
      optimizer->zero_grad();
      loss.backward();
      ts::train::clip_grad_norm(parameters, 1.0);
      optimizer->step();
      scheduler.step();
      (void)loss.item<double>();  // waits for the device
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (step >= args.warmup) {
        timed += seconds;
        result.tokens_per_step += static_cast<double>(b.input_ids.numel());
      }
    }
    result.seconds_per_step = timed / args.steps;
    result.tokens_per_step /= args.steps;
    result.peak_mib = peak_rss_mib();
    results[mode.name] = result;
    std::printf("%-28s %8.3f s/step  %7.0f tokens/step  epoch: %5lld batches, %.2fM padded tokens  peak RSS %.0f MiB\n",
                mode.name, result.seconds_per_step, result.tokens_per_step,
                static_cast<long long>(result.epoch_batches), result.epoch_padded_tokens / 1e6, result.peak_mib);
    std::fflush(stdout);
  }

  const auto& reference = results["fixed padding to 128"];
  const auto& ours = results["buckets + dynamic padding"];
  const auto& unbucketed = results["dynamic padding, no buckets"];
  std::printf("speed-up of buckets + dynamic padding over fixed 128: %.2fx per step (target >= 5x), padded-token "
              "ratio over the epoch %.2fx\n",
              reference.seconds_per_step / ours.seconds_per_step,
              reference.epoch_padded_tokens / ours.epoch_padded_tokens);
  std::printf("speed-up of dynamic padding without buckets: %.2fx per step, padded-token ratio %.2fx\n",
              reference.seconds_per_step / unbucketed.seconds_per_step,
              reference.epoch_padded_tokens / unbucketed.epoch_padded_tokens);
  // The timed steps are the first of the epoch; bucketed batches vary in width, so also project the whole epoch
  // from the measured time per padded token (exact for fixed padding, where every batch is the same).
  auto projected = [](const Result& r) { return r.seconds_per_step / r.tokens_per_step * r.epoch_padded_tokens; };
  std::printf("projected epoch (time per padded token x the epoch's padded tokens): fixed %.0f s, buckets %.0f s, "
              "no buckets %.0f s; speed-up %.2fx\n",
              projected(reference), projected(ours), projected(unbucketed), projected(reference) / projected(ours));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_padding: %s\n", e.what());
  return 1;
}
