-- Two-stage fine-tuning, augmentation variant (METHOD.md, journal version).
-- Stage 1 trains the top of the model with plain cross-entropy on class-balanced paraphrases alone (aug.csv, made
-- by recipes/augment_llm.lua from the same imbalanced training set); stage 2 fine-tunes everything on the original
-- imbalanced data.
-- The reference sized stage 1's schedule from the original training set while iterating the larger augmented one
-- (its learning rate reaches 0 after about 60% of the steps): faithful_schedule=true reproduces that.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings {
  augmented = { "data/sst2/aug_eda_0.2.csv", "paraphrases for stage 1 (columns org_ind,text,label)" },
  augmented_text_column = { "text", "text column of the augmented file" },
})

local paraphrases = ts.read_table(settings.augmented, { text = settings.augmented_text_column, label = "label",
  classes = ts.experiment.read(settings, settings.test):classes() })

ts.experiment.run(settings, function(run)
  run:stage { name = "stage 1", data = paraphrases, epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = run:loss(),
              total_steps = settings.faithful_schedule and run:steps_per_epoch(run.train) * settings.epochs_stage1 }
  run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = ts.loss { kind = "ce" } }
end)
