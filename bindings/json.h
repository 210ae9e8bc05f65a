#pragma once
// Lua values <-> JSON. A table whose keys are exactly 1..n is an array; any other table is an object; an empty
// table is an empty object unless made with json_array().
#include <lua.hpp>
#include <nlohmann/json.hpp>

namespace ts::lua {

nlohmann::json to_json(lua_State* L, int index);
// An option table as JSON for a host options struct's from_json: null when the argument is nil or absent.
nlohmann::json options_json(lua_State* L, int index);
void push_json(lua_State* L, const nlohmann::json& value);

}  // namespace ts::lua
