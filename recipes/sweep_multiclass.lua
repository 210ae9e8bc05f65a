-- A long-tailed multi-class grid: TREC's 6 coarse question types made long-tailed with the exponential profile
-- n_c = n_max * (1 / imbalance)^(c / (C - 1)) at imbalance factors 10, 50 and 100, for vanilla fine-tuning and both
-- two-stage variants, over three seeds: 3 x 3 x 3 = 27 jobs. The "minority" of f1_minority is the rarest class.
--   twostage sweep recipes/sweep_multiclass.lua --jobs 2
-- The augmentation variant makes EDA paraphrases of each job's own long-tailed train set.
return {
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment" },
  grid = {
    imbalance = { 10, 50, 100 },
    seeds = { 7, 42, 106 },
  },
  settings = {
    train = "data/trec/train.tsv", test = "data/trec/test.tsv",
    text_column = "text", label_column = "coarse",
  },
  slurm = { time = "06:00:00", cpus_per_task = 8, mem = "16G" },
  report = { x = "imbalance", metrics = { "f1_minority", "macro_f1" }, per_class_at = { imbalance = 100 } },
}
