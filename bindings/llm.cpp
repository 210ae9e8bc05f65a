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
#include "llm/options.h"
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
  luaL_checkany(L, 2);
  const auto request = llm::chat_request_from_json(to_json(L, 2), options_json(L, 3), client.defaults, "chat");
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
  const auto options = llm::MapCallOptions::from_json(options_json(L, 3), "map");

  const size_t count = lua_objlen(L, 2);
  std::vector<llm::ChatRequest> requests;
  requests.reserve(count);
  for (size_t i = 1; i <= count; ++i) {
    lua_rawgeti(L, 2, static_cast<int>(i));
    const auto request = to_json(L, lua_gettop(L));
    requests.push_back(llm::map_request_from_json(request, client.defaults, fmt::format("requests[{}]", i)));
    lua_pop(L, 1);
  }
  const auto results =
      client.client->map(requests, {},
                         options.progress ? progress_reporter(options.label, options.log_interval)
                                          : llm::ProgressCallback{});
  const auto stats = client.client->stats();
  if (stats.aborted && !options.return_on_abort) {
    std::size_t completed = 0;
    for (const auto& result : results) completed += result.ok();
    const std::string cache = client.client->settings().cache_path;
    fail("{}: {}. {} of {} requests had completed{}; fix the key in ${} and run again.", options.label,
         stats.abort_reason, completed, results.size(),
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
