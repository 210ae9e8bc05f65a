#pragma once
// The classifier userdata, shared by the bindings that take a model (loaders caching its trunk, losses, metrics).
#include <filesystem>

#include <lua.hpp>

#include "model/bert.h"
#include "toolkit.h"

namespace ts::lua {

struct Classifier {
  static constexpr const char* kLuaType = "twostage.Classifier";
  BertForSequenceClassification module;
  std::filesystem::path source;  // the folder it came from, whose tokenizer files a save copies
};

struct MaskedLM {
  static constexpr const char* kLuaType = "twostage.MaskedLM";
  BertForMaskedLM module;
  std::filesystem::path source;
};

// A module trained beside a model but not part of it (ELECTRA's detection head, train/mlm.h): optimisers and
// train/eval take it as they take a model.

struct DetectionHeadHandle {
  static constexpr const char* kLuaType = "twostage.DetectionHead";
  std::shared_ptr<torch::nn::Module> module;
};

BertForSequenceClassification& check_classifier(lua_State* L, int index);
BertForMaskedLM& check_masked_lm(lua_State* L, int index);
// Either kind of model (or a detection head), as the torch module optimisers and savers work on.
torch::nn::Module& check_module(lua_State* L, int index);

// model:train([on = true]) and model:eval() for either kind of model; both return the model.
int module_train(lua_State* L);
int module_eval(lua_State* L);
// Parameters by name, for either kind of model:
//   parameters([patterns]) -> names (all, or those matching any pattern; train/optim.h's pattern rules)
//   set_trainable(patterns) -> number of trainable tensors; everything else is frozen
//   freeze(patterns) -> number of tensors still trainable; the others are left as they are
//   trainable_parameters() -> names of the parameters that will receive gradients
//   trainable_count() -> number of trainable scalars
int module_parameters(lua_State* L);
int module_set_trainable(lua_State* L);
int module_freeze(lua_State* L);
int module_trainable_parameters(lua_State* L);
int module_trainable_count(lua_State* L);

}  // namespace ts::lua
