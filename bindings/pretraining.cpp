// Masked-LM pretraining in Lua: ts.masked_lm (a BertForMaskedLM from a folder or a config), ts.mlm_corpus (texts
// packed into blocks) and ts.masker (BERT's dynamic masking). The loop is scripts/twostage/pretrain.lua.
#include "data.h"
#include "core/options.h"
#include "data/sampling.h"
#include "data/seed_streams.h"
#include "json.h"
#include "model.h"
#include "model/checkpoint.h"
#include "runtime.h"
#include "runtime/environment.h"
#include "tensor.h"
#include "text/tokenizer.h"
#include "tokenizer.h"
#include "train/mlm.h"
#include "train/word_vectors.h"

namespace ts::lua {

TWOSTAGE_LUA_TYPE(train::PackedCorpus, "twostage.Corpus");
TWOSTAGE_LUA_TYPE(train::Masker, "twostage.Masker");

namespace {

MaskedLM& self(lua_State* L) { return check<MaskedLM>(L, 1); }

// masked_lm(folder | config table[, {device = "cpu"}]) -> model
int masked_lm_new(lua_State* L) {
  LoadOptions options;
  const auto table = options_json(L, 2);
  const OptionReader read(table, "ts.masked_lm", {"device"});
  if (auto device = read.string("device")) options.device = torch::Device(runtime::check_device(*device));
  if (lua_istable(L, 1)) {
    auto config = BertConfig::from_json(to_json(L, 1), "masked_lm");
    config.validate("masked_lm");
    BertForMaskedLM module(config);
    module->to(options.device);
    push_new<MaskedLM>(L, MaskedLM{module, {}});
    return 1;
  }
  const std::string folder = check_string(L, 1);
  check_read(L, folder);
  LoadReport report;
  auto module = load_masked_lm(folder, options, &report);
  push_new<MaskedLM>(L, MaskedLM{module, folder});
  return 1;
}

int method_num_parameters(lua_State* L) {
  int64_t count = 0;
  for (const auto& parameter : self(L).module->parameters()) count += parameter.numel();
  lua_pushnumber(L, static_cast<lua_Number>(count));
  return 1;
}

int method_config(lua_State* L) {
  push_json(L, self(L).module->config.to_json({"BertForMaskedLM"}));
  return 1;
}

// save(folder[, {fp16 = false, tokenizer = tok}]): a folder transformers' BertForMaskedLM.from_pretrained loads.
int method_save(lua_State* L) {
  auto& model = self(L);
  const std::string folder = check_string(L, 2);
  check_write(L, folder);
  SaveOptions options;
  check_option_keys(L, 3, {"fp16", "tokenizer"}, "masked_lm:save");
  options.fp16 = opt_bool_field(L, 3, "fp16").value_or(false);
  options.tokenizer_from = model.source;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "tokenizer");
    if (!lua_isnil(L, -1)) options.tokenizer = &check<text::Tokenizer>(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  save_pretrained(model.module, folder, options);
  return 0;
}

// A masker batch ({input_ids, attention_mask, labels[, words]}) at `index`.
train::MaskedBatch to_masked_batch(lua_State* L, int index) {
  luaL_checktype(L, index, LUA_TTABLE);
  train::MaskedBatch batch;
  lua_getfield(L, index, "input_ids");
  batch.input_ids = check_tensor(L, -1);
  lua_getfield(L, index, "attention_mask");
  batch.attention_mask = check_tensor(L, -1);
  lua_getfield(L, index, "labels");
  batch.labels = check_tensor(L, -1);
  lua_getfield(L, index, "words");
  if (!lua_isnil(L, -1)) batch.words = check_tensor(L, -1);
  lua_pop(L, 4);
  return batch;
}

// loss(batch[, {bag_of_words = 0}]) -> loss tensor, correct, count, masked-LM loss, bag-of-words loss (or nil):
// cross-entropy over the masked positions of a masker batch, plus the weighted [CLS] bag-of-words loss.
int method_loss(lua_State* L) {
  auto& model = self(L).module;
  const auto batch = to_masked_batch(L, 2);
  const auto table = options_json(L, 3);
  const auto bag_of_words = OptionReader(table, "masked_lm:loss", {"bag_of_words"}).number("bag_of_words");
  const auto result = train::masked_lm_loss(model, batch, bag_of_words.value_or(0.0));
  push_tensor(L, result.loss);
  lua_pushnumber(L, static_cast<lua_Number>(result.correct));
  lua_pushnumber(L, static_cast<lua_Number>(result.count));
  lua_pushnumber(L, result.masked_lm.item<double>());
  if (result.bag_of_words.defined())
    lua_pushnumber(L, result.bag_of_words.item<double>());
  else
    lua_pushnil(L);
  return 5;
}

// forward(batch) -> logits [B, T, vocab], last_hidden_state [B, T, H]; batch = {input_ids, attention_mask,
// token_type_ids} as tokenizer:batch gives it (the last two optional), moved to the model's device.
int method_forward(lua_State* L) {
  auto& model = self(L).module;
  luaL_checktype(L, 2, LUA_TTABLE);
  const auto device = model->parameters().front().device();
  auto field = [&](const char* name, bool required) {
    lua_getfield(L, 2, name);
    if (lua_isnil(L, -1) && required) fail("forward: the batch has no {}", name);
    at::Tensor tensor = lua_isnil(L, -1) ? at::Tensor() : check_tensor(L, -1).to(device);
    lua_pop(L, 1);
    return tensor;
  };
  const auto outputs = model->forward(field("input_ids", true), field("attention_mask", false),
                                      field("token_type_ids", false));
  push_tensor(L, outputs.logits);
  push_tensor(L, outputs.last_hidden_state);
  return 2;
}

train::DetectionHead check_detection_head(lua_State* L, int index) {
  return train::DetectionHead(std::dynamic_pointer_cast<train::DetectionHeadImpl>(
      check<DetectionHeadHandle>(L, index).module));
}

// replaced_token_loss(batch, generator, head[, {weight = 50, seed = 0, temperature = 1}]) -> loss tensor, {masked_lm,
// correct, count, detection, detected, tokens, replaced}: ELECTRA's replaced-token detection with a frozen generator
// (train/mlm.h); `seed` fixes the generator's draws, `temperature` divides its logits.
int method_replaced_token_loss(lua_State* L) {
  auto& model = self(L).module;
  const auto batch = to_masked_batch(L, 2);
  auto& generator = check<MaskedLM>(L, 3).module;
  auto head = check_detection_head(L, 4);
  const auto table = options_json(L, 5);
  const OptionReader read(table, "masked_lm:replaced_token_loss", {"weight", "seed", "temperature"});
  const auto weight = read.number("weight").value_or(50.0);
  const auto seed = read.seed("seed").value_or(0);
  const auto temperature = read.number("temperature").value_or(1.0);
  const auto result = train::replaced_token_loss(model, head, generator, batch, weight, seed, temperature);
  push_tensor(L, result.loss);
  lua_createtable(L, 0, 7);
  const auto set = [L](const char* name, double value) {
    lua_pushnumber(L, value);
    lua_setfield(L, -2, name);
  };
  set("masked_lm", result.masked_lm.item<double>());
  set("correct", static_cast<double>(result.correct));
  set("count", static_cast<double>(result.count));
  set("detection", result.detection.item<double>());
  set("detected", static_cast<double>(result.detected));
  set("tokens", static_cast<double>(result.tokens));
  set("replaced", static_cast<double>(result.replaced));
  return 2;
}

// set_word_embeddings(word_vectors[, {std = initializer_range}]) -> rows written: the word embeddings of the tokens
// with a vector become those vectors, centred and scaled to `std` (corpus:word_vectors; train/word_vectors.h).
int method_set_word_embeddings(lua_State* L) {
  auto& model = self(L).module;
  luaL_checktype(L, 2, LUA_TTABLE);
  train::WordVectors vectors;
  lua_getfield(L, 2, "vectors");
  vectors.vectors = check_tensor(L, -1);
  lua_getfield(L, 2, "counts");
  vectors.counts = check_tensor(L, -1);
  lua_getfield(L, 2, "min_count");
  vectors.min_count = static_cast<int64_t>(luaL_optnumber(L, -1, 1));
  lua_pop(L, 3);
  const auto table = options_json(L, 3);
  const OptionReader read(table, "masked_lm:set_word_embeddings", {"std"});
  const auto deviation = read.number("std").value_or(model->config.initializer_range);
  lua_pushnumber(L, static_cast<lua_Number>(train::set_word_embeddings(model, vectors, deviation)));
  return 1;
}

// ---- ELECTRA's detection head ------------------------------------------------------------------------------------

// detection_head(model) -> a new head for the model's hidden size and activation (seed with manual_seed first)
int detection_head_new(lua_State* L) {
  auto& model = self(L).module;
  train::DetectionHead head(model->config);
  head->to(model->parameters().front().device());
  push_new<DetectionHeadHandle>(L, DetectionHeadHandle{head.ptr()});
  return 1;
}

// head:save(path): its weights as a safetensors file (dense.*, dense_prediction.*, float32)
int detection_head_save(lua_State* L) {
  auto head = check_detection_head(L, 1);
  const std::string path = check_string(L, 2);
  check_write(L, path);
  save_weights(*head, path);
  return 0;
}

// head:load(path): weights saved by head:save; every one must be there, with its shape
int detection_head_load(lua_State* L) {
  auto head = check_detection_head(L, 1);
  const std::string path = check_string(L, 2);
  check_read(L, path);
  const auto report = load_weights(*head, safetensors::File::open(path), "DetectionHead");
  if (!report.missing.empty()) fail("{}: no weights for {}", path, report.missing.front());
  return 0;
}

// ---- corpus and masking ------------------------------------------------------------------------------------------

train::PackedCorpus& corpus_at(lua_State* L, int index) { return check<train::PackedCorpus>(L, index); }

// mlm_corpus(tokenizer, {dataset, ...}[, {max_length = 128, threads = 1}]) -> corpus of packed blocks
int corpus_new(lua_State* L) {
  const auto& tokenizer = check<text::Tokenizer>(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  std::vector<std::string> texts;
  for (size_t i = 1; i <= lua_objlen(L, 2); ++i) {
    lua_rawgeti(L, 2, static_cast<int>(i));
    const auto& dataset = check_dataset(L, lua_gettop(L));
    texts.insert(texts.end(), dataset.texts.begin(), dataset.texts.end());
    texts.insert(texts.end(), dataset.pairs.begin(), dataset.pairs.end());
    lua_pop(L, 1);
  }
  const auto options = options_json(L, 3);
  const OptionReader read(options, "ts.mlm_corpus", {"max_length", "threads"});
  const auto max_length = read.integer("max_length").value_or(128);
  const auto threads = static_cast<int>(read.integer("threads").value_or(1));
  push_new<train::PackedCorpus>(L, train::pack_texts(tokenizer, texts, max_length, threads));
  return 1;
}

// corpus:split(fraction, seed) -> held-out corpus (those blocks leave this one)
int corpus_split(lua_State* L) {
  auto& corpus = corpus_at(L, 1);
  train::PackedCorpus heldout;
  train::split_heldout(corpus, heldout, luaL_checknumber(L, 2), static_cast<uint64_t>(luaL_checknumber(L, 3)));
  push_new<train::PackedCorpus>(L, std::move(heldout));
  return 1;
}

int corpus_blocks(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(corpus_at(L, 1).blocks.size()));
  return 1;
}

int corpus_tokens(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(corpus_at(L, 1).tokens()));
  return 1;
}

// corpus:word_vectors(tokenizer[, {dimension = 256, window = 5, negatives = 5, epochs = 5, lr = 0.025,
// subsample = 1e-4, min_count = 5, seed = 1}]) -> {vectors = [vocab, dimension], counts = [vocab], min_count}:
// skip-gram with negative sampling over the blocks (train/word_vectors.h), the tokenizer's special tokens left out.
int corpus_word_vectors(lua_State* L) {
  const auto& corpus = corpus_at(L, 1);
  const auto& tokenizer = check<text::Tokenizer>(L, 2);
  const auto options = train::SkipGramOptions::from_json(options_json(L, 3), "corpus:word_vectors");
  const auto result = train::skip_gram(corpus, tokenizer.vocab_size(),
                                       {tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()}, options);
  lua_createtable(L, 0, 3);
  push_tensor(L, result.vectors);
  lua_setfield(L, -2, "vectors");
  push_tensor(L, result.counts);
  lua_setfield(L, -2, "counts");
  lua_pushnumber(L, static_cast<lua_Number>(result.min_count));
  lua_setfield(L, -2, "min_count");
  return 1;
}

// masker(tokenizer, {probability = 0.15, mask_share = 0.8, random_share = 0.1, whole_word = false}) -> masker
int masker_new(lua_State* L) {
  const auto& tokenizer = check<text::Tokenizer>(L, 1);
  const auto options = train::MaskingOptions::from_json(options_json(L, 2), "ts.masker");
  push_new<train::Masker>(L, tokenizer, options);
  return 1;
}

void push_masked(lua_State* L, const train::MaskedBatch& batch, size_t rows) {
  lua_createtable(L, 0, 5);
  push_tensor(L, batch.input_ids);
  lua_setfield(L, -2, "input_ids");
  push_tensor(L, batch.attention_mask);
  lua_setfield(L, -2, "attention_mask");
  push_tensor(L, batch.labels);
  lua_setfield(L, -2, "labels");
  push_tensor(L, batch.words);
  lua_setfield(L, -2, "words");
  lua_pushnumber(L, static_cast<lua_Number>(rows));
  lua_setfield(L, -2, "size");
}

// masker:batch(corpus, step, batch_size, seed) -> {input_ids, attention_mask, labels, words, size}: the blocks and
// masks of training step `step` (0-based), a function of (seed, step) alone.
int masker_batch(lua_State* L) {
  const auto& masker = check<train::Masker>(L, 1);
  const auto& corpus = corpus_at(L, 2);
  const auto step = static_cast<int64_t>(luaL_checknumber(L, 3));
  const auto batch_size = static_cast<int64_t>(luaL_checknumber(L, 4));
  const auto seed = static_cast<uint64_t>(luaL_checknumber(L, 5));
  const auto indices =
      train::blocks_for_step(static_cast<int64_t>(corpus.blocks.size()), batch_size, step, seed);
  push_masked(L, masker.mask(corpus, indices, data::seed_streams::training_masks(seed, step)), indices.size());
  return 1;
}

// masker:range(corpus, first, count, seed) -> the blocks first..first+count-1 (0-based) masked with `seed`: fixed
// held-out batches.
int masker_range(lua_State* L) {
  const auto& masker = check<train::Masker>(L, 1);
  const auto& corpus = corpus_at(L, 2);
  const auto first = static_cast<int64_t>(luaL_checknumber(L, 3));
  const auto count = static_cast<int64_t>(luaL_checknumber(L, 4));
  const auto seed = static_cast<uint64_t>(luaL_checknumber(L, 5));
  std::vector<int64_t> indices;
  for (int64_t i = first; i < std::min<int64_t>(first + count, static_cast<int64_t>(corpus.blocks.size())); ++i)
    indices.push_back(i);
  if (indices.empty()) return 0;
  push_masked(L, masker.mask(corpus, indices, data::seed_streams::heldout_masks(seed, first)), indices.size());
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg model_methods[] = {{"forward", guarded<method_forward>},
                                           {"train", guarded<module_train>},
                                           {"eval", guarded<module_eval>},
                                           {"num_parameters", guarded<method_num_parameters>},
                                           {"parameters", guarded<module_parameters>},
                                           {"set_trainable", guarded<module_set_trainable>},
                                           {"freeze", guarded<module_freeze>},
                                           {"trainable_parameters", guarded<module_trainable_parameters>},
                                           {"trainable_count", guarded<module_trainable_count>},
                                           {"config", guarded<method_config>},
                                           {"save", guarded<method_save>},
                                           {"loss", guarded<method_loss>},
                                           {"replaced_token_loss", guarded<method_replaced_token_loss>},
                                           {"detection_head", guarded<detection_head_new>},
                                           {"set_word_embeddings", guarded<method_set_word_embeddings>},
                                           {nullptr, nullptr}};
  define_type<MaskedLM>(L, model_methods, nullptr);
  static const luaL_Reg corpus_methods[] = {{"split", guarded<corpus_split>},
                                            {"blocks", guarded<corpus_blocks>},
                                            {"tokens", guarded<corpus_tokens>},
                                            {"word_vectors", guarded<corpus_word_vectors>},
                                            {nullptr, nullptr}};
  static const luaL_Reg corpus_meta[] = {{"__len", guarded<corpus_blocks>}, {nullptr, nullptr}};
  define_type<train::PackedCorpus>(L, corpus_methods, corpus_meta);
  static const luaL_Reg masker_methods[] = {
      {"batch", guarded<masker_batch>}, {"range", guarded<masker_range>}, {nullptr, nullptr}};
  define_type<train::Masker>(L, masker_methods, nullptr);
  static const luaL_Reg detection_head_methods[] = {{"save", guarded<detection_head_save>},
                                                    {"load", guarded<detection_head_load>},
                                                    {"train", guarded<module_train>},
                                                    {"eval", guarded<module_eval>},
                                                    {nullptr, nullptr}};
  define_type<DetectionHeadHandle>(L, detection_head_methods, nullptr);

  static const luaL_Reg functions[] = {{"masked_lm", guarded<masked_lm_new>},
                                       {"mlm_corpus", guarded<corpus_new>},
                                       {"masker", guarded<masker_new>},
                                       {nullptr, nullptr}};
  set_functions(L, functions);
}

}  // namespace

TWOSTAGE_LUA_BINDING(pretraining, open);

}  // namespace ts::lua
