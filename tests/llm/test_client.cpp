// The chat-completions client against an in-process fake server on 127.0.0.1: faults, aborts, retries, the cache,
// a SIGKILLed run, and the API key staying out of every file and message.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "core/log.h"
#include "llm/cache.h"
#include "llm/client.h"
#include "llm/fake_server.h"
#include "llm/sha256.h"
#include <nlohmann/json.hpp>

using namespace ts::llm;
using ts::llm::testing::Fault;
using ts::llm::testing::FakeServer;
namespace fs = std::filesystem;

namespace {

constexpr const char* kKeyVariable = "TS_TEST_LLM_API_KEY";
constexpr const char* kKey = "sk-test-Zq8VvD1stinct1veK3y-4f7c2a";

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("ts_llm_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

ClientSettings settings_for(const FakeServer& server, const std::string& cache_path = "") {
  ::setenv(kKeyVariable, kKey, 1);
  ClientSettings settings;
  settings.base_url = server.base_url();
  settings.api_key_env = kKeyVariable;
  settings.model = "gpt-test";
  settings.concurrency = 8;
  settings.timeout_seconds = 5;
  settings.max_attempts = 5;
  settings.backoff_initial_seconds = 0.02;
  settings.backoff_max_seconds = 0.2;
  settings.cache_path = cache_path;
  return settings;
}

std::vector<ChatRequest> prompts(const std::string& prefix, int count, int sample_index = 0) {
  std::vector<ChatRequest> requests;
  for (int i = 0; i < count; ++i) requests.push_back(ChatRequest::user(prefix + " " + std::to_string(i), sample_index));
  return requests;
}

std::string prompt_of(const ChatRequest& request) { return request.messages.back().content; }

bool file_contains(const fs::path& path, const std::string& needle) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str().find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("SHA-256 matches the FIPS 180-4 test vectors", "[llm][sha256]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fed in uneven pieces, the digest is the same.
  Sha256 pieces;
  const std::string text(1000, 'x');
  for (std::size_t at = 0; at < text.size(); at += 37) pieces.update(std::string_view(text).substr(at, 37));
  const auto digest = pieces.finish();
  CHECK(digest == [&] { Sha256 whole; whole.update(text); return whole.finish(); }());
}

TEST_CASE("Retry-After is parsed as seconds or as an HTTP date", "[llm][client]") {
  CHECK(parse_retry_after("7") == 7.0);
  CHECK(parse_retry_after(" 0.5 ") == 0.5);
  CHECK_FALSE(parse_retry_after("soon").has_value());
  CHECK_FALSE(parse_retry_after("").has_value());
  const std::time_t in_ten = std::time(nullptr) + 10;
  char date[64];
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&in_ten));
  const auto delay = parse_retry_after(date);
  REQUIRE(delay.has_value());
  CHECK(*delay >= 8.0);
  CHECK(*delay <= 11.0);
  CHECK(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0);  // in the past: go now
}

TEST_CASE("parse_chat_completion: choices in index order, usage, and what makes a reply malformed", "[llm][client]") {
  const auto ok = parse_chat_completion(
      R"({"choices":[{"index":1,"message":{"content":"second"}},{"index":0,"message":{"content":"first"}},)"
      R"({"index":2,"message":{"content":null}}],"usage":{"prompt_tokens":7,"completion_tokens":5}})");
  CHECK(ok.problem.empty());
  CHECK(ok.texts == std::vector<std::string>{"first", "second", ""});
  CHECK(ok.usage.prompt_tokens == 7);
  CHECK(ok.usage.completion_tokens == 5);
  CHECK(ok.usage.total_tokens == 12);  // left out: the sum
  CHECK(parse_chat_completion(R"({"choices":[{"message":{"content":"a"}}]})").usage.total_tokens == 0);
  CHECK(parse_chat_completion(R"({"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}]})").texts ==
        std::vector<std::string>{"a", "b"});  // no index: the order given
  CHECK(parse_chat_completion(R"({"choices":[{"message":)").problem == "reply is not a JSON object");
  CHECK(parse_chat_completion("[1]").problem == "reply is not a JSON object");
  CHECK(parse_chat_completion(R"({"object":"chat.completion"})").problem == "reply has no choices");
  CHECK(parse_chat_completion(R"({"choices":[]})").problem == "reply has no choices");
  const auto bad = parse_chat_completion(R"({"choices":[{"message":{"content":"a"}},{"message":{"role":"x"}}]})");
  CHECK(bad.problem == "a choice has no message content");
  CHECK(bad.texts.empty());
}

