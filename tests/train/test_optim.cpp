// Parameter selection, optimisers, schedules and clipping (accumulation: tests/lua/test_training.cpp, train.fit's).
#include <cmath>
#include <sstream>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/parallel.h"
#include "train/optim.h"
#include "train/sum_of_squares.h"

using namespace ts::train;

namespace {

// The parameter names of a BERT classifier, Hugging Face style, with tiny shapes.
struct TinyEncoderImpl : torch::nn::Module {
  torch::nn::ModuleList layer;
  explicit TinyEncoderImpl(int layers) {
    for (int i = 0; i < layers; ++i) layer->push_back(torch::nn::Linear(2, 2));
    register_module("layer", layer);
  }
};
TORCH_MODULE(TinyEncoder);

struct TinyPoolerImpl : torch::nn::Module {
  torch::nn::Linear dense{2, 2};
  TinyPoolerImpl() { register_module("dense", dense); }
};
TORCH_MODULE(TinyPooler);

struct TinyBertImpl : torch::nn::Module {
  TinyEncoder encoder{12};
  TinyPooler pooler;
  TinyBertImpl() {
    register_module("encoder", encoder);
    register_module("pooler", pooler);
  }
};
TORCH_MODULE(TinyBert);

struct TinyClassifierImpl : torch::nn::Module {
  TinyBert bert;
  torch::nn::Linear classifier{2, 2};
  TinyClassifierImpl() {
    register_module("bert", bert);
    register_module("classifier", classifier);
  }
};
TORCH_MODULE(TinyClassifier);

}  // namespace

TEST_CASE("name patterns: prefixes on dot boundaries and globs", "[optim]") {
  CHECK(name_matches("bert.encoder.layer.1.weight", "bert.encoder.layer.1"));
  CHECK_FALSE(name_matches("bert.encoder.layer.11.weight", "bert.encoder.layer.1"));
  CHECK(name_matches("classifier", "classifier"));
  CHECK(name_matches("bert.encoder.layer.11.weight", "bert.encoder.layer.1*"));
  CHECK(name_matches("bert.encoder.layer.10.bias", "*.bias"));
  CHECK(name_matches("bert.encoder.layer.3.bias", "bert.encoder.layer.?.bias"));
  CHECK_FALSE(name_matches("bert.encoder.layer.10.bias", "bert.encoder.layer.?.bias"));
}

