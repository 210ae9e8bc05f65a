#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "core/options.h"
#include "train/fused_adamw.h"
#include "train/sum_of_squares.h"

namespace ts::train {
namespace {

// Glob with '*' (any run, dots included) and '?' (one character), over the whole name.
bool glob_match(const char* name, const char* pattern) {
  const char* star = nullptr;
  const char* resume = nullptr;
  while (*name) {
    if (*pattern == '?' || (*pattern && *pattern != '*' && *pattern == *name)) {
      ++name;
      ++pattern;
    } else if (*pattern == '*') {
      star = pattern++;
      resume = name;
    } else if (star) {
      pattern = star + 1;
      name = ++resume;
    } else {
      return false;
    }
  }
  while (*pattern == '*') ++pattern;
  return *pattern == '\0';
}

}  // namespace

bool name_matches(const std::string& name, const std::string& pattern) {
  if (pattern.find_first_of("*?") != std::string::npos) return glob_match(name.c_str(), pattern.c_str());
  if (name.size() < pattern.size() || name.compare(0, pattern.size(), pattern) != 0) return false;
  return name.size() == pattern.size() || name[pattern.size()] == '.';
}

std::vector<std::string> select_parameter_names(const torch::nn::Module& module,
                                                const std::vector<std::string>& patterns) {
  const auto named = module.named_parameters(/*recurse=*/true);
  std::vector<bool> used(patterns.size(), false);
  std::vector<std::string> out;
  for (const auto& item : named) {
    bool selected = false;
    for (size_t p = 0; p < patterns.size(); ++p) {
      if (name_matches(item.key(), patterns[p])) {
        used[p] = true;
        selected = true;
      }
    }
    if (selected) out.push_back(item.key());
  }
  for (size_t p = 0; p < patterns.size(); ++p) {
    if (used[p]) continue;
    std::string examples;
    size_t shown = 0;
    for (const auto& item : named) {
      if (shown == 8) {
        examples += ", ...";
        break;
      }
      examples += (shown++ ? ", " : "") + item.key();
    }
    fail("parameter pattern \"{}\" matches none of the model's {} parameters (e.g. {})", patterns[p], named.size(),
         examples);
  }
  return out;
}

std::vector<torch::Tensor> select_parameters(const torch::nn::Module& module, const std::vector<std::string>& patterns) {
  const auto names = select_parameter_names(module, patterns);
  const auto named = module.named_parameters(true);
  std::vector<torch::Tensor> out;
  out.reserve(names.size());
  for (const auto& name : names) out.push_back(named[name]);
  return out;
}

std::vector<std::string> top_layer_patterns(int64_t num_layers, int64_t k, const std::string& layer_prefix,
                                            const std::vector<std::string>& above) {
  if (k < 0 || k > num_layers) fail("top {} layers asked of a model with {} layers", k, num_layers);
  std::vector<std::string> out;
  for (int64_t layer = num_layers - k; layer < num_layers; ++layer) {
    out.push_back(layer_prefix + "." + std::to_string(layer));
  }
  out.insert(out.end(), above.begin(), above.end());
  return out;
}

std::optional<int64_t> first_trainable_layer(const torch::nn::Module& module, int64_t num_layers,
                                             const std::string& layer_prefix, const std::string& embeddings_prefix) {
  int64_t lowest = num_layers;
  const std::string layer_start = layer_prefix + ".";
  for (const auto& item : module.named_parameters(true)) {
    if (!item.value().requires_grad()) continue;
    const std::string& name = item.key();
    if (name.rfind(embeddings_prefix + ".", 0) == 0) return std::nullopt;
    if (name.rfind(layer_start, 0) != 0) continue;
    const auto end = name.find('.', layer_start.size());
    lowest = std::min<int64_t>(lowest, std::stoll(name.substr(layer_start.size(), end - layer_start.size())));
  }
  return lowest;
}

int64_t set_trainable(torch::nn::Module& module, const std::vector<std::string>& patterns) {
  const auto names = select_parameter_names(module, patterns);
  auto named = module.named_parameters(true);
  int64_t trainable = 0;
  for (auto& item : named) {
    const bool on = std::find(names.begin(), names.end(), item.key()) != names.end();
    item.value().set_requires_grad(on);
    trainable += on ? 1 : 0;
  }
  return trainable;
}

int64_t freeze(torch::nn::Module& module, const std::vector<std::string>& patterns) {
  for (auto& parameter : select_parameters(module, patterns)) parameter.set_requires_grad(false);
  int64_t trainable = 0;
  for (const auto& parameter : module.parameters(true)) trainable += parameter.requires_grad() ? 1 : 0;
  return trainable;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const OptimizerConfig& config) {
  return make_optimizer(parameters, {}, config);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                        const std::vector<torch::Tensor>& not_decayed,
                                                        const OptimizerConfig& config) {
  if (decayed.empty() && not_decayed.empty()) fail("optimizer \"{}\": no parameters to optimise", config.kind);
  if (!(config.lr >= 0.0)) fail("optimizer \"{}\": learning rate {} must be >= 0", config.kind, config.lr);
  // One group per non-empty list; the second has no weight decay.
  auto groups_for = [&](const auto& options) {
    using Options = std::decay_t<decltype(options)>;
    std::vector<torch::optim::OptimizerParamGroup> groups;
    if (!decayed.empty()) groups.emplace_back(decayed, std::make_unique<Options>(options));
    if (!not_decayed.empty()) {
      auto undecayed = std::make_unique<Options>(options);
      undecayed->weight_decay(0.0);
      groups.emplace_back(not_decayed, std::move(undecayed));
    }
    return groups;
  };
  if (config.kind == "adamw" || config.kind == "adamw_hf") {
    auto options = torch::optim::AdamWOptions(config.lr)
                       .betas(std::make_tuple(config.beta1, config.beta2))
                       .eps(config.eps)
                       .weight_decay(config.weight_decay);
    return std::make_unique<FusedAdamW>(
        groups_for(options), options,
        config.kind == "adamw_hf" ? AdamWArithmetic::Transformers : AdamWArithmetic::Torch);
  }
  if (config.kind == "sgd") {
    auto options = torch::optim::SGDOptions(config.lr)
                       .momentum(config.momentum)
                       .weight_decay(config.weight_decay)
                       .nesterov(config.nesterov);
    return std::make_unique<torch::optim::SGD>(groups_for(options), options);
  }
  fail("unknown optimizer \"{}\"; expected adamw, adamw_hf or sgd", config.kind);
}

ScheduleKind schedule_kind_from_name(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  fail("unknown schedule \"{}\"; expected constant, linear or cosine", name);
}

double Schedule::factor(int64_t step) const {
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (kind) {
    case ScheduleKind::Constant:
      return 1.0;
    case ScheduleKind::Linear:
      return std::max(0.0, static_cast<double>(total_steps - step) / span);
    case ScheduleKind::Cosine: {
      const double progress = static_cast<double>(step - warmup_steps) / span;
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
    }
  }
  return 1.0;
}

LrScheduler::LrScheduler(torch::optim::Optimizer& optimizer, Schedule schedule, double base_lr)
    : optimizer_(optimizer), schedule_(schedule), base_lr_(base_lr) {
  if (schedule_.kind != ScheduleKind::Constant && schedule_.total_steps <= 0) {
    fail("learning-rate schedule needs total_steps > 0, got {}", schedule_.total_steps);
  }
  if (schedule_.warmup_steps < 0) fail("warm-up steps {} must be >= 0", schedule_.warmup_steps);
  apply();
}

void LrScheduler::step() {
  ++step_;
  apply();
}

double LrScheduler::current_lr() const { return base_lr_ * schedule_.factor(step_); }

void LrScheduler::apply() {
  const double lr = current_lr();
  for (auto& group : optimizer_.param_groups()) group.options().set_lr(lr);
}

void clear_gradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups())
    for (auto& parameter : group.params()) parameter.mutable_grad().reset();
}

