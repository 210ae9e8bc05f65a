// A bert-base training step (forward, backward, gradient clipping, AdamW) against plain LibTorch matrix products
// of the same FLOPs, timed in the same run. The ratio of FLOP rates says how much of the machine's GEMM speed the
// model code keeps; everything that is not a matrix product (LayerNorm, softmax, GELU, dropout, AdamW, the
// embedding gradient) counts against it.
//
//   bench_train_step [--steps N] [--warmup N] [--batch N] [--seq-lengths 128,32] [--layers N]
//                    [--intra-op-threads N] [--blas-threads N] [--worker-threads N] [--dropout P] [--profile PREFIX]
//                    [--keep-freed-memory 1|0] [--head-matmul blas|torch] [--fused 1|0|both]
//                    [--blas-core auto|as-is|NAME] [--config config.json] [--sgemm-limit 1|0]
//
// --config takes the shapes of another BERT (a config.json, e.g. data/models/all-minilm-l6-v2's) instead of
// bert-base's; --layers still overrides its depth when given. --sgemm-limit 1 (the default) first times every
// OpenBLAS kernel this CPU runs, each in a process of its own and verified (sgemm_limit.h), and reports the step
// beside the best verified rate as well as beside the reference of the kernel this process runs.
//
// --profile writes one more step per sequence length as a Chrome trace, PREFIX-seqN.json (torch's legacy
// profiler: every operator with its time, for finding what is not a matrix product). --keep-freed-memory 0 leaves
// glibc's malloc as it comes (twostage keeps freed memory for reuse: runtime::keep_freed_memory).
// --head-matmul torch runs attention's per-head products with torch::matmul instead of the host's sgemm calls
// (model/head_matmul.h), to compare the two in one binary; --fused 0 runs LibTorch's operators one by one where the
// host has kernels of its own (model/fused_kernels.h), and --fused both alternates the two step by step and reports
// each against the same reference (a machine's changing load then hits both alike).
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/autograd/profiler.h>
#include <torch/torch.h>

#include "common.h"
#include "sgemm_limit.h"
#include "core/parallel.h"
#include "model/bert.h"
#include "model/fused_kernels.h"
#include "model/head_matmul.h"
#include "runtime/environment.h"
#include "train/fused_adamw.h"
#include "train/optim.h"

