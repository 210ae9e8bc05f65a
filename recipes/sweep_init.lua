-- Does a model's pretraining help? Vanilla and two-stage (reweighting) fine-tuning on SST-2 at imbalance rate 0.2,
-- from the model (default: data/models/all-minilm-l6-v2) against the same architecture freshly initialised, three
-- seeds: 2 x 2 x 3 = 12 jobs. The table of docs/models/bert-mini-uncased.md was made with it (--set
-- model=DIR of that model, which recipes/pretrain_mlm.lua makes; the learning rates below were chosen for it).
--   twostage sweep recipes/sweep_init.lua --jobs 2
--   twostage results sweeps/sweep_init --group-by method,init --metric accuracy,f1_minority
-- A 4-layer, 256-wide model needs a larger step than bert-base: full fine-tuning at 1e-4 (Turc et al., 2019, tuned
-- small BERTs over 1e-4 to 3e-5), the top-only stage 1 at 3e-4. At the paper's 1e-5, one epoch of vanilla
-- fine-tuning left the first-run model predicting the majority class only (seed 7); at 3e-4 both initialisations.
-- Stage 1 at 1e-3 ended predicting one class in five of six runs (MODEL.md).
-- Buckets of similar lengths keep the padding, and so the epoch, short.
return {
  methods = { "vanilla", "two_stage_reweight" },
  grid = {
    init = { "pretrained", "random" },
    seeds = { 7, 42, 106 },
  },
  settings = { ratio = 0.2, lr_stage1 = 3e-4, lr_stage2 = 1e-4, bucket = true },
  slurm = { time = "02:00:00", cpus_per_task = 2, mem = "8G" },
  report = { x = "init", metrics = { "accuracy", "f1_minority", "macro_f1" }, per_class_at = { init = "pretrained" } },
}
