// Whether the encoder's products would gain from bfloat16 on this CPU (issue 20, item 3): the three products of a
// linear layer's forward and backward (y = x Wᵀ, dx = dy W, dW = dyᵀ x) in float32 through OpenBLAS's sgemm, against
// the same products in bfloat16 through LibTorch's CPU kernels (oneDNN where LibTorch was built with it), timed
// interleaved in one run, on bert-base's and MiniLM's layer shapes at batch 16.
//
//   bench_bf16 [--repeats N] [--seq-lengths 128,32] [--intra-op-threads N] [--blas-threads N]
//              [--blas-core auto|as-is|NAME]
//
// Three contenders per shape:
//   fp32      the products as the host runs them today;
//   bf16      the same products on bfloat16 copies made beforehand: the most a bf16 path could gain;
//   autocast  what a bf16 autocast path with float32 master weights pays each step: the weight, the input and the
//             upstream gradient cast to bfloat16, the bf16 products, and the gradients cast back to float32.
// Each line also gives the bf16 products' error against double precision, scaled by the products' magnitude, beside
// float32's: bfloat16 keeps 8 bits of mantissa, so expect about 1e-3 against about 1e-7.
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common.h"

namespace {

struct Options {
  int repeats = 7;
  std::vector<int64_t> seq_lengths{128, 32};
  int intra_op_threads = 2;  // LibTorch's bf16 kernels run on its intra-op pool, not OpenBLAS's
  int blas_threads = 2;
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: bench_bf16 [--repeats N] [--seq-lengths 128,32] [--intra-op-threads N] "
               "[--blas-threads N] [--blas-core auto|as-is|NAME]\n",
               message);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  ts::bench::for_each_option(argc, argv, [&](const std::string& flag, const std::string& value) {
    if (flag == "--blas-core") return;  // choose_blas_kernels
    else if (flag == "--repeats") options.repeats = std::stoi(value);
    else if (flag == "--intra-op-threads") options.intra_op_threads = std::stoi(value);
    else if (flag == "--blas-threads") options.blas_threads = std::stoi(value);
    else if (flag == "--seq-lengths") options.seq_lengths = ts::bench::parse_int_list(value);
    else usage(("unknown option " + flag).c_str());
  }, usage);
  return options;
}

struct LinearProducts {
  LinearProducts(torch::Tensor x_, torch::Tensor w_, torch::Tensor dy_)
      : x(std::move(x_)), w(std::move(w_)), dy(std::move(dy_)),
        y(torch::empty({x.size(0), w.size(0)}, x.options())),
        dx(torch::empty_like(x)),
        dw(torch::empty_like(w)) {}
  void operator()() {
    torch::mm_out(y, x, w.t());
    torch::mm_out(dx, dy, w);
    torch::mm_out(dw, dy.t(), x);
  }
  torch::Tensor x, w, dy, y, dx, dw;
};

// The largest error of the three products against double precision, over the largest magnitude of each.
double scaled_error(LinearProducts& products, const LinearProducts& exact) {
  products();
  double worst = 0;
  const std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs{
      {products.y, exact.y}, {products.dx, exact.dx}, {products.dw, exact.dw}};
  for (const auto& [got, want] : pairs) {
    const double scale = want.abs().max().item<double>();
    worst = std::max(worst, (got.to(torch::kDouble) - want).abs().max().item<double>() / scale);
  }
  return worst;
}

void bench_layer(const char* model, int64_t rows, int64_t in, int64_t out, int repeats) {
  torch::manual_seed(0);
  const auto x = torch::randn({rows, in});
  const auto w = torch::randn({out, in}) * 0.02;
  const auto dy = torch::randn({rows, out});
  LinearProducts fp32(x, w, dy);
  LinearProducts bf16(x.to(torch::kBFloat16), w.to(torch::kBFloat16), dy.to(torch::kBFloat16));
  torch::Tensor dx32 = torch::empty_like(x), dw32 = torch::empty_like(w);
  auto autocast = [&] {
    bf16.x.copy_(x);
    bf16.w.copy_(w);
    bf16.dy.copy_(dy);
    bf16();
    dx32.copy_(bf16.dx);
    dw32.copy_(bf16.dw);
  };
  const auto t = ts::bench::time_interleaved({[&] { fp32(); }, [&] { bf16(); }, autocast}, repeats);

  LinearProducts exact(x.to(torch::kDouble), w.to(torch::kDouble), dy.to(torch::kDouble));
  exact();
  const double error_fp32 = scaled_error(fp32, exact), error_bf16 = scaled_error(bf16, exact);
  const double gflop = 3 * 2.0 * rows * in * out / 1e9;
  std::printf("%-9s x [%lld, %lld], W [%lld, %lld]: fp32 %.2f ms (%.1f GFLOP/s), bf16 %.2f ms (%.1f GFLOP/s, %.2fx), "
              "autocast %.2f ms (%.2fx); error fp32 %.1e, bf16 %.1e\n",
              model, static_cast<long long>(rows), static_cast<long long>(in), static_cast<long long>(out),
              static_cast<long long>(in), 1e3 * t[0], gflop / t[0], 1e3 * t[1], gflop / t[1], t[0] / t[1],
              1e3 * t[2], t[0] / t[2], error_fp32, error_bf16);
}

}  // namespace

int main(int argc, char** argv) {
  ts::bench::choose_blas_kernels(argc, argv);
  const Options options = parse(argc, argv);
  at::set_num_threads(options.intra_op_threads);
  const bool blas_set = ts::bench::set_openblas_threads(options.blas_threads);
  std::printf("threads: intra-op %d, OpenBLAS %s; LibTorch built with oneDNN: %s; medians of %d interleaved "
              "repeats\n",
              options.intra_op_threads,
              blas_set ? std::to_string(options.blas_threads).c_str() : "(not found; BLAS default)",
              at::hasMKLDNN() ? "yes" : "no", options.repeats);
  std::printf("(speed-up: fp32 time over the contender's; above 1 is a gain)\n");
  for (const int64_t seq : options.seq_lengths) {
    const int64_t rows = 16 * seq;
    std::printf("batch 16, seq %lld:\n", static_cast<long long>(seq));
    bench_layer("bert-base", rows, 768, 768, options.repeats);
    bench_layer("bert-base", rows, 768, 3072, options.repeats);
    bench_layer("MiniLM", rows, 384, 384, options.repeats);
    bench_layer("MiniLM", rows, 384, 1536, options.repeats);
  }
  bench_layer("square", 1024, 1024, 1024, options.repeats);
  return 0;
}
