// ts.llm_client{...}: the OpenAI-compatible chat-completions client (host/llm/client.h) in Lua.
//
//   local client = ts.llm_client{model = "gpt-3.5-turbo", concurrency = 32, cache = ts.run_dir() .. "/llm.sqlite"}
//   local text, info = client:chat("Rephrase: a fine film")
//   local results = client:map({"first prompt", {prompt = "second", sample_index = 1}}, {label = "paraphrase"})
//   for i, r in ipairs(results) do if r.ok then print(r.text) else print(r.error) end end
//   print(client:stats().cache_hits)
//
// The API key is read by the host from the environment variable named by api_key_env, at the first request. It is
// never handed to Lua: no function returns it and the host redacts it from every error message.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <variant>

#include "core/log.h"
#include "json.h"
#include "llm/client.h"
#include "runtime.h"

namespace ts::lua {
namespace {

using llm::RequestDefaults;

struct LlmClient {
  static constexpr const char* kLuaType = "twostage.LlmClient";
  std::unique_ptr<llm::Client> client;
  RequestDefaults defaults;
};

LlmClient& self(lua_State* L) { return check<LlmClient>(L, 1); }

std::vector<llm::Message> check_messages(lua_State* L, int index) {
  index = index < 0 ? lua_gettop(L) + index + 1 : index;
  if (lua_type(L, index) == LUA_TSTRING) return {{"user", check_string(L, index)}};
  if (lua_type(L, index) != LUA_TTABLE)
    fail("messages: expected a string (one user message) or a list of {{role = ..., content = ...}}, got {}",
         luaL_typename(L, index));
  std::vector<llm::Message> messages;
  const size_t count = lua_objlen(L, index);
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, index, static_cast<int>(i));
    const int item = lua_gettop(L);
    if (!lua_istable(L, item)) fail("messages[{}]: expected {{role = ..., content = ...}}", i);
    auto role = opt_string_field(L, item, "role");
    auto content = opt_string_field(L, item, "content");
    if (!content) fail("messages[{}] has no content", i);
    if (role && *role != "system" && *role != "user" && *role != "assistant")
      fail("messages[{}]: role '{}' is not system, user or assistant", i, *role);
    messages.push_back({role.value_or("user"), std::move(*content)});
    lua_pop(L, 1);
  }
  if (messages.empty()) fail("messages: the list is empty");
  return messages;
}

// Sampling fields of the table at `index` (0: no table), with the client's defaults where unset.
void apply_fields(lua_State* L, int index, const RequestDefaults& defaults, llm::ChatRequest& request) {
  request.temperature = defaults.temperature;
  request.top_p = defaults.top_p;
  request.seed = defaults.seed;
  request.max_tokens = defaults.max_tokens;
  if (index == 0) return;
  if (auto value = opt_number_field(L, index, "temperature")) request.temperature = *value;
  if (auto value = opt_number_field(L, index, "top_p")) request.top_p = *value;
  if (auto value = opt_integer_field(L, index, "seed")) request.seed = *value;
  if (auto value = opt_integer_field(L, index, "max_tokens")) {
    if (*value < 1) fail("option 'max_tokens' must be at least 1, got {}", *value);
    request.max_tokens = static_cast<int>(*value);
  }
  if (auto n = opt_integer_field(L, index, "n")) {
    if (*n < 1) fail("option 'n' must be at least 1, got {}", *n);
    request.n = static_cast<int>(*n);
  }
  if (auto model = opt_string_field(L, index, "model")) request.model = *model;
  if (auto sample = opt_integer_field(L, index, "sample_index")) {
    if (*sample < 0) fail("option 'sample_index' must be 0 or more, got {}", *sample);
    request.sample_index = static_cast<int>(*sample);
  }
}

#define REQUEST_FIELDS "temperature", "top_p", "seed", "max_tokens", "n", "model", "sample_index"

// One request of map(): a string (one user message) or {prompt = ... | messages = ..., sampling fields}.
llm::ChatRequest check_request(lua_State* L, int index, std::size_t position, const RequestDefaults& defaults) {
  llm::ChatRequest request;
  if (lua_type(L, index) == LUA_TSTRING) {
    request.messages = {{"user", check_string(L, index)}};
    apply_fields(L, 0, defaults, request);
    return request;
  }
  if (!lua_istable(L, index))
    fail("requests[{}]: expected a prompt string or a table {{prompt = ... or messages = ...}}, got {}", position,
         luaL_typename(L, index));
  check_option_keys(L, index, {"prompt", "messages", REQUEST_FIELDS}, fmt::format("requests[{}]", position).c_str());
  lua_getfield(L, index, "messages");
  const bool has_messages = !lua_isnil(L, -1);
  if (has_messages) request.messages = check_messages(L, -1);
  lua_pop(L, 1);
  if (auto prompt = opt_string_field(L, index, "prompt")) {
    if (has_messages) fail("requests[{}]: give either prompt or messages, not both", position);
    request.messages = {{"user", *prompt}};
  } else if (!has_messages) {
    fail("requests[{}]: no prompt and no messages", position);
  }
  apply_fields(L, index, defaults, request);
  return request;
}