TEST_CASE("retry_delay: the server's delay honoured and capped, otherwise exponential backoff with equal jitter",
          "[llm][client]") {
  ClientSettings settings;
  settings.backoff_initial_seconds = 1;
  settings.backoff_max_seconds = 60;
  settings.retry_after_max_seconds = 300;
  CHECK(retry_delay(settings, 1, std::nullopt, 0.0) == Approx(0.5));  // at least half the step
  CHECK(retry_delay(settings, 1, std::nullopt, 1.0) == Approx(1.0));
  CHECK(retry_delay(settings, 3, std::nullopt, 1.0) == Approx(4.0));  // doubled per attempt
  CHECK(retry_delay(settings, 10, std::nullopt, 1.0) == Approx(60.0));  // capped
  CHECK(retry_delay(settings, 1, 2.0, 0.0) == Approx(2.0));  // never earlier than the server asked
  CHECK(retry_delay(settings, 1, 2.0, 1.0) == Approx(2.2));  // spread up to 10% later
  CHECK(retry_delay(settings, 1, 1000.0, 0.0) == Approx(300.0));  // a server's delay is capped too
}

TEST_CASE("The cache key covers the request, the endpoint and the pass, never the API key", "[llm][client]") {
  FakeServer server;
  Client client(settings_for(server));
  ChatRequest request = ChatRequest::user("a fine film");
  const std::string key = client.cache_key(request);
  CHECK(key.size() == 64);
  CHECK(client.cache_key(ChatRequest::user("a fine film")) == key);
  CHECK(client.cache_key(ChatRequest::user("a fine film", 1)) != key);
  ChatRequest warmer = request;
  warmer.temperature = 0.7;
  CHECK(client.cache_key(warmer) != key);
  ChatRequest other_model = request;
  other_model.model = "gpt-4";
  CHECK(client.cache_key(other_model) != key);
  ClientSettings elsewhere = settings_for(server);
  elsewhere.base_url = "http://127.0.0.1:1/v1/";
  CHECK(Client(elsewhere).cache_key(request) != key);

  ::setenv(kKeyVariable, "sk-another-key", 1);
  CHECK(client.cache_key(request) == key);
  CHECK(client.canonical_request(request).find("sk-") == std::string::npos);
  const auto canonical = nlohmann::json::parse(client.canonical_request(request));
  CHECK(canonical["model"] == "gpt-test");
  CHECK(canonical["sample_index"] == 0);
  CHECK(canonical["base_url"] == server.base_url());
}

TEST_CASE("Only the sampling fields that are set are sent, with the key as a bearer token", "[llm][client]") {
  FakeServer server(kKey);
  Client client(settings_for(server));
  ChatRequest plain = ChatRequest::user("plain");
  ChatRequest tuned = ChatRequest::user("tuned");
  tuned.model = "gpt-other";
  tuned.temperature = 0.5;
  tuned.top_p = 0.9;
  tuned.n = 3;
  tuned.seed = 42;
  tuned.max_tokens = 77;
  const auto results = client.map({plain, tuned});
  REQUIRE(results[0].ok());
  REQUIRE(results[1].ok());
  CHECK(results[0].texts == std::vector<std::string>{FakeServer::reply_for("plain")});
  // The server lists choices in reverse; the client returns them by index.
  CHECK(results[1].texts == std::vector<std::string>{FakeServer::reply_for("tuned", 0), FakeServer::reply_for("tuned", 1),
                                                     FakeServer::reply_for("tuned", 2)});
  for (const std::string& header : server.authorizations()) CHECK(header == std::string("Bearer ") + kKey);
  for (const auto& body : server.bodies()) {
    const std::string prompt = body["messages"][0]["content"];
    CHECK(body["messages"][0]["role"] == "user");
    CHECK_FALSE(body.contains("sample_index"));
    if (prompt == "plain") {
      CHECK(body["model"] == "gpt-test");
      for (const char* field : {"temperature", "top_p", "n", "seed", "max_tokens"}) CHECK_FALSE(body.contains(field));
    } else {
      CHECK(body["model"] == "gpt-other");
      CHECK(body["temperature"] == 0.5);
      CHECK(body["top_p"] == 0.9);
      CHECK(body["n"] == 3);
      CHECK(body["seed"] == 42);
      CHECK(body["max_tokens"] == 77);
    }
  }
  CHECK(results[1].usage.completion_tokens == 18);
  CHECK(client.stats().tokens.total_tokens == results[0].usage.total_tokens + results[1].usage.total_tokens);
}

