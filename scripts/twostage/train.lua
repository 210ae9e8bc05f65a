-- The training loop: fit a classifier for some epochs (one stage), evaluate it, and choose what a stage trains.
--
--   local train = require "twostage.train"
--   train.fit(model, loader, { name = "stage 1", epochs = 1, lr = 1e-4, loss = ts.loss { kind = "ce" },
--                              trainable = model:top_layers(1) })
--   local metrics, logits = train.evaluate(model, test_loader)
--
-- Optimisation follows the reference: AdamW, a fresh optimiser and schedule per fit, linear decay per optimiser
-- step, gradient clipping by global norm.
local native = require "twostage.native"
local Progress = require "twostage.progress"

local train = {}

-- What a recipe's `unfreeze` setting names: a number k (the top k layers, the pooler and the head:
-- model:top_layers(k)) or a comma-separated list of parameter name patterns ("classifier,bert.pooler,...").
function train.unfreeze_patterns(model, spec)
  local k = tonumber(spec)
  if k then return model:top_layers(k) end
  local patterns = {}
  for pattern in tostring(spec):gmatch("[^,%s]+") do patterns[#patterns + 1] = pattern end
  if #patterns == 0 then error("unfreeze: no patterns in '" .. tostring(spec) .. "'", 2) end
  return patterns
end

-- evaluate(model, loader[, {adjust = {counts = {...}, tau = 1}}]) -> metrics, logits
-- Logits [N, C] on the CPU in the loader's row order, whatever order its batches come in. With `adjust`, the
-- predictions are post-hoc logit-adjusted (logits − τ log π) and the adjusted logits are returned.
function train.evaluate(model, loader, options)
  options = options or {}
  model:eval()
  local parts, rows = {}, {}
  native.no_grad(function()
    for batch in loader:epoch(1) do
      parts[#parts + 1] = model:forward(batch):to("cpu")
      for _, row in ipairs(batch.rows) do rows[#rows + 1] = row end
    end
  end)
  if #parts == 0 then error("evaluate: the loader has no rows", 2) end
  local logits = native.cat(parts, 1)
  -- rows[i] is the dataset row of logits' i-th line; put line i at rows[i].
  local inverse = {}
  for position, row in ipairs(rows) do inverse[row] = position end
  logits = logits:index_select(1, inverse)
  if options.adjust then logits = native.adjust_logits(logits, options.adjust.counts, options.adjust.tau or 1) end
  return native.metrics(loader:labels(), logits), logits
end

-- Where a stage's time goes, per training batch: wall-clock seconds summed by phase. `lap(name)` charges the time
-- since the previous lap to `name`; whatever a stage does between its laps (validation) is not a training phase and
-- is skipped with `restart()`.
local StepTimer = {}
StepTimer.__index = StepTimer
local step_phases = { "batch", "forward", "loss", "backward", "optimizer", "collect", "progress" }

function StepTimer.new()
  local seconds = {}
  for _, phase in ipairs(step_phases) do seconds[phase] = 0 end
  return setmetatable({ seconds = seconds, last = native.clock() }, StepTimer)
end

function StepTimer:lap(phase)
  local now = native.clock()
  self.seconds[phase] = self.seconds[phase] + (now - self.last)
  self.last = now
end

function StepTimer:restart() self.last = native.clock() end

-- {batch = ms, forward = ms, ...} per batch, and a line for the log.
function StepTimer:summary(batches)
  local per_batch, parts, total = {}, {}, 0
  for _, phase in ipairs(step_phases) do
    local ms = 1e3 * self.seconds[phase] / math.max(1, batches)
    per_batch[phase], total = ms, total + ms
    parts[#parts + 1] = string.format("%s %.1f", phase, ms)
  end
  per_batch.total = total
  return per_batch, string.format("%.1f ms a batch: %s", total, table.concat(parts, ", "))
end

local function better(value, best, mode)
  if best == nil then return true end
  if mode == "min" then return value < best end
  return value > best
end

-- fit(model, loader, options) -> history
-- options:
--   name          label in logs ("stage 1")
--   epochs        passes over the loader (0: nothing is trained)
--   lr            peak learning rate
--   loss          a ts.loss
--   trainable     parameter patterns, or "all" (default)
--   optimizer     {kind = "adamw", weight_decay = 0, ...} (see ts.optimizer)
--   schedule      "linear" (default), "cosine" or "constant"; warmup_steps or warmup_ratio
--   total_steps   length of the schedule in optimiser steps (default: what the epochs take); the reference's
--                 augmentation stage 1 sizes it from another dataset (its defect, reproduced on request)
--   clip          gradient clipping by global norm (default 1.0; false: none)
--   accumulate    micro-batches per optimiser step (default 1)
--   cache_frozen  run the frozen trunk once per row in eval mode and train the top on its cached output
--   validation    a loader evaluated after every epoch (or every `validate_every` optimiser steps)
--   monitor       {metric = "macro_f1", mode = "max"}: which validation metric is "best"
--   patience      early stopping: stop after this many validations without improvement
--   keep_best     restore the weights of the best validation at the end
function train.fit(model, loader, options)
  local name = options.name or "fit"
  local epochs = options.epochs or 1
  local history = { name = name, epochs = 0, steps = 0, validations = {}, seconds = 0 }
  if epochs <= 0 then
    native.log("stage", string.format("%s: 0 epochs, nothing trained", name), { stage = name })
    return history
  end
  if not options.loss then error("fit: options.loss is required", 2) end
  if not options.lr then error("fit: options.lr is required", 2) end

  local trainable = options.trainable or "all"
  if trainable == "all" or trainable == "*" then trainable = { "*" } end
  -- The optimiser is given the stage's selection, and makes it the model's trainable set: one selection for both.
  local optimizer_options = { kind = "adamw", lr = options.lr }
  for key, value in pairs(options.optimizer or {}) do optimizer_options[key] = value end
  optimizer_options.lr, optimizer_options.trainable = options.lr, trainable
  local optimizer = native.optimizer(model, optimizer_options)
  model:train()

  local cached_bytes
  if options.cache_frozen then
    local start_layer = model:first_trainable_layer()
    if not start_layer or start_layer == 0 then
      native.log("stage", name .. ": cache_frozen: nothing frozen to cache (the embeddings or layer 0 train)", {})
    else
      cached_bytes = loader:cache_trunk(model, start_layer)
      native.log("stage", string.format("%s: cached the frozen trunk below layer %d (%.1f MB)", name, start_layer,
        cached_bytes / 2 ^ 20), { stage = name, start_layer = start_layer, bytes = cached_bytes })
    end
  end

  local accumulate = options.accumulate or 1
  if accumulate < 1 or accumulate ~= math.floor(accumulate) then
    error(string.format("fit: accumulate %s: expected a whole number of batches, 1 or more", tostring(accumulate)), 2)
  end
  local batches_per_epoch = loader:batches(1)
  local updates_per_epoch = math.ceil(batches_per_epoch / accumulate)
  local total_steps = options.total_steps or updates_per_epoch * epochs
  local warmup = options.warmup_steps or math.floor((options.warmup_ratio or 0) * total_steps)
  local schedule = native.schedule(optimizer, { kind = options.schedule or "linear", warmup_steps = warmup,
    total_steps = total_steps })
  local clip = options.clip == nil and 1.0 or options.clip
  local loss_fn = options.loss

  native.log("stage", string.format("%s: %d epoch(s) of %d batches, %d optimiser steps, lr %g, %d trainable parameters",
    name, epochs, batches_per_epoch, total_steps, options.lr, optimizer:parameter_count()),
    { stage = name, epochs = epochs, batches_per_epoch = batches_per_epoch, total_steps = total_steps,
      lr = options.lr, trainable_parameters = optimizer:parameter_count() })

  local monitor = options.monitor or { metric = "macro_f1", mode = "max" }
  local best_value, best_snapshot, best_step
  local since_best = 0
  local stop = false
  local started = native.clock()

  local function validate(epoch)
    local metrics = train.evaluate(model, options.validation)
    model:train()
    local value = metrics[monitor.metric]
    if value == nil then error("fit: the validation metrics have no '" .. monitor.metric .. "'") end
    local record = { epoch = epoch, step = history.steps, metrics = metrics }
    history.validations[#history.validations + 1] = record
    local improved = better(value, best_value, monitor.mode)
    native.log("validation", string.format("%s epoch %d step %d: %s %.4f, accuracy %.4f%s", name, epoch,
      history.steps, monitor.metric, value, metrics.accuracy, improved and " (best)" or ""),
      { stage = name, epoch = epoch, step = history.steps, metrics = metrics })
    if improved then
      best_value, best_step, since_best = value, history.steps, 0
      if options.keep_best then best_snapshot = model:snapshot() end
    else
      since_best = since_best + 1
      if options.patience and since_best >= options.patience then
        native.log("stage", string.format("%s: early stop, no improvement in %d validations", name, since_best),
          { stage = name })
        stop = true
      end
    end
  end

  local timer, trained_batches = StepTimer.new(), 0
  for epoch = 1, epochs do
    local progress = Progress.new(string.format("%s epoch %d/%d", name, epoch, epochs), batches_per_epoch)
    local epoch_loss, epoch_batches, pending = 0, 0, 0
    timer:restart()
    for batch in loader:epoch(epoch) do
      timer:lap("batch")
      local logits = model:forward(batch)
      timer:lap("forward")
      local loss = loss_fn(logits, batch.labels)
      timer:lap("loss")
      if accumulate > 1 then (loss / accumulate):backward() else loss:backward() end
      pending = pending + 1
      local value = loss:item()
      timer:lap("backward")
      epoch_loss, epoch_batches = epoch_loss + value, epoch_batches + 1
      trained_batches = trained_batches + 1
      if pending == accumulate or epoch_batches == batches_per_epoch then
        optimizer:step { clip = clip or nil }
        schedule:step()
        optimizer:zero_grad()
        timer:lap("optimizer")
        -- The batch's logits still reach its autograd graph; Lua's collector sees a few bytes per tensor and would
        -- let many steps' graphs pile up before collecting them.
        collectgarbage()
        timer:lap("collect")
        pending = 0
        history.steps = history.steps + 1
        if options.validation and options.validate_every and history.steps % options.validate_every == 0 then
          validate(epoch)
          if stop then break end
          timer:restart()
        end
      end
      progress:update { examples = batch.size, loss = value, lr = optimizer:lr() }
      timer:lap("progress")
    end
    progress:finish()
    history.epochs = epoch
    history.last_epoch_loss = epoch_loss / math.max(1, epoch_batches)
    if options.validation and not options.validate_every and not stop then validate(epoch) end
    if stop then break end
  end

  local per_batch, timing_line = timer:summary(trained_batches)
  native.log("stage", string.format("%s: %s", name, timing_line), { stage = name, ms_per_batch = per_batch })
  history.ms_per_batch = per_batch

  if options.cache_frozen and cached_bytes then loader:drop_trunk() end
  if best_snapshot then
    model:restore(best_snapshot)
    native.log("stage", string.format("%s: restored the best weights (step %d, %s %.4f)", name, best_step,
      monitor.metric, best_value), { stage = name, best_step = best_step })
  end
  history.best = best_value and { metric = monitor.metric, value = best_value, step = best_step } or nil
  history.seconds = native.clock() - started
  history.cached_trunk_bytes = cached_bytes
  return history
end

return train
