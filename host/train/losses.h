#pragma once
// Losses for class-imbalanced classification, and the class weights and margins they use.
//
// All losses take logits [N, C] (float) and targets [N] (int64 class ids), and return a scalar.
// Reduction: with per-class weights w, every loss is the weighted mean
//     L = Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}
// which is what torch's F.cross_entropy(weight=w, reduction="mean") computes and what the reference code uses
// (so a weighted loss is NOT Σ w ℓ / N). Without weights it is the plain mean over the batch.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace ts::train {

// ---- class weights and margins (from per-class training counts) ----

// w_c ∝ 1 / n_c, normalised so that Σ_c w_c = C.
std::vector<double> inverse_frequency_weights(const std::vector<int64_t>& counts);
// Cui et al. 2019 "effective number": w_c ∝ (1 − β) / (1 − β^{n_c}), normalised so Σ_c w_c = C.
// At counts [7513, 37569], β = 0.9999: [1.2979, 0.7021].
std::vector<double> effective_number_weights(const std::vector<int64_t>& counts, double beta = 0.9999);
// Cao et al. 2019 LDAM margins: m_c ∝ n_c^{-1/4}, scaled so max_c m_c = max_margin. At [7513, 37569]: [0.5, 0.3344].
std::vector<double> ldam_margins(const std::vector<int64_t>& counts, double max_margin = 0.5);
// Class priors π_c = n_c / Σ n.
std::vector<double> class_priors(const std::vector<int64_t>& counts);

// ---- losses ----

// Cross-entropy, optionally class-weighted and label-smoothed. With smoothing ε the per-row loss is
//   ℓ_i = (1 − ε)(−log p_{i,y}) + (ε / C) Σ_c (−log p_{i,c})
// (torch's definition), reduced by the weighted mean above with the weight of the true class (torch instead weights
// each smoothing term by its own class; the two agree when unweighted).
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                            const std::vector<double>& class_weights = {}, double label_smoothing = 0.0);

// LDAM: z' = s · (z − m_y e_y) (the margin is subtracted from the true class's logit only), then (weighted) CE.
torch::Tensor ldam_loss(const torch::Tensor& logits, const torch::Tensor& targets, const std::vector<double>& margins,
                        double scale = 1.0, const std::vector<double>& class_weights = {});

// Focal loss (Lin et al. 2017): ℓ_i = −(1 − p_{i,y})^γ log p_{i,y}, reduced by the (weighted) mean.
torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double gamma = 2.0,
                         const std::vector<double>& class_weights = {});

// Logit-adjusted loss (Menon et al. 2021): CE(z + τ log π), π the class priors.
torch::Tensor logit_adjusted_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                  const std::vector<double>& priors, double tau = 1.0,
                                  const std::vector<double>& class_weights = {});

// Post-hoc logit adjustment for prediction: z − τ log π (predict its argmax).
torch::Tensor adjust_logits_post_hoc(const torch::Tensor& logits, const std::vector<double>& priors, double tau = 1.0);

// ---- one configurable loss, for recipes ----

enum class LossKind { CrossEntropy, Ldam, Focal, LogitAdjusted };
LossKind loss_kind_from_name(const std::string& name);  // "ce", "ldam", "focal", "logit_adjusted" (or "la")

struct LossConfig {
  LossKind kind = LossKind::CrossEntropy;
  std::vector<double> class_weights;  // empty: unweighted
  std::vector<double> margins;        // LDAM
  double scale = 1.0;                 // LDAM s (the reference: 1; the LDAM paper: 30)
  double gamma = 2.0;                 // focal
  std::vector<double> priors;         // logit-adjusted
  double tau = 1.0;                   // logit-adjusted
  double label_smoothing = 0.0;       // cross-entropy only
};

torch::Tensor compute_loss(const LossConfig& config, const torch::Tensor& logits, const torch::Tensor& targets);

// A loss as a recipe names it: {kind = "ce" | "ldam" | "focal" | "logit_adjusted", counts = {n_0, ...},
// weights = nil | "inverse" | "effective" | "none" | {w_0, ...}, beta = 0.9999, max_margin = 0.5, scale = 1,
// gamma = 2, tau = 1, label_smoothing = 0}. counts are the training set's class counts, which class weights, LDAM
// margins and logit adjustment are computed from.
struct LossOptions {
  std::string name = "ce";  // the kind as given
  LossConfig config;

  // Unknown keys and values of the wrong type are errors naming `where`.
  static LossOptions from_json(const nlohmann::json& options, const std::string& where);
};

}  // namespace ts::train
