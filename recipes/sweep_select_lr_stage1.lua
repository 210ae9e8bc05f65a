-- Choosing the learning rates of the default model, step 2 of 2: stage 1's, for each two-stage variant, with
-- stage 2 at the rate step 1 chose (recipes/sweep_select_lr_stage2.lua), on the same validation split.
--   twostage sweep recipes/sweep_select_lr_stage1.lua --jobs 2 --set lr_stage2=RATE
--   twostage results sweeps/sweep_select_lr_stage1 --metric validation_macro_f1,validation_f1_minority
return {
  methods = { "two_stage_reweight", "two_stage_augment" },
  grid = {
    lr_stage1 = { 1e-4, 3e-4, 1e-3 },
    seeds = { 7, 42 },
  },
  settings = { train_rows = 12000, validation_fraction = 0.1, bucket = true },
  report = { x = "lr_stage1", metrics = { "validation_macro_f1", "validation_f1_minority" } },
}
