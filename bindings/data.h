#pragma once
// The dataset userdata, for bindings that take one (pretraining corpora).
#include <lua.hpp>

#include "data/table.h"

namespace ts::lua {

constexpr const char* kDatasetType = "twostage.Dataset";

data::Dataset& check_dataset(lua_State* L, int index);

}  // namespace ts::lua
