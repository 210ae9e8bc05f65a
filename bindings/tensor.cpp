// Tensors in Lua, in the spirit of Torch7: positions and dimensions are 1-based; values (class ids from argmax,
// labels) stay as they are in the data, 0-based.
#include "tensor.h"

#include <sstream>

#include "toolkit.h"
#include "runtime/environment.h"

namespace ts::lua {

// ---- conversions ------------------------------------------------------------------------------------------------

void push_tensor(lua_State* L, at::Tensor tensor) { push_new<at::Tensor>(L, std::move(tensor)); }

at::Tensor& check_tensor(lua_State* L, int index) { return check<at::Tensor>(L, index); }

at::ScalarType parse_dtype(const std::string& name) {
  static const std::pair<const char*, at::ScalarType> names[] = {
      {"float32", at::kFloat},  {"float", at::kFloat},     {"float64", at::kDouble}, {"double", at::kDouble},
      {"float16", at::kHalf},   {"half", at::kHalf},       {"bfloat16", at::kBFloat16},
      {"int64", at::kLong},     {"long", at::kLong},       {"int32", at::kInt},      {"int", at::kInt},
      {"uint8", at::kByte},     {"bool", at::kBool}};
  for (const auto& [text, type] : names)
    if (name == text) return type;
  fail("unknown dtype '{}' (float32, float64, float16, bfloat16, int64, int32, uint8, bool)", name);
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

int64_t lua_dim(lua_State* L, int index, const at::Tensor& tensor) {
  const auto dim = static_cast<int64_t>(luaL_checknumber(L, index));
  const int64_t rank = std::max<int64_t>(tensor.dim(), 1);
  if (dim == 0 || dim > rank || dim < -rank)
    fail("dimension {} out of range for a tensor with {} dimension(s) (dimensions count from 1)", dim, tensor.dim());
  return dim > 0 ? dim - 1 : dim;
}

namespace {

// Nested Lua tables to a flat vector and a shape; all rows must have the same length.
void flatten(lua_State* L, int index, size_t depth, std::vector<int64_t>& shape, std::vector<double>& values,
             bool& all_booleans) {
  const size_t count = lua_objlen(L, index);
  if (depth == shape.size()) {
    shape.push_back(static_cast<int64_t>(count));
  } else if (shape[depth] != static_cast<int64_t>(count)) {
    fail("ragged table: a row at depth {} has {} items where an earlier one had {}", depth + 1, count, shape[depth]);
  }
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, index, static_cast<int>(i));
    const int item = lua_gettop(L);
    if (lua_istable(L, item)) {
      flatten(L, item, depth + 1, shape, values, all_booleans);
    } else if (depth + 1 != shape.size()) {
      fail("ragged table: expected a row at depth {}, found a {}", depth + 2, luaL_typename(L, item));
    } else if (lua_type(L, item) == LUA_TNUMBER) {
      values.push_back(lua_tonumber(L, item));
      all_booleans = false;
    } else if (lua_type(L, item) == LUA_TBOOLEAN) {
      values.push_back(lua_toboolean(L, item) ? 1.0 : 0.0);
    } else {
      fail("a tensor holds numbers or booleans, not {}", luaL_typename(L, item));
    }
    lua_pop(L, 1);
  }
}

}  // namespace

at::Tensor to_tensor(lua_State* L, int index) {
  if (auto* tensor = test<at::Tensor>(L, index)) return *tensor;
  if (lua_type(L, index) == LUA_TNUMBER) return torch::tensor(lua_tonumber(L, index), torch::kFloat);
  if (lua_type(L, index) == LUA_TBOOLEAN) return torch::tensor(static_cast<bool>(lua_toboolean(L, index)));
  if (!lua_istable(L, index)) fail("expected a tensor, a number or a table, got {}", luaL_typename(L, index));
  std::vector<int64_t> shape;
  std::vector<double> values;
  bool all_booleans = true;
  flatten(L, index, 0, shape, values, all_booleans);
  auto flat = torch::tensor(values, torch::kDouble);
  at::Tensor result = flat.reshape(shape);
  if (all_booleans && !values.empty()) return result.to(torch::kBool);
  return result.to(torch::kFloat);
}

