// Models in Lua: a sequence classifier (Hugging Face's linear head or the paper's MLP head) loaded from a Hugging Face
// folder or built from a config; forward on a batch table; parameters by name; train/eval; save.
#include "core/options.h"
#include "model.h"

#include "data.h"
#include "data/loader.h"
#include "json.h"
#include "model/checkpoint.h"
#include "runtime.h"
#include "runtime/environment.h"
#include "tensor.h"
#include "train/optim.h"

namespace ts::lua {

BertForSequenceClassification& check_classifier(lua_State* L, int index) {
  return check<Classifier>(L, index).module;
}

BertForMaskedLM& check_masked_lm(lua_State* L, int index) { return check<MaskedLM>(L, index).module; }

torch::nn::Module& check_module(lua_State* L, int index) {
  if (auto* classifier = test<Classifier>(L, index)) return *classifier->module;
  if (auto* masked_lm = test<MaskedLM>(L, index)) return *masked_lm->module;
  if (auto* head = test<DetectionHeadHandle>(L, index)) return *head->module;
  fail("argument {}: expected a model (classifier or masked LM) or a detection head, got {}", index,
       luaL_typename(L, index));
}

int module_train(lua_State* L) {
  check_module(L, 1).train(lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2));
  lua_settop(L, 1);
  return 1;
}

int module_eval(lua_State* L) {
  check_module(L, 1).eval();
  lua_settop(L, 1);
  return 1;
}

int module_parameters(lua_State* L) {
  auto& module = check_module(L, 1);
  std::vector<std::string> names;
  if (lua_isnoneornil(L, 2)) {
    for (const auto& item : module.named_parameters()) names.push_back(item.key());
  } else {
    names = train::select_parameter_names(module, check_string_list(L, 2));
  }
  push_json(L, names);
  return 1;
}

int module_set_trainable(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(train::set_trainable(check_module(L, 1), check_string_list(L, 2))));
  return 1;
}

int module_freeze(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(train::freeze(check_module(L, 1), check_string_list(L, 2))));
  return 1;
}

int module_trainable_parameters(lua_State* L) {
  std::vector<std::string> names;
  for (const auto& item : check_module(L, 1).named_parameters())
    if (item.value().requires_grad()) names.push_back(item.key());
  push_json(L, names);
  return 1;
}

int module_trainable_count(lua_State* L) {
  int64_t count = 0;
  for (const auto& parameter : check_module(L, 1).parameters())
    if (parameter.requires_grad()) count += parameter.numel();
  lua_pushnumber(L, static_cast<lua_Number>(count));
  return 1;
}

namespace {

Classifier& self(lua_State* L) { return check<Classifier>(L, 1); }

// load_classifier(folder[, options]) -> model, report
int load_classifier(lua_State* L) {
  const std::string folder = check_string(L, 1);
  check_read(L, folder);
  LoadReport report;
  const auto options = LoadOptions::from_json(options_json(L, 2), "ts.load_classifier");
  auto module = load_sequence_classifier(folder, options, &report);
  push_new<Classifier>(L, Classifier{module, folder});
  push_json(L, {{"missing", report.missing}, {"unexpected", report.unexpected}, {"mismatched", report.mismatched}});
  return 2;
}

// classifier_from_config(config table as config.json[, options]) -> a randomly initialised model
int classifier_from_config(lua_State* L) {
  auto config = BertConfig::from_json(to_json(L, 1), "classifier_from_config");
  const auto options = LoadOptions::from_json(options_json(L, 2), "ts.classifier_from_config");
  if (options.num_labels) config.set_num_labels(*options.num_labels);
  if (options.head) config.head.type = *options.head;
  if (options.head_hidden_size) config.head.hidden_size = *options.head_hidden_size;
  config.validate("classifier_from_config");
  BertForSequenceClassification module(config);
  module->to(options.device);
  push_new<Classifier>(L, Classifier{module, {}});
  return 1;
}

int push_outputs(lua_State* L, const SequenceClassifierOutputs& outputs) {
  push_tensor(L, outputs.logits);
  push_tensor(L, outputs.pooled);
  push_tensor(L, outputs.last_hidden_state);
  return 3;
}

// forward(batch) -> logits [B, C], pooled [B, H], last_hidden_state [B, T, H]; batch = {input_ids, attention_mask,
// token_type_ids}, or from a loader with a cached trunk {hidden_states, start_layer, attention_mask}, whose layers
// from start_layer up run (data::forward). Moved to the model's device.
int method_forward(lua_State* L) {
  return push_outputs(L, data::forward(self(L).module, check_batch(L, 2)));
}

// embed(batch) -> [B, H]: each row's mean-pooled token states at unit length (mean_pooled_unit), without gradients;
// the dot product of two rows is their cosine similarity. Call eval() first for deterministic vectors.
int method_embed(lua_State* L) {
  auto& model = self(L).module;
  const auto batch = check_batch(L, 2);
  if (batch.cached()) fail("embed needs token ids: a batch of hidden states covers only the top layers");
  torch::NoGradGuard no_grad;
  const auto outputs = data::forward(model, batch);
  const auto device = model->parameters().front().device();
  const auto mask = batch.attention_mask.defined() ? batch.attention_mask.to(device) : batch.attention_mask;
  push_tensor(L, mean_pooled_unit(outputs.last_hidden_state, mask));
  return 1;
}

// reset_head(): the classifier re-initialised as new (cRT retrains it from scratch on a frozen encoder).
int method_reset_head(lua_State* L) {
  auto& model = self(L).module;
  torch::NoGradGuard no_grad;
  if (model->classifier_mlp)
    init_bert_weights(*model->classifier_mlp, model->config);
  else
    init_bert_weights(*model->classifier_linear, model->config);
  return 0;
}


int method_config(lua_State* L) {
  push_json(L, self(L).module->config.to_json({"BertForSequenceClassification"}));
  return 1;
}

int method_num_layers(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(self(L).module->config.num_hidden_layers));
  return 1;
}

