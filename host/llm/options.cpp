#include "llm/options.h"

#include "core/error.h"
#include "core/options.h"

namespace ts::llm {
namespace {

#define TWOSTAGE_REQUEST_FIELDS "temperature", "top_p", "seed", "max_tokens", "n", "model", "sample_index"

// The sampling fields a client's table and a request share, read through `read`.
RequestDefaults read_sampling(const OptionReader& read) {
  RequestDefaults fields;
  fields.temperature = read.number("temperature");
  fields.top_p = read.number("top_p");
  fields.seed = read.integer("seed");
  if (const auto tokens = read.integer("max_tokens")) {
    if (*tokens < 1) fail("{}: max_tokens must be at least 1, got {}", read.where(), *tokens);
    fields.max_tokens = static_cast<int>(*tokens);
  }
  return fields;
}

// A request's sampling fields through `read`, the client's defaults where it sets none.
void apply_fields(const OptionReader& read, const RequestDefaults& defaults, ChatRequest& request) {
  const auto own = read_sampling(read);
  request.temperature = own.temperature ? own.temperature : defaults.temperature;
  request.top_p = own.top_p ? own.top_p : defaults.top_p;
  request.seed = own.seed ? own.seed : defaults.seed;
  request.max_tokens = own.max_tokens ? own.max_tokens : defaults.max_tokens;
  if (const auto n = read.integer("n")) {
    if (*n < 1) fail("{}: option 'n' must be at least 1, got {}", read.where(), *n);
    request.n = static_cast<int>(*n);
  }
  if (const auto model = read.string("model")) request.model = *model;
  if (const auto sample = read.integer("sample_index")) {
    if (*sample < 0) fail("{}: option 'sample_index' must be 0 or more, got {}", read.where(), *sample);
    request.sample_index = static_cast<int>(*sample);
  }
}

}  // namespace

ClientOptions ClientOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where,
                          {"model", "base_url", "api_key_env", "concurrency", "rpm", "tpm", "timeout",
                           "connect_timeout", "max_retries", "temperature", "top_p", "seed", "max_tokens", "cache",
                           "backoff", "backoff_max"});
  ClientOptions options;
  auto& settings = options.settings;
  settings.model = read.string("model").value_or(settings.model);
  settings.base_url = read.string("base_url").value_or(settings.base_url);
  settings.api_key_env = read.string("api_key_env").value_or(settings.api_key_env);
  if (const auto value = read.integer("concurrency")) {
    if (*value < 1) fail("{}: concurrency must be at least 1, got {}", where, *value);
    settings.concurrency = static_cast<int>(*value);
  }
  const auto at_least_zero = [&](const char* key, const char* unit, double& field) {
    if (const auto value = read.number(key)) {
      if (*value < 0) fail("{}: {} must be {}, got {}", where, key, unit, *value);
      field = *value;
    }
  };
  const auto positive = [&](const char* key, double& field) {
    if (const auto value = read.number(key)) {
      if (!(*value > 0)) fail("{}: {} must be positive (seconds), got {}", where, key, *value);
      field = *value;
    }
  };
  at_least_zero("rpm", "0 (no limit) or more", settings.requests_per_minute);
  at_least_zero("tpm", "0 (no limit) or more", settings.tokens_per_minute);
  positive("timeout", settings.timeout_seconds);
  positive("connect_timeout", settings.connect_timeout_seconds);
  if (const auto value = read.integer("max_retries")) {
    if (*value < 0) fail("{}: max_retries must be 0 or more, got {}", where, *value);
    settings.max_attempts = static_cast<int>(*value) + 1;
  }
  at_least_zero("backoff", "0 or more (seconds)", settings.backoff_initial_seconds);
  at_least_zero("backoff_max", "0 or more (seconds)", settings.backoff_max_seconds);
  settings.cache_path = read.string("cache").value_or("");
  options.defaults = read_sampling(read);
  return options;
}

MapCallOptions MapCallOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"label", "progress", "log_interval", "on_abort"});
  MapCallOptions options;
  options.label = read.string("label").value_or(options.label);
  options.progress = read.boolean("progress").value_or(options.progress);
  options.log_interval = read.number("log_interval").value_or(options.log_interval);
  const auto on_abort = read.string("on_abort").value_or("error");
  if (on_abort != "error" && on_abort != "return")
    fail("{}: on_abort must be \"error\" or \"return\", got '{}'", where, on_abort);
  options.return_on_abort = on_abort == "return";
  return options;
}

std::vector<Message> messages_from_json(const nlohmann::json& messages) {
  if (messages.is_string()) return {{"user", messages.get<std::string>()}};
  // An empty Lua table reaches JSON as an empty object.
  if (!messages.is_array() && !(messages.is_object() && messages.empty()))
    fail("messages: expected a string (one user message) or a list of {{role = ..., content = ...}}, got {}",
         messages.type_name());
  std::vector<Message> out;
  if (messages.is_array()) {
    for (const auto& item : messages) {
      const auto where = fmt::format("messages[{}]", out.size() + 1);
      if (!item.is_object()) fail("{}: expected {{role = ..., content = ...}}", where);
      const OptionReader read(item, where, {"role", "content"});
      auto content = read.string("content");
      if (!content) fail("{} has no content", where);
      const auto role = read.string("role").value_or("user");
      if (role != "system" && role != "user" && role != "assistant")
        fail("{}: role '{}' is not system, user or assistant", where, role);
      out.push_back({role, std::move(*content)});
    }
  }
  if (out.empty()) fail("messages: the list is empty");
  return out;
}

ChatRequest chat_request_from_json(const nlohmann::json& messages, const nlohmann::json& fields,
                                   const RequestDefaults& defaults, const std::string& where) {
  const OptionReader read(fields, where, {TWOSTAGE_REQUEST_FIELDS});
  ChatRequest request;
  request.messages = messages_from_json(messages);
  apply_fields(read, defaults, request);
  return request;
}

ChatRequest map_request_from_json(const nlohmann::json& item, const RequestDefaults& defaults,
                                  const std::string& where) {
  static const nlohmann::json none;
  ChatRequest request;
  if (item.is_string()) {
    request.messages = {{"user", item.get<std::string>()}};
    apply_fields(OptionReader(none, where, {}), defaults, request);
    return request;
  }
  if (!item.is_object())
    fail("{}: expected a prompt string or a table {{prompt = ... or messages = ...}}, got {}", where, item.type_name());
  const OptionReader read(item, where, {"prompt", "messages", TWOSTAGE_REQUEST_FIELDS});
  const auto* messages = read.find("messages");
  if (messages) request.messages = messages_from_json(*messages);
  if (const auto prompt = read.string("prompt")) {
    if (messages) fail("{}: give either prompt or messages, not both", where);
    request.messages = {{"user", *prompt}};
  } else if (!messages) {
    fail("{}: no prompt and no messages", where);
  }
  apply_fields(read, defaults, request);
  return request;
}

}  // namespace ts::llm
