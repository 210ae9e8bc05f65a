-- LP-FT (Kumar et al. 2022): a linear probe first (only the head trains, on the frozen encoder), then full
-- fine-tuning from there, so the pretrained features are not distorted by a random head.
-- cache_frozen=true runs the frozen encoder once per row and trains the probe on its cached output.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings { unfreeze = "classifier", lr_stage1 = 1e-3, head = "hf" })

ts.experiment.run(settings, function(run)
  run:stage { name = "linear probe", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = run:loss() }
  run:stage { name = "fine-tune", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = ts.loss { kind = "ce" } }
end)
