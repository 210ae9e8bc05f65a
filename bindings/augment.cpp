// Offline text augmenters and the LLM reply cleaner in Lua:
//   ts.eda{seed = 42, alpha = 0.1, wordnet = PATH}                 -> augmenter; augmenter:augment(text, n) -> list
//   ts.contextual_augmenter{model = DIR, fraction = 0.15, top_k = 10, seed = 42}
//                                                                  -> augmenter; :augment(text, n), :augment_many
//   ts.clean_paraphrase(reply, source[, earlier[, prompt]])        -> text, or nil, reason, cleaned text
//   ts.paraphrase_filter([{prompt = ...}])                         -> filter; :add(source, reply), :counts()
//   ts.pandas_sample_positions(n, k, seed)                         -> 1-based positions pandas' sample() takes
#include <cmath>

#include "data/sampling.h"
#include "json.h"
#include "augment/clean.h"
#include "augment/eda.h"
#include "augment/contextual_substitution.h"
#include "core/options.h"
#include "runtime.h"

namespace ts::lua {

TWOSTAGE_LUA_TYPE(augment::ContextualSubstitution, "twostage.ContextualAugmenter");
TWOSTAGE_LUA_TYPE(augment::ParaphraseFilter, "twostage.ParaphraseFilter");

namespace {

int count_argument(lua_State* L, int index) {
  const double n = luaL_optnumber(L, index, 1);
  if (n < 0 || n != std::floor(n)) fail("the number of variants must be a whole number of 0 or more, got {}", n);
  return static_cast<int>(n);
}

// ---- EDA ----------------------------------------------------------------------------------------------------------

struct EdaAugmenter {
  static constexpr const char* kLuaType = "twostage.Eda";
  augment::Eda eda;
  augment::EdaOptions options;
};

// eda{seed = 42, alpha = 0.1, alpha_sr, alpha_ri, alpha_rs, p_rd, wordnet = PATH} (augment::EdaConfig)
int eda_new(lua_State* L) {
  const auto config = augment::EdaConfig::from_json(options_json(L, 1), "eda");
  if (!config.wordnet.empty()) check_read(L, config.wordnet);
  const auto folder = config.wordnet.empty() ? augment::WordNet::default_directory() : config.wordnet;
  auto wordnet = augment::WordNet::shared(folder);
  push_new<EdaAugmenter>(L, EdaAugmenter{augment::Eda(config.seed, std::move(wordnet)), config.options});
  return 1;
}

// augment(text[, n = 1]) -> up to n variants (none for a text with no letters)
int eda_augment(lua_State* L) {
  auto& augmenter = check<EdaAugmenter>(L, 1);
  const std::string text = check_string(L, 2);
  augment::EdaOptions options = augmenter.options;
  options.num_aug = count_argument(L, 3);
  push_strings(L, options.num_aug > 0 ? augmenter.eda.augment(text, options) : std::vector<std::string>{});
  return 1;
}

// ---- contextual substitution ---------------------------------------------------------------------------------------

// contextual_augmenter{model = DIR, fraction = 0.15, top_k = 10, ...} (augment::ContextualSubstitutionConfig)
int contextual_new(lua_State* L) {
  const auto config = augment::ContextualSubstitutionConfig::from_json(options_json(L, 1), "contextual_augmenter");
  check_read(L, config.model);
  const torch::Device device(config.device);
  push_new<augment::ContextualSubstitution>(
      L, augment::ContextualSubstitution::load(config.model, config.seed, config.options, device));
  return 1;
}

int contextual_augment(lua_State* L) {
  auto& augmenter = check<augment::ContextualSubstitution>(L, 1);
  push_strings(L, augmenter.augment(check_string(L, 2), count_argument(L, 3)));
  return 1;
}

// augment_many(texts[, n = 1]) -> one list of variants per text, computed in batches
int contextual_augment_many(lua_State* L) {
  auto& augmenter = check<augment::ContextualSubstitution>(L, 1);
  const auto results = augmenter.augment(check_string_list(L, 2), count_argument(L, 3));
  lua_createtable(L, static_cast<int>(results.size()), 0);
  for (size_t i = 0; i < results.size(); ++i) {
    push_strings(L, results[i]);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// ---- the reply cleaner -------------------------------------------------------------------------------------------

// Pushes `text` when accepted, else nil, the reason and the cleaned text (for inspection).
int push_cleaned(lua_State* L, const augment::Cleaned& cleaned) {
  if (cleaned.accepted()) {
    lua_pushlstring(L, cleaned.text.data(), cleaned.text.size());
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, augment::rejection_name(cleaned.rejection));
  lua_pushlstring(L, cleaned.text.data(), cleaned.text.size());
  return 3;
}

// clean_paraphrase(reply, source[, earlier accepted paraphrases of the same source[, prompt the reply answers]])
int clean_paraphrase(lua_State* L) {
  const std::string reply = check_string(L, 1);
  const std::string source = check_string(L, 2);
  const auto earlier = lua_isnoneornil(L, 3) ? std::vector<std::string>{} : check_string_list(L, 3);
  const std::string prompt = lua_isnoneornil(L, 4) ? std::string(augment::kDefaultInstruction) : check_string(L, 4);
  return push_cleaned(L, augment::clean_paraphrase(reply, source, earlier, prompt));
}

// paraphrase_filter{prompt = the prompt the replies answer (default: the reference's)}: a reply that repeats that
// prompt's instruction is an echo.
int filter_new(lua_State* L) {
  const auto options = options_json(L, 1);
  const OptionReader read(options, "paraphrase_filter", {"prompt"});
  push_new<augment::ParaphraseFilter>(L, read.string("prompt").value_or(std::string(augment::kDefaultInstruction)));
  return 1;
}

// add(source, reply): cleans the reply and remembers it when accepted (later equal ones are duplicates).
int filter_add(lua_State* L) {
  auto& filter = check<augment::ParaphraseFilter>(L, 1);
  return push_cleaned(L, filter.add(check_string(L, 2), check_string(L, 3)));
}

// counts() -> {accepted = n, empty = n, refusal = n, echoed_prompt = n, same_as_source = n, duplicate = n}
int filter_counts(lua_State* L) {
  push_json(L, check<augment::ParaphraseFilter>(L, 1).counts_json());
  return 1;
}

// ---- sampling ----------------------------------------------------------------------------------------------------

// pandas_sample_positions(n, k, seed) -> the 1-based positions DataFrame.sample(n=k, random_state=seed) takes from
// a frame of n rows, in sample order.
int pandas_sample_positions(lua_State* L) {
  const double n = luaL_checknumber(L, 1), k = luaL_checknumber(L, 2), seed = luaL_optnumber(L, 3, 42);
  if (n < 0 || k < 0 || k > n || n != std::floor(n) || k != std::floor(k))
    fail("pandas_sample_positions: cannot take {} of {} rows", k, n);
  if (seed < 0 || seed > 4294967295.0 || seed != std::floor(seed))
    fail("pandas_sample_positions: seed {} is not a 32-bit whole number", seed);
  const auto positions = data::pandas_sample_positions(static_cast<int64_t>(n), static_cast<int64_t>(k),
                                                       static_cast<uint32_t>(seed));
  push_integers(L, positions, 1);
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg eda_methods[] = {{"augment", guarded<eda_augment>}, {nullptr, nullptr}};
  define_type<EdaAugmenter>(L, eda_methods, nullptr);
  static const luaL_Reg contextual_methods[] = {{"augment", guarded<contextual_augment>},
                                                {"augment_many", guarded<contextual_augment_many>},
                                                {nullptr, nullptr}};
  define_type<augment::ContextualSubstitution>(L, contextual_methods, nullptr);
  static const luaL_Reg filter_methods[] = {
      {"add", guarded<filter_add>}, {"counts", guarded<filter_counts>}, {nullptr, nullptr}};
  define_type<augment::ParaphraseFilter>(L, filter_methods, nullptr);

  static const luaL_Reg functions[] = {{"eda", guarded<eda_new>},
                                       {"contextual_augmenter", guarded<contextual_new>},
                                       {"clean_paraphrase", guarded<clean_paraphrase>},
                                       {"paraphrase_filter", guarded<filter_new>},
                                       {"pandas_sample_positions", guarded<pandas_sample_positions>},
                                       {nullptr, nullptr}};
  set_functions(L, functions);
}

}  // namespace

TWOSTAGE_LUA_BINDING(augment, open);

}  // namespace ts::lua
