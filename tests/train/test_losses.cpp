// Losses against values computed by hand.
//
// The example: two rows, two classes.
//   row A: logits [0, 0],     target 0   p = [1/2, 1/2]
//   row B: logits [ln 3, 0],  target 1   p = [3/4, 1/4]
// Cross-entropy: ℓ_A = ln 2, ℓ_B = ln 4 = 2 ln 2; mean = 1.5 ln 2 = 1.0397208.
// Weighted w = [2, 1]: (2 ln 2 + 1 · 2 ln 2) / (2 + 1) = 4/3 ln 2 = 0.9241962.
// Focal γ = 2: (1/2)² ln 2 = ln2/4 and (3/4)² · 2 ln 2 = 9/8 ln 2; mean = 11/16 ln 2 = 0.4765387.
// LDAM, margins m = [ln 2, ln 3], s = 1:
//   A: [0 − ln 2, 0] → p_0 = (1/2) / (1/2 + 1) = 1/3 → ln 3
//   B: [ln 3, 0 − ln 3] → p_1 = (1/3) / (3 + 1/3) = 1/10 → ln 10;  mean = ln 30 / 2 = 1.7005987
// LDAM, s = 2: A: [−2 ln 2, 0] → p = 1/5 → ln 5; B: [2 ln 3, −2 ln 3] → p = (1/9)/(9 + 1/9) = 1/82 → ln 82;
//   mean = ln 410 / 2 = 3.0080786; weighted [2, 1]: (2 ln 5 + ln 82) / 3 = 2.5418580
// Logit-adjusted, π = [1/4, 3/4], τ = 1: A: [ln 1/4, ln 3/4] → p_0 = 1/4 → ln 4;
//   B: [ln 3 + ln 1/4, ln 3/4] = equal → p_1 = 1/2 → ln 2;  mean = 1.5 ln 2 = 1.0397208
// Label smoothing ε = 0.1: A stays ln 2; B = 0.9 · ln 4 + 0.1 · (ln 4/3 + ln 4) / 2 = 1.3313637;
//   mean = 1.0122553
#include <cmath>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "train/losses.h"

using namespace ts::train;

namespace {

torch::Tensor example_logits() { return torch::tensor({0.0, 0.0, std::log(3.0), 0.0}, torch::kFloat64).view({2, 2}); }
torch::Tensor example_targets() { return torch::tensor({0, 1}, torch::kInt64); }
double value(const torch::Tensor& t) { return t.item<double>(); }

}  // namespace

TEST_CASE("class weights and margins at SST-2 rate 0.2", "[losses]") {
  const std::vector<int64_t> counts = {7513, 37569};
  const auto cb = effective_number_weights(counts, 0.9999);
  REQUIRE(cb.size() == 2);
  CHECK(cb[0] == Approx(1.2979).margin(1e-4));
  CHECK(cb[1] == Approx(0.7021).margin(1e-4));
  CHECK(cb[0] + cb[1] == Approx(2.0));
  const auto m = ldam_margins(counts, 0.5);
  CHECK(m[0] == Approx(0.5));
  CHECK(m[1] == Approx(0.3344).margin(1e-4));
  // 1/n normalised to sum 2: 2 · 37569 / (7513 + 37569) = 1.666696
  const auto inv = inverse_frequency_weights(counts);
  CHECK(inv[0] == Approx(1.666696).margin(1e-6));
  CHECK(inv[1] == Approx(0.333304).margin(1e-6));
  CHECK(class_priors({1, 3}) == std::vector<double>{0.25, 0.75});
  CHECK_THROWS_AS(effective_number_weights({10, 0}), ts::Error);
}

TEST_CASE("cross-entropy, weighted mean, label smoothing", "[losses]") {
  const auto x = example_logits();
  const auto y = example_targets();
  CHECK(value(cross_entropy(x, y)) == Approx(1.5 * std::log(2.0)));
  CHECK(value(cross_entropy(x, y, {2.0, 1.0})) == Approx(4.0 / 3.0 * std::log(2.0)));
  CHECK(value(cross_entropy(x, y, {}, 0.1)) == Approx(1.0122553).epsilon(1e-6));
  // Agrees with torch's own weighted mean reduction and label smoothing.
  auto torch_weighted = torch::nn::functional::cross_entropy(
      x, y, torch::nn::functional::CrossEntropyFuncOptions().weight(torch::tensor({2.0, 1.0}, torch::kFloat64)));
  CHECK(value(cross_entropy(x, y, {2.0, 1.0})) == Approx(value(torch_weighted)));
  auto torch_smoothed =
      torch::nn::functional::cross_entropy(x, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1));
  CHECK(value(cross_entropy(x, y, {}, 0.1)) == Approx(value(torch_smoothed)));
  CHECK_THROWS_WITH(cross_entropy(x, y, {1.0, 1.0, 1.0}), Catch::Contains("3 class weights"));
  CHECK_THROWS_AS(cross_entropy(x, torch::tensor({0}, torch::kInt64)), ts::Error);
}

