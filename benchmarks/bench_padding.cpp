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
#include <ctime>
#include <map>
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
  const auto refuse = [](const char* message) { ts::fail("{}", message); };
  ts::bench::for_each_option(argc, argv, [&](const std::string& key, const std::string& value) {
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
  }, refuse);
  if (a.steps < 1) ts::fail("--steps must be >= 1");
  return a;
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Mode {
  const char* name;
  ts::data::BatchingOptions batching;
};

struct Result {
  double seconds_per_step = 0;
  double cpu_seconds_per_step = 0;  // process CPU time (all threads): less disturbed by other jobs on a shared machine
  double forward = 0, backward = 0, update = 0;  // seconds per step: forward + loss, backward, clip + AdamW + zero
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
  auto rows = ts::data::token_rows(encodings, true);
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
  struct Sample {
    double tokens, seconds;
  };
  std::vector<Sample> samples;  // every timed step of every mode, for the cost model below
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
      using clock = std::chrono::steady_clock;
      auto since = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
      const auto start = clock::now();
      const double cpu_start = process_cpu_seconds();
      auto out = model->forward(b.input_ids.to(device), b.attention_mask.to(device), b.token_type_ids.to(device));
      auto loss = ts::train::cross_entropy(out.logits, b.labels.to(device));
      (void)loss.item<double>();  // waits for the device
      const double forward = since(start);
      const auto backward_start = clock::now();
      loss.backward();
      (void)parameters[0].grad().sum().item<double>();
      const double backward = since(backward_start);
      const auto update_start = clock::now();
      ts::train::clip_grad_norm(parameters, 1.0);
      optimizer->step();
      scheduler.step();
      optimizer->zero_grad();
      (void)parameters[0].sum().item<double>();
      const double update = since(update_start);
      const double cpu = process_cpu_seconds() - cpu_start;
      if (step >= args.warmup) {
        timed += forward + backward + update;
        result.cpu_seconds_per_step += cpu / args.steps;
        samples.push_back({static_cast<double>(b.input_ids.numel()), forward + backward + update});
        result.forward += forward / args.steps;
        result.backward += backward / args.steps;
        result.update += update / args.steps;
        result.tokens_per_step += static_cast<double>(b.input_ids.numel());
      }
    }
    result.seconds_per_step = timed / args.steps;
    result.tokens_per_step /= args.steps;
    result.peak_mib = ts::bench::peak_rss_mib();
    results[mode.name] = result;
    std::printf("%-28s %7.3f s/step, %.3f CPU s/step (forward %.3f, backward %.3f, update %.3f)  %5.0f tokens/step  epoch: %lld batches, "
                "%.2fM padded tokens  peak RSS %.0f MiB\n",
                mode.name, result.seconds_per_step, result.cpu_seconds_per_step, result.forward, result.backward, result.update,
                result.tokens_per_step,
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
  std::printf("CPU time per step: %.2fx\n", reference.cpu_seconds_per_step / ours.cpu_seconds_per_step);
  // The timed steps are the epoch's first, and bucketed batches vary in width, so project whole epochs with a cost
  // model fitted to every timed step: seconds = fixed + per_token x padded tokens (least squares). `fixed` is the
  // part no padding scheme saves (AdamW over all weights, clipping, the embedding gradient).
  double mean_x = 0, mean_y = 0;
  for (const auto& s : samples) mean_x += s.tokens / samples.size(), mean_y += s.seconds / samples.size();
  double sxy = 0, sxx = 0;
  for (const auto& s : samples) sxy += (s.tokens - mean_x) * (s.seconds - mean_y), sxx += (s.tokens - mean_x) * (s.tokens - mean_x);
  const double per_token = sxx > 0 ? sxy / sxx : 0.0;
  const double fixed_cost = mean_y - per_token * mean_x;
  auto projected = [&](const Result& r) {
    return fixed_cost * static_cast<double>(r.epoch_batches) + per_token * r.epoch_padded_tokens;
  };
  std::printf("cost model: %.3f s/step fixed + %.3f ms per padded token; projected epoch: fixed 128 %.0f s, buckets "
              "%.0f s, no buckets %.0f s; speed-up %.2fx (buckets), %.2fx (no buckets)\n",
              fixed_cost, per_token * 1e3, projected(reference), projected(ours), projected(unbucketed),
              projected(reference) / projected(ours), projected(reference) / projected(unbucketed));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_padding: %s\n", e.what());
  return 1;
}
