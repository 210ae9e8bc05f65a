-- A long-tailed multi-class grid: TREC (6 question types) made long-tailed with the exponential profile
-- n_c = n_max * (1 / imbalance)^(c / (C - 1)), at imbalance factors 10, 50 and 100, for vanilla fine-tuning and both
-- two-stage variants, over three seeds: 3 x 3 x 3 = 27 jobs.
--   twostage sweep recipes/sweep_multiclass.lua --jobs 2
--   twostage sweep recipes/sweep_multiclass.lua --set dataset=agnews      the same grid on AG News
return {
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment" },
  grid = {
    imbalance = { 10, 50, 100 },
    seeds = { 7, 42, 106 },
  },
  settings = { dataset = "trec" },
  slurm = { time = "06:00:00", cpus_per_task = 8, mem = "16G" },
  -- The rarest class is the minority: its F1 against the imbalance factor, and every class's F1 at factor 100.
  report = { x = "imbalance", metrics = { "f1_minority", "macro_f1" }, per_class_at = { imbalance = 100 } },
}
