// What a recipe's tables ask of the LLM client (llm/options.h): the client's options, chat() and map() requests
// with their sampling fields over the client's defaults, map()'s own options; every misspelt key an error naming it.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "llm/options.h"

using namespace ts::llm;
using nlohmann::json;

TEST_CASE("client options are read strictly: settings, their limits, and the requests' defaults") {
  const auto options = ClientOptions::from_json(
      json{{"model", "m"}, {"base_url", "http://127.0.0.1:9/v1"}, {"api_key_env", ""}, {"concurrency", 4},
           {"rpm", 60}, {"tpm", 0}, {"timeout", 5}, {"connect_timeout", 1}, {"max_retries", 2}, {"backoff", 0.5},
           {"backoff_max", 2}, {"cache", "runs/x/llm.sqlite"}, {"temperature", 0.7}, {"top_p", 0.9}, {"seed", 11},
           {"max_tokens", 64}},
      "llm_client");
  CHECK(options.settings.model == "m");
  CHECK(options.settings.base_url == "http://127.0.0.1:9/v1");
  CHECK(options.settings.api_key_env.empty());
  CHECK(options.settings.concurrency == 4);
  CHECK(options.settings.requests_per_minute == 60);
  CHECK(options.settings.timeout_seconds == 5);
  CHECK(options.settings.connect_timeout_seconds == 1);
  CHECK(options.settings.max_attempts == 3);
  CHECK(options.settings.backoff_initial_seconds == 0.5);
  CHECK(options.settings.backoff_max_seconds == 2);
  CHECK(options.settings.cache_path == "runs/x/llm.sqlite");
  CHECK(options.defaults.temperature == 0.7);
  CHECK(options.defaults.top_p == 0.9);
  CHECK(options.defaults.seed == 11);
  CHECK(options.defaults.max_tokens == 64);
  const auto defaults = ClientOptions::from_json(nullptr, "llm_client");
  CHECK(defaults.settings.base_url == ClientSettings{}.base_url);
  CHECK(defaults.settings.cache_path.empty());
  CHECK_FALSE(defaults.defaults.temperature.has_value());
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"modle", "x"}}, "llm_client"),
                    Catch::Contains("llm_client: unknown option 'modle' (known: model, base_url,"));
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"concurrency", 0}}, "llm_client"),
                    "llm_client: concurrency must be at least 1, got 0");
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"rpm", -1}}, "llm_client"),
                    "llm_client: rpm must be 0 (no limit) or more, got -1");
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"timeout", 0}}, "llm_client"),
                    "llm_client: timeout must be positive (seconds), got 0");
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"max_retries", -1}}, "llm_client"),
                    "llm_client: max_retries must be 0 or more, got -1");
  CHECK_THROWS_WITH(ClientOptions::from_json(json{{"max_tokens", 0}}, "llm_client"),
                    "llm_client: max_tokens must be at least 1, got 0");
}

