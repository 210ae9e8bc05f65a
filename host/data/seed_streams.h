#pragma once
// Every seed a run derives from the seeds its user sets, each a named stream, so that no recipe, script or binding
// does seed arithmetic of its own. Each keeps the value of the arithmetic it replaced (written beside it), so runs
// recorded before reproduce bit for bit. The loader's own streams (order and buckets per epoch) are LoaderSeeds in
// data/loader.h.
#include <cstdint>

namespace ts::data::seed_streams {

// The loader of a run's `stage`-th stage (1-based), from the run's training seed: run_seed * 1000 + stage.
uint64_t stage_loader(uint64_t run_seed, int64_t stage);

// Masked-LM pretraining, per optimizer step (0-based): dropout's generator (seed * 1000003 + step) and the ELECTRA
// generator's sampled replacements (that + 0x5eed). Evaluation draws use the held-out seed and the first block.
uint64_t pretraining_dropout(uint64_t seed, int64_t step);
uint64_t pretraining_replacements(uint64_t seed, int64_t step);

// The masks of training step `step` (derive_seed(seed ^ "mask", step)) and of the held-out blocks from `first` on
// (derive_seed(seed, first)).
uint32_t training_masks(uint64_t seed, int64_t step);
uint32_t heldout_masks(uint64_t seed, int64_t first);

// The sampling seed of an LLM paraphrase request of pass `pass` asking for `per_request` choices:
// request_seed + pass * per_request. llama.cpp samples choice i with seed + i, so every choice of every pass takes
// a seed of its own and a re-run asks for the same samples.
uint64_t paraphrase_request(uint64_t request_seed, int64_t pass, int64_t per_request);

}  // namespace ts::data::seed_streams