namespace {

struct Clipping {
  double norm = 0.0;
  double coefficient = 1.0;  // at most 1
  std::vector<torch::Tensor> with_grad;
};

// torch::nn::utils::clip_grad_norm_'s arithmetic, with the squares of float32 CPU gradients summed by
// train/sum_of_squares.h.
Clipping clipping_of(const std::vector<torch::Tensor>& parameters, double max_norm) {
  Clipping out;
  double squares = 0.0;
  std::vector<torch::Tensor> other_norms;  // other devices and dtypes: torch's norms, read back once
  for (const auto& p : parameters) {
    const torch::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    out.with_grad.push_back(p);
    if (grad.device().is_cpu() && grad.scalar_type() == torch::kFloat && grad.is_contiguous())
      squares += sum_of_squares(grad.data_ptr<float>(), grad.numel());
    else
      other_norms.push_back(grad.norm(2).to(torch::kDouble));
  }
  if (!other_norms.empty()) squares += torch::stack(other_norms).square().sum().item<double>();
  out.norm = std::sqrt(squares);
  out.coefficient = std::min(1.0, max_norm / (out.norm + 1e-6));
  return out;
}

}  // namespace

double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  const auto clipping = clipping_of(parameters, max_norm);
  // torch multiplies every gradient by the coefficient even when that is 1, a pass that changes nothing.
  if (clipping.coefficient < 1.0)
    for (const auto& p : clipping.with_grad) p.grad().mul_(static_cast<float>(clipping.coefficient));
  return clipping.norm;
}

