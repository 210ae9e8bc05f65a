-- A progress line for long loops: redrawn in place when stderr is a terminal, otherwise a plain log line every
-- `interval` seconds (so batch logs stay readable), and always one line at the end.
local native = require "twostage.native"

local Progress = {}
Progress.__index = Progress

local function duration(seconds)
  if seconds ~= seconds or seconds == math.huge then return "?" end
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then return string.format("%dh%02dm", seconds / 3600, seconds % 3600 / 60) end
  if seconds >= 60 then return string.format("%dm%02ds", seconds / 60, seconds % 60) end
  return string.format("%ds", seconds)
end

-- new(label, total[, {interval = 30}]): total is the number of steps expected.
function Progress.new(label, total, options)
  options = options or {}
  local now = native.clock()
  return setmetatable({
    label = label,
    total = total,
    step = 0,
    examples = 0,
    started = now,
    last_shown = now,
    interval = options.interval or 30,
    terminal = native.is_terminal(),
    fields = {},
  }, Progress)
end

function Progress:line()
  local elapsed = native.clock() - self.started
  local rate = elapsed > 0 and self.examples / elapsed or 0
  local remaining = self.step > 0 and elapsed / self.step * (self.total - self.step) or math.huge
  local parts = { string.format("%s %d/%d", self.label, self.step, self.total) }
  if self.fields.loss then parts[#parts + 1] = string.format("loss %.4f", self.fields.loss) end
  if self.fields.lr then parts[#parts + 1] = string.format("lr %.3g", self.fields.lr) end
  parts[#parts + 1] = string.format("%.1f ex/s", rate)
  parts[#parts + 1] = "ETA " .. duration(remaining)
  return table.concat(parts, "  ")
end

-- update{examples = n, loss = x, lr = y}: one step done.
function Progress:update(fields)
  self.step = self.step + 1
  self.examples = self.examples + (fields.examples or 0)
  for key, value in pairs(fields) do self.fields[key] = value end
  local now = native.clock()
  if self.terminal then
    if now - self.last_shown >= 0.2 or self.step == self.total then
      local width = 24
      local filled = self.total > 0 and math.floor(width * self.step / self.total) or width
      local bar = string.rep("=", filled) .. string.rep(" ", width - filled)
      io.stderr:write("\r[" .. bar .. "] " .. self:line() .. "\27[K")
      io.stderr:flush()
      self.last_shown = now
    end
  elseif now - self.last_shown >= self.interval then
    native.log("progress", self:line(), { step = self.step, total = self.total, loss = self.fields.loss })
    self.last_shown = now
  end
end

function Progress:finish()
  if self.terminal then io.stderr:write("\r\27[K") end
  native.log("progress", self:line() .. string.format("  (%s)", duration(native.clock() - self.started)),
    { step = self.step, total = self.total, seconds = native.clock() - self.started })
end

return Progress
