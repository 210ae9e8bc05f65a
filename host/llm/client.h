#pragma once
// An OpenAI-compatible chat-completions client for batch jobs (paraphrase augmentation: ~75k requests per run).
//
//   ts::llm::ClientSettings settings;            // base_url, model, api_key_env, limits, cache_path ...
//   settings.cache_path = "runs/aug/llm_cache.sqlite";
//   ts::llm::Client client(settings);
//   std::vector<ts::llm::ChatRequest> requests = ...;   // one user message each
//   auto results = client.map(requests, {}, ts::llm::terminal_progress("paraphrase"));
//   for (auto& r : results) if (r.ok()) use(r.texts[0]); else count(r.error);
//
// How it works:
// - One libcurl multi handle, driven by the thread that calls map(): many transfers in flight at once on reused
//   (keep-alive, or HTTP/2 multiplexed) connections, no worker threads. The progress callback runs on that thread.
// - Requests-per-minute and tokens-per-minute token buckets gate each send; a request's tokens are estimated before
//   it is sent and corrected with the server's `usage` after.
// - Retries on 408, 409, 429, 5xx, connection errors, timeouts and malformed bodies, with exponential backoff and
//   jitter that honours `retry-after-ms` and `Retry-After` (seconds or an HTTP date). No retry on other 4xx: the item
//   fails with the server's message. 401 and 403 stop the whole batch at once (Outcome::aborted for the rest). A
//   server that has never answered and refuses connections (or does not resolve) stops it too, after
//   unreachable_attempts: an exception naming the URL and the system's reason ("connection refused").
// - With a cache_path, every success is committed to SQLite as it arrives, so a re-run (or a run after a crash)
//   sends no request that already succeeded. Identical requests within one batch are sent once.
// - The API key is read from the environment variable named by api_key_env and sent only in the Authorization
//   header; it is never logged, cached, or put in an error message (a server that echoes it back is redacted).
//
// A Client is not thread-safe: call map() from one thread at a time. Statistics accumulate over the Client's life.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ts::llm {

struct Message {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// One chat-completions request. Unset optional fields are not sent (the server's defaults apply).
struct ChatRequest {
  std::string model;  // empty: ClientSettings::model
  std::vector<Message> messages;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int> n;
  std::optional<std::int64_t> seed;
  std::optional<int> max_tokens;
  // Distinguishes repeated passes over the same prompt (pass 0, 1, 2 ... of the augmentation), so each pass gets
  // its own cache entry. It is part of the cache key only; it is not sent.
  int sample_index = 0;

  // Convenience: a request with one user message.
  static ChatRequest user(std::string content, int sample_index = 0);
};

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
  Usage& operator+=(const Usage& other);
};

enum class Outcome {
  ok,       // texts hold the reply (from the server or the cache)
  failed,   // this item failed (non-retryable status, or retries exhausted); `error` says why
  aborted,  // the batch stopped (401/403) before this item completed; `error` says why
};
const char* outcome_name(Outcome outcome);

struct ChatResult {
  Outcome outcome = Outcome::failed;
  std::vector<std::string> texts;  // choices[i].message.content, by choice index (n of them)
  Usage usage;                     // as the server reported it (also for cache hits: the original usage)
  bool from_cache = false;
  int attempts = 0;     // HTTP attempts made for this item in this run (0 for a cache hit)
  int http_status = 0;  // last HTTP status seen (0: none, e.g. connection error or cache hit)
  std::string error;    // empty when ok
  bool ok() const { return outcome == Outcome::ok; }
};

struct ClientSettings {
  std::string base_url = "https://api.openai.com/v1";  // POST {base_url}/chat/completions
  std::string model = "gpt-3.5-turbo";                 // default for requests that leave `model` empty
  // Name of the environment variable holding the key. Empty: send no Authorization header (local servers).
  std::string api_key_env = "OPENAI_API_KEY";
  int concurrency = 32;                // transfers in flight at once
  double requests_per_minute = 0;      // 0: no limit
  double tokens_per_minute = 0;        // 0: no limit
  double burst_seconds = 10;           // bucket capacity, in seconds of the per-minute rate (at least one request)
  // Completion tokens assumed per choice when a request sets no max_tokens (for the tokens-per-minute estimate).
  int expected_completion_tokens = 64;
  double timeout_seconds = 60;         // whole request, per attempt
  double connect_timeout_seconds = 10;
  int max_attempts = 6;                // attempts per request, the first included
  // Attempts per request while the server has never answered this client and refuses connections (or its name does
  // not resolve): past them map() throws, naming base_url, so that a wrong URL or a stopped server fails in seconds
  // instead of after every request's backoff. Once it has answered, such failures are retried as others.
  int unreachable_attempts = 3;
  double backoff_initial_seconds = 1;  // delay after the first failure, doubled each time, with jitter
  double backoff_max_seconds = 60;
  double retry_after_max_seconds = 300;  // a server's Retry-After is honoured up to this
  // A 429 with Retry-After also holds back every new send until then (the limit is per account, not per request).
  bool pause_all_on_rate_limit = true;
  std::string cache_path;  // SQLite file; empty: no cache
  std::uint64_t jitter_seed = 0x5eed;  // backoff jitter is seeded so that test runs are reproducible
};

