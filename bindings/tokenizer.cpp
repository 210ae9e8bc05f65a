// ts.tokenizer(path): a WordPiece tokenizer exact to Hugging Face's BertTokenizer.
#include "core/options.h"
#include "data.h"
#include "data/batching.h"
#include "data/loader.h"
#include "json.h"
#include "runtime.h"
#include "tensor.h"
#include "text/tokenizer.h"
#include "tokenizer.h"

namespace ts::lua {
namespace {

using text::Tokenizer;

Tokenizer& self(lua_State* L) { return check<Tokenizer>(L, 1); }

int tokenizer_new(lua_State* L) {
  const std::string path = check_string(L, 1);
  check_read(L, path);
  push_new<Tokenizer>(L, Tokenizer::from_path(path));
  return 1;
}

int method_tokenize(lua_State* L) {
  push_strings(L, self(L).tokenize(check_string(L, 2)));
  return 1;
}

// encode(text[, pair][, max_length]) -> ids, type_ids (Lua tables, with [CLS] and [SEP])
int method_encode(lua_State* L) {
  const std::string text = check_string(L, 2);
  std::optional<std::string> pair;
  if (lua_type(L, 3) == LUA_TSTRING) pair = lua_tostring(L, 3);
  const int max_length = static_cast<int>(luaL_optnumber(L, lua_type(L, 3) == LUA_TNUMBER ? 3 : 4, 0));
  const auto encoding = pair ? self(L).encode(text, std::string_view(*pair), max_length) : self(L).encode(text, {}, max_length);
  push_integers(L, encoding.ids);
  push_integers(L, encoding.type_ids);
  return 2;
}

// batch(texts[, {pairs = {...}, max_length = 128, pad_to = 128}]) -> {input_ids, attention_mask, token_type_ids,
// rows, size}, as a loader's batches
// Padded to the longest row unless pad_to fixes the length.
int method_batch(lua_State* L) {
  const auto texts = check_string_list(L, 2);
  const auto table = options_json(L, 3);
  const OptionReader read(table, "tokenizer:batch", {"pairs", "max_length", "pad_to"});
  const auto pairs = read.strings("pairs").value_or(std::vector<std::string>{});
  if (!pairs.empty() && pairs.size() != texts.size())
    fail("batch: {} texts but {} pairs", texts.size(), pairs.size());
  const int max_length = static_cast<int>(read.integer("max_length").value_or(0));
  const auto pad_to = read.integer("pad_to");
  const auto rows = data::token_rows(self(L).encode_batch(texts, pairs.empty() ? nullptr : &pairs, max_length), true);
  data::BatchingOptions options;
  options.pad_id = self(L).pad_id();
  if (pad_to) {
    options.padding = data::Padding::Fixed;
    options.fixed_length = static_cast<int64_t>(*pad_to);
  }
  std::vector<int64_t> all(rows.size());
  for (int64_t i = 0; i < rows.size(); ++i) all[i] = i;
  push_batch(L, data::collate(rows, all, options));
  return 1;
}

int method_vocab_size(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(self(L).vocab_size()));
  return 1;
}

int method_token_to_id(lua_State* L) {
  const auto id = self(L).find_id(check_string(L, 2));
  if (id)
    lua_pushnumber(L, *id);
  else
    lua_pushnil(L);
  return 1;
}

int method_id_to_token(lua_State* L) {
  const auto& token = self(L).id_to_token(static_cast<int32_t>(luaL_checknumber(L, 2)));
  lua_pushlstring(L, token.data(), token.size());
  return 1;
}

int method_special_ids(lua_State* L) {
  auto& tokenizer = self(L);
  lua_createtable(L, 0, 5);
  const std::pair<const char*, int32_t> ids[] = {{"cls", tokenizer.cls_id()},   {"sep", tokenizer.sep_id()},
                                                 {"pad", tokenizer.pad_id()},   {"mask", tokenizer.mask_id()},
                                                 {"unk", tokenizer.unk_id()}};
  for (const auto& [name, id] : ids) {
    lua_pushnumber(L, id);
    lua_setfield(L, -2, name);
  }
  return 1;
}

int method_save(lua_State* L) {
  const std::string folder = check_string(L, 2);
  check_write(L, folder);
  self(L).save(folder);
  return 0;
}

void open(lua_State* L) {
  static const luaL_Reg methods[] = {{"tokenize", guarded<method_tokenize>},
                                     {"encode", guarded<method_encode>},
                                     {"batch", guarded<method_batch>},
                                     {"vocab_size", guarded<method_vocab_size>},
                                     {"token_to_id", guarded<method_token_to_id>},
                                     {"id_to_token", guarded<method_id_to_token>},
                                     {"special_ids", guarded<method_special_ids>},
                                     {"save", guarded<method_save>},
                                     {nullptr, nullptr}};
  define_type<Tokenizer>(L, methods, nullptr);
  lua_pushcfunction(L, guarded<tokenizer_new>);
  lua_setfield(L, -2, "tokenizer");
}

}  // namespace

TWOSTAGE_LUA_BINDING(tokenizer, open);

}  // namespace ts::lua
