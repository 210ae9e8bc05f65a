// Datasets, imbalance and batching in Lua: ts.read_table, ts.dataset, ts.downsample, ts.long_tail, ts.split and
// ts.loader (tokenized rows, a seeded sampler and a batch plan per epoch). Rows are 1-based in Lua; class ids stay
// 0-based as in the data files.
#include <cmath>

#include "core/options.h"
#include "data.h"

#include "data/batching.h"
#include "data/loader.h"
#include "data/sampling.h"
#include "data/seed_streams.h"
#include "data/table.h"
#include "json.h"
#include "runtime.h"
#include "tensor.h"
#include "text/tokenizer.h"
#include "tokenizer.h"
#include "model.h"

namespace ts::lua {

TWOSTAGE_LUA_TYPE(data::Loader, "twostage.Loader");
TWOSTAGE_LUA_TYPE(data::EpochBatches, "twostage.EpochBatches");

data::Dataset& check_dataset(lua_State* L, int index) { return check<data::Dataset>(L, index); }

void push_batch(lua_State* L, const data::Batch& batch) {
  lua_createtable(L, 0, 8);
  auto set = [L](const char* name, const at::Tensor& tensor) {
    if (!tensor.defined()) return;
    push_tensor(L, tensor);
    lua_setfield(L, -2, name);
  };
  set("input_ids", batch.input_ids);
  set("attention_mask", batch.attention_mask);
  set("token_type_ids", batch.token_type_ids);
  set("hidden_states", batch.hidden_states);
  if (batch.cached()) {
    lua_pushnumber(L, static_cast<lua_Number>(batch.start_layer));
    lua_setfield(L, -2, "start_layer");
  }
  set("labels", batch.labels);
  push_integers(L, batch.indices, 1);
  lua_setfield(L, -2, "rows");
  lua_pushnumber(L, static_cast<lua_Number>(batch.size()));
  lua_setfield(L, -2, "size");
}

data::Batch check_batch(lua_State* L, int index) {
  luaL_checktype(L, index, LUA_TTABLE);
  auto field = [&](const char* name) {
    lua_getfield(L, index, name);
    at::Tensor tensor;
    if (!lua_isnil(L, -1)) tensor = check_tensor(L, lua_gettop(L));
    lua_pop(L, 1);
    return tensor;
  };
  data::Batch batch;
  batch.attention_mask = field("attention_mask");
  batch.hidden_states = field("hidden_states");
  if (batch.cached()) {
    const auto start_layer = opt_number_field(L, index, "start_layer");
    if (!start_layer) fail("a batch with hidden_states needs start_layer");
    batch.start_layer = static_cast<int64_t>(*start_layer);
  } else {
    batch.input_ids = field("input_ids");
    if (!batch.input_ids.defined()) fail("the batch has no 'input_ids' tensor");
    batch.token_type_ids = field("token_type_ids");
  }
  return batch;
}

namespace {

using data::Dataset;

Dataset& dataset_at(lua_State* L, int index) { return check_dataset(L, index); }

// Lua rows (1-based) -> dataset indices (0-based), checked against the dataset's size.
std::vector<int64_t> rows_to_indices(lua_State* L, int index, const Dataset& data) {
  auto rows = check_integer_list(L, index, "rows");
  for (auto& row : rows) {
    if (row < 1 || row > data.size()) fail("row {} is outside the dataset (1..{})", row, data.size());
    row -= 1;
  }
  return rows;
}

int64_t check_row(lua_State* L, int index, const Dataset& data) {
  const auto row = static_cast<int64_t>(luaL_checknumber(L, index));
  if (row < 1 || row > data.size()) fail("row {} is outside the dataset (1..{})", row, data.size());
  return row - 1;
}

Dataset& push_dataset(lua_State* L, Dataset data) { return push_new<Dataset>(L, std::move(data)); }

// ---- reading -------------------------------------------------------------------------------------------------

// read_table(path[, {text = "text", pair = nil, label = "label" | false, classes = {...}, format = "auto",
//                    empty_text = "error" | "drop"}]) -> dataset
int read_table(lua_State* L) {
  const std::string path = check_string(L, 1);
  check_read(L, path);
  const auto options = data::TableOptions::from_json(options_json(L, 2), "ts.read_table");
  push_dataset(L, data::read_table(path, options));
  return 1;
}

// dataset{texts = {...}, labels = {...}, classes = {...}[, pairs = {...}]} -> dataset built in memory
int dataset_new(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_option_keys(L, 1, {"texts", "pairs", "labels", "classes"}, "ts.dataset");
  Dataset data;
  lua_getfield(L, 1, "texts");
  data.texts = check_string_list(L, lua_gettop(L));
  lua_getfield(L, 1, "pairs");
  if (!lua_isnil(L, -1)) data.pairs = check_string_list(L, lua_gettop(L));
  lua_getfield(L, 1, "labels");
  if (!lua_isnil(L, -1)) data.labels = check_integer_list(L, lua_gettop(L), "labels");
  lua_getfield(L, 1, "classes");
  if (!lua_isnil(L, -1)) data.class_names = check_string_list(L, lua_gettop(L));
  lua_pop(L, 4);
  if (!data.labels.empty() && data.class_names.empty()) {
    const int64_t largest = *std::max_element(data.labels.begin(), data.labels.end());
    for (int64_t c = 0; c <= largest; ++c) data.class_names.push_back(std::to_string(c));
  }
  data.row_numbers.resize(data.texts.size());
  for (size_t i = 0; i < data.row_numbers.size(); ++i) data.row_numbers[i] = static_cast<int64_t>(i + 1);
  data.validate();
  push_dataset(L, std::move(data));
  return 1;
}

// ---- dataset methods -----------------------------------------------------------------------------------------

int dataset_size(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(dataset_at(L, 1).size()));
  return 1;
}

int dataset_text(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto& text = data.texts[check_row(L, 2, data)];
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

int dataset_pair(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto row = check_row(L, 2, data);
  if (!data.has_pairs()) return 0;
  lua_pushlstring(L, data.pairs[row].data(), data.pairs[row].size());
  return 1;
}

int dataset_label(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto row = check_row(L, 2, data);
  if (data.labels.empty()) return 0;
  lua_pushnumber(L, static_cast<lua_Number>(data.labels[row]));
  return 1;
}

int dataset_texts(lua_State* L) {
  push_strings(L, dataset_at(L, 1).texts);
  return 1;
}

int dataset_pairs(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  if (!data.has_pairs()) return 0;
  push_strings(L, data.pairs);
  return 1;
}

int dataset_labels(lua_State* L) {
  push_integers(L, dataset_at(L, 1).labels);
  return 1;
}

int dataset_classes(lua_State* L) {
  push_strings(L, dataset_at(L, 1).class_names);
  return 1;
}

int dataset_num_classes(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(dataset_at(L, 1).num_classes()));
  return 1;
}

int dataset_class_counts(lua_State* L) {
  push_integers(L, dataset_at(L, 1).class_counts());
  return 1;
}

// source_rows() -> the 1-based line of each row in its file (header = line 1)
int dataset_source_rows(lua_State* L) {
  push_integers(L, dataset_at(L, 1).row_numbers);
  return 1;
}

int dataset_source(lua_State* L) {
  lua_pushstring(L, dataset_at(L, 1).source.c_str());
  return 1;
}

int dataset_dropped_empty(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(dataset_at(L, 1).dropped_empty));
  return 1;
}