namespace {

struct Options {
  int steps = 2;
  int warmup = 1;
  int64_t batch = 16;
  std::vector<int64_t> seq_lengths{128, 32};
  int64_t layers = 0;  // 0: the config's (bert-base: 12)
  std::string config;  // a config.json; empty: bert-base-uncased's shapes
  bool sgemm_limit = true;
  int intra_op_threads = 1;
  int blas_threads = 2;
  int worker_threads = 0;  // twostage's own loops (dropout, AdamW, fused kernels); 0: as twostage run sets them
  double dropout = 0.1;  // hidden and attention dropout; 0 shows what dropout costs
  std::string profile;   // trace file prefix; empty: no trace
  bool keep_freed_memory = true;
  bool head_matmul_blas = true;
  std::vector<bool> fused{true};  // {true, false}: both, alternating
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: bench_train_step [--steps N] [--warmup N] [--batch N] [--seq-lengths 128,32] "
               "[--layers N] [--intra-op-threads N] [--blas-threads N] [--worker-threads N] [--dropout P] "
               "[--profile PREFIX] [--keep-freed-memory 1|0] [--head-matmul blas|torch] [--fused 1|0|both] "
               "[--config config.json] [--sgemm-limit 1|0]\n",
               message);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  ts::bench::for_each_option(argc, argv, [&](const std::string& flag, const std::string& value) {
    if (flag == "--blas-core" || flag == "--sgemm-probe") return;  // choose_blas_kernels / run_probe_if_asked
    else if (flag == "--steps") options.steps = std::stoi(value);
    else if (flag == "--warmup") options.warmup = std::stoi(value);
    else if (flag == "--batch") options.batch = std::stoll(value);
    else if (flag == "--layers") options.layers = std::stoll(value);
    else if (flag == "--intra-op-threads") options.intra_op_threads = std::stoi(value);
    else if (flag == "--blas-threads") options.blas_threads = std::stoi(value);
    else if (flag == "--worker-threads") options.worker_threads = std::stoi(value);
    else if (flag == "--dropout") options.dropout = std::stod(value);
    else if (flag == "--profile") options.profile = value;
    else if (flag == "--config") options.config = value;
    else if (flag == "--sgemm-limit") options.sgemm_limit = value != "0";
    else if (flag == "--keep-freed-memory") options.keep_freed_memory = value != "0";
    else if (flag == "--head-matmul") {
      if (value != "blas" && value != "torch") usage("--head-matmul: blas or torch");
      options.head_matmul_blas = value == "blas";
    } else if (flag == "--fused") {
      if (value != "1" && value != "0" && value != "both") usage("--fused: 1, 0 or both");
      options.fused = value == "both" ? std::vector<bool>{true, false} : std::vector<bool>{value == "1"};
    } else if (flag == "--seq-lengths") {
      options.seq_lengths = ts::bench::parse_int_list(value);
    } else {
      usage(("unknown option " + flag).c_str());
    }
  }, usage);
  if (options.steps < 1 || options.batch < 1 || options.layers < 0) usage("steps and batch must be positive");
  return options;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

long minor_page_faults() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// The matrix products of one training step of the encoder (forward, and the two products per forward product in
// backward), with the shapes the model uses, written into preallocated outputs.
class ReferenceWorkload {
 public:
  ReferenceWorkload(const ts::BertConfig& config, int64_t batch, int64_t seq) : layers_(config.num_hidden_layers) {
    const int64_t tokens = batch * seq;
    const int64_t hidden = config.hidden_size;
    const int64_t heads = config.num_attention_heads;
    const int64_t head = config.head_size();
    const auto linear = [&](int64_t in, int64_t out) {
      linears_.push_back({torch::randn({tokens, in}), torch::randn({out, in}), torch::randn({tokens, out}),
                          torch::empty({tokens, out}), torch::empty({tokens, in}), torch::empty({out, in})});
      flops_ += 3.0 * 2.0 * tokens * in * out;
    };
    for (int i = 0; i < 4; ++i) linear(hidden, hidden);  // query, key, value, attention output
    linear(hidden, config.intermediate_size);
    linear(config.intermediate_size, hidden);
    q_ = torch::randn({batch * heads, seq, head});
    k_t_ = torch::randn({batch * heads, head, seq});
    probs_ = torch::randn({batch * heads, seq, seq});
    v_ = torch::randn({batch * heads, seq, head});
    scores_ = torch::empty({batch * heads, seq, seq});
    context_ = torch::empty({batch * heads, seq, head});
    // Forward: Q K^T and P V; backward: dP = dC V^T, and dV, dQ, dK as [S,S] x [S,d] products.
    flops_ += 6.0 * 2.0 * batch * heads * seq * seq * head;
    flops_ *= static_cast<double>(layers_);
    // Pooler and a 2-way classifier: forward and backward.
    flops_ += 3.0 * 2.0 * batch * (hidden * hidden + hidden * 2);
    pooled_in_ = torch::randn({batch, hidden});
    pooler_w_ = torch::randn({hidden, hidden});
    pooled_out_ = torch::empty({batch, hidden});
  }

  double flops() const { return flops_; }

  void run() {
    for (int64_t layer = 0; layer < layers_; ++layer) {
      for (auto& l : linears_) {
        torch::mm_out(l.y, l.x, l.w.t());      // forward
        torch::mm_out(l.dx, l.dy, l.w);        // input gradient
        torch::mm_out(l.dw, l.dy.t(), l.x);    // weight gradient
      }
      torch::bmm_out(scores_, q_, k_t_);        // scores
      torch::bmm_out(context_, probs_, v_);     // context
      torch::bmm_out(scores_, q_, k_t_);        // dP = dC V^T
      torch::bmm_out(context_, probs_, v_);     // dV = P^T dC
      torch::bmm_out(context_, probs_, v_);     // dQ = dS K
      torch::bmm_out(context_, probs_, v_);     // dK = dS^T Q
    }
    for (int i = 0; i < 3; ++i) torch::mm_out(pooled_out_, pooled_in_, pooler_w_);
  }

 private:
  struct Linear {
    torch::Tensor x, w, dy, y, dx, dw;
  };
  int64_t layers_;
  double flops_ = 0;
  std::vector<Linear> linears_;
  torch::Tensor q_, k_t_, probs_, v_, scores_, context_, pooled_in_, pooler_w_, pooled_out_;
};

}  // namespace