double clip_grad_norm_and_step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& parameters,
                               double max_norm) {
  auto* fused = dynamic_cast<FusedAdamW*>(&optimizer);
  // The scaled step scales every gradient the optimiser holds, so only when clipping covers all of them.
  if (fused) {
    std::unordered_set<const void*> clipped;
    for (const auto& p : parameters) clipped.insert(p.unsafeGetTensorImpl());
    for (const auto& group : optimizer.param_groups())
      for (const auto& p : group.params())
        if (p.grad().defined() && !clipped.count(p.unsafeGetTensorImpl())) fused = nullptr;
  }
  if (!fused) {
    const double norm = clip_grad_norm(parameters, max_norm);
    optimizer.step();
    return norm;
  }
  const auto clipping = clipping_of(parameters, max_norm);
  fused->step_scaled(static_cast<float>(clipping.coefficient));
  return clipping.norm;
}

ScheduleOptions ScheduleOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"kind", "warmup_steps", "total_steps", "cycles", "start_step"});
  ScheduleOptions options;
  auto& schedule = options.schedule;
  schedule.kind = schedule_kind_from_name(read.string("kind").value_or("linear"));
  schedule.warmup_steps = read.integer("warmup_steps").value_or(0);
  const auto total = read.integer("total_steps");
  if (!total && schedule.kind != ScheduleKind::Constant) fail("{}: total_steps is required", where);
  schedule.total_steps = total.value_or(0);
  schedule.num_cycles = read.number("cycles").value_or(schedule.num_cycles);
  options.start_step = read.integer("start_step").value_or(0);
  if (options.start_step < 0) fail("{}: start_step {} must not be negative", where, options.start_step);
  return options;
}

OptimizerOptions OptimizerOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where,
                          {"kind", "lr", "weight_decay", "eps", "momentum", "nesterov", "betas", "no_decay", "trainable"});
  OptimizerOptions options;
  auto& config = options.config;
  config.kind = read.string("kind").value_or(config.kind);
  config.lr = read.number("lr").value_or(config.lr);
  config.weight_decay = read.number("weight_decay").value_or(config.weight_decay);
  config.eps = read.number("eps").value_or(config.eps);
  config.momentum = read.number("momentum").value_or(config.momentum);
  config.nesterov = read.boolean("nesterov").value_or(config.nesterov);
  if (const auto betas = read.numbers("betas")) {
    if (betas->size() != 2) fail("betas: expected two numbers, got {}", betas->size());
    config.beta1 = (*betas)[0];
    config.beta2 = (*betas)[1];
  }
  options.no_decay = read.strings("no_decay").value_or(std::vector<std::string>{});
  options.trainable = read.strings("trainable");
  return options;
}

bool OptimizerOptions::exempt_from_decay(const std::string& name) const {
  return std::any_of(no_decay.begin(), no_decay.end(), [&](const std::string& pattern) {
    return name_matches(name, pattern) ||
           (name.size() >= pattern.size() && name.compare(name.size() - pattern.size(), pattern.size(), pattern) == 0);
  });
}

}  // namespace ts::train
