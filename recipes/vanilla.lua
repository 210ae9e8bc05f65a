-- Vanilla fine-tuning, the baseline (METHOD.md): every parameter, plain cross-entropy on the imbalanced training
-- set, AdamW at 1e-5 with linear decay, batch 16, one epoch, seeds 7 42 106 190 191.
-- Stage 1 is off by default (epochs_stage1 = 0); turned on, it first trains the top of the model with the same
-- plain loss, the control for the two-stage recipes.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings { epochs_stage1 = 0 })

ts.experiment.run(settings, function(run)
  run:stage { name = "stage 1", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = run:loss() }
  run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = ts.loss { kind = "ce" } }
end)
