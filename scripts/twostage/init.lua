-- The library recipes require: `local ts = require "twostage"`.
-- Native functions come from the host (bindings/); the Lua parts load on first use, so a recipe pays only for
-- what it uses.
local native = require "twostage.native"

local lazy = {
  augment = "twostage.augment",
  experiment = "twostage.experiment",
  train = "twostage.train",
  progress = "twostage.progress",
  pretrain = "twostage.pretrain",
}

local ts = setmetatable({}, {
  __index = function(self, name)
    local value = native[name]
    if value == nil and lazy[name] then value = require(lazy[name]) end
    if value == nil then error("twostage has no function or module '" .. tostring(name) .. "'", 2) end
    rawset(self, name, value)
    return value
  end,
})

return ts