// Counters over the Client's life (or since reset_stats()).
struct Stats {
  std::int64_t requests_sent = 0;  // HTTP attempts started
  std::int64_t retries = 0;        // attempts after the first, per request
  std::int64_t cache_hits = 0;
  std::int64_t succeeded = 0;      // items answered by the server (not counting cache hits)
  std::int64_t failures = 0;       // items that ended failed or aborted
  Usage tokens;                    // usage reported by the server for requests made (not cache hits)
  bool aborted = false;            // the last map() stopped on 401/403
  std::string abort_reason;        // its message
};

struct Progress {
  std::size_t done = 0;   // items finished (ok, failed or aborted), cache hits included
  std::size_t total = 0;
  std::size_t failed = 0;
  std::int64_t cache_hits = 0;
  std::int64_t retries = 0;
  std::int64_t in_flight = 0;
  Usage tokens;                     // this batch, server-reported
  double elapsed_seconds = 0;
  double requests_per_second = 0;   // items completed by the server per second in this batch
  double eta_seconds = -1;          // -1: unknown yet
  bool finished = false;            // the last call of a batch
};
using ProgressCallback = std::function<void(const Progress&)>;

struct MapOptions {
  double progress_interval_seconds = 0.5;  // how often the callback runs (and once more at the end)
};

class Client {
 public:
  explicit Client(ClientSettings settings);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Runs all requests concurrently; returns one result per request, in input order. Per-item failures are results,
  // not exceptions. Throws ts::Error only for setup problems (missing API key variable, cache unusable, a base_url
  // curl cannot use, a server that cannot be reached and has never answered) or when the progress callback throws
  // (in-flight transfers are cancelled first; completed ones stay cached).
  std::vector<ChatResult> map(const std::vector<ChatRequest>& requests, const MapOptions& options = {},
                              const ProgressCallback& progress = {});
  // One request (a batch of one).
  ChatResult complete(const ChatRequest& request);

  Stats stats() const;
  void reset_stats();
  const ClientSettings& settings() const { return settings_; }

  // The canonical request JSON: base_url, model (defaulted), messages, set sampling fields, sample_index; keys
  // sorted. No credentials.
  std::string canonical_request(const ChatRequest& request) const;
  // SHA-256 hex of canonical_request(): the cache key.
  std::string cache_key(const ChatRequest& request) const;
  // The body sent to the server.
  std::string request_body(const ChatRequest& request) const;
  // Estimated tokens a request costs against a tokens-per-minute limit (prompt + expected completion).
  std::int64_t estimate_tokens(const ChatRequest& request) const;

 private:
  struct Impl;  // what outlives a batch: curl handles, the cache, rate limits, statistics
  class Batch;  // one map() call: its jobs, queues and transfers (client.cpp)
  ClientSettings settings_;
  std::unique_ptr<Impl> impl_;
};

// A progress printer for a terminal: a bar redrawn in place (carriage return) on stderr when stderr is a terminal,
// otherwise one plain line every `plain_interval_seconds` and at the end (for logs and CI).
ProgressCallback terminal_progress(std::string label = "llm", double plain_interval_seconds = 10);
// The one-line description terminal_progress prints (without bar): "1234/75138 312.4 req/s cache 10 ...".
std::string format_progress(const Progress& progress);

// A chat-completions reply body, parsed: the choices' message contents in index order (a null content is ""), and
// the usage (total = prompt + completion when the server leaves the total out). `problem` says why a body is
// malformed (not a JSON object, no choices, a choice without message content); then texts is empty.
struct ChatCompletion {
  std::vector<std::string> texts;
  Usage usage;
  std::string problem;
};
ChatCompletion parse_chat_completion(const std::string& body);

// The wait in seconds before retrying after `attempts` attempts. A server's delay (Retry-After or retry-after-ms,
// capped at retry_after_max_seconds) is honoured and spread up to 10% later, never earlier; without one, exponential
// backoff from backoff_initial_seconds, doubling, capped at backoff_max_seconds, with "equal jitter" (at least half
// the step). `unit` is a uniform draw in [0, 1), the jitter.
double retry_delay(const ClientSettings& settings, int attempts, std::optional<double> server_delay, double unit);

// Parses a Retry-After value: delay in seconds, or an HTTP date (relative to now). nullopt if neither.
std::optional<double> parse_retry_after(const std::string& value);

}  // namespace ts::llm
