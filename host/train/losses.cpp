#include "train/losses.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/options.h"

namespace ts::train {
namespace {

void check_counts(const std::vector<int64_t>& counts, const char* what) {
  if (counts.empty()) fail("{}: no class counts given", what);
  for (size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] <= 0) fail("{}: class {} has {} training rows; every class needs at least one", what, c, counts[c]);
  }
}

std::vector<double> normalise_to_class_count(std::vector<double> w) {
  double total = 0.0;
  for (double v : w) total += v;
  for (double& v : w) v = v / total * static_cast<double>(w.size());
  return w;
}

std::string shape_of(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + std::to_string(t.size(d));
  return out + "]";
}

void check_inputs(const torch::Tensor& logits, const torch::Tensor& targets, const char* what) {
  if (logits.dim() != 2) fail("{}: logits must be [N, C], got {} dimensions", what, logits.dim());
  if (targets.dim() != 1 || targets.size(0) != logits.size(0)) {
    fail("{}: targets must be [N] with N = {} (the logits' rows), got {}", what, logits.size(0),
         shape_of(targets));
  }
  if (targets.scalar_type() != torch::kInt64) fail("{}: targets must be int64 class ids", what);
}

torch::Tensor per_class(const std::vector<double>& values, const torch::Tensor& like, const char* what,
                        const char* name) {
  if (static_cast<int64_t>(values.size()) != like.size(1)) {
    fail("{}: {} {} for {} classes (the logits have {} columns)", what, values.size(), name, values.size(),
         like.size(1));
  }
  return torch::tensor(values, torch::TensorOptions().dtype(torch::kFloat64)).to(like.device(), like.scalar_type());
}

// Σ w_y ℓ / Σ w_y, or the mean without weights.
torch::Tensor reduce(const torch::Tensor& per_row, const torch::Tensor& targets, const std::vector<double>& weights,
                     const torch::Tensor& logits, const char* what) {
  if (weights.empty()) return per_row.mean();
  auto w = per_class(weights, logits, what, "class weights").index_select(0, targets);
  return (w * per_row).sum() / w.sum();
}

torch::Tensor log_prior(const std::vector<double>& priors, const torch::Tensor& logits, const char* what) {
  for (double p : priors) {
    if (!(p > 0.0)) fail("{}: a class prior is {}; priors must be positive", what, p);
  }
  return per_class(priors, logits, what, "priors").log();
}

}  // namespace

std::vector<double> inverse_frequency_weights(const std::vector<int64_t>& counts) {
  check_counts(counts, "inverse-frequency weights");
  std::vector<double> w;
  for (int64_t n : counts) w.push_back(1.0 / static_cast<double>(n));
  return normalise_to_class_count(std::move(w));
}

std::vector<double> effective_number_weights(const std::vector<int64_t>& counts, double beta) {
  check_counts(counts, "effective-number weights");
  if (!(beta >= 0.0 && beta < 1.0)) fail("effective-number weights: beta {} is outside [0, 1)", beta);
  std::vector<double> w;
  for (int64_t n : counts) w.push_back((1.0 - beta) / (1.0 - std::pow(beta, static_cast<double>(n))));
  return normalise_to_class_count(std::move(w));
}

std::vector<double> ldam_margins(const std::vector<int64_t>& counts, double max_margin) {
  check_counts(counts, "LDAM margins");
  std::vector<double> m;
  for (int64_t n : counts) m.push_back(1.0 / std::sqrt(std::sqrt(static_cast<double>(n))));
  const double largest = *std::max_element(m.begin(), m.end());
  for (double& v : m) v *= max_margin / largest;
  return m;
}

std::vector<double> class_priors(const std::vector<int64_t>& counts) {
  check_counts(counts, "class priors");
  double total = 0.0;
  for (int64_t n : counts) total += static_cast<double>(n);
  std::vector<double> p;
  for (int64_t n : counts) p.push_back(static_cast<double>(n) / total);
  return p;
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                            const std::vector<double>& class_weights, double label_smoothing) {
  check_inputs(logits, targets, "cross-entropy");
  if (!(label_smoothing >= 0.0 && label_smoothing < 1.0)) {
    fail("cross-entropy: label smoothing {} is outside [0, 1)", label_smoothing);
  }
  auto log_p = torch::log_softmax(logits, 1);
  auto nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1);
  auto per_row = nll;
  if (label_smoothing > 0.0) {
    auto uniform = -log_p.mean(1);
    per_row = (1.0 - label_smoothing) * nll + label_smoothing * uniform;
  }
  return reduce(per_row, targets, class_weights, logits, "cross-entropy");
}

torch::Tensor ldam_loss(const torch::Tensor& logits, const torch::Tensor& targets, const std::vector<double>& margins,
                        double scale, const std::vector<double>& class_weights) {
  check_inputs(logits, targets, "LDAM loss");
  auto m = per_class(margins, logits, "LDAM loss", "margins");
  auto one_hot = torch::zeros_like(logits).scatter_(1, targets.unsqueeze(1), 1.0);
  auto adjusted = scale * (logits - one_hot * m.index_select(0, targets).unsqueeze(1));
  return cross_entropy(adjusted, targets, class_weights);
}

torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double gamma,
                         const std::vector<double>& class_weights) {
  check_inputs(logits, targets, "focal loss");
  if (!(gamma >= 0.0)) fail("focal loss: gamma {} must be >= 0", gamma);
  auto log_p_true = torch::log_softmax(logits, 1).gather(1, targets.unsqueeze(1)).squeeze(1);
  auto per_row = -torch::pow(1.0 - log_p_true.exp(), gamma) * log_p_true;
  return reduce(per_row, targets, class_weights, logits, "focal loss");
}

torch::Tensor logit_adjusted_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                  const std::vector<double>& priors, double tau,
                                  const std::vector<double>& class_weights) {
  check_inputs(logits, targets, "logit-adjusted loss");
  return cross_entropy(logits + tau * log_prior(priors, logits, "logit-adjusted loss"), targets, class_weights);
}

torch::Tensor adjust_logits_post_hoc(const torch::Tensor& logits, const std::vector<double>& priors, double tau) {
  if (logits.dim() != 2) fail("post-hoc logit adjustment: logits must be [N, C], got {} dimensions", logits.dim());
  return logits - tau * log_prior(priors, logits, "post-hoc logit adjustment");
}

LossKind loss_kind_from_name(const std::string& name) {
  if (name == "ce" || name == "cross_entropy") return LossKind::CrossEntropy;
  if (name == "ldam") return LossKind::Ldam;
  if (name == "focal") return LossKind::Focal;
  if (name == "logit_adjusted" || name == "la") return LossKind::LogitAdjusted;
  fail("unknown loss \"{}\"; expected ce, ldam, focal or logit_adjusted", name);
}

torch::Tensor compute_loss(const LossConfig& config, const torch::Tensor& logits, const torch::Tensor& targets) {
  if (config.label_smoothing != 0.0 && config.kind != LossKind::CrossEntropy) {
    fail("label smoothing is only supported with the cross-entropy loss");
  }
  switch (config.kind) {
    case LossKind::CrossEntropy:
      return cross_entropy(logits, targets, config.class_weights, config.label_smoothing);
    case LossKind::Ldam:
      return ldam_loss(logits, targets, config.margins, config.scale, config.class_weights);
    case LossKind::Focal:
      return focal_loss(logits, targets, config.gamma, config.class_weights);
    case LossKind::LogitAdjusted:
      return logit_adjusted_loss(logits, targets, config.priors, config.tau, config.class_weights);
  }
  fail("unknown loss kind");
}

LossOptions LossOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where,
                          {"kind", "counts", "weights", "beta", "max_margin", "scale", "gamma", "tau", "label_smoothing"});
  LossOptions options;
  options.name = read.string("kind").value_or("ce");
  auto& config = options.config;
  config.kind = loss_kind_from_name(options.name);
  std::vector<int64_t> counts;
  for (const double count : read.numbers("counts").value_or(std::vector<double>{}))
    counts.push_back(static_cast<int64_t>(count));
  auto need_counts = [&](const char* what) {
    if (counts.empty()) fail("loss '{}': {} need the training class counts (counts = {{...}})", options.name, what);
  };
  if (const auto* weights = read.find("weights")) {
    if (weights->is_string()) {
      const auto kind = weights->get<std::string>();
      need_counts("class weights");
      if (kind == "effective")
        config.class_weights = effective_number_weights(counts, read.number("beta").value_or(0.9999));
      else if (kind == "inverse")
        config.class_weights = inverse_frequency_weights(counts);
      else if (kind != "none")
        fail("loss weights '{}': expected \"effective\", \"inverse\", \"none\" or a list", kind);
    } else if (weights->is_array() || weights->is_object()) {
      config.class_weights = *read.numbers("weights");
    } else {
      fail("loss weights: expected a name or a list, got a {}", weights->type_name());
    }
  }
  if (config.kind == LossKind::Ldam) {
    need_counts("LDAM margins");
    config.margins = ldam_margins(counts, read.number("max_margin").value_or(0.5));
    config.scale = read.number("scale").value_or(1.0);
  }
  if (config.kind == LossKind::Focal) config.gamma = read.number("gamma").value_or(2.0);
  if (config.kind == LossKind::LogitAdjusted) {
    need_counts("logit adjustment");
    config.priors = class_priors(counts);
    config.tau = read.number("tau").value_or(1.0);
  }
  config.label_smoothing = read.number("label_smoothing").value_or(0.0);
  if (!counts.empty() && !config.class_weights.empty() && config.class_weights.size() != counts.size())
    fail("loss: {} class weights for {} classes", config.class_weights.size(), counts.size());
  return options;
}

}  // namespace ts::train