// top_layers(k) -> the parameter patterns of the top k encoder layers, the pooler and the head (k = 0: pooler and
// head): what the reference's stage 1 trains with k = 1.
int method_top_layers(lua_State* L) {
  const auto k = static_cast<int64_t>(luaL_checknumber(L, 2));
  push_json(L, train::top_layer_patterns(self(L).module->config.num_hidden_layers, k));
  return 1;
}

// first_trainable_layer() -> the lowest encoder layer that trains when nothing below it does (0-based; the number
// of layers when none does), or nil when the embeddings train: where a cached frozen trunk can stop.
int method_first_trainable_layer(lua_State* L) {
  const auto& model = self(L).module;
  const auto layer = train::first_trainable_layer(*model, model->config.num_hidden_layers);
  if (layer) lua_pushnumber(L, static_cast<lua_Number>(*layer)); else lua_pushnil(L);
  return 1;
}

// save(folder[, {fp16 = false}]): a folder transformers' from_pretrained loads.
int method_save(lua_State* L) {
  auto& model = self(L);
  const std::string folder = check_string(L, 2);
  check_write(L, folder);
  const auto table = options_json(L, 3);
  const OptionReader read(table, "model:save", {"fp16"});
  SaveOptions options;
  options.fp16 = read.boolean("fp16").value_or(false);
  options.tokenizer_from = model.source;
  save_pretrained(model.module, folder, options);
  return 0;
}

// snapshot() -> a copy of every parameter and buffer (for keeping the best checkpoint in memory); restore(snapshot)
// puts it back.
struct Snapshot {
  static constexpr const char* kLuaType = "twostage.Snapshot";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
};

int method_snapshot(lua_State* L) {
  auto& model = self(L).module;
  Snapshot snapshot;
  torch::NoGradGuard no_grad;
  for (const auto& item : model->named_parameters()) snapshot.tensors.emplace_back(item.key(), item.value().clone());
  for (const auto& item : model->named_buffers()) snapshot.tensors.emplace_back(item.key(), item.value().clone());
  push_new<Snapshot>(L, std::move(snapshot));
  return 1;
}

int method_restore(lua_State* L) {
  auto& model = self(L).module;
  const auto& snapshot = check<Snapshot>(L, 2);
  auto parameters = model->named_parameters();
  auto buffers = model->named_buffers();
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : snapshot.tensors) {
    if (auto* parameter = parameters.find(name))
      parameter->copy_(tensor);
    else if (auto* buffer = buffers.find(name))
      buffer->copy_(tensor);
    else
      fail("restore: the snapshot's '{}' is not in this model", name);
  }
  return 0;
}

int method_to(lua_State* L) {
  self(L).module->to(torch::Device(runtime::check_device(check_string(L, 2))));
  lua_settop(L, 1);
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg methods[] = {{"forward", guarded<method_forward>},
                                     {"embed", guarded<method_embed>},
                                     {"train", guarded<module_train>},
                                     {"eval", guarded<module_eval>},
                                     {"parameters", guarded<module_parameters>},
                                     {"set_trainable", guarded<module_set_trainable>},
                                     {"freeze", guarded<module_freeze>},
                                     {"trainable_count", guarded<module_trainable_count>},
                                     {"trainable_parameters", guarded<module_trainable_parameters>},
                                     {"reset_head", guarded<method_reset_head>},
                                     {"config", guarded<method_config>},
                                     {"num_layers", guarded<method_num_layers>},
                                     {"top_layers", guarded<method_top_layers>},
                                     {"first_trainable_layer", guarded<method_first_trainable_layer>},
                                     {"save", guarded<method_save>},
                                     {"to", guarded<method_to>},
                                     {"snapshot", guarded<method_snapshot>},
                                     {"restore", guarded<method_restore>},
                                     {nullptr, nullptr}};
  define_type<Classifier>(L, methods, nullptr);
  lua_pushcfunction(L, guarded<load_classifier>);
  lua_setfield(L, -2, "load_classifier");
  lua_pushcfunction(L, guarded<classifier_from_config>);
  lua_setfield(L, -2, "classifier_from_config");
}

}  // namespace

TWOSTAGE_LUA_BINDING(model, open);

}  // namespace ts::lua