TEST_CASE("Every row completes under transient faults", "[llm][client][faults]") {
  FakeServer server(kKey);
  server.retry_after = "0";
  server.slow_seconds = 0.8;
  // Each prompt meets one or two faults before an answer; which ones depends on its number.
  const std::vector<std::vector<Fault>> plans = {
      {Fault::rate_limit},  {Fault::server_error},           {Fault::unavailable},
      {Fault::slow},        {Fault::drop},                   {Fault::malformed},
      {Fault::no_choices},  {Fault::drop, Fault::rate_limit}, {Fault::unavailable, Fault::slow},
      {}};
  const auto requests = prompts("fault", 60);
  std::map<std::string, std::vector<Fault>> plan_of;
  for (std::size_t i = 0; i < requests.size(); ++i) plan_of[prompt_of(requests[i])] = plans[i % plans.size()];
  server.policy = [&plan_of](const std::string& prompt, int attempt) {
    const auto& plan = plan_of.at(prompt);
    return attempt <= int(plan.size()) ? plan[std::size_t(attempt - 1)] : Fault::none;
  };
  ClientSettings settings = settings_for(server);
  settings.timeout_seconds = 0.3;
  Client client(settings);
  std::vector<Progress> reports;
  const auto results = client.map(requests, {0.05}, [&](const Progress& progress) { reports.push_back(progress); });

  // A connection dropped after it was reused is retried once by libcurl itself, unseen by the client: the server
  // then counts one request more than the client's attempts.
  std::int64_t server_requests = 0, fewest_attempts = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const std::string prompt = prompt_of(requests[i]);
    const auto& plan = plan_of[prompt];
    const int planned_faults = int(plan.size());
    const bool has_drop = std::find(plan.begin(), plan.end(), Fault::drop) != plan.end();
    INFO(prompt << ": " << results[i].error);
    REQUIRE(results[i].ok());
    CHECK(results[i].texts == std::vector<std::string>{FakeServer::reply_for(prompt)});
    CHECK(server.requests_for(prompt) == planned_faults + 1);
    CHECK(results[i].attempts <= planned_faults + 1);
    CHECK(results[i].attempts >= planned_faults + 1 - (has_drop ? 1 : 0));
    server_requests += planned_faults + 1;
    fewest_attempts += planned_faults + 1 - (has_drop ? 1 : 0);
  }
  const Stats stats = client.stats();
  CHECK(stats.requests_sent <= server_requests);
  CHECK(stats.requests_sent >= fewest_attempts);
  CHECK(stats.retries == stats.requests_sent - 60);
  CHECK(stats.failures == 0);
  CHECK(stats.succeeded == 60);
  CHECK_FALSE(stats.aborted);
  REQUIRE_FALSE(reports.empty());
  CHECK(reports.back().finished);
  CHECK(reports.back().done == 60);
  CHECK(reports.back().retries == stats.retries);
  CHECK(format_progress(reports.back()).find("60/60") != std::string::npos);
}

TEST_CASE("Retries stop at max_attempts with the last error named", "[llm][client][faults]") {
  FakeServer server(kKey);
  server.policy = [](const std::string&, int) { return Fault::server_error; };
  ClientSettings settings = settings_for(server);
  settings.max_attempts = 3;
  Client client(settings);
  const auto result = client.complete(ChatRequest::user("always broken"));
  CHECK(result.outcome == Outcome::failed);
  CHECK(result.attempts == 3);
  CHECK(result.http_status == 500);
  CHECK(server.requests_for("always broken") == 3);
  CHECK_THAT(result.error, Catch::Contains("gave up after 3 attempts") && Catch::Contains("HTTP 500") &&
                               Catch::Contains("The server had an error"));
}

