#include "train/metrics.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ts::train {
namespace {

double safe_divide(double a, double b) { return b == 0.0 ? 0.0 : a / b; }

void check_scores(const std::vector<int64_t>& truth, const std::vector<double>& scores, int64_t num_classes) {
  if (num_classes < 1) fail("metrics: need at least one class, got {}", num_classes);
  if (scores.size() != truth.size() * static_cast<size_t>(num_classes)) {
    fail("metrics: {} scores for {} rows of {} classes (expected {})", scores.size(), truth.size(), num_classes,
         truth.size() * static_cast<size_t>(num_classes));
  }
}

}  // namespace

ClassificationMetrics evaluate_predictions(const std::vector<int64_t>& truth, const std::vector<int64_t>& predicted,
                                           int64_t num_classes) {
  if (num_classes < 1) fail("metrics: need at least one class, got {}", num_classes);
  if (truth.size() != predicted.size()) {
    fail("metrics: {} true labels but {} predictions", truth.size(), predicted.size());
  }
  const auto C = static_cast<size_t>(num_classes);
  ClassificationMetrics m;
  m.num_classes = num_classes;
  m.count = static_cast<int64_t>(truth.size());
  m.confusion_matrix.assign(C, std::vector<int64_t>(C, 0));
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || truth[i] >= num_classes) fail("metrics: true label {} at row {} is outside the {} classes", truth[i], i, num_classes);
    if (predicted[i] < 0 || predicted[i] >= num_classes) {
      fail("metrics: prediction {} at row {} is outside the {} classes", predicted[i], i, num_classes);
    }
    ++m.confusion_matrix[static_cast<size_t>(truth[i])][static_cast<size_t>(predicted[i])];
  }
  int64_t correct = 0;
  m.support.assign(C, 0);
  std::vector<int64_t> predicted_count(C, 0);
  for (size_t t = 0; t < C; ++t) {
    correct += m.confusion_matrix[t][t];
    for (size_t p = 0; p < C; ++p) {
      m.support[t] += m.confusion_matrix[t][p];
      predicted_count[p] += m.confusion_matrix[t][p];
    }
  }
  m.accuracy = safe_divide(static_cast<double>(correct), static_cast<double>(truth.size()));
  double recall_sum = 0.0;
  int64_t present = 0;
  for (size_t c = 0; c < C; ++c) {
    const auto tp = static_cast<double>(m.confusion_matrix[c][c]);
    const double precision = safe_divide(tp, static_cast<double>(predicted_count[c]));
    const double recall = safe_divide(tp, static_cast<double>(m.support[c]));
    const double f1 = safe_divide(2.0 * precision * recall, precision + recall);
    m.precision_per_class.push_back(precision);
    m.recall_per_class.push_back(recall);
    m.f1_per_class.push_back(f1);
    m.macro_precision += precision / static_cast<double>(C);
    m.macro_recall += recall / static_cast<double>(C);
    m.macro_f1 += f1 / static_cast<double>(C);
    m.weighted_f1 += f1 * safe_divide(static_cast<double>(m.support[c]), static_cast<double>(truth.size()));
    if (m.support[c] > 0) {
      recall_sum += recall;
      ++present;
    }
  }
  m.balanced_accuracy = safe_divide(recall_sum, static_cast<double>(present));
  return m;
}

double log_loss(const std::vector<int64_t>& truth, const std::vector<double>& scores, int64_t num_classes,
                ScoreKind kind) {
  check_scores(truth, scores, num_classes);
  if (truth.empty()) fail("log loss of no rows");
  const auto C = static_cast<size_t>(num_classes);
  double total = 0.0;
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || truth[i] >= num_classes) fail("log loss: true label {} at row {} is outside the {} classes", truth[i], i, num_classes);
    const double* row = scores.data() + i * C;
    const auto y = static_cast<size_t>(truth[i]);
    if (kind == ScoreKind::Logits) {
      const double top = *std::max_element(row, row + C);
      double sum = 0.0;
      for (size_t c = 0; c < C; ++c) sum += std::exp(row[c] - top);
      total += -(row[y] - top - std::log(sum));
    } else {
      constexpr double eps = 1e-15;
      double sum = 0.0;
      for (size_t c = 0; c < C; ++c) sum += std::clamp(row[c], eps, 1.0 - eps);
      total += -std::log(std::clamp(row[y], eps, 1.0 - eps) / sum);
    }
  }
  return total / static_cast<double>(truth.size());
}