int dataset_subset(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto indices = rows_to_indices(L, 2, data);
  push_dataset(L, data.subset(indices));
  return 1;
}

int dataset_concat(lua_State* L) {
  push_dataset(L, data::concat(dataset_at(L, 1), dataset_at(L, 2)));
  return 1;
}

int dataset_tostring(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  std::string counts;
  const auto class_counts = data.class_counts();
  for (size_t c = 0; c < class_counts.size(); ++c)
    counts += fmt::format("{}{}={}", c ? ", " : "", data.class_names[c], class_counts[c]);
  const std::string text = fmt::format("Dataset({} rows{}{})", data.size(), counts.empty() ? "" : ": ", counts);
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

// ---- imbalance and splits ------------------------------------------------------------------------------------

// downsample(dataset, {rate = 0.2, minority = {0}, seed = 42, shuffle = true}) -> subset, rows
// The reference's exact rows and order (pandas sample with random_state = seed).
int downsample(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto options = data::DownsampleOptions::from_json(options_json(L, 2), "ts.downsample");
  const auto indices = data::downsample_indices(data.labels, data.num_classes(), options);
  push_dataset(L, data.subset(indices));
  push_integers(L, indices, 1);
  return 2;
}

// long_tail(dataset, {imbalance = 10, seed = 42[, counts = {...}]}) -> subset, rows (data::long_tail_indices)
int long_tail(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto options = data::LongTailOptions::from_json(options_json(L, 2), "ts.long_tail");
  const auto indices = data::long_tail_indices(data.labels, data.num_classes(), options);
  push_dataset(L, data.subset(indices));
  push_integers(L, indices, 1);
  return 2;
}

// split(dataset, {fraction = 0.1, seed = 42}) -> train, validation, train_rows, validation_rows (stratified)
int split(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto options = data::SplitOptions::from_json(options_json(L, 2), "ts.split");
  const auto parts = data::stratified_split(data.labels, data.num_classes(), options.fraction, options.seed);
  push_dataset(L, data.subset(parts.train));
  push_dataset(L, data.subset(parts.validation));
  push_integers(L, parts.train, 1);
  push_integers(L, parts.validation, 1);
  return 4;
}

// ---- loader --------------------------------------------------------------------------------------------------

using data::Loader;

Loader& loader_at(lua_State* L, int index) { return check<Loader>(L, index); }

// loader(dataset, tokenizer[, options]) -> loader; options as data::LoaderOptions::from_json: {batch_size = 16,
// max_length = 128, sampler = "random", seed = 0, padding = "longest", pad_to = max_length, bucket = false,
// drop_last = false, num_samples = #dataset, threads = 1}
int loader_new(lua_State* L) {
  const auto& data = dataset_at(L, 1);
  const auto& tokenizer = check<text::Tokenizer>(L, 2);
  const auto options = data::LoaderOptions::from_json(options_json(L, 3), "ts.loader");
  push_new<Loader>(L, data, tokenizer, options);
  return 1;
}

// The iterator's upvalues are (loader, its EpochBatches, position): the loader upvalue keeps alive what the epoch's
// batches refer to.
int epoch_iterator(lua_State* L) {
  const auto& batches = check<data::EpochBatches>(L, lua_upvalueindex(2));
  const auto position = static_cast<size_t>(lua_tonumber(L, lua_upvalueindex(3)));
  if (position >= batches.size()) return 0;
  lua_pushnumber(L, static_cast<lua_Number>(position + 1));
  lua_replace(L, lua_upvalueindex(3));
  push_batch(L, batches[position]);
  return 1;
}

// loader:epoch(e) -> iterator over the batches of epoch e (1-based; the order depends only on seed and e):
//   for batch in loader:epoch(1) do ... end
// Each batch as push_batch gives it.
int loader_epoch(lua_State* L) {
  const auto& loader = loader_at(L, 1);
  const auto epoch = static_cast<int64_t>(luaL_checknumber(L, 2));
  lua_pushvalue(L, 1);
  push_new<data::EpochBatches>(L, loader.batches(epoch));
  lua_pushnumber(L, 0);
  lua_pushcclosure(L, guarded<epoch_iterator>, 3);
  return 1;
}

// loader:batches(e) -> the number of batches in epoch e
int loader_batches(lua_State* L) {
  const auto& loader = loader_at(L, 1);
  const auto epoch = static_cast<int64_t>(luaL_optnumber(L, 2, 1));
  lua_pushnumber(L, static_cast<lua_Number>(loader.plan(epoch).size()));
  return 1;
}

int loader_size(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(loader_at(L, 1).size()));
  return 1;
}

