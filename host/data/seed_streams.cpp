#include "data/seed_streams.h"

#include "data/sampling.h"

namespace ts::data::seed_streams {

uint64_t stage_loader(uint64_t run_seed, int64_t stage) { return run_seed * 1000 + static_cast<uint64_t>(stage); }

uint64_t pretraining_dropout(uint64_t seed, int64_t step) { return seed * 1000003 + static_cast<uint64_t>(step); }

uint64_t pretraining_replacements(uint64_t seed, int64_t step) { return pretraining_dropout(seed, step) + 0x5eed; }

uint32_t training_masks(uint64_t seed, int64_t step) { return derive_seed(seed ^ 0x6d61736bULL, step); }  // "mask"

uint32_t heldout_masks(uint64_t seed, int64_t first) { return derive_seed(seed, first); }

uint64_t paraphrase_request(uint64_t request_seed, int64_t pass, int64_t per_request) {
  return request_seed + static_cast<uint64_t>(pass) * static_cast<uint64_t>(per_request);
}

}  // namespace ts::data::seed_streams