void push_result(lua_State* L, const llm::ChatResult& result) {
  lua_createtable(L, 0, 12);
  lua_pushboolean(L, result.ok());
  lua_setfield(L, -2, "ok");
  lua_pushstring(L, llm::outcome_name(result.outcome));
  lua_setfield(L, -2, "outcome");
  if (!result.texts.empty()) {
    lua_pushlstring(L, result.texts.front().data(), result.texts.front().size());
    lua_setfield(L, -2, "text");
  }
  push_json(L, result.texts);
  lua_setfield(L, -2, "texts");
  if (!result.error.empty()) {
    lua_pushlstring(L, result.error.data(), result.error.size());
    lua_setfield(L, -2, "error");
  }
  lua_pushboolean(L, result.from_cache);
  lua_setfield(L, -2, "cached");
  lua_pushnumber(L, result.attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, result.http_status);
  lua_setfield(L, -2, "http_status");
  lua_pushnumber(L, static_cast<lua_Number>(result.usage.prompt_tokens));
  lua_setfield(L, -2, "prompt_tokens");
  lua_pushnumber(L, static_cast<lua_Number>(result.usage.completion_tokens));
  lua_setfield(L, -2, "completion_tokens");
  lua_pushnumber(L, static_cast<lua_Number>(result.usage.total_tokens));
  lua_setfield(L, -2, "total_tokens");
}

// The progress of map(): a bar redrawn in place on a terminal; otherwise an "llm.progress" log event every
// `interval` seconds and at the end, so that it reaches log.txt and the JSON log too (and --quiet hides it).
llm::ProgressCallback progress_reporter(const std::string& label, double interval) {
  if (::isatty(2)) return llm::terminal_progress(label, interval);
  auto last_logged = std::make_shared<double>(0.0);
  return [label, interval, last_logged](const llm::Progress& progress) {
    if (!progress.finished && progress.elapsed_seconds - *last_logged < interval) return;
    *last_logged = progress.elapsed_seconds;
    log::event(spdlog::level::info, "llm.progress", label + ": " + llm::format_progress(progress),
               {{"label", label},
                {"done", progress.done},
                {"total", progress.total},
                {"failed", progress.failed},
                {"cache_hits", progress.cache_hits},
                {"retries", progress.retries},
                {"total_tokens", progress.tokens.total_tokens},
                {"requests_per_second", progress.requests_per_second},
                {"eta_seconds", progress.eta_seconds}});
  };
}

// A request carries the user's API key and whatever text the recipe puts in it, so it goes only to the default
// endpoint or to one the user named: on the command line (a --set value) or in OPENAI_BASE_URL.
void check_endpoint(lua_State* L, const std::string& base_url) {
  if (run_state(L).options.unsafe || base_url == llm::ClientSettings{}.base_url || given_by_user(L, base_url)) return;
  const char* from_environment = std::getenv("OPENAI_BASE_URL");
  if (from_environment && base_url == from_environment) return;
  std::string origin = "a value the recipe chose";
  for (const auto& [name, setting] : run_state(L).settings) {
    const auto* text = std::get_if<std::string>(&setting.value);
    if (text && *text == base_url) origin = fmt::format("the recipe's own value of setting '{}'", name);
  }
  fail("llm_client: refused to send requests to '{}', {}: a recipe's LLM client talks only to {} or to a base_url "
       "you give on the command line (--set base_url=URL) or in OPENAI_BASE_URL; --unsafe lifts this",
       base_url, origin, llm::ClientSettings{}.base_url);
}

// llm_client{model, base_url, api_key_env, concurrency, ...} (llm::ClientOptions): the endpoint and the cache file
// are checked against the run's rules here.
int client_new(lua_State* L) {
  auto options = llm::ClientOptions::from_json(options_json(L, 1), "llm_client");
  check_endpoint(L, options.settings.base_url);
  if (const auto& cache = options.settings.cache_path; !cache.empty()) {
    // The cache is a file the run writes: it must be inside the run folder or named on the command line.
    check_write(L, cache);
    const auto folder = std::filesystem::path(cache).parent_path();
    if (!folder.empty()) std::filesystem::create_directories(folder);
  }
  auto client = std::make_unique<llm::Client>(options.settings);
  push_new<LlmClient>(L, LlmClient{std::move(client), options.defaults});
  return 1;
}

