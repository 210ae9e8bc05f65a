-- The smallest recipe: settings, tensors, and a result file in the run folder.
local ts = require "twostage"

local settings = ts.settings {
  rows = {3, "rows of the random matrix"},
  seed = {42, "random seed"},
}

ts.manual_seed(settings.seed)
local x = ts.randn(settings.rows, 4)
local column_means = x:mean(1)
print(x)
print("column means", column_means)
ts.write_file(ts.run_dir() .. "/result.json", ts.json_encode({ column_means = column_means:totable() }, 2))
