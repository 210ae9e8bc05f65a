#include "data/loader.h"

#include <numeric>

#include "core/error.h"
#include "core/options.h"
#include "train/frozen_trunk.h"

namespace ts::data {

TokenRows token_rows(const std::vector<text::Encoding>& encodings, bool with_type_ids) {
  TokenRows rows;
  rows.input_ids.reserve(encodings.size());
  if (with_type_ids) rows.token_type_ids.reserve(encodings.size());
  for (const auto& encoding : encodings) {
    rows.input_ids.emplace_back(encoding.ids.begin(), encoding.ids.end());
    if (with_type_ids) rows.token_type_ids.emplace_back(encoding.type_ids.begin(), encoding.type_ids.end());
  }
  return rows;
}

LoaderOptions LoaderOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where,
                          {"batch_size", "max_length", "sampler", "seed", "padding", "pad_to", "bucket", "drop_last",
                           "num_samples", "threads"});
  LoaderOptions options;
  options.batch_size = read.integer("batch_size").value_or(options.batch_size);
  if (options.batch_size < 1) fail("{}: batch_size {} must be at least 1", where, options.batch_size);
  options.max_length = static_cast<int>(read.integer("max_length").value_or(options.max_length));
  if (const auto sampler = read.string("sampler")) options.sampler = sampler_kind_from_name(*sampler);
  options.seed = read.seed("seed").value_or(0);
  const std::string padding = read.string("padding").value_or("longest");
  if (padding == "fixed")
    options.padding = Padding::Fixed;
  else if (padding != "longest")
    fail("{}: padding '{}': expected \"longest\" (per batch) or \"fixed\" (to pad_to)", where, padding);
  options.pad_to = read.integer("pad_to").value_or(0);
  options.bucket = read.boolean("bucket").value_or(false);
  options.drop_last = read.boolean("drop_last").value_or(false);
  options.num_samples = read.integer("num_samples").value_or(-1);
  options.threads = static_cast<int>(read.integer("threads").value_or(1));
  return options;
}

Loader::Loader(const Dataset& dataset, const text::Tokenizer& tokenizer, const LoaderOptions& options) {
  const auto* pairs = dataset.has_pairs() ? &dataset.pairs : nullptr;
  rows_ = token_rows(tokenizer.encode_batch(dataset.texts, pairs, options.max_length, options.threads),
                     dataset.has_pairs());
  rows_.labels = dataset.labels;
  lengths_ = rows_.lengths();

  batching_.pad_id = tokenizer.pad_id();
  batching_.batch_size = options.batch_size;
  batching_.padding = options.padding;
  batching_.fixed_length = options.pad_to > 0 ? options.pad_to : options.max_length;
  batching_.bucket_by_length = options.bucket;
  batching_.drop_last = options.drop_last;

  seeds_.seed = options.seed;
  std::vector<int64_t> labels = dataset.labels;
  if (labels.empty()) {
    if (options.sampler == SamplerKind::ClassBalanced || options.sampler == SamplerKind::SquareRoot)
      fail("a class-aware sampler needs labelled rows");
    labels.assign(static_cast<size_t>(dataset.size()), 0);
  }
  sampler_ = std::make_unique<Sampler>(std::move(labels), std::max<int64_t>(1, dataset.num_classes()),
                                       options.sampler, seeds_.seed, options.num_samples);
}

Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

std::vector<std::vector<int64_t>> Loader::plan(int64_t epoch) const {
  return plan_batches(sampler_->epoch(epoch), lengths_, batching_, seeds_.buckets(epoch));
}

EpochBatches Loader::batches(int64_t epoch) const { return EpochBatches(*this, plan(epoch)); }

Batch Loader::batch(const std::vector<int64_t>& rows) const {
  if (!trunk_) return collate(rows_, rows, batching_);
  Batch batch;
  auto hidden = trunk_->collate(rows);
  batch.hidden_states = std::move(hidden.hidden_states);
  batch.attention_mask = std::move(hidden.attention_mask);
  batch.start_layer = trunk_->start_layer();
  if (!rows_.labels.empty()) {
    batch.labels = torch::empty({static_cast<int64_t>(rows.size())}, torch::kInt64);
    auto labels = batch.labels.accessor<int64_t, 1>();
    for (size_t b = 0; b < rows.size(); ++b) labels[static_cast<int64_t>(b)] = rows_.labels[rows[b]];
  }
  batch.indices = rows;
  return batch;
}

int64_t Loader::cache_trunk(BertForSequenceClassification& model, int64_t start_layer, int64_t batch_size) {
  trunk_ = std::make_unique<train::FrozenTrunkCache>(model, rows_, start_layer, batch_size, batching_.pad_id);
  return trunk_->bytes();
}

void Loader::drop_trunk() { trunk_.reset(); }

int64_t Loader::tokens() const { return std::accumulate(lengths_.begin(), lengths_.end(), int64_t{0}); }

SequenceClassifierOutputs forward(BertForSequenceClassification& model, const Batch& batch) {
  const auto device = model->parameters().front().device();
  auto on_device = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  if (batch.cached())
    return model->forward_from(batch.start_layer, on_device(batch.hidden_states), on_device(batch.attention_mask));
  if (!batch.input_ids.defined()) fail("the batch has no 'input_ids' tensor");
  return model->forward(on_device(batch.input_ids), on_device(batch.attention_mask),
                        on_device(batch.token_type_ids));
}

}  // namespace ts::data
