-- Logit adjustment (Menon et al. 2021) with vanilla fine-tuning: either train on the logit-adjusted loss
-- CE(f(x) + τ log π) (adjust = "loss"), or train plainly and predict argmax f(x) − τ log π (adjust = "post_hoc").
-- π is the training set's class prior, τ = 1.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings {
  epochs_stage1 = 0,
  adjust = { "loss", "\"loss\": logit-adjusted training loss; \"post_hoc\": adjust the logits at prediction" },
})

ts.experiment.run(settings, function(run)
  local loss
  if settings.adjust == "loss" then
    loss = run:loss("logit_adjusted")
  elseif settings.adjust == "post_hoc" then
    loss = ts.loss { kind = "ce" }
    run.adjust = { counts = run.counts, tau = settings.tau }
  else
    error("adjust '" .. settings.adjust .. "': expected \"loss\" or \"post_hoc\"")
  end
  run:stage { name = "stage 1", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = loss }
  run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = loss }
end)
