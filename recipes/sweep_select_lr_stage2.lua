-- Choosing the learning rates of the default model, step 1 of 2: stage 2's (full fine-tuning), by vanilla
-- fine-tuning, on a stratified validation split of the training data (never the test set). The reduced protocol of
-- the main job: a stratified subsample of 12,000 SST-2 training rows, rate 0.2, then 10% of those rows held out.
-- The choice is the rate with the best mean validation macro-F1 (data/models/all-minilm-l6-v2/MODEL.md).
--   twostage sweep recipes/sweep_select_lr_stage2.lua --jobs 2
--   twostage results sweeps/sweep_select_lr_stage2 --metric validation_macro_f1,validation_f1_minority
return {
  methods = { "vanilla" },
  grid = {
    lr_stage2 = { 2e-5, 5e-5, 1e-4, 2e-4 },
    seeds = { 7, 42 },
  },
  settings = { train_rows = 12000, validation_fraction = 0.1, bucket = true },
  report = { x = "lr_stage2", metrics = { "validation_macro_f1", "validation_f1_minority" } },
}
