// Training pieces in Lua: losses (ts.loss), optimisers (ts.optimizer), learning-rate schedules (ts.schedule),
// metrics (ts.metrics, ts.mean_std) and ts.no_grad. The loop itself is Lua (scripts/twostage/train.lua).
#include <memory>

#include "core/options.h"
#include "json.h"
#include "model.h"
#include "runtime.h"
#include "tensor.h"
#include "train/losses.h"
#include "train/metrics.h"
#include "train/optim.h"

namespace ts::lua {
namespace {


// ---- losses ----------------------------------------------------------------------------------------------------

struct Loss {
  static constexpr const char* kLuaType = "twostage.Loss";
  train::LossConfig config;
  std::string name;
};

// loss{kind, counts, weights, ...} -> loss (the options: train::LossOptions); loss(logits, labels) -> scalar tensor
int loss_new(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  auto options = train::LossOptions::from_json(options_json(L, 1), "ts.loss");
  push_new<Loss>(L, Loss{std::move(options.config), std::move(options.name)});
  return 1;
}

int loss_call(lua_State* L) {
  const auto& loss = check<Loss>(L, 1);
  const auto& logits = check_tensor(L, 2);
  const auto labels = check_tensor(L, 3).to(logits.device());
  push_tensor(L, train::compute_loss(loss.config, logits, labels));
  return 1;
}

// describe() -> {kind, weights, margins, scale, gamma, tau, priors, label_smoothing}: what the loss computes with.
int loss_describe(lua_State* L) {
  const auto& loss = check<Loss>(L, 1);
  const auto& c = loss.config;
  nlohmann::json out = {{"kind", loss.name}, {"label_smoothing", c.label_smoothing}};
  if (!c.class_weights.empty()) out["weights"] = c.class_weights;
  if (c.kind == train::LossKind::Ldam) out.update({{"margins", c.margins}, {"scale", c.scale}});
  if (c.kind == train::LossKind::Focal) out["gamma"] = c.gamma;
  if (c.kind == train::LossKind::LogitAdjusted) out.update({{"priors", c.priors}, {"tau", c.tau}});
  push_json(L, out);
  return 1;
}

// adjust_logits(logits, counts[, tau = 1]) -> logits − τ log π: post-hoc logit adjustment (predict its argmax).
int adjust_logits(lua_State* L) {
  const auto& logits = check_tensor(L, 1);
  std::vector<int64_t> counts;
  for (double value : check_number_list(L, 2, "counts")) counts.push_back(static_cast<int64_t>(value));
  push_tensor(L, train::adjust_logits_post_hoc(logits, train::class_priors(counts), luaL_optnumber(L, 3, 1.0)));
  return 1;
}

// ---- optimisers and schedules ----------------------------------------------------------------------------------

struct Optimizer {
  static constexpr const char* kLuaType = "twostage.Optimizer";
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::vector<torch::Tensor> parameters;
  train::OptimizerConfig config;
};

Optimizer& optimizer_at(lua_State* L, int index) { return check<Optimizer>(L, index); }

// optimizer(model | {module, ...}, {kind = "adamw" | "adamw_hf" | "sgd", lr = 1e-5, weight_decay = 0,
//                                  betas = {0.9, 0.999}, eps = 1e-8, momentum = 0, nesterov = false,
//                                  no_decay = {"bias", "LayerNorm.weight"}?, trainable = {patterns}?})
//   -> optimizer
// Optimises the parameters that `trainable` names (set_trainable(trainable) on the model first, so that what is
// optimised and what receives gradients are the same selection; {"*"}: all), or without it those trainable now.
// Patterns in no_decay name parameters kept out of weight decay.
int optimizer_new(lua_State* L) {
  // A model, or a list of modules trained together ({model, detection_head}).
  std::vector<torch::nn::Module*> modules;
  if (lua_istable(L, 1)) {
    for (size_t i = 1; i <= lua_objlen(L, 1); ++i) {
      lua_rawgeti(L, 1, static_cast<int>(i));
      modules.push_back(&check_module(L, lua_gettop(L)));
      lua_pop(L, 1);
    }
    if (modules.empty()) fail("optimizer: the list of modules is empty");
  } else {
    modules.push_back(&check_module(L, 1));
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  const auto options = train::OptimizerOptions::from_json(options_json(L, 2), "ts.optimizer");
  if (options.trainable) {
    if (modules.size() != 1) fail("optimizer: trainable selects the parameters of one model, not of a list");
    train::set_trainable(*modules.front(), *options.trainable);
  }
  Optimizer optimizer;
  optimizer.config = options.config;
  const auto& config = optimizer.config;
  std::vector<torch::Tensor> decayed, not_decayed;
  for (auto* module : modules) {
    for (const auto& item : module->named_parameters()) {
      if (!item.value().requires_grad()) continue;
      (options.exempt_from_decay(item.key()) ? not_decayed : decayed).push_back(item.value());
      optimizer.parameters.push_back(item.value());
    }
  }
  if (optimizer.parameters.empty()) fail("optimizer: the model has no trainable parameters (see set_trainable)");
  optimizer.optimizer = train::make_optimizer(decayed, not_decayed, config);
  push_new<Optimizer>(L, std::move(optimizer));
  return 1;
}

// step([{clip = max_norm}]) -> nothing, or with clip the global gradient norm before clipping: clip_grad_norm then
// step, in one pass over the gradients (which are left unclipped)
int optimizer_step(lua_State* L) {
  auto& optimizer = optimizer_at(L, 1);
  const auto table = options_json(L, 2);
  if (const auto clip = OptionReader(table, "optimizer:step", {"clip"}).number("clip")) {
    lua_pushnumber(L, train::clip_grad_norm_and_step(*optimizer.optimizer, optimizer.parameters, *clip));
    return 1;
  }
  optimizer.optimizer->step();
  return 0;
}

int optimizer_zero_grad(lua_State* L) {
  train::clear_gradients(*optimizer_at(L, 1).optimizer);
  return 0;
}

// clip_grad_norm(max_norm) -> the global gradient norm before clipping
int optimizer_clip_grad_norm(lua_State* L) {
  auto& optimizer = optimizer_at(L, 1);
  lua_pushnumber(L, train::clip_grad_norm(optimizer.parameters, luaL_checknumber(L, 2)));
  return 1;
}

double group_lr(const torch::optim::OptimizerParamGroup& group) {
  if (const auto* adamw = dynamic_cast<const torch::optim::AdamWOptions*>(&group.options())) return adamw->lr();
  if (const auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&group.options())) return sgd->lr();
  fail("unknown optimizer options");
}

int optimizer_lr(lua_State* L) {
  lua_pushnumber(L, group_lr(optimizer_at(L, 1).optimizer->param_groups().front()));
  return 1;
}

int optimizer_parameter_count(lua_State* L) {
  int64_t count = 0;
  for (const auto& parameter : optimizer_at(L, 1).parameters) count += parameter.numel();
  lua_pushnumber(L, static_cast<lua_Number>(count));
  return 1;
}

// save(path) / load(path): the optimiser's state (AdamW moments, step counts), for resuming a run.
int optimizer_save(lua_State* L) {
  const std::string path = check_string(L, 2);
  check_write(L, path);
  const std::string temporary = path + ".tmp";
  torch::save(*optimizer_at(L, 1).optimizer, temporary);
  std::filesystem::rename(temporary, path);
  return 0;
}

int optimizer_load(lua_State* L) {
  const std::string path = check_string(L, 2);
  check_read(L, path);
  torch::load(*optimizer_at(L, 1).optimizer, path);
  return 0;
}

struct Schedule {
  static constexpr const char* kLuaType = "twostage.Schedule";
  std::shared_ptr<torch::optim::Optimizer> optimizer;  // kept alive while the schedule drives it
  std::unique_ptr<train::LrScheduler> scheduler;
};

// schedule(optimizer, {kind = "linear", warmup_steps = 0, total_steps = N, cycles = 0.5}) -> schedule
// Sets the learning rate for the first step now; call schedule:step() after each optimizer:step().
int schedule_new(lua_State* L) {
  auto& optimizer = optimizer_at(L, 1);
  const auto options = train::ScheduleOptions::from_json(options_json(L, 2), "ts.schedule");
  auto& made = push_new<Schedule>(L);
  made.optimizer = optimizer.optimizer;
  made.scheduler = std::make_unique<train::LrScheduler>(*made.optimizer, options.schedule, optimizer.config.lr);
  for (int64_t step = 0; step < options.start_step; ++step) made.scheduler->step();
  return 1;
}

int schedule_step(lua_State* L) {
  check<Schedule>(L, 1).scheduler->step();
  return 0;
}

int schedule_lr(lua_State* L) {
  lua_pushnumber(L, check<Schedule>(L, 1).scheduler->current_lr());
  return 1;
}

int schedule_current_step(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(check<Schedule>(L, 1).scheduler->current_step()));
  return 1;
}

// ---- metrics -----------------------------------------------------------------------------------------------------

std::vector<int64_t> class_ids(lua_State* L, int index) {
  std::vector<int64_t> ids;
  if (lua_istable(L, index)) {
    for (double value : check_number_list(L, index, "labels")) ids.push_back(static_cast<int64_t>(value));
    return ids;
  }
  const auto tensor = check_tensor(L, index).to(torch::kCPU, torch::kLong).contiguous();
  ids.assign(tensor.data_ptr<int64_t>(), tensor.data_ptr<int64_t>() + tensor.numel());
  return ids;
}

// metrics(labels, logits[, {num_classes = C, scores = "logits" | "probabilities"}]) -> table
// metrics(labels, predictions, {num_classes = C}) with predictions a list or 1-d tensor of class ids.
int metrics(lua_State* L) {
  const auto truth = class_ids(L, 1);
  const auto table = options_json(L, 3);
  const OptionReader read(table, "ts.metrics", {"num_classes", "scores"});
  const auto num_classes = read.integer("num_classes");
  const auto score_kind = read.string("scores").value_or("logits");
  if (score_kind != "logits" && score_kind != "probabilities")
    fail("ts.metrics: scores '{}': expected \"logits\" or \"probabilities\"", score_kind);
  const auto* scores = lua_istable(L, 2) ? nullptr : &check_tensor(L, 2);
  if (scores && scores->dim() == 2) {
    const auto matrix = scores->detach().to(torch::kCPU, torch::kDouble).contiguous();
    const std::vector<double> values(matrix.data_ptr<double>(), matrix.data_ptr<double>() + matrix.numel());
    const auto kind = score_kind == "probabilities" ? train::ScoreKind::Probabilities : train::ScoreKind::Logits;
    push_json(L, train::evaluate_scores(truth, values, matrix.size(1), kind).to_json());
    return 1;
  }
  if (!num_classes) fail("metrics: num_classes is required with predicted class ids");
  push_json(L, train::evaluate_predictions(truth, class_ids(L, 2), *num_classes).to_json());
  return 1;
}

// mean_std({run1, run2, ...}) -> {n, mean, std}: numbers and arrays aggregated over runs (std null for one run).
int mean_std(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  std::vector<nlohmann::json> runs;
  for (size_t i = 1; i <= lua_objlen(L, 1); ++i) {
    lua_rawgeti(L, 1, static_cast<int>(i));
    runs.push_back(to_json(L, lua_gettop(L)));
    lua_pop(L, 1);
  }
  push_json(L, train::mean_and_std(runs));
  return 1;
}

// no_grad(f, ...) -> f(...) with autograd off (evaluation, caching).
int no_grad(lua_State* L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  torch::NoGradGuard guard;
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void open(lua_State* L) {
  static const luaL_Reg loss_methods[] = {{"describe", guarded<loss_describe>}, {nullptr, nullptr}};
  static const luaL_Reg loss_meta[] = {{"__call", guarded<loss_call>}, {nullptr, nullptr}};
  define_type<Loss>(L, loss_methods, loss_meta);
  static const luaL_Reg optimizer_methods[] = {{"step", guarded<optimizer_step>},
                                               {"zero_grad", guarded<optimizer_zero_grad>},
                                               {"clip_grad_norm", guarded<optimizer_clip_grad_norm>},
                                               {"lr", guarded<optimizer_lr>},
                                               {"parameter_count", guarded<optimizer_parameter_count>},
                                               {"save", guarded<optimizer_save>},
                                               {"load", guarded<optimizer_load>},
                                               {nullptr, nullptr}};
  define_type<Optimizer>(L, optimizer_methods, nullptr);
  static const luaL_Reg schedule_methods[] = {{"step", guarded<schedule_step>},
                                              {"lr", guarded<schedule_lr>},
                                              {"current_step", guarded<schedule_current_step>},
                                              {nullptr, nullptr}};
  define_type<Schedule>(L, schedule_methods, nullptr);

  static const luaL_Reg functions[] = {{"loss", guarded<loss_new>},         {"adjust_logits", guarded<adjust_logits>},
                                       {"optimizer", guarded<optimizer_new>}, {"schedule", guarded<schedule_new>},
                                       {"metrics", guarded<metrics>},         {"mean_std", guarded<mean_std>},
                                       {"no_grad", guarded<no_grad>},         {nullptr, nullptr}};
  set_functions(L, functions);
}

}  // namespace

TWOSTAGE_LUA_BINDING(train, open);

}  // namespace ts::lua
