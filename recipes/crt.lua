-- Decoupled classifier re-training, cRT (Kang et al. 2020): learn the representation by plain fine-tuning on the
-- imbalanced data (stage 1, every parameter), then freeze the encoder, re-initialise the head and train it alone
-- with class-balanced sampling (stage 2: each draw picks a class uniformly, then a row of it).
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings {
  lr_stage1 = 1e-5, lr_stage2 = 1e-3, unfreeze = "classifier",
  sampler = { "balanced", "stage-2 sampler: balanced (cRT), sqrt (square-root) or random" },
})

ts.experiment.run(settings, function(run)
  run:stage { name = "representation", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = "all", loss = ts.loss { kind = "ce" } }
  run.model:reset_head()
  run:stage { name = "classifier re-training", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = run:unfrozen(), loss = ts.loss { kind = "ce" }, sampler = settings.sampler }
end)