ClassificationMetrics evaluate_scores(const std::vector<int64_t>& truth, const std::vector<double>& scores,
                                      int64_t num_classes, ScoreKind kind) {
  check_scores(truth, scores, num_classes);
  const auto C = static_cast<size_t>(num_classes);
  std::vector<int64_t> predicted;
  predicted.reserve(truth.size());
  for (size_t i = 0; i < truth.size(); ++i) {
    const double* row = scores.data() + i * C;
    predicted.push_back(std::max_element(row, row + C) - row);
  }
  auto m = evaluate_predictions(truth, predicted, num_classes);
  if (!truth.empty()) m.log_loss = log_loss(truth, scores, num_classes, kind);
  return m;
}

nlohmann::json ClassificationMetrics::to_json() const {
  nlohmann::json j = {
      {"num_classes", num_classes},
      {"count", count},
      {"accuracy", accuracy},
      {"macro_f1", macro_f1},
      {"weighted_f1", weighted_f1},
      {"balanced_accuracy", balanced_accuracy},
      {"macro_precision", macro_precision},
      {"macro_recall", macro_recall},
      {"precision_per_class", precision_per_class},
      {"recall_per_class", recall_per_class},
      {"f1_per_class", f1_per_class},
      {"support", support},
      {"confusion_matrix", confusion_matrix},
  };
  j["log_loss"] = log_loss ? nlohmann::json(*log_loss) : nlohmann::json(nullptr);
  return j;
}

namespace {

// Aggregates values at one place (`where`, for errors) across runs; returns false when there is nothing numeric.
bool aggregate(const std::vector<const nlohmann::json*>& values, const std::string& where, nlohmann::json& mean,
               nlohmann::json& stddev) {
  const nlohmann::json& first = *values[0];
  for (const auto* v : values) {
    const bool same_kind = (v->is_number() && first.is_number()) || v->type() == first.type();
    if (!same_kind) fail("mean over runs: \"{}\" is a {} in one run and a {} in another", where, first.type_name(), v->type_name());
  }
  if (first.is_number()) {
    const double n = static_cast<double>(values.size());
    double sum = 0.0;
    for (const auto* v : values) sum += v->get<double>();
    const double mu = sum / n;
    mean = mu;
    if (values.size() < 2) {
      stddev = nullptr;
    } else {
      double squares = 0.0;
      for (const auto* v : values) squares += (v->get<double>() - mu) * (v->get<double>() - mu);
      stddev = std::sqrt(squares / (n - 1.0));
    }
    return true;
  }
  if (first.is_array()) {
    for (const auto* v : values) {
      if (v->size() != first.size()) {
        fail("mean over runs: \"{}\" has {} elements in one run and {} in another", where, first.size(), v->size());
      }
    }
    mean = nlohmann::json::array();
    stddev = nlohmann::json::array();
    for (size_t i = 0; i < first.size(); ++i) {
      std::vector<const nlohmann::json*> column;
      for (const auto* v : values) column.push_back(&(*v)[i]);
      nlohmann::json m, s;
      if (!aggregate(column, where + "[" + std::to_string(i) + "]", m, s)) m = s = nullptr;
      mean.push_back(m);
      stddev.push_back(s);
    }
    return true;
  }
  if (first.is_object()) {
    mean = nlohmann::json::object();
    stddev = nlohmann::json::object();
    for (auto it = first.begin(); it != first.end(); ++it) {
      std::vector<const nlohmann::json*> column;
      for (const auto* v : values) {
        auto found = v->find(it.key());
        if (found == v->end()) {
          if (it->is_number() || it->is_array() || it->is_object()) {
            fail("mean over runs: key \"{}{}\" is missing in one run", where.empty() ? "" : where + ".", it.key());
          }
          column.clear();
          break;
        }
        column.push_back(&*found);
      }
      if (column.empty()) continue;
      nlohmann::json m, s;
      if (aggregate(column, where.empty() ? it.key() : where + "." + it.key(), m, s)) {
        mean[it.key()] = m;
        stddev[it.key()] = s;
      }
    }
    return true;
  }
  return false;  // strings, booleans, nulls
}

}  // namespace

nlohmann::json mean_and_std(const std::vector<nlohmann::json>& runs) {
  if (runs.empty()) fail("mean over runs: no runs given");
  std::vector<const nlohmann::json*> values;
  for (const auto& run : runs) values.push_back(&run);
  nlohmann::json mean, stddev;
  if (!aggregate(values, "", mean, stddev)) fail("mean over runs: the runs hold no numbers");
  return {{"n", runs.size()}, {"mean", mean}, {"std", stddev}};
}

}  // namespace ts::train