TEST_CASE("400 and 404 fail their item at once with the server's message, the rest complete", "[llm][client]") {
  FakeServer server(kKey);
  server.policy = [](const std::string& prompt, int) {
    if (prompt == "too long") return Fault::bad_request;
    if (prompt == "no model") return Fault::not_found;
    return Fault::none;
  };
  Client client(settings_for(server));
  auto requests = prompts("fine", 10);
  requests.insert(requests.begin() + 3, ChatRequest::user("too long"));
  requests.push_back(ChatRequest::user("no model"));
  const auto results = client.map(requests);
  for (std::size_t i = 0; i < results.size(); ++i) {
    const std::string prompt = prompt_of(requests[i]);
    if (prompt == "too long") {
      CHECK(results[i].outcome == Outcome::failed);
      CHECK(results[i].http_status == 400);
      CHECK(results[i].attempts == 1);
      CHECK_THAT(results[i].error, Catch::Contains("HTTP 400") && Catch::Contains("maximum context length"));
    } else if (prompt == "no model") {
      CHECK(results[i].outcome == Outcome::failed);
      CHECK_THAT(results[i].error, Catch::Contains("HTTP 404") && Catch::Contains("does not exist"));
    } else {
      CHECK(results[i].ok());
      CHECK(results[i].texts.at(0) == FakeServer::reply_for(prompt));
    }
  }
  CHECK(server.requests_for("too long") == 1);
  CHECK(server.requests_for("no model") == 1);
  CHECK(client.stats().retries == 0);
  CHECK(client.stats().failures == 2);
}

TEST_CASE("llama.cpp's server: n above its slots fails the item at once with its message, usage as it reports",
          "[llm][client]") {
  FakeServer server(kKey);
  server.max_n = 2;
  server.usage_first_choice_only = true;
  Client client(settings_for(server));
  auto two = ChatRequest::user("two");
  two.n = 2;
  auto three = ChatRequest::user("three");
  three.n = 3;
  const auto results = client.map({two, three});
  REQUIRE(results[0].ok());
  CHECK(results[0].texts.size() == 2);
  CHECK(results[0].usage.completion_tokens == 6);  // one choice's: what the server says is what is counted
  CHECK(results[1].outcome == Outcome::failed);
  CHECK(results[1].http_status == 400);
  CHECK(results[1].attempts == 1);
  CHECK_THAT(results[1].error, Catch::Contains("Field 'n': Value must be between 1 <= value <= 2, but got 3"));
}

TEST_CASE("A 401 stops the whole batch at once, with no retry and a clear message", "[llm][client][abort]") {
  FakeServer server(kKey);
  SECTION("a wrong key: nothing succeeds, at most one wave of requests is sent") {
    ClientSettings settings = settings_for(server);
    ::setenv(kKeyVariable, "sk-wrong-key-for-this-test", 1);
    settings.concurrency = 4;
    Client client(settings);
    const auto requests = prompts("row", 200);
    const auto started = std::chrono::steady_clock::now();
    const auto results = client.map(requests);
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
    CHECK(server.total_requests() <= 4);
    for (const auto& [prompt, count] : server.counts()) CHECK(count == 1);
    std::size_t rejected = 0;
    for (const auto& result : results) {
      CHECK(result.outcome == Outcome::aborted);
      if (result.http_status == 401) {
        ++rejected;
        CHECK_THAT(result.error, Catch::Contains("HTTP 401") && Catch::Contains("Incorrect API key"));
      } else {
        CHECK_THAT(result.error, Catch::Contains("rejected the credentials") && Catch::Contains(kKeyVariable));
      }
    }
    CHECK(rejected == 1);
    const Stats stats = client.stats();
    CHECK(stats.aborted);
    CHECK_THAT(stats.abort_reason, Catch::Contains("HTTP 401") && Catch::Contains("batch stopped"));
    CHECK(stats.retries == 0);
    CHECK(stats.failures == 200);
  }
  SECTION("a key revoked mid-run: finished rows keep their answers, the rest are cancelled") {
    std::atomic<int> served{0};
    server.policy = [&served](const std::string&, int) {
      return ++served > 20 ? Fault::unauthorized : Fault::none;
    };
    ClientSettings settings = settings_for(server);
    settings.concurrency = 4;
    Client client(settings);
    const auto results = client.map(prompts("row", 200));
    std::size_t ok = 0, aborted = 0;
    for (const auto& result : results) {
      ok += result.ok();
      aborted += result.outcome == Outcome::aborted;
    }
    CHECK(ok >= 17);
    CHECK(ok <= 20);
    CHECK(ok + aborted == 200);
    CHECK(server.total_requests() <= 20 + 4);
    CHECK(client.stats().aborted);
  }
}