namespace {

at::Tensor& self(lua_State* L) { return check_tensor(L, 1); }

// Optional trailing dtype string among the arguments from `first`.
std::vector<int64_t> sizes_and_dtype(lua_State* L, int first, at::ScalarType& dtype) {
  std::vector<int64_t> sizes;
  const int top = lua_gettop(L);
  if (top >= first && lua_istable(L, first)) {
    const size_t count = lua_objlen(L, first);
    for (size_t i = 1; i <= count; ++i) {
      lua_rawgeti(L, first, static_cast<int>(i));
      sizes.push_back(static_cast<int64_t>(luaL_checknumber(L, -1)));
      lua_pop(L, 1);
    }
    if (top > first) dtype = parse_dtype(check_string(L, first + 1));
    return sizes;
  }
  for (int i = first; i <= top; ++i) {
    if (lua_type(L, i) == LUA_TSTRING) {
      dtype = parse_dtype(lua_tostring(L, i));
    } else {
      const double size = luaL_checknumber(L, i);
      if (size < 0) fail("sizes must not be negative, got {}", size);
      sizes.push_back(static_cast<int64_t>(size));
    }
  }
  return sizes;
}

template <at::Tensor (*Make)(at::IntArrayRef, const at::TensorOptions&)>
int make_filled(lua_State* L) {
  at::ScalarType dtype = at::kFloat;
  auto sizes = sizes_and_dtype(L, 1, dtype);
  push_tensor(L, Make(sizes, at::TensorOptions().dtype(dtype)));
  return 1;
}

at::Tensor zeros_of(at::IntArrayRef sizes, const at::TensorOptions& options) { return torch::zeros(sizes, options); }
at::Tensor ones_of(at::IntArrayRef sizes, const at::TensorOptions& options) { return torch::ones(sizes, options); }
at::Tensor randn_of(at::IntArrayRef sizes, const at::TensorOptions& options) { return torch::randn(sizes, options); }
at::Tensor rand_of(at::IntArrayRef sizes, const at::TensorOptions& options) { return torch::rand(sizes, options); }

int tensor_new(lua_State* L) {
  at::Tensor tensor = to_tensor(L, 1);
  if (lua_gettop(L) >= 2) tensor = tensor.to(parse_dtype(check_string(L, 2)));
  push_tensor(L, tensor);
  return 1;
}

int tensor_arange(lua_State* L) {
  const double first = luaL_checknumber(L, 1);
  at::Tensor result = lua_isnoneornil(L, 2) ? torch::arange(first)
                                            : torch::arange(first, luaL_checknumber(L, 2), luaL_optnumber(L, 3, 1));
  push_tensor(L, result);
  return 1;
}

int tensor_cat(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  std::vector<at::Tensor> parts;
  const size_t count = lua_objlen(L, 1);
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, 1, static_cast<int>(i));
    parts.push_back(check_tensor(L, -1));
    lua_pop(L, 1);
  }
  if (parts.empty()) fail("cat needs at least one tensor");
  const int64_t dim = lua_isnoneornil(L, 2) ? 0 : lua_dim(L, 2, parts.front());
  push_tensor(L, torch::cat(parts, dim));
  return 1;
}

int manual_seed(lua_State* L) {
  torch::manual_seed(static_cast<uint64_t>(luaL_checknumber(L, 1)));
  return 0;
}

int is_tensor(lua_State* L) {
  lua_pushboolean(L, test<at::Tensor>(L, 1) != nullptr);
  return 1;
}

// ---- methods ----------------------------------------------------------------------------------------------------