int loader_labels(lua_State* L) {
  push_integers(L, loader_at(L, 1).rows().labels);
  return 1;
}

int loader_tokens(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(loader_at(L, 1).tokens()));
  return 1;
}

// loader:cache_trunk(model, start_layer[, {batch_size = 64}]) -> bytes held: Loader::cache_trunk (start_layer is
// 0-based, as model:first_trainable_layer() gives it).
int loader_cache_trunk(lua_State* L) {
  auto& loader = loader_at(L, 1);
  auto& model = check_classifier(L, 2);
  const auto start_layer = static_cast<int64_t>(luaL_checknumber(L, 3));
  const auto table = options_json(L, 4);
  const OptionReader read(table, "loader:cache_trunk", {"batch_size"});
  const auto batch_size = read.integer("batch_size").value_or(64);
  lua_pushnumber(L, static_cast<lua_Number>(loader.cache_trunk(model, start_layer, batch_size)));
  return 1;
}

int loader_drop_trunk(lua_State* L) {
  loader_at(L, 1).drop_trunk();
  return 0;
}

// ---- seed streams --------------------------------------------------------------------------------------------

// seed_streams.NAME(seed, step) -> the derived seed (data/seed_streams.h); seeds are whole numbers of 0 or more.
uint64_t check_seed(lua_State* L, int index) {
  const double seed = luaL_checknumber(L, index);
  if (seed < 0 || seed != std::floor(seed) || seed > 9.007199254740992e15)
    fail("seed {} must be a whole number of 0 or more", seed);
  return static_cast<uint64_t>(seed);
}