TEST_CASE("Retry-After and retry-after-ms are honoured", "[llm][client][faults]") {
  FakeServer server(kKey);
  server.policy = [](const std::string&, int attempt) { return attempt == 1 ? Fault::rate_limit : Fault::none; };
  SECTION("seconds") {
    server.retry_after = "1";
    Client client(settings_for(server));
    const auto result = client.complete(ChatRequest::user("limited"));
    REQUIRE(result.ok());
    const auto arrivals = server.arrivals_for("limited");
    REQUIRE(arrivals.size() == 2);
    const double gap = std::chrono::duration<double>(arrivals[1] - arrivals[0]).count();
    CHECK(gap >= 0.95);
    CHECK(gap < 3.0);
  }
  SECTION("milliseconds win over seconds") {
    server.retry_after = "30";
    server.retry_after_ms = "300";
    Client client(settings_for(server));
    const auto result = client.complete(ChatRequest::user("limited"));
    REQUIRE(result.ok());
    const auto arrivals = server.arrivals_for("limited");
    REQUIRE(arrivals.size() == 2);
    const double gap = std::chrono::duration<double>(arrivals[1] - arrivals[0]).count();
    CHECK(gap >= 0.28);
    CHECK(gap < 2.0);
  }
}

TEST_CASE("A 429 with Retry-After holds back every new send", "[llm][client][faults]") {
  FakeServer server(kKey);
  server.retry_after = "1";
  server.policy = [](const std::string& prompt, int attempt) {
    return prompt == "row 0" && attempt == 1 ? Fault::rate_limit : Fault::none;
  };
  ClientSettings settings = settings_for(server);
  settings.concurrency = 1;  // "row 0" goes first, alone
  Client client(settings);
  const auto results = client.map(prompts("row", 3));
  for (const auto& result : results) CHECK(result.ok());
  const auto first = server.arrivals_for("row 0").front();
  for (const char* later : {"row 1", "row 2"}) {
    const double gap = std::chrono::duration<double>(server.arrivals_for(later).front() - first).count();
    CHECK(gap >= 0.95);
  }
}

TEST_CASE("Requests-per-minute and tokens-per-minute limits pace the sends", "[llm][client][limits]") {
  FakeServer server(kKey);
  SECTION("requests per minute") {
    ClientSettings settings = settings_for(server);
    settings.requests_per_minute = 600;  // 10 per second
    settings.burst_seconds = 0.1;        // a bucket of one request
    Client client(settings);
    const auto started = std::chrono::steady_clock::now();
    const auto results = client.map(prompts("paced", 16));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    for (const auto& result : results) CHECK(result.ok());
    CHECK(elapsed >= 1.4);  // 15 refills at 10 per second
    CHECK(elapsed < 6.0);
  }
  SECTION("tokens per minute, corrected by the reported usage") {
    ClientSettings settings = settings_for(server);
    const auto requests = prompts("paced", 11);
    Client probe(settings);
    const std::int64_t estimate = probe.estimate_tokens(requests[0]);
    server.usage_total = estimate;                 // the server reports what the client estimated
    settings.tokens_per_minute = 60.0 * 5 * estimate;  // five requests' worth per second
    settings.burst_seconds = 0.2;                  // a bucket of one request's tokens
    Client client(settings);
    const auto started = std::chrono::steady_clock::now();
    const auto results = client.map(requests);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    for (const auto& result : results) CHECK(result.ok());
    CHECK(elapsed >= 1.8);  // 10 refills at 5 per second
    CHECK(elapsed < 8.0);
    CHECK(client.stats().tokens.total_tokens == 11 * estimate);
  }
}

