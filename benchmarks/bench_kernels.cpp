// The host's fused element-wise kernels against the LibTorch operators they replace, on bert-base shapes (batch 16),
// timed interleaved in the same run. Each line gives the time outside the matrix products, which is what fusing
// changes, as well as the whole.
//
//   bench_kernels [--repeats N] [--seq-lengths 128,32] [--intra-op-threads N] [--blas-threads N]
//                 [--blas-core auto|as-is|NAME] [--sgemm-limit 1|0]
//
//   --sgemm-limit 1 (the default) first times sgemm 1024³ under every OpenBLAS kernel this CPU runs, each verified in
//   a process of its own (sgemm_limit.h); each line then gives its products' rate against the best verified one.
//
//   linear + GELU (model/linear_gelu.h): forward and backward of gelu(x Wᵀ + b), x [16·seq, 768], W [3072, 768];
//     "torch" is addmm then torch::gelu with autograd; the reference is the three products alone.
//   dense + dropout + residual + LayerNorm (model/residual_norm.h): forward and backward of
//     LayerNorm(dropout(x Wᵀ + b) + residual), x [16·seq, in], W [768, in], for in = 768 (attention's output) and
//     3072 (the feed-forward's); "torch" is addmm, ts::dropout, the add and torch::layer_norm with autograd.
//   self-attention (model/attention.h): forward and backward of BertSelfAttention, hidden [16, seq, 768], 12 heads,
//     dropout 0.1, no padding; "torch" is three projections, head_matmul, the division, softmax and ts::dropout with
//     autograd; the reference is the products alone (the packed projection's three, and the six per head).
//   gradient norm (train/sum_of_squares.h): clipping's global norm over bert-base's parameter shapes; "torch" is
//     a norm per tensor, then the norm of those, as torch::nn::utils::clip_grad_norm_.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "common.h"
#include "sgemm_limit.h"
#include "core/parallel.h"
#include "model/bert.h"
#include "model/head_matmul.h"
#include "model/linear_gelu.h"
#include "model/residual_norm.h"
#include "train/sum_of_squares.h"

namespace {

struct Options {
  int repeats = 20;
  std::vector<int64_t> seq_lengths{128, 32};
  int intra_op_threads = 2;
  int blas_threads = 2;
  bool sgemm_limit = true;
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: bench_kernels [--repeats N] [--seq-lengths 128,32] [--intra-op-threads N] "
               "[--blas-threads N] [--blas-core auto|as-is|NAME] [--sgemm-limit 1|0]\n",
               message);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  ts::bench::for_each_option(argc, argv, [&](const std::string& flag, const std::string& value) {
    if (flag == "--blas-core" || flag == "--sgemm-probe") return;  // choose_blas_kernels / run_probe_if_asked
    else if (flag == "--repeats") options.repeats = std::stoi(value);
    else if (flag == "--intra-op-threads") options.intra_op_threads = std::stoi(value);
    else if (flag == "--blas-threads") options.blas_threads = std::stoi(value);
    else if (flag == "--sgemm-limit") options.sgemm_limit = value != "0";
    else if (flag == "--seq-lengths") options.seq_lengths = ts::bench::parse_int_list(value);
    else usage(("unknown option " + flag).c_str());
  }, usage);
  if (options.repeats < 1) usage("repeats must be positive");
  return options;
}

// The three products of a linear layer's forward and backward (y = x Wᵀ, dx = dy W, dW = dyᵀ x), with their outputs
// preallocated: what a fused node cannot make faster.
struct LinearProducts {
  LinearProducts(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& upstream)
      : rows_in(x.detach().reshape({-1, x.size(-1)})),
        w(weight.detach()),
        dy(upstream.reshape({-1, weight.size(0)})),
        y(torch::empty({rows_in.size(0), w.size(0)})),
        dx(torch::empty_like(rows_in)),
        dw(torch::empty_like(w)) {}
  void operator()() {
    torch::mm_out(y, rows_in, w.t());
    torch::mm_out(dx, dy, w);
    torch::mm_out(dw, dy.t(), rows_in);
  }
  torch::Tensor rows_in, w, dy, y, dx, dw;
};

std::string shape(int64_t rows, int64_t cols) { return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]"; }

// The best verified sgemm 1024³ of this machine (GFLOP/s, and its kernel); 0 when not measured.
std::pair<double, std::string> sgemm_limit{0.0, ""};

