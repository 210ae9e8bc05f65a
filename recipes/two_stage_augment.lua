-- Two-stage fine-tuning, augmentation variant (METHOD.md, journal version).
-- Stage 1 trains the top of the model with plain cross-entropy on class-balanced paraphrases alone (aug.csv, made
-- by recipes/augment_llm.lua from the same imbalanced training set, or offline with EDA when none is given);
-- stage 2 fine-tunes everything on the original imbalanced data.
-- The reference sized stage 1's schedule from the original training set while iterating the larger augmented one
-- (its learning rate reaches 0 after about 60% of the steps): faithful_schedule=true reproduces that.
local ts = require "twostage"

local settings = ts.settings(ts.experiment.settings {
  augmented = { "", "paraphrases for stage 1 (aug.csv: org_ind,text,label); empty: made offline here with EDA" },
  augmented_text_column = { "text", "text column of the augmented file" },
})

local classes = ts.experiment.read(settings, settings.train):classes()
local augmented = settings.augmented
if augmented == "" then
  -- No LLM paraphrases given: fill every class to the majority count offline (EDA, α = 0.1) from the same
  -- imbalanced training set, through the pipeline of recipes/augment_llm.lua. A class EDA cannot fill (its rows
  -- too short to vary) is used as it is, as before, rather than failing the run: augment_summary.json says `short`.
  augmented = ts.run_dir() .. "/aug.csv"
  ts.augment.run { train = ts.experiment.data(settings).train, augmenter = ts.eda { seed = settings.data_seed },
                   augmenter_name = "eda", seed = settings.data_seed, refill_rounds = 5, out = augmented,
                   summary = ts.run_dir() .. "/augment_summary.json", allow_short = true }
end
local paraphrases = ts.read_table(augmented, { text = settings.augmented_text_column, label = "label",
  classes = classes })

ts.experiment.run(settings, function(run)
  run:stage { name = "stage 1", data = paraphrases, epochs = settings.epochs_stage1, lr = settings.lr_stage1,
              trainable = run:unfrozen(), loss = run:loss(),
              total_steps = settings.faithful_schedule and run:steps_per_epoch(run.train) * settings.epochs_stage1 }
  run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
              trainable = "all", loss = ts.loss { kind = "ce" } }
end)
