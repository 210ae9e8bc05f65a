#pragma once
// Classification metrics, as JSON, and their mean and standard deviation over seeds. No torch here: pass class ids
// and (optionally) scores as plain vectors (tensor.contiguous().data_ptr<float>() copied into a vector).
#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts::train {

struct ClassificationMetrics {
  int64_t num_classes = 0;
  int64_t count = 0;
  double accuracy = 0;           // = micro-F1 (the reference's "F1" column)
  double macro_f1 = 0;           // unweighted mean of per-class F1
  double weighted_f1 = 0;        // per-class F1 weighted by true support
  double balanced_accuracy = 0;  // mean per-class recall over classes with support > 0
  double macro_precision = 0, macro_recall = 0;
  std::vector<double> precision_per_class, recall_per_class, f1_per_class;  // 0 where undefined (0/0), as sklearn
  std::vector<int64_t> support;                                             // true rows per class
  std::vector<std::vector<int64_t>> confusion_matrix;                       // [true][predicted]
  std::optional<double> log_loss;                                           // when scores were given

  // Keys: num_classes, count, accuracy, macro_f1, weighted_f1, balanced_accuracy, macro_precision, macro_recall,
  // precision_per_class, recall_per_class, f1_per_class, support, confusion_matrix, and log_loss when known.
  nlohmann::json to_json() const;
};

// Metrics of predicted class ids against true ones. Throws ts::Error on a length mismatch or an id outside
// [0, num_classes).
ClassificationMetrics evaluate_predictions(const std::vector<int64_t>& truth, const std::vector<int64_t>& predicted,
                                           int64_t num_classes);

enum class ScoreKind { Logits, Probabilities };

// Metrics of scores [N × C] (row-major): predictions are the row argmax (first on ties); log loss is the mean of
// −log p(true class), from log-softmax for logits, or from probabilities clipped to [1e-15, 1 − 1e-15] and
// renormalised per row (as scikit-learn).
ClassificationMetrics evaluate_scores(const std::vector<int64_t>& truth, const std::vector<double>& scores,
                                      int64_t num_classes, ScoreKind kind = ScoreKind::Logits);

double log_loss(const std::vector<int64_t>& truth, const std::vector<double>& scores, int64_t num_classes,
                ScoreKind kind = ScoreKind::Logits);

// Mean and sample standard deviation (n − 1) over runs (seeds) of metric objects of the same shape:
//   {"n": k, "mean": {...}, "std": {...}}
// Numbers are aggregated, arrays element-wise (nested arrays too), objects key by key; strings, booleans and
// nulls are left out. std is null when k < 2. Throws ts::Error when the runs differ in shape (a key or length).
nlohmann::json mean_and_std(const std::vector<nlohmann::json>& runs);

}  // namespace ts::train