// chat(messages[, opts]) -> text, info. messages: a string (one user message) or a list of {role, content}.
// A request that fails (after its retries) raises an error with the server's message.
int method_chat(lua_State* L) {
  auto& client = self(L);
  check_option_keys(L, 3, {REQUEST_FIELDS}, "chat");
  llm::ChatRequest request;
  request.messages = check_messages(L, 2);
  apply_fields(L, lua_isnoneornil(L, 3) ? 0 : 3, client.defaults, request);
  const auto result = client.client->complete(request);
  if (!result.ok()) fail("chat: {}", result.error);
  lua_pushlstring(L, result.texts.front().data(), result.texts.front().size());
  push_result(L, result);
  return 2;
}

// map(requests[, {label = "llm", progress = true, log_interval = 10, on_abort = "error"}]) -> results in input order.
// Each result: {ok, outcome, text, texts, error, cached, attempts, http_status, prompt_tokens, completion_tokens,
// total_tokens}. A failed item is a result with ok = false and its error; the run goes on. When the server rejects
// the credentials (401/403), the batch stops at once and map raises an error, unless on_abort = "return".
int method_map(lua_State* L) {
  auto& client = self(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  check_option_keys(L, 3, {"label", "progress", "log_interval", "on_abort"}, "map");
  const std::string label = opt_string_field(L, 3, "label").value_or("llm");
  const bool progress = opt_bool_field(L, 3, "progress").value_or(true);
  const double log_interval = opt_number_field(L, 3, "log_interval").value_or(10.0);
  const std::string on_abort = opt_string_field(L, 3, "on_abort").value_or("error");
  if (on_abort != "error" && on_abort != "return")
    fail("map: on_abort must be \"error\" or \"return\", got '{}'", on_abort);

  const size_t count = lua_objlen(L, 2);
  std::vector<llm::ChatRequest> requests;
  requests.reserve(count);
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, 2, static_cast<int>(i));
    requests.push_back(check_request(L, lua_gettop(L), i, client.defaults));
    lua_pop(L, 1);
  }
  const auto results =
      client.client->map(requests, {}, progress ? progress_reporter(label, log_interval) : llm::ProgressCallback{});
  const auto stats = client.client->stats();
  if (stats.aborted && on_abort == "error") {
    std::size_t completed = 0;
    for (const auto& result : results) completed += result.ok();
    const std::string cache = client.client->settings().cache_path;
    fail("{}: {}. {} of {} requests had completed{}; fix the key in ${} and run again.", label, stats.abort_reason,
         completed, results.size(),
         cache.empty() ? " (no cache: they will be asked again)" : " and are kept in the cache " + cache,
         client.client->settings().api_key_env);
  }
  lua_createtable(L, static_cast<int>(results.size()), 0);
  for (size_t i = 0; i < results.size(); ++i) {
    push_result(L, results[i]);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

int method_stats(lua_State* L) {
  const auto stats = self(L).client->stats();
  push_json(L, {{"requests_sent", stats.requests_sent},
                {"retries", stats.retries},
                {"cache_hits", stats.cache_hits},
                {"succeeded", stats.succeeded},
                {"failures", stats.failures},
                {"prompt_tokens", stats.tokens.prompt_tokens},
                {"completion_tokens", stats.tokens.completion_tokens},
                {"total_tokens", stats.tokens.total_tokens},
                {"aborted", stats.aborted}});
  if (!stats.abort_reason.empty()) {
    lua_pushlstring(L, stats.abort_reason.data(), stats.abort_reason.size());
    lua_setfield(L, -2, "abort_reason");
  }
  return 1;
}

int method_reset_stats(lua_State* L) {
  self(L).client->reset_stats();
  return 0;
}

// The settings a report may show: never the key, only the name of its variable.
int method_settings(lua_State* L) {
  const auto& settings = self(L).client->settings();
  push_json(L, {{"model", settings.model},
                {"base_url", settings.base_url},
                {"api_key_env", settings.api_key_env},
                {"concurrency", settings.concurrency},
                {"rpm", settings.requests_per_minute},
                {"tpm", settings.tokens_per_minute},
                {"timeout", settings.timeout_seconds},
                {"max_retries", settings.max_attempts - 1},
                {"cache", settings.cache_path}});
  return 1;
}

int method_tostring(lua_State* L) {
  const auto& settings = self(L).client->settings();
  const auto text = fmt::format("{}({} at {})", LuaType<LlmClient>::name, settings.model, settings.base_url);
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

void open(lua_State* L) {
  static const luaL_Reg methods[] = {{"chat", guarded<method_chat>},
                                     {"map", guarded<method_map>},
                                     {"stats", guarded<method_stats>},
                                     {"reset_stats", guarded<method_reset_stats>},
                                     {"settings", guarded<method_settings>},
                                     {nullptr, nullptr}};
  static const luaL_Reg metamethods[] = {{"__tostring", guarded<method_tostring>}, {nullptr, nullptr}};
  define_type<LlmClient>(L, methods, metamethods);
  lua_pushcfunction(L, guarded<client_new>);
  lua_setfield(L, -2, "llm_client");
}

}  // namespace

TWOSTAGE_LUA_BINDING(llm, open);

}  // namespace ts::lua