TEST_CASE("a map request is a prompt string or a table of prompt or messages, with sampling fields over the defaults") {
  RequestDefaults defaults;
  defaults.temperature = 0.7;
  defaults.seed = 5;
  defaults.max_tokens = 64;
  const auto plain = map_request_from_json(json("Rephrase: a fine film"), defaults, "requests[1]");
  REQUIRE(plain.messages.size() == 1);
  CHECK(plain.messages[0].role == "user");
  CHECK(plain.messages[0].content == "Rephrase: a fine film");
  CHECK(plain.temperature == 0.7);
  CHECK(plain.seed == 5);
  CHECK(plain.max_tokens == 64);
  CHECK_FALSE(plain.n.has_value());

  const auto full = map_request_from_json(
      json{{"prompt", "p"}, {"temperature", 0.2}, {"seed", 9}, {"n", 3}, {"sample_index", 2}, {"model", "m"}},
      defaults, "requests[2]");
  CHECK(full.temperature == 0.2);
  CHECK(full.seed == 9);
  CHECK(full.n == 3);
  CHECK(full.sample_index == 2);
  CHECK(full.model == "m");
  CHECK(full.max_tokens == 64);

  const auto chat = map_request_from_json(
      json{{"messages", json::array({json{{"role", "system"}, {"content", "be brief"}}, json{{"content", "hi"}}})}},
      defaults, "requests[3]");
  REQUIRE(chat.messages.size() == 2);
  CHECK(chat.messages[0].role == "system");
  CHECK(chat.messages[1].role == "user");

  CHECK_THROWS_WITH(map_request_from_json(json{{"prompt", "p"}, {"temprature", 1}}, defaults, "requests[1]"),
                    Catch::StartsWith("requests[1]: unknown option 'temprature' (known: prompt, messages,"));
  CHECK_THROWS_WITH(map_request_from_json(json{{"prompt", "p"}, {"messages", "m"}}, defaults, "requests[4]"),
                    "requests[4]: give either prompt or messages, not both");
  CHECK_THROWS_WITH(map_request_from_json(json{{"seed", 1}}, defaults, "requests[5]"),
                    "requests[5]: no prompt and no messages");
  CHECK_THROWS_WITH(map_request_from_json(json(3), defaults, "requests[6]"),
                    Catch::StartsWith("requests[6]: expected a prompt string or a table"));
  CHECK_THROWS_WITH(map_request_from_json(json{{"prompt", "p"}, {"max_tokens", 0}}, defaults, "requests[7]"),
                    "requests[7]: max_tokens must be at least 1, got 0");
  CHECK_THROWS_WITH(map_request_from_json(json{{"prompt", "p"}, {"n", 0}}, defaults, "requests[7]"),
                    "requests[7]: option 'n' must be at least 1, got 0");
  CHECK_THROWS_WITH(map_request_from_json(json{{"prompt", "p"}, {"sample_index", -1}}, defaults, "requests[8]"),
                    "requests[8]: option 'sample_index' must be 0 or more, got -1");
}

TEST_CASE("chat messages are a string or a list of roles and contents, and chat takes only sampling fields") {
  const RequestDefaults defaults;
  const auto request = chat_request_from_json(json("hello"), json{{"max_tokens", 8}}, defaults, "chat");
  CHECK(request.messages.size() == 1);
  CHECK(request.max_tokens == 8);
  CHECK_THROWS_WITH(chat_request_from_json(json("x"), json{{"prompt", "y"}}, defaults, "chat"),
                    Catch::StartsWith("chat: unknown option 'prompt'"));
  CHECK_THROWS_WITH(messages_from_json(json::object()), "messages: the list is empty");
  CHECK_THROWS_WITH(messages_from_json(json::array({json{{"role", "robot"}, {"content", "x"}}})),
                    "messages[1]: role 'robot' is not system, user or assistant");
  CHECK_THROWS_WITH(messages_from_json(json::array({json{{"role", "user"}}})), "messages[1] has no content");
  CHECK_THROWS_WITH(messages_from_json(json::array({json{{"content", "x"}, {"rol", "user"}}})),
                    Catch::StartsWith("messages[1]: unknown option 'rol'"));
}

TEST_CASE("map's own options: label, progress, log interval, and what a rejected key does") {
  const auto options = MapCallOptions::from_json(
      json{{"label", "paraphrase"}, {"progress", false}, {"log_interval", 2}, {"on_abort", "return"}}, "map");
  CHECK(options.label == "paraphrase");
  CHECK_FALSE(options.progress);
  CHECK(options.log_interval == 2);
  CHECK(options.return_on_abort);
  const auto defaults = MapCallOptions::from_json(nullptr, "map");
  CHECK(defaults.label == "llm");
  CHECK_FALSE(defaults.return_on_abort);
  CHECK_THROWS_WITH(MapCallOptions::from_json(json{{"on_abort", "ignore"}}, "map"),
                    "map: on_abort must be \"error\" or \"return\", got 'ignore'");
  CHECK_THROWS_WITH(MapCallOptions::from_json(json{{"lable", "x"}}, "map"),
                    Catch::StartsWith("map: unknown option 'lable'"));
}
