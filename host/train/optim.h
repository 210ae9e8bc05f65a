#pragma once
// Optimisers over a chosen set of parameters, learning-rate schedules (Hugging Face semantics) and gradient clipping.
// Gradient accumulation is loop policy: train.fit's, in scripts/twostage/train.lua.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace ts::train {

// ---- parameter selection by name ----
//
// A pattern selects the parameters whose name (as in module.named_parameters(), e.g.
// "bert.encoder.layer.11.attention.self.query.weight") it matches:
//   - with '*' or '?' it is a glob over the whole name ('*' also crosses dots): "bert.encoder.layer.1*.output.*"
//   - otherwise it is a prefix on dot boundaries: "bert.encoder.layer.1" matches "bert.encoder.layer.1.x" and
//     "bert.encoder.layer.1" itself, but not "bert.encoder.layer.11.x".
bool name_matches(const std::string& name, const std::string& pattern);

// The names of the parameters matching any pattern, in named_parameters() order. Throws ts::Error naming a pattern
// that matches nothing (with some of the names that exist), since a misspelt pattern would silently freeze a model.
std::vector<std::string> select_parameter_names(const torch::nn::Module& module,
                                                const std::vector<std::string>& patterns);
std::vector<torch::Tensor> select_parameters(const torch::nn::Module& module, const std::vector<std::string>& patterns);

// Patterns for "the top k encoder layers and what sits above them", for a model with `num_layers` layers:
//   top_layer_patterns(12, 1) = {"bert.encoder.layer.11", "bert.pooler", "classifier"}
// (the reference's stage 1). `above` lists what sits above the encoder.
std::vector<std::string> top_layer_patterns(int64_t num_layers, int64_t k,
                                            const std::string& layer_prefix = "bert.encoder.layer",
                                            const std::vector<std::string>& above = {"bert.pooler", "classifier"});

// The lowest encoder layer with a trainable parameter when nothing below it trains, so that the trunk below can be
// run once and cached: `num_layers` when no layer trains, nullopt when an embedding parameter does.
std::optional<int64_t> first_trainable_layer(const torch::nn::Module& module, int64_t num_layers,
                                             const std::string& layer_prefix = "bert.encoder.layer",
                                             const std::string& embeddings_prefix = "bert.embeddings");

// requires_grad = true on the parameters matching `patterns`, false on every other; returns how many tensors are
// trainable. Patterns {"*"} unfreeze everything.
int64_t set_trainable(torch::nn::Module& module, const std::vector<std::string>& patterns);

// requires_grad = false on the parameters matching `patterns`, the others left as they are; returns how many tensors
// are still trainable. A tied tensor (a masked LM's decoder and word embeddings) is frozen under either name.
int64_t freeze(torch::nn::Module& module, const std::vector<std::string>& patterns);

// ---- optimisers ----

struct OptimizerConfig {
  // "adamw" (torch.optim.AdamW), "adamw_hf" (transformers.AdamW, the reference code's) or "sgd"
  std::string kind = "adamw";
  double lr = 1e-5;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
  double weight_decay = 0.0;                       // both
  double momentum = 0.0;                           // SGD
  bool nesterov = false;                           // SGD
};

// An optimiser as a recipe names it: {kind, lr, weight_decay, eps, momentum, nesterov, betas = {b1, b2},
// no_decay = {patterns}, trainable = {patterns}}. trainable, when given, is the parameter selection the optimiser
// trains (set_trainable's patterns); no_decay names the parameters kept out of weight decay (a pattern, or a suffix
// of the name).
struct OptimizerOptions {
  OptimizerConfig config;
  std::vector<std::string> no_decay;
  std::optional<std::vector<std::string>> trainable;

  // Unknown keys and values of the wrong type are errors naming `where`.
  static OptimizerOptions from_json(const nlohmann::json& options, const std::string& where);
  // Whether `name` is kept out of weight decay.
  bool exempt_from_decay(const std::string& name) const;
};

// AdamW (train::FusedAdamW, in either arithmetic) or SGD over `parameters`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const OptimizerConfig& config);
// The same with `not_decayed` in a second parameter group whose weight decay is 0 (transformers' convention: biases
// and LayerNorm weights are not decayed).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                        const std::vector<torch::Tensor>& not_decayed,
                                                        const OptimizerConfig& config);

// ---- learning-rate schedules ----

enum class ScheduleKind { Constant, Linear, Cosine };
ScheduleKind schedule_kind_from_name(const std::string& name);  // "constant", "linear", "cosine"

// The lr factor at optimizer step `step` (0-based: the factor used for the first update is factor(0)), as
// transformers' get_{constant,linear,cosine}_schedule_with_warmup:
//   step < warmup: step / max(1, warmup)
//   constant:      1
//   linear:        max(0, (total − step) / max(1, total − warmup))
//   cosine:        max(0, ½ (1 + cos(π · 2 · cycles · progress))), progress = (step − warmup) / max(1, total − warmup)
struct Schedule {
  ScheduleKind kind = ScheduleKind::Linear;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  double num_cycles = 0.5;  // cosine
  double factor(int64_t step) const;
};

// A schedule as a recipe asks for one, and the step it starts at (a resumed run's).
struct ScheduleOptions {
  Schedule schedule;
  int64_t start_step = 0;

  // {kind = "linear" | "constant" | "cosine", warmup_steps = 0, total_steps = N (not for constant), cycles = 0.5,
  //  start_step = 0}; unknown keys are errors naming `where`.
  static ScheduleOptions from_json(const nlohmann::json& options, const std::string& where);
};

// Drives an optimizer's learning rate per step, like torch's LambdaLR: on construction every parameter group's lr is
// set to base_lr × factor(0); each step() (call it after optimizer.step()) advances one step and sets the lr again.
class LrScheduler {
 public:
  LrScheduler(torch::optim::Optimizer& optimizer, Schedule schedule, double base_lr);
  void step();
  int64_t current_step() const { return step_; }
  double current_lr() const;

 private:
  void apply();
  torch::optim::Optimizer& optimizer_;
  Schedule schedule_;
  double base_lr_;
  int64_t step_ = 0;
};

// ---- gradients ----

// Drops the gradients of the optimiser's parameters (PyTorch 2's zero_grad(set_to_none=True), its default; LibTorch
// 1.13's zero_grad() fills zeros). The next backward then hands each parameter its gradient instead of adding it to
// a zeroed tensor: a pass less over every gradient, and none to clear them. A parameter that backward does not
// reach keeps no gradient, and AdamW leaves it alone, as PyTorch 2 does.
void clear_gradients(torch::optim::Optimizer& optimizer);

// Clips the global L2 norm of the gradients of `parameters` to max_norm (torch::nn::utils::clip_grad_norm_) and
// returns the norm before clipping. Parameters without a gradient are ignored.
double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm);

// clip_grad_norm(parameters, max_norm), then optimizer.step(): the same update, bit for bit. With twostage's AdamW
// the clipping coefficient goes into the update's single pass instead of a pass of its own over every gradient, and
// the gradients are left unclipped (they are only read by the step); when `parameters` leave out some of the
// optimiser's, it clips and steps as two passes. Returns the norm before clipping.
double clip_grad_norm_and_step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& parameters,
                               double max_norm);

}  // namespace ts::train