// One line: the fused node, LibTorch's operators, the products alone (medians t[0..2]), and what lies outside them;
// `product_flops` gives the products' rate, against the best verified sgemm when it was measured.
void report(const std::string& what, const std::vector<double>& t, double product_flops) {
  // The fused node can finish within the products' own time (its products run on warmer caches): no ratio then.
  const std::string ratio = t[0] > t[2] ? fmt::format("{:.1f}x", (t[1] - t[2]) / (t[0] - t[2]))
                                        : std::string("fused within the products' time");
  std::printf("%s, forward + backward: fused %.2f ms, torch %.2f ms, products alone %.2f ms; outside the products: "
              "fused %.2f ms, torch %.2f ms (%s)\n",
              what.c_str(), 1e3 * t[0], 1e3 * t[1], 1e3 * t[2], 1e3 * (t[0] - t[2]), 1e3 * (t[1] - t[2]),
              ratio.c_str());
  const double rate = product_flops / t[2] / 1e9;
  if (sgemm_limit.first > 0)
    std::printf("    products at %.1f GFLOP/s, %.1f%% of the best verified sgemm 1024³ (%s, %.1f GFLOP/s)\n", rate,
                100.0 * rate / sgemm_limit.first, sgemm_limit.second.c_str(), sgemm_limit.first);
  else
    std::printf("    products at %.1f GFLOP/s\n", rate);
}

void bench_linear_gelu(int64_t seq, int repeats) {
  const int64_t rows = 16 * seq, in = 768, out = 3072;
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({16, seq, in}).requires_grad_(true);
  const torch::Tensor weight = (torch::randn({out, in}) * 0.02).requires_grad_(true);
  const torch::Tensor bias = (torch::randn({out}) * 0.02).requires_grad_(true);
  const torch::Tensor upstream = torch::randn({16, seq, out});
  const auto forward_backward = [&](bool fused) {
    return [&, fused] {
      ts::set_fused_kernels(fused);
      for (const auto* t : {&x, &weight, &bias}) t->mutable_grad().reset();
      ts::linear_gelu(x, weight, bias).backward(upstream);
    };
  };
  LinearProducts products(x, weight, upstream);
  const auto t =
      ts::bench::time_interleaved({forward_backward(true), forward_backward(false), std::ref(products)}, repeats);
  ts::set_fused_kernels(true);
  report("linear + GELU, seq " + std::to_string(seq) + " (x " + shape(rows, in) + ", W " + shape(out, in) + ")", t,
         3.0 * 2.0 * rows * in * out);
}

void bench_residual_norm(int64_t seq, int64_t in, int repeats) {
  const int64_t rows = 16 * seq, hidden = 768;
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({16, seq, in}).requires_grad_(true);
  const torch::Tensor residual = torch::randn({16, seq, hidden}).requires_grad_(true);
  const ts::ResidualNormWeights weights{(torch::randn({hidden, in}) * 0.02).requires_grad_(true),
                                        torch::zeros({hidden}).requires_grad_(true),
                                        torch::ones({hidden}).requires_grad_(true),
                                        torch::zeros({hidden}).requires_grad_(true), 1e-12};
  const torch::Tensor upstream = torch::randn({16, seq, hidden});
  const auto forward_backward = [&](bool fused) {
    return [&, fused] {
      ts::set_fused_kernels(fused);
      for (const auto* t : {&x, &residual, &weights.weight, &weights.bias, &weights.norm_weight, &weights.norm_bias})
        t->mutable_grad().reset();
      ts::dense_dropout_residual_norm(x, residual, weights, 0.1, /*training=*/true).backward(upstream);
    };
  };
  LinearProducts products(x, weights.weight, upstream);
  const auto t =
      ts::bench::time_interleaved({forward_backward(true), forward_backward(false), std::ref(products)}, repeats);
  ts::set_fused_kernels(true);
  report("dense + dropout + residual + LayerNorm, seq " + std::to_string(seq) + " (x " + shape(rows, in) + ", W " +
             shape(hidden, in) + ")",
         t, 3.0 * 2.0 * rows * in * hidden);
}