template <auto Stream>
int seed_stream(lua_State* L) {
  const auto seed = check_seed(L, 1);
  const auto step = static_cast<int64_t>(luaL_checknumber(L, 2));
  lua_pushnumber(L, static_cast<lua_Number>(Stream(seed, step)));
  return 1;
}

int paraphrase_request_seed(lua_State* L) {
  const auto seed = check_seed(L, 1);
  const auto pass = static_cast<int64_t>(luaL_checknumber(L, 2));
  const auto per_request = static_cast<int64_t>(luaL_checknumber(L, 3));
  lua_pushnumber(L, static_cast<lua_Number>(data::seed_streams::paraphrase_request(seed, pass, per_request)));
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg dataset_methods[] = {{"size", guarded<dataset_size>},
                                             {"text", guarded<dataset_text>},
                                             {"pair", guarded<dataset_pair>},
                                             {"label", guarded<dataset_label>},
                                             {"texts", guarded<dataset_texts>},
                                             {"pairs", guarded<dataset_pairs>},
                                             {"labels", guarded<dataset_labels>},
                                             {"classes", guarded<dataset_classes>},
                                             {"num_classes", guarded<dataset_num_classes>},
                                             {"class_counts", guarded<dataset_class_counts>},
                                             {"source_rows", guarded<dataset_source_rows>},
                                             {"source", guarded<dataset_source>},
                                             {"dropped_empty", guarded<dataset_dropped_empty>},
                                             {"subset", guarded<dataset_subset>},
                                             {"concat", guarded<dataset_concat>},
                                             {nullptr, nullptr}};
  static const luaL_Reg dataset_meta[] = {
      {"__len", guarded<dataset_size>}, {"__tostring", guarded<dataset_tostring>}, {nullptr, nullptr}};
  define_type<Dataset>(L, dataset_methods, dataset_meta);

  static const luaL_Reg loader_methods[] = {{"epoch", guarded<loader_epoch>},
                                            {"batches", guarded<loader_batches>},
                                            {"size", guarded<loader_size>},
                                            {"labels", guarded<loader_labels>},
                                            {"tokens", guarded<loader_tokens>},
                                            {"cache_trunk", guarded<loader_cache_trunk>},
                                            {"drop_trunk", guarded<loader_drop_trunk>},
                                            {nullptr, nullptr}};
  static const luaL_Reg loader_meta[] = {{"__len", guarded<loader_size>}, {nullptr, nullptr}};
  define_type<Loader>(L, loader_methods, loader_meta);

  static const luaL_Reg functions[] = {{"read_table", guarded<read_table>}, {"dataset", guarded<dataset_new>},
                                       {"downsample", guarded<downsample>},   {"long_tail", guarded<long_tail>},
                                       {"split", guarded<split>},             {"loader", guarded<loader_new>},
                                       {nullptr, nullptr}};
  set_functions(L, functions);

  namespace streams = data::seed_streams;
  static const luaL_Reg seed_functions[] = {
      {"stage_loader", guarded<seed_stream<streams::stage_loader>>},
      {"pretraining_dropout", guarded<seed_stream<streams::pretraining_dropout>>},
      {"pretraining_replacements", guarded<seed_stream<streams::pretraining_replacements>>},
      {"training_masks", guarded<seed_stream<streams::training_masks>>},
      {"heldout_masks", guarded<seed_stream<streams::heldout_masks>>},
      {"paraphrase_request", guarded<paraphrase_request_seed>},
      {nullptr, nullptr}};
  lua_newtable(L);
  set_functions(L, seed_functions);
  lua_setfield(L, -2, "seed_streams");
}

}  // namespace

TWOSTAGE_LUA_BINDING(data, open);

}  // namespace ts::lua
