-- The paper's grid (ValizadehAslani et al., 2022/2024) on SST-2 with the default model: imbalance rates 0.1 to 0.7,
-- vanilla fine-tuning against both two-stage variants, five seeds: 7 x 3 x 5 = 105 jobs, each one run of a method
-- recipe (recipes/<method>.lua) with its defaults, which are the paper's, except the learning rates, which
-- data/models/all-minilm-l6-v2/MODEL.md chose for the shipped model on a validation split; with bert-base,
-- --set lr_stage1=1e-4 --set lr_stage2=1e-5.
--   twostage sweep recipes/sweep_paper.lua --jobs 2                                 here, resumable
--   twostage sweep recipes/sweep_paper.lua --set ratio=0.1,0.2,0.3 --set seeds=7,42  a smaller grid
--   twostage sweep recipes/sweep_paper.lua --emit slurm                             a job array, then --collect
-- The augmentation variant makes EDA paraphrases of each job's own imbalanced train set. For LLM paraphrases, make
-- one file per rate and name it in method_settings:
--   twostage run recipes/augment_llm.lua --set ratio=0.3 --set out=data/sst2/aug_llm_0.3.csv
--   method_settings = { two_stage_augment = { augmented = "data/sst2/aug_llm_{ratio}.csv" } },
return {
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment" },
  grid = {
    ratio = { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7 },
    seeds = { 7, 42, 106, 190, 191 },
  },
  settings = { lr_stage1 = 3e-4, lr_stage2 = 1e-4, bucket = true },
  method_settings = { two_stage_augment = { lr_stage1 = 1e-4 } },
  slurm = { time = "12:00:00", cpus_per_task = 8, mem = "16G" },
  report = { x = "ratio", metrics = { "f1_minority", "macro_f1" }, per_class_at = { ratio = 0.2 } },
}
