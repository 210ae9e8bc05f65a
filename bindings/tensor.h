#pragma once
// Tensors in Lua: a userdata of type "twostage.Tensor" owns one at::Tensor (a reference-counted handle); __gc drops it.
#include <lua.hpp>
#include <torch/torch.h>

#include "toolkit.h"

namespace ts::lua {

TWOSTAGE_LUA_TYPE(at::Tensor, "twostage.Tensor");

void push_tensor(lua_State* L, at::Tensor tensor);
at::Tensor& check_tensor(lua_State* L, int index);
// A tensor argument, or a Lua number/nested table converted to one.
at::Tensor to_tensor(lua_State* L, int index);
// "float32", "int64", ... as used in Lua; throws on an unknown name.
at::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(at::ScalarType type);
// Lua dimensions are 1-based like Torch7 (negative counts from the end); returns the 0-based one.
int64_t lua_dim(lua_State* L, int index, const at::Tensor& tensor);

}  // namespace ts::lua
