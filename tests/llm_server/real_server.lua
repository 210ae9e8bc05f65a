-- ts.llm_client against a real OpenAI-compatible server (llama.cpp's, started by run.sh): replies, n, seed,
-- usage accounting, the cache and a re-run that pays nothing, and the answers where llama.cpp differs from the
-- OpenAI API (each also a case of tests/llm/fake_server.h).
--   twostage run tests/llm_server/real_server.lua --set base_url=http://127.0.0.1:PORT/v1 --set slots=2
local ts = require "twostage"
local settings = ts.settings {
  base_url = {"", "the server's OpenAI-compatible endpoint"},
  slots = {2, "the server's parallel slots (its largest n)"},
}
local function check(condition, what, value)
  if not condition then error(what .. (value ~= nil and (": " .. ts.json_encode(value)) or ""), 0) end
end
local cache = ts.run_dir() .. "/real_cache.sqlite"
local function client()
  return ts.llm_client {model = "smollm2", base_url = settings.base_url, api_key_env = "", concurrency = 2,
                        temperature = 0.8, max_tokens = 40, cache = cache, max_retries = 1}
end
local prompt = "Rephrase the following phrase into a different phrase with similar meaning.\n\n---\n\n"
local sources = {"a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés.",
                 "an intelligent and moving film."}

-- One chat with n = slots: as many replies, usage reported once for the prompt.
local first = client()
local text, info = first:chat({{role = "user", content = prompt .. sources[1]}}, {n = settings.slots, seed = 11})
check(info.ok and #info.texts == settings.slots, "chat with n returns n replies", info)
for _, reply in ipairs(info.texts) do check(reply:find("%S"), "a reply is text", info.texts) end
check(info.prompt_tokens > 10 and info.completion_tokens > 0 and
      info.total_tokens == info.prompt_tokens + info.completion_tokens, "usage is reported and adds up", info)
-- llama.cpp's usage counts only the first choice's completion tokens when n > 1 (the OpenAI API counts all):
-- completion_tokens is at most max_tokens even for two replies. Token figures for n > 1 are a lower bound there.
check(info.completion_tokens <= 40, "llama.cpp reports the first choice's completion tokens only", info)

-- A seed makes a request reproducible: the same request under another sample_index (so not from the cache) gives
-- the same reply.
local a = first:chat({{role = "user", content = prompt .. sources[2]}}, {seed = 5, sample_index = 1})
local b = first:chat({{role = "user", content = prompt .. sources[2]}}, {seed = 5, sample_index = 2})
check(a == b, "the same seed gives the same reply", {a, b})
-- llama.cpp samples choice i with seed + i: choice 2 under seed 5 is choice 1 under seed 6 (so augment.lua gives
-- each request's choices seeds of their own).
local _, pair = first:chat({{role = "user", content = prompt .. sources[3]}}, {n = 2, seed = 5})
local next_seed = first:chat({{role = "user", content = prompt .. sources[3]}}, {seed = 6})
check(pair.texts[2] == next_seed, "choice 2 of seed 5 is choice 1 of seed 6", {pair.texts, next_seed})

-- n above the server's slots: llama.cpp answers 400 invalid_request_error; the item fails with its message and is
-- not retried.
local too_many = first:map({{prompt = prompt .. sources[3], n = settings.slots + 1}}, {progress = false})[1]
check(not too_many.ok and too_many.http_status == 400 and too_many.attempts == 1, "n above the slots is a 400",
      too_many)
check(too_many.error:find("'n'", 1, true), "the 400 names the field n", too_many.error)

-- map: every source, then again from a fresh client on the same cache: nothing sent, nothing paid.
local requests = {}
for i, source in ipairs(sources) do requests[i] = {prompt = prompt .. source, seed = 100 + i} end
local results = first:map(requests, {progress = false})
local paid = first:stats()
for i, result in ipairs(results) do check(result.ok and result.text:find("%S"), "map item " .. i, result) end
check(paid.requests_sent == 9 and paid.failures == 1 and paid.prompt_tokens > 0, "stats of the first client", paid)
local again = client()
local cached = again:map(requests, {progress = false})
local second = again:stats()
check(second.requests_sent == 0 and second.cache_hits == #requests and second.total_tokens == 0,
      "a re-run is served from the cache and pays nothing", second)
for i, result in ipairs(cached) do
  check(result.cached and result.text == results[i].text and result.total_tokens == results[i].total_tokens,
        "a cached reply is the same reply with its original usage", {result, results[i]})
end
print(("real server: %d requests, %d prompt + %d completion tokens; the re-run: %d sent, %d from the cache"):format(
  paid.requests_sent, paid.prompt_tokens, paid.completion_tokens, second.requests_sent, second.cache_hits))
