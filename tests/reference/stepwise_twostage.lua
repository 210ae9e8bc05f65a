-- The twostage half of the step-by-step check against the authors' arithmetic (tests/reference/check_stepwise.sh):
-- vanilla fine-tuning of `model` for `steps` batches in file order (no shuffling), as the recipes train, and the loss
-- of every step. The model folder should have dropout off (the check writes such a copy), so that both sides see the
-- same function; the classifier's initial weights are saved first, for the Python side to start from.
local ts = require "twostage"

local settings = ts.settings {
  model = { "", "model folder (dropout off)" },
  train = { "data/sst2/train.tsv", "training rows, used in file order" },
  steps = { 20, "optimiser steps of 16 rows" },
  lr = { 1e-4, "peak learning rate (linear decay to 0 over `steps`)", type = "number" },
  optimizer = { "adamw_hf", "adamw_hf (the authors') or adamw (torch's)" },
  seed = { 7, "seed of the head's initialisation" },
}

ts.manual_seed(settings.seed)
local model = ts.load_classifier(settings.model, { head = "paper", num_labels = 2 })
model:save(ts.run_dir() .. "/initial")
local data = ts.read_table(settings.train, { text = "sentence", label = "label", classes = { "0", "1" } })
local loader = ts.loader(data, ts.tokenizer(settings.model), { batch_size = 16, sampler = "sequential" })
model:set_trainable { "*" }
model:train()
local optimizer = ts.optimizer(model, { kind = settings.optimizer, lr = settings.lr })
local schedule = ts.schedule(optimizer, { kind = "linear", warmup_steps = 0, total_steps = settings.steps })
local loss_fn = ts.loss { kind = "ce" }
local losses = {}
for batch in loader:epoch(1) do
  if #losses == settings.steps then break end
  local loss = loss_fn(model:forward(batch), batch.labels)
  loss:backward()
  losses[#losses + 1] = loss:item()
  optimizer:step { clip = 1.0 }
  schedule:step()
  optimizer:zero_grad()
end
ts.write_file(ts.run_dir() .. "/losses.json", ts.json_encode(losses))
