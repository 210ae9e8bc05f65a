-- Two-stage fine-tuning, reweighting variant (METHOD.md).
-- Stage 1 trains only the top encoder layer, the pooler and the head, with LDAM (margins ∝ n^-1/4, largest 0.5,
-- s = 1) and class-balanced weights (effective number, β = 0.9999), at lr 1e-4.
-- Stage 2 fine-tunes every parameter with plain cross-entropy at lr 1e-5. Each stage gets a fresh AdamW and a
-- linear decay to zero.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings { loss = "ldam", weights = "effective" })

ts.experiment.run(settings, function(run)
  run:stage { name = "stage 1", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = run:loss() }
  run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = ts.loss { kind = "ce" } }
end)
