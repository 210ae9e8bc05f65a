// Tensors in Lua.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "runtime.h"
#include "tensor.h"


TEST_CASE("tensors: creation, shape and dtype") {
  ts::lua::RunOptions options;
  ts::lua::Runtime runtime(options);
  runtime.execute(R"(
    local ts = require "twostage"
    local z = ts.zeros(2, 3)
    assert(z:dim() == 2 and z:size(1) == 2 and z:size(2) == 3 and z:size(-1) == 3)
    local shape = z:size()
    assert(#shape == 2 and shape[1] == 2 and shape[2] == 3)
    assert(z:dtype() == "float32" and z:numel() == 6)
    assert(ts.ones(4, "int64"):dtype() == "int64")
    assert(ts.zeros({2, 2}):numel() == 4)
    local t = ts.tensor({{1, 2, 3}, {4, 5, 6}})
    assert(t:dtype() == "float32" and t:size(1) == 2)
    assert(ts.tensor({1, 2}, "int64"):dtype() == "int64")
    assert(ts.tensor({true, false}):dtype() == "bool")
    ts.manual_seed(1)
    local a = ts.randn(3, 3)
    ts.manual_seed(1)
    local b = ts.randn(3, 3)
    assert(a == b, "the same seed gives the same numbers")
    assert(not (a == ts.randn(3, 3)))
    local ok, message = pcall(ts.tensor, {{1, 2}, {3}})
    assert(not ok and message:find("ragged"), message)
    ok, message = pcall(ts.zeros, 2, "complex128")
    assert(not ok and message:find("unknown dtype 'complex128'"), message)
  )");
}

TEST_CASE("tensors: arithmetic, comparisons and reductions") {
  ts::lua::RunOptions options;
  ts::lua::Runtime runtime(options);
  runtime.execute(R"(
    local ts = require "twostage"
    local t = ts.tensor({{1, 2, 3}, {4, 5, 6}})
    assert(t:sum() == 21 and t:mean() == 3.5 and t:max() == 6 and t:min() == 1)
    assert(t:sum(1) == ts.tensor({5, 7, 9}))
    assert(t:sum(2) == ts.tensor({6, 15}))
    assert(t:argmax(2) == ts.tensor({2, 2}, "int64"), "argmax gives 0-based class ids")
    assert(t:argmax() == 5)
    assert((t + 1):sum() == 27)
    assert((1 + t):sum() == 27)
    assert((t - t):sum() == 0)
    assert((t * 2):sum() == 42)
    assert((t / 2):sum() == 10.5)
    assert((-t):sum() == -21)
    assert((t ^ 2):sum() == 91)
    assert(t:gt(3):sum() == 3)
    assert(t:eq(ts.tensor({{1, 0, 3}, {0, 5, 0}})):sum() == 3)
    assert(t:le(2):dtype() == "bool")
    local ok, message = pcall(function() return t < t end)
    assert(not ok and message:find(":lt"), message)
    ok, message = pcall(function() return t + ts.zeros(4) end)
    assert(not ok and message:find("size of tensor a %(3%) must match"), message)
    assert(t:matmul(t:t()) == ts.tensor({{14, 32}, {32, 77}}))
    assert(math.abs(ts.tensor({1, 1}):softmax(1)[1] - 0.5) < 1e-7)
  )");
}

TEST_CASE("tensors: rows, items, tables and printing") {
  ts::lua::RunOptions options;
  ts::lua::Runtime runtime(options);
  runtime.execute(R"(
    local ts = require "twostage"
    local t = ts.tensor({{1, 2, 3}, {4, 5, 6}})
    assert(#t == 2)
    assert(t[2] == ts.tensor({4, 5, 6}))
    assert(t[-1] == t[2])
    assert(t[1][3] == 3, "a row of a 1-D tensor is a number")
    t[1] = 0
    assert(t:sum() == 15)
    t[2] = ts.tensor({7, 8, 9})
    assert(t[2][1] == 7)
    local ok, message = pcall(function() return t[3] end)
    assert(not ok and message:find("row 3 out of range 1..2"), message)
    assert(ts.tensor({2.5}):item() == 2.5)
    ok, message = pcall(function() return t:item() end)
    assert(not ok and message:find("one element"), message)
    local rows = t:totable()
    assert(#rows == 2 and rows[2][3] == 9)
    local text = tostring(ts.tensor({1.5, 2.25}))
    assert(text:find("1.5") and text:find("2.25") and text:find("%[2%]"), text)
    ok, message = pcall(function() return t.nonsense end)
    assert(not ok and message:find("no method or field 'nonsense'"), message)
    assert(ts.is_tensor(t) and not ts.is_tensor({}))
  )");
}

TEST_CASE("a tensor userdata owns its at::Tensor and __gc releases it") {
  ts::lua::RunOptions options;
  ts::lua::Runtime runtime(options);
  lua_State* L = runtime.state();
  at::Tensor held = torch::ones({2});
  ts::lua::push_tensor(L, held);
  lua_pushstring(L, "held_by_lua");
  lua_insert(L, -2);
  lua_rawset(L, LUA_GLOBALSINDEX);
  CHECK(held.use_count() == 2);
  runtime.execute("rawset(_G, 'held_by_lua', nil) collectgarbage() collectgarbage()");
  CHECK(held.use_count() == 1);
}

TEST_CASE("tokenizer in Lua: ids as Hugging Face's, and padded batches") {
  ts::lua::RunOptions options;
  options.overrides["vocab"] = "../shared/data/vocab/bert-base-uncased";  // a path the user named: readable
  ts::lua::Runtime runtime(options);
  runtime.execute(R"(
    local ts = require "twostage"
    local tokenizer = ts.tokenizer("../shared/data/vocab/bert-base-uncased")
    local ids = tokenizer:encode("Hello, world!")
    assert(table.concat(ids, " ") == "101 7592 1010 2088 999 102", table.concat(ids, " "))
    local batch = tokenizer:batch({"a short one", "a somewhat longer sentence than that"})
    assert(batch.input_ids:size(1) == 2)
    assert(batch.input_ids:size(2) == #tokenizer:encode("a somewhat longer sentence than that"))
    assert(batch.attention_mask[1]:sum() == 5, "the mask covers [CLS] a short one [SEP]")
    assert(batch.input_ids[1][6] == tokenizer:special_ids().pad)
    local fixed = tokenizer:batch({"a"}, {pad_to = 16})
    assert(fixed.input_ids:size(2) == 16)
  )");
}