void bench_self_attention(int64_t seq, int repeats) {
  const int64_t batch = 16, hidden = 768, heads = 12, head = hidden / heads;
  ts::BertConfig config;  // bert-base-uncased shapes
  torch::manual_seed(0);
  ts::BertSelfAttention attention(config);
  attention->train();
  const torch::Tensor x = torch::randn({batch, seq, hidden}).requires_grad_(true);
  const torch::Tensor upstream = torch::randn({batch, seq, hidden});
  const auto forward_backward = [&](bool fused) {
    return [&, fused] {
      ts::set_fused_kernels(fused);
      attention->zero_grad();
      x.mutable_grad().reset();
      attention->forward(x, torch::Tensor()).backward(upstream);
    };
  };
  const torch::Tensor packed_weight = torch::randn({3 * hidden, hidden}) * 0.02;
  LinearProducts projections(x, packed_weight, torch::randn({batch, seq, 3 * hidden}));
  const auto heads_of = [&](int64_t rows, int64_t cols) { return torch::randn({batch, heads, rows, cols}); };
  const torch::Tensor q = heads_of(seq, head), k = heads_of(seq, head), v = heads_of(seq, head);
  const torch::Tensor scores = heads_of(seq, seq), grad_scores = heads_of(seq, seq), out = heads_of(seq, head);
  const torch::Tensor dq = heads_of(seq, head), dk = heads_of(seq, head), dv = heads_of(seq, head);
  const auto products = [&] {
    projections();
    ts::gemm_per_head(q, false, k, true, scores);             // Q Kᵀ
    ts::gemm_per_head(scores, false, v, false, out);          // P V
    ts::gemm_per_head(out, false, v, true, grad_scores);      // dP = dC Vᵀ
    ts::gemm_per_head(scores, true, out, false, dv);          // dV = Pᵀ dC
    ts::gemm_per_head(grad_scores, false, k, false, dq);      // dQ = dS K
    ts::gemm_per_head(grad_scores, true, q, false, dk);       // dK = dSᵀ Q
  };
  const auto t = ts::bench::time_interleaved({forward_backward(true), forward_backward(false), products}, repeats);
  ts::set_fused_kernels(true);
  report("self-attention, seq " + std::to_string(seq) + " (hidden " + shape(batch * seq, hidden) + ", 12 heads)", t,
         3.0 * 2.0 * batch * seq * hidden * 3 * hidden + 6.0 * 2.0 * batch * heads * seq * seq * head);
}

void bench_gradient_norm(int repeats) {
  ts::BertConfig config;  // bert-base-uncased shapes
  config.set_num_labels(2);
  torch::manual_seed(0);
  ts::BertForSequenceClassification model(config);
  std::vector<torch::Tensor> gradients;
  int64_t count = 0;
  for (const auto& p : model->parameters()) {
    gradients.push_back(torch::randn_like(p) * 1e-3);
    count += p.numel();
  }
  double ours_norm = 0, torch_norm = 0;
  const auto ours = [&] {
    double squares = 0;
    for (const auto& g : gradients) squares += ts::train::sum_of_squares(g.data_ptr<float>(), g.numel());
    ours_norm = std::sqrt(squares);
  };
  const auto theirs = [&] {
    std::vector<torch::Tensor> norms;
    for (const auto& g : gradients) norms.push_back(g.norm(2));
    torch_norm = torch::stack(norms).norm(2).item<double>();
  };
  const auto t = ts::bench::time_interleaved({ours, theirs}, repeats);
  std::printf("gradient norm over %zu tensors, %.1fM floats: sum_of_squares %.2f ms, torch %.2f ms (%.1fx); "
              "norms %.9g and %.9g\n",
              gradients.size(), count / 1e6, 1e3 * t[0], 1e3 * t[1], t[1] / t[0], ours_norm, torch_norm);
}

}  // namespace

int main(int argc, char** argv) {
  ts::bench::choose_blas_kernels(argc, argv);
  const Options options = parse(argc, argv);
  at::set_num_threads(options.intra_op_threads);
  if (ts::bench::run_probe_if_asked(argc, argv, options.blas_threads, {})) return 0;
  if (options.sgemm_limit) {
    const auto kernels = ts::bench::measure_kernels("--blas-threads " + std::to_string(options.blas_threads),
                                                    ts::runtime::openblas_core(), false);
    sgemm_limit = ts::bench::best_verified(kernels, [](const ts::bench::KernelRate& k) { return k.sgemm_1024; });
  }
  const bool blas_set = ts::bench::set_openblas_threads(options.blas_threads);
  std::printf("threads: intra-op %d, OpenBLAS %s, twostage's own loops %d; medians of %d interleaved repeats\n",
              options.intra_op_threads,
              blas_set ? std::to_string(options.blas_threads).c_str() : "(not found; BLAS default)",
              ts::worker_threads(), options.repeats);
  for (const int64_t seq : options.seq_lengths) {
    bench_linear_gelu(seq, options.repeats);
    for (const int64_t in : {768, 3072}) bench_residual_norm(seq, in, options.repeats);
    bench_self_attention(seq, options.repeats);
  }
  bench_gradient_norm(options.repeats);
  return 0;
}
