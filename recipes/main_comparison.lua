-- The README's main job: the paper's comparison on SST-2 at imbalance rate 0.2 with the shipped default encoder
-- (data/models/all-minilm-l6-v2): vanilla fine-tuning against both two-stage variants, three seeds, one table.
-- The augmentation variant trains stage 1 on EDA paraphrases made offline (no LLM API is reachable here); with an
-- API, make aug.csv with recipes/augment_llm.lua and add --set two_stage_augment.augmented=PATH.
--
-- A reduced protocol, to finish within half an hour on two cores: a stratified subsample of 12,000 of SST-2's
-- 67,349 training rows (seed 42), then the reference's protocol on it (rate 0.2: 1,338 + 6,694 rows). Learning
-- rates: chosen for this model on a validation split of the same subsample, stage 1's per variant (MODEL.md).
-- The full protocol:
--   twostage sweep recipes/main_comparison.lua --set train_rows=0 --jobs 2
return {
  description = "the paper's comparison: SST-2 at imbalance rate 0.2, all-MiniLM-L6-v2, seeds 7 42 106, GLUE dev "
    .. "as the test set; the reduced protocol (a stratified subsample of 12,000 training rows, seed 42) unless "
    .. "--set train_rows=0 (all 67,349: the full protocol)",
  methods = { "vanilla", "two_stage_reweight", "two_stage_augment" },
  grid = { seeds = { 7, 42, 106 } },
  settings = { train_rows = 12000, ratio = 0.2, lr_stage1 = 3e-4, lr_stage2 = 1e-4, bucket = true },
  method_settings = { two_stage_augment = { lr_stage1 = 1e-4 } },
  report = { x = "method", group_by = { "method" }, metrics = { "accuracy", "macro_f1", "f1_minority" } },
}