int main(int argc, char** argv) {
  ts::bench::choose_blas_kernels(argc, argv);
  const Options options = parse(argc, argv);
  at::set_num_threads(options.intra_op_threads);
  const bool blas_set = ts::bench::set_openblas_threads(options.blas_threads);
  const bool keeps_freed_memory = options.keep_freed_memory && ts::runtime::keep_freed_memory();
  ts::set_head_matmul_blas(options.head_matmul_blas);
  // twostage's own loops as `twostage run` sets them beside the BLAS's pool, unless asked otherwise.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ts::set_worker_threads(options.worker_threads > 0 ? options.worker_threads
                         : blas_set ? ts::runtime::loop_threads_beside_blas(cores, options.blas_threads)
                                    : cores);
  ts::set_fused_kernels(options.fused.front());

  ts::BertConfig config = options.config.empty() ? ts::BertConfig{} : ts::BertConfig::load(options.config);
  if (options.layers > 0) config.num_hidden_layers = options.layers;
  config.set_num_labels(2);
  config.hidden_dropout_prob = config.attention_probs_dropout_prob = options.dropout;
  // A probe of another kernel (sgemm_limit.h): the reference products of each sequence length, and nothing else.
  const auto reference_rates = [&] {
    std::vector<double> rates;
    for (const int64_t seq : options.seq_lengths) {
      ReferenceWorkload reference(config, options.batch, seq);
      reference.run();
      std::vector<double> seconds;
      for (int i = 0; i < options.steps; ++i) {
        const auto start = std::chrono::steady_clock::now();
        reference.run();
        seconds.push_back(seconds_since(start));
      }
      rates.push_back(reference.flops() / ts::bench::median(seconds) / 1e9);
    }
    return rates;
  };
  if (ts::bench::run_probe_if_asked(argc, argv, options.blas_threads, reference_rates)) return 0;
  const std::string running_core = ts::runtime::openblas_core();
  std::vector<ts::bench::KernelRate> kernels;
  if (options.sgemm_limit) {
    std::string args = "--batch " + std::to_string(options.batch) + " --steps " + std::to_string(options.steps) +
                       " --blas-threads " + std::to_string(options.blas_threads) + " --seq-lengths ";
    for (size_t i = 0; i < options.seq_lengths.size(); ++i)
      args += (i ? "," : "") + std::to_string(options.seq_lengths[i]);
    if (!options.config.empty()) args += " --config '" + options.config + "'";
    if (options.layers > 0) args += " --layers " + std::to_string(options.layers);
    kernels = ts::bench::measure_kernels(args, running_core, true);
  }
  std::printf("threads: intra-op %d, OpenBLAS %s, twostage's own loops (dropout, AdamW) %d; freed memory %s\n",
              options.intra_op_threads,
              blas_set ? std::to_string(options.blas_threads).c_str() : "(not found; BLAS default)",
              ts::worker_threads(), keeps_freed_memory ? "kept for reuse" : "returned (glibc's defaults)");
  const auto probe = torch::ones({1, 1, 1, 1});
  std::printf("attention's per-head products: %s\n",
              ts::head_matmul_uses_blas(probe, probe) ? "sgemm per head (model/head_matmul.h)" : "torch::matmul");
  std::printf("element-wise work around the products: %s\n",
              options.fused.size() > 1 ? "the host's fused kernels and LibTorch's operators, step by step"
              : options.fused.front() ? "the host's fused kernels (model/fused_kernels.h)"
                                      : "LibTorch's operators");

  torch::manual_seed(0);
  ts::BertForSequenceClassification model(config);
  model->train();  // dropout on, as in fine-tuning
  // The AdamW the host trains with (train/fused_adamw.h): one pass per tensor.
  ts::train::FusedAdamW optimizer({torch::optim::OptimizerParamGroup(model->parameters())},
                                  torch::optim::AdamWOptions(1e-5).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.0));
  int64_t parameter_count = 0;
  for (const auto& p : model->parameters()) parameter_count += p.numel();
  std::printf("model: %lld layers, hidden %lld, %lld heads, intermediate %lld, vocab %lld, %.1fM parameters; "
              "batch %lld, dropout %g, %d timed steps after %d warm-up\n",
              static_cast<long long>(config.num_hidden_layers), static_cast<long long>(config.hidden_size),
              static_cast<long long>(config.num_attention_heads), static_cast<long long>(config.intermediate_size),
              static_cast<long long>(config.vocab_size), parameter_count / 1e6, static_cast<long long>(options.batch),
              options.dropout, options.steps, options.warmup);

  for (const int64_t& seq : options.seq_lengths) {
    // A fresh batch of token ids for every step, drawn outside the timing: as in training, each step's gradient
    // reaches other rows of the word embedding, and the rows AdamW must update grow step by step.
    torch::Tensor ids;
    const auto next_batch = [&] { ids = torch::randint(1000, config.vocab_size, {options.batch, seq}, torch::kLong); };
    const torch::Tensor mask = torch::ones({options.batch, seq}, torch::kLong);
    const torch::Tensor labels = torch::randint(0, 2, {options.batch}, torch::kLong);
    // Seconds spent in forward, backward, and clipping + AdamW, summed over timed steps, per variant.
    const std::size_t variants = options.fused.size();
    std::vector<std::array<double, 3>> phase_seconds(variants, {0, 0, 0});
    std::vector<long> page_faults(variants, 0);  // minor faults: first touches of memory new to the process
    std::size_t variant = 0;
    bool timing_phases = false;
    const auto step = [&] {
      auto start = std::chrono::steady_clock::now();
      const auto lap = [&](int phase) {
        if (timing_phases) phase_seconds[variant][phase] += seconds_since(start);
        start = std::chrono::steady_clock::now();
      };
      ts::train::clear_gradients(optimizer);
      const auto out = model->forward(ids, mask);
      const torch::Tensor loss = torch::nn::functional::cross_entropy(out.logits, labels);
      lap(0);
      loss.backward();
      lap(1);
      ts::train::clip_grad_norm_and_step(optimizer, model->parameters(), 1.0);
      lap(2);
    };
    ReferenceWorkload reference(config, options.batch, seq);

    for (int i = 0; i < options.warmup; ++i) {
      for (variant = 0; variant < variants; ++variant) {
        ts::set_fused_kernels(options.fused[variant]);
        next_batch();
        step();
      }
      reference.run();
    }
    // Interleaved, so that a change in machine load hits all alike.
    std::vector<std::vector<double>> step_seconds(variants);
    std::vector<double> reference_seconds;
    timing_phases = true;
    for (int i = 0; i < options.steps; ++i) {
      for (variant = 0; variant < variants; ++variant) {
        ts::set_fused_kernels(options.fused[variant]);
        next_batch();
        const long faults = minor_page_faults();
        const auto start = std::chrono::steady_clock::now();
        step();
        step_seconds[variant].push_back(seconds_since(start));
        page_faults[variant] += minor_page_faults() - faults;
      }
      const auto start = std::chrono::steady_clock::now();
      reference.run();
      reference_seconds.push_back(seconds_since(start));
    }
    const double reference_time = ts::bench::median(reference_seconds);
    const double flops = reference.flops();
    const double reference_rate = flops / reference_time / 1e9;
    const size_t seq_index = static_cast<size_t>(&seq - options.seq_lengths.data());
    for (variant = 0; variant < variants; ++variant) {
      const double step_time = ts::bench::median(step_seconds[variant]);
      const double model_rate = flops / step_time / 1e9;
      const char* label = variants == 1 ? "" : options.fused[variant] ? " (fused kernels)" : " (LibTorch's operators)";
      std::printf(
          "seq %4lld%s: train step %.3f s (median of %d) = %.1f GFLOP/s; matmul reference %.3f s = %.1f GFLOP/s; "
          "ratio %.1f%% (target >= 90%%); %.1f GFLOP per step; peak RSS %.0f MiB\n",
          static_cast<long long>(seq), label, step_time, options.steps, model_rate, reference_time, reference_rate,
          100.0 * model_rate / reference_rate, flops / 1e9, ts::bench::peak_rss_mib());
      if (!kernels.empty()) {
        // The limit: the best verified kernel's rate on these very products, each timed alone in a process of its
        // own, and on sgemm 1024³.
        auto own = ts::bench::best_verified(kernels, [&](const ts::bench::KernelRate& k) {
          return seq_index < k.own.size() ? k.own[seq_index] : 0.0;
        });
        const auto square = ts::bench::best_verified(kernels, [](const ts::bench::KernelRate& k) {
          return k.sgemm_1024;
        });
        std::printf("          limit: the same products on the best verified kernel (%s) %.1f GFLOP/s, step at "
                    "%.1f%% of it; sgemm 1024³ on the best verified kernel (%s) %.1f GFLOP/s, step at %.1f%%\n",
                    own.second.c_str(), own.first, 100.0 * model_rate / own.first, square.second.c_str(),
                    square.first, 100.0 * model_rate / square.first);
      }
      const auto& phases = phase_seconds[variant];
      std::printf("          per step: forward %.3f s, backward %.3f s, clip + AdamW %.3f s (means); %ld minor page "
                  "faults\n",
                  phases[0] / options.steps, phases[1] / options.steps, phases[2] / options.steps,
                  page_faults[variant] / options.steps);
    }
    if (variants == 2) {
      // Paired: each timed round ran both, back to back, so the machine's load changed little between them.
      std::vector<double> paired;
      for (int i = 0; i < options.steps; ++i) paired.push_back(step_seconds[0][i] / step_seconds[1][i]);
      std::printf("          paired: the first step time over the second, median of %d rounds: %.3f\n", options.steps,
                  ts::bench::median(paired));
    }
    timing_phases = false;
    variant = 0;
    ts::set_fused_kernels(options.fused[0]);
    if (!options.profile.empty()) {
      const std::string path = options.profile + "-seq" + std::to_string(seq) + ".json";
      {
        next_batch();
        torch::autograd::profiler::RecordProfile trace(path);
        step();
      }
      std::printf("          trace of one more step: %s\n", path.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}