int method_size(lua_State* L) {
  auto& tensor = self(L);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushnumber(L, static_cast<lua_Number>(tensor.size(lua_dim(L, 2, tensor))));
    return 1;
  }
  lua_createtable(L, static_cast<int>(tensor.dim()), 0);
  for (int64_t i = 0; i < tensor.dim(); ++i) {
    lua_pushnumber(L, static_cast<lua_Number>(tensor.size(i)));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

int method_dim(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(self(L).dim()));
  return 1;
}

int method_numel(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(self(L).numel()));
  return 1;
}

int method_dtype(lua_State* L) {
  const auto name = dtype_name(self(L).scalar_type());
  lua_pushlstring(L, name.data(), name.size());
  return 1;
}

int method_device(lua_State* L) {
  const auto name = self(L).device().str();
  lua_pushlstring(L, name.data(), name.size());
  return 1;
}

void push_scalar(lua_State* L, const at::Tensor& scalar) {
  if (scalar.scalar_type() == at::kBool)
    lua_pushboolean(L, scalar.item<bool>());
  else
    lua_pushnumber(L, scalar.item<double>());
}

int method_item(lua_State* L) {
  auto& tensor = self(L);
  if (tensor.numel() != 1) fail(":item() needs a tensor with one element, this one has {}", tensor.numel());
  push_scalar(L, tensor);
  return 1;
}

// Full reductions give a Lua number (as Torch7); with a dimension, a tensor.
template <at::Tensor (*Reduce)(const at::Tensor&), at::Tensor (*ReduceDim)(const at::Tensor&, int64_t)>
int reduction(lua_State* L) {
  auto& tensor = self(L);
  if (lua_isnoneornil(L, 2)) {
    push_scalar(L, Reduce(tensor));
    return 1;
  }
  push_tensor(L, ReduceDim(tensor, lua_dim(L, 2, tensor)));
  return 1;
}

at::Tensor sum_all(const at::Tensor& t) { return t.sum(); }
at::Tensor sum_dim(const at::Tensor& t, int64_t d) { return t.sum(d); }
at::Tensor mean_all(const at::Tensor& t) { return t.is_floating_point() ? t.mean() : t.to(at::kDouble).mean(); }
at::Tensor mean_dim(const at::Tensor& t, int64_t d) {
  return t.is_floating_point() ? t.mean(d) : t.to(at::kDouble).mean(d);
}
at::Tensor max_all(const at::Tensor& t) { return t.max(); }
at::Tensor max_dim(const at::Tensor& t, int64_t d) { return std::get<0>(t.max(d)); }
at::Tensor min_all(const at::Tensor& t) { return t.min(); }
at::Tensor min_dim(const at::Tensor& t, int64_t d) { return std::get<0>(t.min(d)); }
at::Tensor argmax_all(const at::Tensor& t) { return t.argmax(); }
at::Tensor argmax_dim(const at::Tensor& t, int64_t d) { return t.argmax(d); }

int method_totable(lua_State* L);

