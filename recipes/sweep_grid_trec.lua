-- The docs grid's multi-class part (docs/grid_minilm/): TREC's 6 coarse classes made long-tailed with imbalance
-- factor 10 (n_c = n_max (1/10)^(c/5)), the same six methods and learning rates as recipes/sweep_grid_sst2.lua,
-- three seeds: 18 jobs on the whole TREC train set. The "minority" of f1_minority is the rarest class.
--   twostage sweep recipes/sweep_grid_trec.lua --jobs 2          (resumable)
return {
  description = "TREC long tail (imbalance 10) x 6 methods x 3 seeds, all-MiniLM-L6-v2",
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment", "lp_ft", "logit_adjust", "crt" },
  grid = { imbalance = { 10 }, seeds = { 7, 42, 106 } },
  settings = {
    train = "data/trec/train.tsv", test = "data/trec/test.tsv", text_column = "text", label_column = "coarse",
    lr_stage2 = 1e-4, bucket = true,
  },
  method_settings = {
    two_stage_reweight = { lr_stage1 = 3e-4 },
    two_stage_augment = { lr_stage1 = 1e-4 },
    lp_ft = { lr_stage1 = 1e-3 },
    crt = { lr_stage1 = 1e-4, lr_stage2 = 1e-3 },
  },
  slurm = { time = "02:00:00", cpus_per_task = 2, mem = "8G" },
  report = { x = "method", group_by = { "method" }, metrics = { "f1_minority", "macro_f1", "accuracy" } },
}
