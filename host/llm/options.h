#pragma once
// What a recipe's tables ask of the LLM client, read strictly (core/options.h): the client's own options, and the
// requests of chat() and map() with their sampling fields over the client's defaults.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llm/client.h"

namespace ts::llm {

// Sampling fields a client applies to every request that does not set them itself.
struct RequestDefaults {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<std::int64_t> seed;
  std::optional<int> max_tokens;
};

// What a recipe's client table sets: the client's settings and its requests' defaults.
struct ClientOptions {
  ClientSettings settings;
  RequestDefaults defaults;

  // {model, base_url, api_key_env, concurrency, rpm, tpm, timeout, connect_timeout, max_retries, backoff,
  //  backoff_max, cache, temperature, top_p, seed, max_tokens}; unknown keys are errors naming `where`.
  static ClientOptions from_json(const nlohmann::json& options, const std::string& where);
};

// A recipe's map() call, besides its requests: {label = "llm" (names the batch in the log), progress = true,
// log_interval = 10 (seconds), on_abort = "error" | "return" (what a rejected key does: raise, or return the results
// so far)}.
struct MapCallOptions {
  std::string label = "llm";
  bool progress = true;
  double log_interval = 10.0;
  bool return_on_abort = false;

  static MapCallOptions from_json(const nlohmann::json& options, const std::string& where);
};

// A chat's messages: a string (one user message) or a list of {role = "system" | "user" | "assistant" (default
// "user"), content = text}.
std::vector<Message> messages_from_json(const nlohmann::json& messages);

// chat(messages, fields): the messages, and the sampling fields {temperature, top_p, seed, max_tokens, n, model,
// sample_index} of `fields` (null: none) over the client's defaults. Unknown keys are errors naming `where`.
ChatRequest chat_request_from_json(const nlohmann::json& messages, const nlohmann::json& fields,
                                   const RequestDefaults& defaults, const std::string& where);

// One request of map(): a string (one user message) or {prompt = text | messages = ..., sampling fields}; `where`
// names it in errors ("requests[3]").
ChatRequest map_request_from_json(const nlohmann::json& request, const RequestDefaults& defaults,
                                  const std::string& where);

}  // namespace ts::llm