void push_as_table(lua_State* L, const at::Tensor& tensor) {
  if (tensor.dim() == 0) {
    push_scalar(L, tensor);
    return;
  }
  const int64_t rows = tensor.size(0);
  lua_createtable(L, static_cast<int>(rows), 0);
  if (tensor.dim() == 1) {
    const bool boolean = tensor.scalar_type() == at::kBool;
    const auto values = tensor.to(boolean ? at::kBool : at::kDouble).contiguous().cpu();
    for (int64_t i = 0; i < rows; ++i) {
      if (boolean)
        lua_pushboolean(L, values.data_ptr<bool>()[i]);
      else
        lua_pushnumber(L, values.data_ptr<double>()[i]);
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    push_as_table(L, tensor[i]);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

int method_totable(lua_State* L) {
  push_as_table(L, self(L));
  return 1;
}

int method_to(lua_State* L) {
  auto& tensor = self(L);
  const std::string target = check_string(L, 2);
  if (target == "cpu" || target.rfind("cuda", 0) == 0)
    push_tensor(L, tensor.to(torch::Device(runtime::check_device(target))));
  else
    push_tensor(L, tensor.to(parse_dtype(target)));
  return 1;
}

int method_clone(lua_State* L) {
  push_tensor(L, self(L).clone());
  return 1;
}

// index_select(dim, indices) with 1-based dim and 1-based indices (a Lua list or an int64 tensor of 1-based rows).
int method_index_select(lua_State* L) {
  auto& tensor = self(L);
  const int64_t dim = lua_dim(L, 2, tensor);
  at::Tensor indices = lua_istable(L, 3) ? to_tensor(L, 3) : check_tensor(L, 3);
  push_tensor(L, tensor.index_select(dim, (indices.to(torch::kLong) - 1).to(tensor.device())));
  return 1;
}

// backward(): gradients of this scalar into every leaf that requires them. The tensor then lets go of its graph:
// a graph is good for one backward only, and Lua's collector, which sees a few bytes per tensor, may keep an
// unreachable loss (and through it the graph's memory) alive for many steps.
int method_backward(lua_State* L) {
  auto& tensor = self(L);
  tensor.backward();
  tensor = tensor.detach();
  return 0;
}

int method_detach(lua_State* L) {
  push_tensor(L, self(L).detach());
  return 1;
}

int method_requires_grad(lua_State* L) {
  lua_pushboolean(L, self(L).requires_grad());
  return 1;
}

// grad() -> the accumulated gradient, or nil when none was computed
int method_grad(lua_State* L) {
  const auto grad = self(L).grad();
  if (!grad.defined()) return 0;
  push_tensor(L, grad);
  return 1;
}

int method_view(lua_State* L) {
  at::ScalarType unused = at::kFloat;
  auto sizes = sizes_and_dtype(L, 2, unused);
  push_tensor(L, self(L).reshape(sizes));
  return 1;
}

int method_t(lua_State* L) {
  auto& tensor = self(L);
  if (tensor.dim() != 2) fail(":t() transposes a 2-D tensor; this one has {} dimensions", tensor.dim());
  push_tensor(L, tensor.t());
  return 1;
}

int method_matmul(lua_State* L) {
  push_tensor(L, torch::matmul(self(L), to_tensor(L, 2)));
  return 1;
}

template <at::Tensor (*Op)(const at::Tensor&)>
int unary(lua_State* L) {
  push_tensor(L, Op(self(L)));
  return 1;
}
at::Tensor op_exp(const at::Tensor& t) { return t.exp(); }
at::Tensor op_log(const at::Tensor& t) { return t.log(); }
at::Tensor op_abs(const at::Tensor& t) { return t.abs(); }
at::Tensor op_sqrt(const at::Tensor& t) { return t.sqrt(); }
at::Tensor op_neg(const at::Tensor& t) { return -t; }

int method_softmax(lua_State* L) {
  auto& tensor = self(L);
  push_tensor(L, torch::softmax(tensor, lua_isnoneornil(L, 2) ? -1 : lua_dim(L, 2, tensor)));
  return 1;
}

int method_log_softmax(lua_State* L) {
  auto& tensor = self(L);
  push_tensor(L, torch::log_softmax(tensor, lua_isnoneornil(L, 2) ? -1 : lua_dim(L, 2, tensor)));
  return 1;
}

int method_clamp(lua_State* L) {
  auto& tensor = self(L);
  c10::optional<at::Scalar> low, high;
  if (!lua_isnoneornil(L, 2)) low = luaL_checknumber(L, 2);
  if (!lua_isnoneornil(L, 3)) high = luaL_checknumber(L, 3);
  push_tensor(L, tensor.clamp(low, high));
  return 1;
}

// ---- operators --------------------------------------------------------------------------------------------------

// Either operand may be a number (1 + t works as t + 1).
template <at::Tensor (*Op)(const at::Tensor&, const at::Tensor&)>
int binary(lua_State* L) {
  const at::Tensor left = to_tensor(L, 1);
  const at::Tensor right = to_tensor(L, 2);
  push_tensor(L, Op(left, right));
  return 1;
}
at::Tensor op_add(const at::Tensor& a, const at::Tensor& b) { return a + b; }
at::Tensor op_sub(const at::Tensor& a, const at::Tensor& b) { return a - b; }
at::Tensor op_mul(const at::Tensor& a, const at::Tensor& b) { return a * b; }
at::Tensor op_div(const at::Tensor& a, const at::Tensor& b) {
  return a.is_floating_point() || b.is_floating_point() ? a / b : a.to(at::kFloat) / b;
}
at::Tensor op_pow(const at::Tensor& a, const at::Tensor& b) { return a.pow(b); }
at::Tensor op_eq(const at::Tensor& a, const at::Tensor& b) { return a.eq(b); }
at::Tensor op_ne(const at::Tensor& a, const at::Tensor& b) { return a.ne(b); }
at::Tensor op_lt(const at::Tensor& a, const at::Tensor& b) { return a.lt(b); }
at::Tensor op_le(const at::Tensor& a, const at::Tensor& b) { return a.le(b); }
at::Tensor op_gt(const at::Tensor& a, const at::Tensor& b) { return a.gt(b); }
at::Tensor op_ge(const at::Tensor& a, const at::Tensor& b) { return a.ge(b); }

int meta_unm(lua_State* L) {
  push_tensor(L, -self(L));
  return 1;
}

// a == b compares whole tensors (same shape and values), since Lua turns __eq's result into a boolean anyway;
// element-wise comparisons are :eq, :ne, :lt, :le, :gt, :ge.
int meta_eq(lua_State* L) {
  const at::Tensor& a = check_tensor(L, 1);
  const at::Tensor& b = check_tensor(L, 2);
  lua_pushboolean(L, a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && torch::equal(a, b));
  return 1;
}

int meta_order(lua_State* L) {
  fail("tensors have no single order: use :lt, :le, :gt or :ge for element-wise comparisons");
}

int meta_len(lua_State* L) {
  auto& tensor = self(L);
  lua_pushnumber(L, tensor.dim() == 0 ? 0 : static_cast<lua_Number>(tensor.size(0)));
  return 1;
}

int64_t row_index(lua_State* L, const at::Tensor& tensor, int index) {
  if (tensor.dim() == 0) fail("a 0-dimensional tensor has no rows; use :item()");
  const double position = lua_tonumber(L, index);
  const int64_t rows = tensor.size(0);
  if (position != static_cast<double>(static_cast<int64_t>(position)) || position == 0 || position > rows ||
      position < -rows)
    fail("row {} out of range 1..{} (negative counts from the end)", position, rows);
  return position > 0 ? static_cast<int64_t>(position) - 1 : rows + static_cast<int64_t>(position);
}

// t[i] is row i (1-based): a Lua number for a 1-D tensor, a tensor otherwise; t.method finds the method.
int meta_index(lua_State* L) {
  auto& tensor = self(L);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    const at::Tensor row = tensor.select(0, row_index(L, tensor, 2));
    if (row.dim() == 0)
      push_scalar(L, row);
    else
      push_tensor(L, row);
    return 1;
  }
  luaL_getmetatable(L, LuaType<at::Tensor>::name);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) fail("tensors have no method or field '{}'", (lua_tostring(L, 2) ? lua_tostring(L, 2) : luaL_typename(L, 2)));
  return 1;
}

int meta_newindex(lua_State* L) {
  auto& tensor = self(L);
  if (lua_type(L, 2) != LUA_TNUMBER) fail("only rows can be assigned: t[i] = value");
  at::Tensor row = tensor.select(0, row_index(L, tensor, 2));
  torch::NoGradGuard no_grad;
  row.copy_(to_tensor(L, 3).to(row.scalar_type()).expand_as(row));
  return 0;
}

int meta_tostring(lua_State* L) {
  auto& tensor = self(L);
  std::ostringstream text;
  text << tensor.toString() << " of size [";
  for (int64_t i = 0; i < tensor.dim(); ++i) text << (i ? ", " : "") << tensor.size(i);
  text << "]\n";
  if (tensor.numel() > 0) text << tensor;
  const auto shown = text.str();
  lua_pushlstring(L, shown.data(), shown.size());
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg methods[] = {
      {"size", guarded<method_size>},
      {"shape", guarded<method_size>},
      {"dim", guarded<method_dim>},
      {"numel", guarded<method_numel>},
      {"dtype", guarded<method_dtype>},
      {"device", guarded<method_device>},
      {"item", guarded<method_item>},
      {"sum", guarded<reduction<sum_all, sum_dim>>},
      {"mean", guarded<reduction<mean_all, mean_dim>>},
      {"max", guarded<reduction<max_all, max_dim>>},
      {"min", guarded<reduction<min_all, min_dim>>},
      {"argmax", guarded<reduction<argmax_all, argmax_dim>>},
      {"totable", guarded<method_totable>},
      {"to", guarded<method_to>},
      {"clone", guarded<method_clone>},
      {"backward", guarded<method_backward>},
      {"index_select", guarded<method_index_select>},
      {"detach", guarded<method_detach>},
      {"requires_grad", guarded<method_requires_grad>},
      {"grad", guarded<method_grad>},
      {"view", guarded<method_view>},
      {"reshape", guarded<method_view>},
      {"t", guarded<method_t>},
      {"matmul", guarded<method_matmul>},
      {"exp", guarded<unary<op_exp>>},
      {"log", guarded<unary<op_log>>},
      {"abs", guarded<unary<op_abs>>},
      {"sqrt", guarded<unary<op_sqrt>>},
      {"neg", guarded<unary<op_neg>>},
      {"softmax", guarded<method_softmax>},
      {"log_softmax", guarded<method_log_softmax>},
      {"clamp", guarded<method_clamp>},
      {"add", guarded<binary<op_add>>},
      {"sub", guarded<binary<op_sub>>},
      {"mul", guarded<binary<op_mul>>},
      {"div", guarded<binary<op_div>>},
      {"pow", guarded<binary<op_pow>>},
      {"eq", guarded<binary<op_eq>>},
      {"ne", guarded<binary<op_ne>>},
      {"lt", guarded<binary<op_lt>>},
      {"le", guarded<binary<op_le>>},
      {"gt", guarded<binary<op_gt>>},
      {"ge", guarded<binary<op_ge>>},
      {nullptr, nullptr}};
  static const luaL_Reg metamethods[] = {
      {"__add", guarded<binary<op_add>>}, {"__sub", guarded<binary<op_sub>>}, {"__mul", guarded<binary<op_mul>>},
      {"__div", guarded<binary<op_div>>}, {"__pow", guarded<binary<op_pow>>}, {"__unm", guarded<meta_unm>},
      {"__eq", guarded<meta_eq>},         {"__lt", guarded<meta_order>},      {"__le", guarded<meta_order>},
      {"__len", guarded<meta_len>},       {"__index", guarded<meta_index>},   {"__newindex", guarded<meta_newindex>},
      {"__tostring", guarded<meta_tostring>}, {nullptr, nullptr}};
  define_type<at::Tensor>(L, nullptr, metamethods);
  luaL_getmetatable(L, LuaType<at::Tensor>::name);
  lua_newtable(L);
  set_functions(L, methods);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);

  static const luaL_Reg functions[] = {
      {"tensor", guarded<tensor_new>},          {"zeros", guarded<make_filled<zeros_of>>},
      {"ones", guarded<make_filled<ones_of>>},   {"randn", guarded<make_filled<randn_of>>},
      {"rand", guarded<make_filled<rand_of>>},   {"arange", guarded<tensor_arange>},
      {"cat", guarded<tensor_cat>},              {"manual_seed", guarded<manual_seed>},
      {"is_tensor", guarded<is_tensor>},         {nullptr, nullptr}};
  set_functions(L, functions);
}

}  // namespace

TWOSTAGE_LUA_BINDING(tensor, open);

}  // namespace ts::lua
