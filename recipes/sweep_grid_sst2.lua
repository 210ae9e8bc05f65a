-- The docs grid on the default encoder (docs/grid_minilm/): SST-2 at imbalance rates 0.05, 0.1 and 0.2, both
-- two-stage variants against vanilla fine-tuning and three neighbours (LP-FT, logit adjustment, cRT), three seeds:
-- 3 x 6 x 3 = 54 jobs, the main job's reduced protocol (a stratified subsample of 12,000 training rows).
-- Learning rates: those MODEL.md chose on validation (full fine-tuning 1e-4 everywhere; stage 1 3e-4 for
-- reweighting, 1e-4 for augmentation); the neighbours' head-only stages keep their recipes' 1e-3, not tuned here.
--   twostage sweep recipes/sweep_grid_sst2.lua --jobs 2          (resumable)
return {
  description = "SST-2 grid: rates 0.05 0.1 0.2 x 6 methods x 3 seeds, 12,000-row stratified subsample, "
    .. "all-MiniLM-L6-v2",
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment", "lp_ft", "logit_adjust", "crt" },
  grid = {
    ratio = { 0.05, 0.1, 0.2 },
    seeds = { 7, 42, 106 },
  },
  settings = { train_rows = 12000, lr_stage2 = 1e-4, bucket = true },
  method_settings = {
    two_stage_reweight = { lr_stage1 = 3e-4 },
    two_stage_augment = { lr_stage1 = 1e-4 },
    lp_ft = { lr_stage1 = 1e-3 },
    crt = { lr_stage1 = 1e-4, lr_stage2 = 1e-3 },
  },
  slurm = { time = "02:00:00", cpus_per_task = 2, mem = "8G" },
  report = { x = "ratio", group_by = { "method", "ratio" }, metrics = { "f1_minority", "macro_f1", "accuracy" },
             per_class_at = { ratio = 0.05 } },
}