TEST_CASE("The cache answers a second run with zero requests, per pass", "[llm][client][cache]") {
  TempDir dir;
  const std::string cache = (dir.path / "llm.sqlite").string();
  FakeServer server(kKey);
  auto requests = prompts("cached", 30);
  requests.push_back(requests[4]);  // a duplicate within the batch is sent once
  std::vector<ChatResult> first;
  {
    Client client(settings_for(server, cache));
    first = client.map(requests);
    CHECK(server.total_requests() == 30);
    CHECK(client.stats().cache_hits == 0);
  }
  CHECK(ResponseCache(cache).size() == 30);
  Client again(settings_for(server, cache));
  const auto second = again.map(requests);
  CHECK(server.total_requests() == 30);
  CHECK(again.stats().requests_sent == 0);
  CHECK(again.stats().cache_hits == 31);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    REQUIRE(second[i].ok());
    CHECK(second[i].from_cache);
    CHECK(second[i].texts == first[i].texts);
    CHECK(second[i].usage.total_tokens == first[i].usage.total_tokens);
  }
  // A fully cached run needs no key at all.
  ::unsetenv(kKeyVariable);
  ClientSettings keyless = settings_for(server, cache);
  ::unsetenv(kKeyVariable);
  Client without_key(keyless);
  CHECK(without_key.map(requests)[0].from_cache);
  // A second pass over the same prompts is a different request.
  CHECK_THROWS_WITH(without_key.map(prompts("cached", 2, 1)), Catch::Contains(kKeyVariable));
  Client next_pass(settings_for(server, cache));
  const auto pass_two = next_pass.map(prompts("cached", 30, 1));
  CHECK(server.total_requests() == 60);
  for (const auto& result : pass_two) CHECK_FALSE(result.from_cache);
}

TEST_CASE("Failures are not cached", "[llm][client][cache]") {
  TempDir dir;
  const std::string cache = (dir.path / "llm.sqlite").string();
  FakeServer server(kKey);
  server.policy = [](const std::string&, int) { return Fault::bad_request; };
  {
    Client client(settings_for(server, cache));
    CHECK_FALSE(client.complete(ChatRequest::user("refused")).ok());
  }
  server.policy = [](const std::string&, int) { return Fault::none; };
  Client client(settings_for(server, cache));
  const auto result = client.complete(ChatRequest::user("refused"));
  CHECK(result.ok());
  CHECK_FALSE(result.from_cache);
  CHECK(server.requests_for("refused") == 2);
}

TEST_CASE("After a run is SIGKILLed, the next run repeats no completed request", "[llm][client][cache][kill]") {
  TempDir dir;
  const std::string cache = (dir.path / "llm.sqlite").string();
  FakeServer server(kKey);
  server.reply_seconds = 0.03;
  const auto requests = prompts("killed", 200);
  constexpr int kConcurrency = 4;

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child only runs the client; it never returns into the test framework.
    try {
      ClientSettings settings = settings_for(server, cache);
      settings.concurrency = kConcurrency;
      Client client(settings);
      client.map(requests);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server.answered() < 60 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);

  const int sent_before = server.total_requests();
  Client client(settings_for(server, cache));
  std::set<std::string> completed_before;
  std::int64_t cached_rows = 0;
  {
    ResponseCache rows(cache);
    cached_rows = rows.size();
    for (const auto& request : requests)
      if (rows.get(client.cache_key(request))) completed_before.insert(prompt_of(request));
  }
  INFO("sent before the kill: " << sent_before << ", cached: " << cached_rows);
  CHECK(cached_rows >= 50);
  CHECK(cached_rows < 200);
  CHECK(std::int64_t(completed_before.size()) == cached_rows);

  const auto results = client.map(requests);
  for (const auto& result : results) CHECK(result.ok());
  CHECK(client.stats().requests_sent == 200 - cached_rows);
  int repeated = 0;
  for (const auto& request : requests) {
    const std::string prompt = prompt_of(request);
    const int count = server.requests_for(prompt);
    if (completed_before.count(prompt)) CHECK(count == 1);  // completed before the kill: never asked again
    repeated += count > 1;
  }
  // Only what was in flight when the child died can have been asked twice.
  CHECK(repeated <= kConcurrency);
}

