// Metrics against confusion matrices worked out by hand.
#include <cmath>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "train/metrics.h"

using namespace ts::train;

TEST_CASE("three-class metrics from a hand-made confusion matrix", "[metrics]") {
  // truth [0,0,0,1,1,2], predicted [0,1,0,1,2,2]:
  //            pred 0  1  2
  //   true 0      2  1  0      precision [2/2, 1/2, 1/2], recall [2/3, 1/2, 1/1]
  //   true 1      0  1  1      F1 [0.8, 0.5, 2/3]; macro (0.8 + 0.5 + 2/3) / 3 = 0.6555556
  //   true 2      0  0  1      weighted (3·0.8 + 2·0.5 + 1·2/3) / 6 = 0.6777778
  // accuracy 4/6; balanced accuracy (2/3 + 1/2 + 1) / 3 = 0.7222222
  const auto m = evaluate_predictions({0, 0, 0, 1, 1, 2}, {0, 1, 0, 1, 2, 2}, 3);
  CHECK(m.confusion_matrix == std::vector<std::vector<int64_t>>{{2, 1, 0}, {0, 1, 1}, {0, 0, 1}});
  CHECK(m.accuracy == Approx(4.0 / 6.0));
  CHECK(m.precision_per_class == std::vector<double>{1.0, 0.5, 0.5});
  CHECK(m.recall_per_class[0] == Approx(2.0 / 3.0));
  CHECK(m.f1_per_class[0] == Approx(0.8));
  CHECK(m.f1_per_class[2] == Approx(2.0 / 3.0));
  CHECK(m.macro_f1 == Approx(0.6555556));
  CHECK(m.weighted_f1 == Approx(0.6777778));
  CHECK(m.balanced_accuracy == Approx(0.7222222));
  CHECK(m.support == std::vector<int64_t>{3, 2, 1});
  CHECK_FALSE(m.log_loss.has_value());

  const auto j = m.to_json();
  for (const char* key : {"accuracy", "macro_f1", "weighted_f1", "balanced_accuracy", "precision_per_class",
                          "recall_per_class", "f1_per_class", "confusion_matrix", "log_loss"}) {
    CHECK(j.contains(key));
  }
  CHECK(j["confusion_matrix"][0][1] == 1);
  CHECK(j["log_loss"].is_null());
}

TEST_CASE("a class never predicted has precision 0, not NaN", "[metrics]") {
  // All predicted 1: class 0 has tp 0 and no predictions → precision 0, recall 0, F1 0.
  const auto m = evaluate_predictions({0, 1, 1, 1}, {1, 1, 1, 1}, 2);
  CHECK(m.precision_per_class == std::vector<double>{0.0, 0.75});
  CHECK(m.f1_per_class[1] == Approx(2 * 0.75 / 1.75));
  CHECK(m.balanced_accuracy == Approx(0.5));
  CHECK_THROWS_AS(evaluate_predictions({0, 1}, {0}, 2), ts::Error);
  CHECK_THROWS_WITH(evaluate_predictions({0, 2}, {0, 1}, 2), Catch::Contains("true label 2"));
}

TEST_CASE("log loss from logits and from probabilities", "[metrics]") {
  // Logits [0, 0] (target 0) and [ln 3, 0] (target 1): ln 2 and ln 4 → mean 1.5 ln 2; predictions [0, 0].
  const std::vector<double> logits = {0.0, 0.0, std::log(3.0), 0.0};
  const auto m = evaluate_scores({0, 1}, logits, 2, ScoreKind::Logits);
  REQUIRE(m.log_loss.has_value());
  CHECK(*m.log_loss == Approx(1.5 * std::log(2.0)));
  CHECK(m.accuracy == Approx(0.5));
  CHECK(log_loss({0, 1}, {0.5, 0.5, 0.75, 0.25}, 2, ScoreKind::Probabilities) == Approx(1.5 * std::log(2.0)));
  // A zero probability is clipped, not infinite.
  CHECK(std::isfinite(log_loss({1}, {1.0, 0.0}, 2, ScoreKind::Probabilities)));
  CHECK_THROWS_WITH(log_loss({0, 1}, {0.5, 0.5}, 2), Catch::Contains("2 scores for 2 rows of 2 classes"));
}

TEST_CASE("mean and sample standard deviation over seeds", "[metrics]") {
  nlohmann::json a = {{"accuracy", 0.8}, {"f1_per_class", {0.5, 0.7}}, {"confusion_matrix", {{1, 2}, {3, 4}}},
                      {"model", "bert"}};
  nlohmann::json b = {{"accuracy", 0.9}, {"f1_per_class", {0.7, 0.9}}, {"confusion_matrix", {{3, 2}, {1, 4}}},
                      {"model", "bert"}};
  const auto summary = mean_and_std({a, b});
  CHECK(summary["n"] == 2);
  CHECK(summary["mean"]["accuracy"].get<double>() == Approx(0.85));
  // Sample std of {0.8, 0.9}: sqrt((0.05² + 0.05²) / 1) = 0.0707107
  CHECK(summary["std"]["accuracy"].get<double>() == Approx(0.0707107));
  CHECK(summary["mean"]["f1_per_class"][1].get<double>() == Approx(0.8));
  CHECK(summary["mean"]["confusion_matrix"][0][0].get<double>() == Approx(2.0));
  CHECK(summary["std"]["confusion_matrix"][0][1].get<double>() == Approx(0.0));
  CHECK_FALSE(summary["mean"].contains("model"));

  const auto one = mean_and_std({a});
  CHECK(one["std"]["accuracy"].is_null());

  // Real metric objects aggregate too.
  const auto m1 = evaluate_predictions({0, 1, 1}, {0, 1, 0}, 2).to_json();
  const auto m2 = evaluate_predictions({0, 1, 1}, {0, 1, 1}, 2).to_json();
  CHECK(mean_and_std({m1, m2})["mean"]["accuracy"].get<double>() == Approx(5.0 / 6.0));

  nlohmann::json c = b;
  c["f1_per_class"] = {0.7};
  CHECK_THROWS_WITH(mean_and_std({a, c}), Catch::Contains("f1_per_class"));
}