TEST_CASE("LDAM loss", "[losses]") {
  const auto x = example_logits();
  const auto y = example_targets();
  const std::vector<double> m = {std::log(2.0), std::log(3.0)};
  CHECK(value(ldam_loss(x, y, m)) == Approx(std::log(30.0) / 2.0));
  CHECK(value(ldam_loss(x, y, m, 2.0)) == Approx(std::log(410.0) / 2.0));
  CHECK(value(ldam_loss(x, y, m, 2.0, {2.0, 1.0})) == Approx((2.0 * std::log(5.0) + std::log(82.0)) / 3.0));
  // Gradients flow to the logits.
  auto leaf = x.clone().requires_grad_(true);
  ldam_loss(leaf, y, m).backward();
  CHECK(leaf.grad().defined());
  CHECK(leaf.grad().abs().sum().item<double>() > 0.0);
}

TEST_CASE("focal and logit-adjusted losses", "[losses]") {
  const auto x = example_logits();
  const auto y = example_targets();
  CHECK(value(focal_loss(x, y, 2.0)) == Approx(11.0 / 16.0 * std::log(2.0)));
  CHECK(value(focal_loss(x, y, 0.0)) == Approx(value(cross_entropy(x, y))));
  // Weighted [2, 1]: (2 · ln2/4 + 9/8 ln 2) / 3 = 13/24 ln 2
  CHECK(value(focal_loss(x, y, 2.0, {2.0, 1.0})) == Approx(13.0 / 24.0 * std::log(2.0)));
  CHECK(value(logit_adjusted_loss(x, y, {0.25, 0.75}, 1.0)) == Approx(1.5 * std::log(2.0)));
  // Post-hoc: z − ln π; row B becomes [ln 3 + ln 4, ln 4/3] → [ln 12, ln 4/3].
  auto adjusted = adjust_logits_post_hoc(x, {0.25, 0.75}, 1.0);
  CHECK(adjusted[1][0].item<double>() == Approx(std::log(12.0)));
  CHECK(adjusted[1][1].item<double>() == Approx(std::log(4.0 / 3.0)));
  CHECK_THROWS_AS(adjust_logits_post_hoc(x, {0.0, 1.0}), ts::Error);

  LossConfig config;
  config.kind = loss_kind_from_name("ldam");
  config.margins = {std::log(2.0), std::log(3.0)};
  CHECK(value(compute_loss(config, x, y)) == Approx(std::log(30.0) / 2.0));
  config.kind = loss_kind_from_name("focal");
  config.label_smoothing = 0.1;
  CHECK_THROWS_AS(compute_loss(config, x, y), ts::Error);
  CHECK_THROWS_AS(loss_kind_from_name("hinge"), ts::Error);
}

TEST_CASE("losses work in float32", "[losses]") {
  auto x = example_logits().to(torch::kFloat32);
  CHECK(cross_entropy(x, example_targets(), {2.0, 1.0}).scalar_type() == torch::kFloat32);
  CHECK(value(ldam_loss(x, example_targets(), {std::log(2.0), std::log(3.0)})) ==
        Approx(std::log(30.0) / 2.0).epsilon(1e-5));
}

TEST_CASE("loss options are read strictly and give the configured loss") {
  using nlohmann::json;
  const auto ldam = ts::train::LossOptions::from_json(
      json{{"kind", "ldam"}, {"counts", {90, 10}}, {"weights", "inverse"}, {"scale", 30}}, "ts.loss");
  CHECK(ldam.name == "ldam");
  CHECK(ldam.config.kind == ts::train::LossKind::Ldam);
  CHECK(ldam.config.margins == ts::train::ldam_margins({90, 10}, 0.5));
  CHECK(ldam.config.class_weights == ts::train::inverse_frequency_weights({90, 10}));
  CHECK(ldam.config.scale == 30);
  CHECK(ts::train::LossOptions::from_json(json{{"weights", {1.0, 2.0}}}, "ts.loss").config.class_weights ==
        std::vector<double>{1.0, 2.0});
  CHECK_THROWS_WITH(ts::train::LossOptions::from_json(json{{"kind", "ce"}, {"wieghts", "inverse"}}, "ts.loss"),
                    Catch::Contains("ts.loss: unknown option 'wieghts'") && Catch::Contains("weights"));
  CHECK_THROWS_WITH(ts::train::LossOptions::from_json(json{{"kind", "ldam"}}, "ts.loss"),
                    Catch::Contains("need the training class counts"));
  CHECK_THROWS_WITH(ts::train::LossOptions::from_json(json{{"kind", "focal"}, {"gamma", "2"}}, "ts.loss"),
                    Catch::Contains("'gamma' expects a number"));
}