TEST_CASE("The API key appears in no file, log line, or error message", "[llm][client][secret]") {
  TempDir dir;
  const std::string cache = (dir.path / "llm.sqlite").string();
  ts::log::init(spdlog::level::debug);
  ts::log::add_json_file((dir.path / "events.jsonl").string());
  ts::log::add_text_file((dir.path / "log.txt").string());
  std::vector<std::string> messages;
  {
    FakeServer server(kKey);
    server.retry_after = "0";
    server.policy = [](const std::string& prompt, int attempt) {
      if (prompt == "row 1") return Fault::bad_request;
      return attempt == 1 ? Fault::rate_limit : Fault::none;
    };
    Client client(settings_for(server, cache));
    for (const auto& result : client.map(prompts("row", 12))) messages.push_back(result.error);
    for (const std::string& header : server.authorizations()) CHECK(header == std::string("Bearer ") + kKey);

    // A server that echoes the key back in its 401 message.
    FakeServer echoing("sk-the-server-expects-another");
    ClientSettings settings = settings_for(echoing, cache);
    Client rejected(settings);
    for (const auto& result : rejected.map(prompts("other", 5))) {
      CHECK(result.outcome == Outcome::aborted);
      messages.push_back(result.error);
    }
    messages.push_back(rejected.stats().abort_reason);
    CHECK_THAT(rejected.stats().abort_reason, Catch::Contains("[redacted]"));
  }
  ts::log::close_files();
  ts::log::init(spdlog::level::info);

  for (const std::string& message : messages) CHECK(message.find(kKey) == std::string::npos);
  std::size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    INFO(entry.path());
    CHECK_FALSE(file_contains(entry.path(), kKey));
    CHECK_FALSE(file_contains(entry.path(), "Bearer"));
  }
  CHECK(files >= 3);  // the cache database and both logs were written
  CHECK(file_contains(dir.path / "events.jsonl", "llm.retry"));
  CHECK(file_contains(dir.path / "events.jsonl", "llm.abort"));
}

TEST_CASE("Setup errors name what to fix", "[llm][client]") {
  FakeServer server;
  ClientSettings settings = settings_for(server);
  settings.api_key_env = "TS_TEST_LLM_UNSET_VARIABLE";
  ::unsetenv("TS_TEST_LLM_UNSET_VARIABLE");
  Client client(settings);
  CHECK_THROWS_WITH(client.map(prompts("x", 1)), Catch::Contains("TS_TEST_LLM_UNSET_VARIABLE"));
  settings.concurrency = 0;
  CHECK_THROWS_WITH(Client(settings), Catch::Contains("concurrency"));
  ClientSettings bad_cache = settings_for(server, "/nonexistent-folder/for/sure/llm.sqlite");
  CHECK_THROWS_WITH(Client(bad_cache), Catch::Contains("/nonexistent-folder/for/sure/llm.sqlite"));
  // An empty key variable name means "send no Authorization header".
  ClientSettings open = settings_for(server);
  open.api_key_env.clear();
  Client keyless(open);
  CHECK(keyless.complete(ChatRequest::user("open")).ok());
  CHECK(server.authorizations().back().empty());
}

namespace {

// A port on 127.0.0.1 that nothing listens on: bound, then closed.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace

TEST_CASE("A server that refuses connections and never answered stops the batch in seconds, naming the URL",
          "[llm][client][unreachable]") {
  ClientSettings settings;  // the default backoff and attempts
  settings.base_url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1";
  settings.api_key_env.clear();
  Client client(settings);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(client.map(prompts("nobody listens", 50)),
                    Catch::StartsWith("LLM server " + settings.base_url + "/chat/completions cannot be reached: "
                                                                          "connection refused (") &&
                        Catch::Contains("3 attempts, and it has not answered any request"));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 10);  // backoff of about 0.5-1 s, then 1-2 s; not every request's six attempts
  CHECK(client.stats().requests_sent >= 3);
  CHECK(client.stats().requests_sent <= 3 * 50);

  // A URL curl cannot use stops it at the first attempt.
  ClientSettings scheme = settings;
  scheme.base_url = "htp://127.0.0.1/v1";
  CHECK_THROWS_WITH(Client(scheme).complete(ChatRequest::user("x")), Catch::StartsWith("LLM client: base_url htp://"));
}

TEST_CASE("A server that answered before and then refuses connections is retried as before",
          "[llm][client][unreachable]") {
  auto server = std::make_unique<FakeServer>(kKey);
  server->set_keep_alive_seconds(1);
  Client client(settings_for(*server));
  REQUIRE(client.complete(ChatRequest::user("while it runs")).ok());
  server->stop();
  server.reset();
  const auto results = client.map(prompts("after it stopped", 3));
  for (const auto& result : results) {
    INFO(result.error);
    CHECK_FALSE(result.ok());
    CHECK(result.attempts == 5);  // settings_for's max_attempts, not unreachable_attempts
    CHECK_THAT(result.error, Catch::StartsWith("gave up after 5 attempts; last error: connection error: "));
  }
  CHECK_THAT(results.back().error, Catch::Contains("connection refused"));
}
