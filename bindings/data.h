#pragma once
// The dataset userdata, for bindings that take one (pretraining corpora), and the batch table every binding that
// makes or takes a batch converts (loaders, tokenizer:batch, model:forward and embed).
#include <lua.hpp>

#include "data/batching.h"
#include "data/table.h"
#include "toolkit.h"

namespace ts::lua {

TWOSTAGE_LUA_TYPE(data::Dataset, "twostage.Dataset");

data::Dataset& check_dataset(lua_State* L, int index);

// A batch as Lua sees it: {input_ids, attention_mask, token_type_ids, labels, rows (1-based), size}, or with
// hidden_states and start_layer in place of the token ids (a loader with a cached trunk). Undefined tensors are
// left out.
void push_batch(lua_State* L, const data::Batch& batch);
// The tensors of a batch table (rows, size and labels are not read): hidden_states with start_layer, or input_ids
// with token_type_ids if there; attention_mask in both.
data::Batch check_batch(lua_State* L, int index);

}  // namespace ts::lua