TEST_CASE("select parameters of the top layers, freeze the rest", "[optim]") {
  TinyClassifier model;
  CHECK(top_layer_patterns(12, 1) ==
        std::vector<std::string>{"bert.encoder.layer.11", "bert.pooler", "classifier"});
  const auto names = select_parameter_names(*model, top_layer_patterns(12, 1));
  CHECK(names == std::vector<std::string>{"bert.encoder.layer.11.weight", "bert.encoder.layer.11.bias",
                                          "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                          "classifier.bias"});
  CHECK(select_parameters(*model, {"bert.encoder.layer.1*"}).size() == 6);  // layers 1, 10, 11
  CHECK(top_layer_patterns(12, 3, "bert.encoder.layer", {})[0] == "bert.encoder.layer.9");
  CHECK_THROWS_WITH(select_parameter_names(*model, {"bert.encoder.layers.11"}),
                    Catch::Contains("\"bert.encoder.layers.11\" matches none") && Catch::Contains("bert.encoder.layer.0.weight"));

  CHECK(set_trainable(*model, top_layer_patterns(12, 1)) == 6);
  auto named = model->named_parameters();
  CHECK_FALSE(named["bert.encoder.layer.10.weight"].requires_grad());
  CHECK(named["bert.encoder.layer.11.weight"].requires_grad());
  CHECK(set_trainable(*model, {"*"}) == static_cast<int64_t>(named.size()));
}

TEST_CASE("schedules follow transformers' semantics", "[optim]") {
  Schedule linear{ScheduleKind::Linear, 10, 110};
  CHECK(linear.factor(0) == 0.0);
  CHECK(linear.factor(5) == Approx(0.5));
  CHECK(linear.factor(10) == Approx(1.0));
  CHECK(linear.factor(60) == Approx(0.5));
  CHECK(linear.factor(110) == 0.0);
  CHECK(linear.factor(150) == 0.0);
  Schedule no_warmup{ScheduleKind::Linear, 0, 4};
  CHECK(no_warmup.factor(0) == 1.0);
  CHECK(no_warmup.factor(3) == Approx(0.25));
  Schedule cosine{ScheduleKind::Cosine, 0, 100};
  CHECK(cosine.factor(25) == Approx(0.5 * (1 + std::cos(M_PI / 4))));
  CHECK(cosine.factor(50) == Approx(0.5));
  CHECK(cosine.factor(100) == Approx(0.0).margin(1e-12));
  Schedule constant{ScheduleKind::Constant, 4, 0};
  CHECK(constant.factor(2) == Approx(0.5));
  CHECK(constant.factor(1000) == 1.0);
  CHECK(schedule_kind_from_name("cosine") == ScheduleKind::Cosine);
}

TEST_CASE("clear_gradients drops gradients, and the next backward gives them whole", "[optim]") {
  auto w = torch::tensor({1.0f, -2.0f}).requires_grad_(true);
  auto unused = torch::ones({3}).requires_grad_(true);
  OptimizerConfig config;
  auto optimizer = make_optimizer({w, unused}, config);
  (w * w).sum().backward();
  (w * w).sum().backward();  // accumulates: 4w
  CHECK(torch::equal(w.grad(), 4 * w.detach()));
  clear_gradients(*optimizer);
  CHECK_FALSE(w.grad().defined());
  (w * w).sum().backward();
  CHECK(torch::equal(w.grad(), 2 * w.detach()));  // not added to the old one
  CHECK_FALSE(unused.grad().defined());
  optimizer->step();
  CHECK(torch::equal(unused, torch::ones({3})));  // no gradient: AdamW leaves it alone
}

TEST_CASE("clip_grad_norm gives torch's norm and gradients, the norm summed in double", "[optim]") {
  for (const double max_norm : {0.5, 100.0}) {  // clipping, and a norm already under the limit
    torch::manual_seed(4);
    const std::vector<torch::Tensor> ours = {torch::randn({7, 5}).requires_grad_(true),
                                             torch::randn({5}).requires_grad_(true),
                                             torch::randn({3}).requires_grad_(true)};
    std::vector<torch::Tensor> theirs;
    for (const auto& p : ours) theirs.push_back(p.detach().clone().requires_grad_(true));
    const auto loss = [](const std::vector<torch::Tensor>& p) { return p[0].sum(1).pow(2).sum() + p[1].exp().sum(); };
    loss(ours).backward();
    loss(theirs).backward();
    const double exact = std::sqrt(ours[0].grad().to(torch::kDouble).square().sum().item<double>() +
                                   ours[1].grad().to(torch::kDouble).square().sum().item<double>());
    const double norm = clip_grad_norm(ours, max_norm);  // ours[2] has no gradient: ignored
    const double expected = torch::nn::utils::clip_grad_norm_({theirs[0], theirs[1]}, max_norm);
    CHECK(norm == Approx(exact).epsilon(1e-14));
    CHECK(norm == Approx(expected).epsilon(1e-6));  // torch sums in float
    CHECK(torch::allclose(ours[0].grad(), theirs[0].grad(), 1e-6, 0));
    CHECK(torch::allclose(ours[1].grad(), theirs[1].grad(), 1e-6, 0));
    CHECK_FALSE(ours[2].grad().defined());
    if (max_norm < 1) CHECK(ours[0].grad().norm().item<double>() < norm);  // it did clip
  }
}

TEST_CASE("sum_of_squares sums in double, the same for every thread count", "[optim]") {
  torch::manual_seed(6);
  // Several of its blocks and a ragged end; values of very different sizes, where a float sum would lose the small.
  const torch::Tensor values = torch::cat({torch::randn({300001}) * 1e3, torch::randn({70000}) * 1e-3});
  const double exact = values.to(torch::kDouble).square().sum().item<double>();
  const double ours = sum_of_squares(values.data_ptr<float>(), values.numel());
  CHECK(ours == Approx(exact).epsilon(1e-13));
  for (const int threads : {1, 3}) {
    ts::ScopedWorkerThreads scoped(threads);
    CHECK(sum_of_squares(values.data_ptr<float>(), values.numel()) == ours);
  }
  CHECK(sum_of_squares(values.data_ptr<float>(), 0) == 0.0);
  CHECK(sum_of_squares(values.data_ptr<float>(), 3) ==
        Approx(values.slice(0, 0, 3).to(torch::kDouble).square().sum().item<double>()).epsilon(1e-15));
}

TEST_CASE("clip_grad_norm_and_step is clip_grad_norm then step, bit for bit", "[optim]") {
  for (const std::string kind : {"adamw", "sgd"}) {
    for (const double max_norm : {0.5, 1e6}) {  // clipping, and a norm already under the limit
      for (const bool clip_all : {true, false}) {  // false: one of the optimiser's parameters is left out
        INFO(kind << ", max_norm " << max_norm << (clip_all ? "" : ", one parameter not clipped"));
        torch::manual_seed(5);
        // The first tensor is large enough for the update to be split over threads.
        const std::vector<torch::Tensor> start = {torch::randn({1200000}), torch::randn({17, 3}), torch::randn({4})};
        std::vector<torch::Tensor> fused, separate;
        for (const auto& t : start) {
          fused.push_back(t.clone().requires_grad_(true));
          separate.push_back(t.clone().requires_grad_(true));
        }
        OptimizerConfig config;
        config.kind = kind;
        config.lr = 1e-2;
        config.weight_decay = 0.1;
        auto fused_optimizer = make_optimizer(fused, config);
        auto separate_optimizer = make_optimizer(separate, config);
        const auto clipped = [&](const std::vector<torch::Tensor>& p) {
          return clip_all ? p : std::vector<torch::Tensor>{p[0], p[1]};
        };
        for (int step = 0; step < 3; ++step) {
          const auto loss = [](const std::vector<torch::Tensor>& p) {
            return p[0].pow(2).sum() + p[1].sin().sum() * 3 + p[2].exp().sum();
          };
          loss(fused).backward();
          loss(separate).backward();
          const double fused_norm = clip_grad_norm_and_step(*fused_optimizer, clipped(fused), max_norm);
          const double separate_norm = clip_grad_norm(clipped(separate), max_norm);
          separate_optimizer->step();
          CHECK(fused_norm == separate_norm);
          if (max_norm < 1) CHECK(fused_norm > max_norm);  // it did clip
          for (size_t i = 0; i < fused.size(); ++i) CHECK(torch::equal(fused[i], separate[i]));
          clear_gradients(*fused_optimizer);
          clear_gradients(*separate_optimizer);
        }
        CHECK_FALSE(torch::equal(fused[0], start[0]));
      }
    }
  }
}

TEST_CASE("AdamW with a per-step linear schedule and clipping", "[optim]") {
  auto w = torch::ones({3}, torch::kFloat32).requires_grad_(true);
  OptimizerConfig config;
  config.lr = 1e-1;
  auto optimizer = make_optimizer({w}, config);
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(optimizer->param_groups()[0].options());
  CHECK(std::get<0>(options.betas()) == 0.9);
  CHECK(std::get<1>(options.betas()) == 0.999);
  CHECK(options.eps() == 1e-8);
  CHECK(options.weight_decay() == 0.0);

  LrScheduler scheduler(*optimizer, Schedule{ScheduleKind::Linear, 0, 4}, 1e-1);
  std::vector<double> lrs;
  for (int step = 0; step < 4; ++step) {
    lrs.push_back(optimizer->param_groups()[0].options().get_lr());
    optimizer->zero_grad();
    (w * w).sum().backward();
    // grad = 2w = [2, 2, 2], norm 2·sqrt(3); clipping to 1 scales it to norm 1.
    const double norm = clip_grad_norm({w}, 1.0);
    CHECK(norm == Approx(2.0 * std::sqrt(3.0) * w[0].item<double>()).epsilon(1e-5));
    CHECK(w.grad().norm().item<double>() == Approx(1.0).epsilon(1e-4));
    optimizer->step();
    scheduler.step();
  }
  REQUIRE(lrs.size() == 4);
  CHECK(lrs[0] == Approx(0.1));
  CHECK(lrs[1] == Approx(0.075));
  CHECK(lrs[2] == Approx(0.05));
  CHECK(lrs[3] == Approx(0.025));
  CHECK(scheduler.current_lr() == 0.0);
  // Adam's first step moves every weight by about lr (normalised gradient).
  CHECK(w[0].item<double>() == Approx(1.0 - 0.1 - 0.075 - 0.05 - 0.025).margin(5e-3));

  config.kind = "sgd";
  config.momentum = 0.9;
  auto sgd = make_optimizer({w}, config);
  CHECK(static_cast<const torch::optim::SGDOptions&>(sgd->param_groups()[0].options()).momentum() == 0.9);
  config.kind = "lamb";
  CHECK_THROWS_WITH(make_optimizer({w}, config), Catch::Contains("unknown optimizer \"lamb\""));
}

TEST_CASE("parameters in the no-decay group are not decayed, the others are") {
  auto decayed = torch::ones({3}).requires_grad_(true);
  auto exempt = torch::ones({3}).requires_grad_(true);
  OptimizerConfig config;
  config.lr = 0.1;
  config.weight_decay = 0.5;
  auto optimizer = make_optimizer({decayed}, {exempt}, config);
  decayed.mutable_grad() = torch::zeros({3});
  exempt.mutable_grad() = torch::zeros({3});
  optimizer->step();
  // AdamW with a zero gradient moves a parameter only by decay: p ← p (1 − lr · wd).
  CHECK(decayed[0].item<double>() == Approx(1 - 0.1 * 0.5));
  CHECK(exempt[0].item<double>() == Approx(1.0));
  CHECK(optimizer->param_groups().size() == 2);
}

namespace {

OptimizerConfig adamw_config(double weight_decay) {
  OptimizerConfig config;
  config.lr = 1e-2;
  config.weight_decay = weight_decay;
  return config;
}

// The fused AdamW and torch's, each on its own copy of the same start, stepped with the same gradients.
struct AdamWPair {
  AdamWPair(const torch::Tensor& start, double weight_decay)
      : ours(start.clone().requires_grad_(true)),
        theirs(start.clone().requires_grad_(true)),
        config(adamw_config(weight_decay)),
        fused(make_optimizer({ours}, config)),
        reference({theirs}, torch::optim::AdamWOptions(config.lr).weight_decay(weight_decay)) {}

  void step(const torch::Tensor& grad) {
    ours.mutable_grad() = grad.clone();
    theirs.mutable_grad() = grad.clone();
    fused->step();
    reference.step();
  }

  // The fused optimiser saved and loaded into a fresh one over a copy of its parameters; both then step with `grad`.
  // Returns the copy, which should equal `ours`.
  torch::Tensor step_saved_and_loaded(const torch::Tensor& grad) {
    std::stringstream saved;
    torch::save(*fused, saved);
    auto copy = ours.detach().clone().requires_grad_(true);
    auto resumed = make_optimizer({copy}, config);
    torch::load(*resumed, saved);
    ours.mutable_grad() = grad.clone();
    copy.mutable_grad() = grad.clone();
    fused->step();
    resumed->step();
    return copy;
  }

  torch::Tensor ours, theirs;
  OptimizerConfig config;
  std::unique_ptr<torch::optim::Optimizer> fused;
  torch::optim::AdamW reference;
};

}  // namespace

TEST_CASE("the fused AdamW follows torch's AdamW step by step, and its state saves and loads") {
  torch::manual_seed(0);
  const auto start = torch::randn({3000});
  AdamWPair pair(start, 0.1);
  for (int step = 0; step < 20; ++step) pair.step(torch::randn({3000}));
  CHECK(torch::allclose(pair.ours, pair.theirs, 1e-5, 1e-6));
  CHECK_FALSE(torch::allclose(pair.ours, start));
  CHECK(torch::equal(pair.ours, pair.step_saved_and_loaded(torch::randn({3000}))));
}

TEST_CASE("the fused AdamW skips embedding rows that cannot change, and keeps every other row torch's") {
  // 5,000 rows: the row-by-row path. Each step gives gradients to a few rows; rows touched once must keep moving
  // with their moments afterwards, rows never touched must stay bit for bit, and the result must be torch's.
  torch::manual_seed(1);
  const auto start = torch::randn({5000, 6});
  AdamWPair pair(start, 0.0);
  const auto gradient_in_rows = [](const std::vector<int64_t>& rows) {
    auto grad = torch::zeros({5000, 6});
    for (const int64_t row : rows) grad[row] = torch::randn({6});
    return grad;
  };
  pair.step(gradient_in_rows({3, 4000, 4999}));
  pair.step(gradient_in_rows({17}));
  pair.step(gradient_in_rows({}));
  pair.step(gradient_in_rows({3, 2500}));
  const auto& ours = pair.ours;
  CHECK(torch::allclose(ours, pair.theirs, 1e-6, 1e-7));
  CHECK(torch::equal(ours[10], start[10]));        // never touched
  CHECK_FALSE(torch::equal(ours[17], start[17]));  // touched at step 2 only, moved since
  CHECK(torch::equal(ours.narrow(0, 18, 2400), start.narrow(0, 18, 2400)));

  // Saved and loaded, the rows with moments are found again: the next step matches continuing.
  CHECK(torch::equal(ours, pair.step_saved_and_loaded(gradient_in_rows({5}))));
  CHECK_FALSE(torch::equal(ours[4000], start[4000]));  // moved by its moments with a zero gradient
}

namespace {

// transformers.AdamW.step (correct_bias=True), line for line, on tensors: the reference code's optimiser.
void transformers_adamw_step(torch::Tensor& p, const torch::Tensor& grad, torch::Tensor& exp_avg,
                             torch::Tensor& exp_avg_sq, int64_t step, double lr, double weight_decay) {
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  exp_avg.mul_(beta1).add_(grad, 1.0 - beta1);
  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
  const auto denom = exp_avg_sq.sqrt().add_(eps);
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const double step_size = lr * std::sqrt(bias_correction2) / bias_correction1;
  p.addcdiv_(exp_avg, denom, -step_size);
  if (weight_decay > 0.0) p.add_(p, -lr * weight_decay);
}

}  // namespace

TEST_CASE("adamw_hf follows transformers' AdamW formula, eps on √v and decay after the step") {
  for (const double weight_decay : {0.0, 0.1}) {
    INFO("weight decay " << weight_decay);
    torch::manual_seed(1);
    // Gradients of 1e-7 keep √v near eps, where the two placements of eps differ most.
    const auto start = torch::randn({5000});
    auto ours = start.clone().requires_grad_(true);
    auto reference = start.clone();
    auto exp_avg = torch::zeros_like(start), exp_avg_sq = torch::zeros_like(start);
    OptimizerConfig config = adamw_config(weight_decay);
    config.kind = "adamw_hf";
    auto fused = make_optimizer({ours}, config);
    auto torch_style = start.clone().requires_grad_(true);
    auto torch_adamw = make_optimizer({torch_style}, adamw_config(weight_decay));
    for (int64_t step = 1; step <= 10; ++step) {
      const auto grad = torch::randn({5000}) * 1e-7;
      ours.mutable_grad() = grad.clone();
      torch_style.mutable_grad() = grad.clone();
      fused->step();
      torch_adamw->step();
      transformers_adamw_step(reference, grad, exp_avg, exp_avg_sq, step, config.lr, weight_decay);
    }
    CHECK(torch::allclose(ours, reference, 1e-6, 1e-7));
    // And it is not torch's arithmetic, which takes larger steps while √v is near eps.
    const double hf_moved = (ours - start).abs().mean().item<double>();
    const double torch_moved = (torch_style - start).abs().mean().item<double>();
    CHECK(torch_moved > 1.5 * hf_moved);
  }
}

TEST_CASE("optimizer options are read strictly: a misspelt key is an error naming it, betas must be two") {
  using nlohmann::json;
  const auto options = ts::train::OptimizerOptions::from_json(
      json{{"kind", "adamw_hf"}, {"lr", 2e-5}, {"betas", {0.8, 0.99}}, {"no_decay", {"bias", "LayerNorm.weight"}},
           {"trainable", {"classifier"}}},
      "ts.optimizer");
  CHECK(options.config.kind == "adamw_hf");
  CHECK(options.config.lr == 2e-5);
  CHECK(options.config.beta1 == 0.8);
  CHECK(options.config.beta2 == 0.99);
  CHECK(options.trainable == std::vector<std::string>{"classifier"});
  CHECK(options.exempt_from_decay("bert.encoder.layer.0.attention.output.dense.bias"));
  CHECK(options.exempt_from_decay("bert.embeddings.LayerNorm.weight"));
  CHECK_FALSE(options.exempt_from_decay("bert.encoder.layer.0.attention.output.dense.weight"));
  CHECK_FALSE(ts::train::OptimizerOptions::from_json(json::object(), "ts.optimizer").trainable.has_value());
  CHECK_THROWS_WITH(ts::train::OptimizerOptions::from_json(json{{"weight_decy", 0.01}}, "ts.optimizer"),
                    Catch::Contains("ts.optimizer: unknown option 'weight_decy'") && Catch::Contains("weight_decay"));
  CHECK_THROWS_WITH(ts::train::OptimizerOptions::from_json(json{{"betas", {0.9}}}, "ts.optimizer"),
                    Catch::Contains("expected two numbers"));
}

TEST_CASE("schedule options are read strictly: total_steps is needed except for a constant rate") {
  using nlohmann::json;
  const auto options = ScheduleOptions::from_json(
      json{{"kind", "cosine"}, {"warmup_steps", 2}, {"total_steps", 10}, {"cycles", 1}, {"start_step", 4}},
      "ts.schedule");
  CHECK(options.schedule.kind == ScheduleKind::Cosine);
  CHECK(options.schedule.warmup_steps == 2);
  CHECK(options.schedule.total_steps == 10);
  CHECK(options.schedule.num_cycles == 1);
  CHECK(options.start_step == 4);
  CHECK(ScheduleOptions::from_json(json{{"kind", "constant"}}, "ts.schedule").schedule.kind == ScheduleKind::Constant);
  CHECK_THROWS_WITH(ScheduleOptions::from_json(nullptr, "ts.schedule"), "ts.schedule: total_steps is required");
  CHECK_THROWS_WITH(ScheduleOptions::from_json(json{{"total_steps", 10}, {"warmup", 1}}, "ts.schedule"),
                    "ts.schedule: unknown option 'warmup' (known: kind, warmup_steps, total_steps, cycles, "
                    "start_step)");
  CHECK_THROWS_WITH(ScheduleOptions::from_json(json{{"total_steps", 10}, {"start_step", -1}}, "ts.schedule"),
                    Catch::Contains("start_step -1 must not be negative"));
}
