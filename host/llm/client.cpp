#include "llm/client.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include <curl/curl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "llm/cache.h"
#include "llm/sha256.h"

namespace ts::llm {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxReplyBytes = 16 << 20;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

Clock::time_point after_seconds(Clock::time_point from, double seconds) {
  return from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string trim(std::string_view text) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  std::size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  return std::string(text.substr(begin, end - begin));
}

std::string lower(std::string text) {
  for (char& c : text) c = char(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string normalized_base_url(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// A token bucket refilled continuously at `per_minute / 60` per second. A request costing more than the whole
// capacity is let through when the bucket is full (and drives it negative), so that it cannot wait forever.
class TokenBucket {
 public:
  void configure(double per_minute, double burst_seconds, double minimum_capacity) {
    rate_ = per_minute / 60.0;
    capacity_ = rate_ > 0 ? std::max(minimum_capacity, rate_ * burst_seconds) : 0;
    level_ = capacity_;
    last_ = Clock::now();
  }
  bool limited() const { return rate_ > 0; }
  // Seconds until `cost` may be taken; 0 when it may be taken now.
  double wait_for(double cost, Clock::time_point now) {
    if (!limited()) return 0;
    refill(now);
    const double needed = std::min(cost, capacity_);
    return level_ >= needed ? 0 : (needed - level_) / rate_;
  }
  void take(double cost) {
    if (limited()) level_ -= cost;
  }
  void give(double amount) {
    if (limited()) level_ = std::min(capacity_, level_ + amount);
  }

 private:
  void refill(Clock::time_point now) {
    level_ = std::min(capacity_, level_ + seconds_between(last_, now) * rate_);
    last_ = now;
  }
  double rate_ = 0, capacity_ = 0, level_ = 0;
  Clock::time_point last_ = Clock::now();
};

// One unique request of a batch (identical requests share one Job) and the state of its current attempt.
struct Job {
  std::vector<std::size_t> indices;
  std::string key;
  std::string canonical;
  std::string body;
  std::int64_t estimated_tokens = 0;
  int attempts = 0;
  bool finished = false;
  // The current attempt.
  CURL* easy = nullptr;
  std::string reply;
  bool reply_too_large = false;
  std::optional<double> retry_after_seconds;
  std::optional<double> retry_after_ms;
  std::array<char, CURL_ERROR_SIZE> curl_error{};
  // The last failure, for the final message.
  std::string last_error;
  int last_status = 0;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* job = static_cast<Job*>(user);
  const std::size_t bytes = size * count;
  if (job->reply.size() + bytes > kMaxReplyBytes) {
    job->reply_too_large = true;
    return 0;  // aborts the transfer; treated as a malformed reply
  }
  job->reply.append(data, bytes);
  return bytes;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* job = static_cast<Job*>(user);
  const std::size_t bytes = size * count;
  const std::string_view line(data, bytes);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect or 100 Continue): forget the old headers
    job->retry_after_seconds.reset();
    job->retry_after_ms.reset();
    return bytes;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return bytes;
  const std::string name = lower(trim(line.substr(0, colon)));
  const std::string value = trim(line.substr(colon + 1));
  if (name == "retry-after-ms") {
    char* end = nullptr;
    const double ms = std::strtod(value.c_str(), &end);
    if (end != value.c_str() && std::isfinite(ms) && ms >= 0) job->retry_after_ms = ms;
  } else if (name == "retry-after") {
    job->retry_after_seconds = parse_retry_after(value);
  }
  return bytes;
}

void global_curl_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("libcurl could not be initialised");
  });
}

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  const auto whole = static_cast<long long>(seconds + 0.5);
  if (whole >= 3600) return fmt::format("{}h{:02}m", whole / 3600, (whole % 3600) / 60);
  if (whole >= 60) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}s", whole);
}

}  // namespace

ChatRequest ChatRequest::user(std::string content, int sample_index) {
  ChatRequest request;
  request.messages.push_back({"user", std::move(content)});
  request.sample_index = sample_index;
  return request;
}

Usage& Usage::operator+=(const Usage& other) {
  prompt_tokens += other.prompt_tokens;
  completion_tokens += other.completion_tokens;
  total_tokens += other.total_tokens;
  return *this;
}

const char* outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::ok: return "ok";
    case Outcome::failed: return "failed";
    case Outcome::aborted: return "aborted";
  }
  return "unknown";
}

ChatCompletion parse_chat_completion(const std::string& body) {
  ChatCompletion completion;
  const json parsed = json::parse(body, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    completion.problem = "reply is not a JSON object";
    return completion;
  }
  if (!parsed.contains("choices") || !parsed["choices"].is_array() || parsed["choices"].empty()) {
    completion.problem = "reply has no choices";
    return completion;
  }
  std::vector<std::pair<std::int64_t, std::string>> choices;
  std::int64_t position = 0;
  for (const json& choice : parsed["choices"]) {
    const json* content = nullptr;
    if (choice.is_object() && choice.contains("message") && choice["message"].is_object() &&
        choice["message"].contains("content"))
      content = &choice["message"]["content"];
    if (!content || !(content->is_string() || content->is_null())) {
      completion.problem = "a choice has no message content";
      return completion;
    }
    const std::int64_t order =
        choice.contains("index") && choice["index"].is_number_integer() ? choice["index"].get<std::int64_t>()
                                                                        : position;
    choices.emplace_back(order, content->is_string() ? content->get<std::string>() : std::string());
    ++position;
  }
  std::stable_sort(choices.begin(), choices.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& choice : choices) completion.texts.push_back(std::move(choice.second));
  if (parsed.contains("usage") && parsed["usage"].is_object()) {
    const json& reported = parsed["usage"];
    const auto number = [&reported](const char* name) {
      return reported.contains(name) && reported[name].is_number_integer() ? reported[name].get<std::int64_t>()
                                                                           : std::int64_t(0);
    };
    completion.usage = {number("prompt_tokens"), number("completion_tokens"), number("total_tokens")};
    if (completion.usage.total_tokens == 0)
      completion.usage.total_tokens = completion.usage.prompt_tokens + completion.usage.completion_tokens;
  }
  return completion;
}

double retry_delay(const ClientSettings& settings, int attempts, std::optional<double> server_delay, double unit) {
  if (server_delay) return std::min(*server_delay, settings.retry_after_max_seconds) * (1.0 + 0.1 * unit);
  const double base =
      std::min(settings.backoff_max_seconds, settings.backoff_initial_seconds * std::pow(2.0, attempts - 1));
  return base * (0.5 + 0.5 * unit);
}

std::optional<double> parse_retry_after(const std::string& raw) {
  const std::string value = trim(raw);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || c == '.'; })) {
    char* end = nullptr;
    const double seconds = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || !std::isfinite(seconds)) return std::nullopt;
    return std::max(0.0, seconds);
  }
  const std::time_t when = curl_getdate(value.c_str(), nullptr);
  if (when == -1) return std::nullopt;
  return std::max(0.0, std::difftime(when, std::time(nullptr)));
}

struct Client::Impl {
  CURLM* multi = nullptr;
  std::vector<CURL*> idle_handles;
  std::unique_ptr<ResponseCache> cache;
  Stats stats;
  std::mt19937_64 jitter;
  TokenBucket request_bucket;
  TokenBucket token_bucket;
  Clock::time_point paused_until = Clock::now();
  bool server_answered = false;  // any HTTP reply from base_url in this client's life, whatever its status

  ~Impl() {
    for (CURL* easy : idle_handles) curl_easy_cleanup(easy);
    if (multi) curl_multi_cleanup(multi);
  }
  CURL* acquire_handle() {
    if (idle_handles.empty()) {
      CURL* easy = curl_easy_init();
      if (!easy) fail("libcurl could not create a transfer handle (out of memory?)");
      return easy;
    }
    CURL* easy = idle_handles.back();
    idle_handles.pop_back();
    curl_easy_reset(easy);
    return easy;
  }
};

Client::Client(ClientSettings settings) : settings_(std::move(settings)), impl_(std::make_unique<Impl>()) {
  global_curl_init();
  settings_.base_url = normalized_base_url(settings_.base_url);
  if (settings_.base_url.empty()) fail("LLM client: base_url is empty");
  if (settings_.concurrency < 1) fail("LLM client: concurrency must be at least 1, got {}", settings_.concurrency);
  if (settings_.max_attempts < 1) fail("LLM client: max_attempts must be at least 1, got {}", settings_.max_attempts);
  if (settings_.timeout_seconds <= 0) fail("LLM client: timeout_seconds must be positive, got {}", settings_.timeout_seconds);
  if (settings_.requests_per_minute < 0 || settings_.tokens_per_minute < 0)
    fail("LLM client: requests_per_minute and tokens_per_minute must be >= 0 (0 means no limit)");
  impl_->multi = curl_multi_init();
  if (!impl_->multi) fail("libcurl could not create a multi handle");
  const long connections = settings_.concurrency;
  // In-flight transfers are capped by our own queue, not by libcurl's connection limits: a connection that is being
  // torn down (after a timeout or a hang-up) still counts against those, and a transfer queued behind it would time
  // out without ever being sent. The cache keeps one idle connection per slot for reuse.
  curl_multi_setopt(impl_->multi, CURLMOPT_MAXCONNECTS, connections);
  curl_multi_setopt(impl_->multi, CURLMOPT_PIPELINING, long(CURLPIPE_MULTIPLEX));
  impl_->jitter.seed(settings_.jitter_seed);
  impl_->request_bucket.configure(settings_.requests_per_minute, settings_.burst_seconds, 1);
  impl_->token_bucket.configure(settings_.tokens_per_minute, settings_.burst_seconds, 1);
  if (!settings_.cache_path.empty()) impl_->cache = std::make_unique<ResponseCache>(settings_.cache_path);
}

Client::~Client() = default;

Stats Client::stats() const { return impl_->stats; }
void Client::reset_stats() { impl_->stats = Stats{}; }

std::string Client::request_body(const ChatRequest& request) const {
  json body;
  body["model"] = request.model.empty() ? settings_.model : request.model;
  json messages = json::array();
  for (const auto& message : request.messages) messages.push_back({{"role", message.role}, {"content", message.content}});
  body["messages"] = std::move(messages);
  if (request.temperature) body["temperature"] = *request.temperature;
  if (request.top_p) body["top_p"] = *request.top_p;
  if (request.n) body["n"] = *request.n;
  if (request.seed) body["seed"] = *request.seed;
  if (request.max_tokens) body["max_tokens"] = *request.max_tokens;
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Client::canonical_request(const ChatRequest& request) const {
  json canonical = json::parse(request_body(request));
  canonical["base_url"] = settings_.base_url;
  canonical["sample_index"] = request.sample_index;
  return canonical.dump();  // nlohmann objects keep keys sorted, so equal requests give equal text
}

std::string Client::cache_key(const ChatRequest& request) const { return sha256_hex(canonical_request(request)); }

std::int64_t Client::estimate_tokens(const ChatRequest& request) const {
  // About four bytes of English per token, plus the chat format's few tokens per message.
  std::int64_t prompt = 3;
  for (const auto& message : request.messages) prompt += 4 + std::int64_t(message.content.size() + 3) / 4;
  const std::int64_t choices = request.n ? std::max(1, *request.n) : 1;
  const std::int64_t per_choice = request.max_tokens ? *request.max_tokens : settings_.expected_completion_tokens;
  return prompt + choices * per_choice;
}

ChatResult Client::complete(const ChatRequest& request) { return map({request}).front(); }

// One map() call. Identical requests share a Job; the cache answers what it can; the rest go through libcurl's multi
// interface, at most `concurrency` at a time and within the rate limits, and are retried with backoff. Each step of
// that is a member function; the state they share is the members.
class Client::Batch {
 public:
  Batch(Client& client, const std::vector<ChatRequest>& requests, const MapOptions& options,
        const ProgressCallback& progress)
      : client_(client),
        settings_(client.settings_),
        impl_(*client.impl_),
        stats_(impl_.stats),
        progress_(progress),
        progress_interval_(std::max(0.01, options.progress_interval_seconds)),
        results_(requests.size()),
        url_(settings_.base_url + "/chat/completions") {
    stats_.aborted = false;
    stats_.abort_reason.clear();
    counts_.total = requests.size();
    group(requests);
    answer_from_cache();
    unfinished_ = ready_.size();
    if (!ready_.empty()) prepare_headers();
  }

  ~Batch() {
    cancel_all();
    curl_slist_free_all(headers_);
  }

  std::vector<ChatResult> run() {
    transfer_until_done();
    report(true);
    log_summary();
    return std::move(results_);
  }

 private:
  // Identical requests become one job; a request without messages fails at once.
  void group(const std::vector<ChatRequest>& requests) {
    std::unordered_map<std::string, Job*> job_by_key;
    for (std::size_t index = 0; index < requests.size(); ++index) {
      const ChatRequest& request = requests[index];
      if (request.messages.empty()) {
        results_[index].outcome = Outcome::failed;
        results_[index].error = fmt::format("request {} has no messages; nothing to send", index);
        ++counts_.done;
        ++counts_.failed;
        ++stats_.failures;
        continue;
      }
      std::string key = client_.cache_key(request);
      if (auto found = job_by_key.find(key); found != job_by_key.end()) {
        found->second->indices.push_back(index);
        continue;
      }
      auto job = std::make_unique<Job>();
      job->indices.push_back(index);
      job->key = std::move(key);
      job->canonical = client_.canonical_request(request);
      job->body = client_.request_body(request);
      job->estimated_tokens = client_.estimate_tokens(request);
      job_by_key.emplace(job->key, job.get());
      jobs_.push_back(std::move(job));
    }
  }

  void answer_from_cache() {
    for (auto& job : jobs_) {
      std::optional<CachedReply> cached = impl_.cache ? impl_.cache->get(job->key) : std::nullopt;
      if (!cached) {
        ready_.push_back(job.get());
        continue;
      }
      job->finished = true;
      for (std::size_t index : job->indices) {
        ChatResult& result = results_[index];
        result.outcome = Outcome::ok;
        result.texts = cached->texts;
        result.usage = {cached->prompt_tokens, cached->completion_tokens, cached->total_tokens};
        result.from_cache = true;
        ++counts_.done;
        ++counts_.cache_hits;
        ++stats_.cache_hits;
      }
    }
  }

  // The key is needed only when something must be sent, so a fully cached re-run works without it.
  void prepare_headers() {
    if (!settings_.api_key_env.empty()) {
      const char* value = std::getenv(settings_.api_key_env.c_str());
      if (!value || !*value)
        fail("LLM client: the environment variable {} holding the API key is not set ({} requests to send to {})",
             settings_.api_key_env, ready_.size(), settings_.base_url);
      api_key_ = value;
    }
    headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    headers_ = curl_slist_append(headers_, "Accept: application/json");
    headers_ = curl_slist_append(headers_, "Expect:");  // no 100-continue round trip
    if (!api_key_.empty()) {
      std::string authorization = "Authorization: Bearer " + api_key_;
      headers_ = curl_slist_append(headers_, authorization.c_str());
      std::fill(authorization.begin(), authorization.end(), '\0');
    }
  }

  std::string redact(std::string text) const {
    if (api_key_.empty()) return text;
    for (std::size_t at = text.find(api_key_); at != std::string::npos; at = text.find(api_key_, at))
      text.replace(at, api_key_.size(), "[redacted]");
    return text;
  }

  void finish(Job& job, Outcome outcome, const std::vector<std::string>& texts, const Usage& usage,
              const std::string& error) {
    job.finished = true;
    --unfinished_;
    for (std::size_t index : job.indices) {
      ChatResult& result = results_[index];
      result.outcome = outcome;
      result.texts = texts;
      result.usage = usage;
      result.attempts = job.attempts;
      result.http_status = job.last_status;
      result.error = error;
      ++counts_.done;
      if (outcome != Outcome::ok) {
        ++counts_.failed;
        ++stats_.failures;
      }
    }
    if (outcome == Outcome::ok) ++network_done_;
  }

  void start_transfer(Job& job) {
    CURL* easy = impl_.acquire_handle();
    job.easy = easy;
    job.reply.clear();
    job.reply_too_large = false;
    job.retry_after_seconds.reset();
    job.retry_after_ms.reset();
    job.curl_error[0] = '\0';
    ++job.attempts;
    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job.body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(job.body.size()));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &job);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &job);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, job.curl_error.data());
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &job);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, long(settings_.timeout_seconds * 1000));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, long(settings_.connect_timeout_seconds * 1000));
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "twostage-llm/0.1");
    const CURLMcode added = curl_multi_add_handle(impl_.multi, easy);
    if (added != CURLM_OK) fail("libcurl could not start a transfer: {}", curl_multi_strerror(added));
    in_flight_.push_back(&job);
    ++stats_.requests_sent;
    if (job.attempts > 1) {
      ++stats_.retries;
      ++counts_.retries;
    }
  }

  void release_transfer(Job& job) {
    curl_multi_remove_handle(impl_.multi, job.easy);
    impl_.idle_handles.push_back(job.easy);
    job.easy = nullptr;
    in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), &job));
  }

  void cancel_all() {
    while (!in_flight_.empty()) release_transfer(*in_flight_.back());
  }

  std::string server_message(const std::string& body) const {
    const json parsed = json::parse(body, nullptr, false);
    std::string message;
    if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("error")) {
      const json& error = parsed["error"];
      if (error.is_object() && error.contains("message") && error["message"].is_string())
        message = error["message"].get<std::string>();
      else if (error.is_string())
        message = error.get<std::string>();
    }
    if (message.empty()) message = trim(body.substr(0, 300));
    if (message.empty()) message = "(empty body)";
    return redact(message);
  }

  void schedule_retry(Job& job, const std::string& error, int status, Clock::time_point now) {
    job.last_error = error;
    job.last_status = status;
    if (job.attempts >= settings_.max_attempts) {
      finish(job, Outcome::failed, {}, {},
             fmt::format("gave up after {} attempts; last error: {}", job.attempts, error));
      return;
    }
    std::optional<double> server_delay;
    if (job.retry_after_ms) server_delay = *job.retry_after_ms / 1000.0;
    else if (job.retry_after_seconds) server_delay = *job.retry_after_seconds;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const double delay = retry_delay(settings_, job.attempts, server_delay, unit(impl_.jitter));
    if (server_delay && status == 429 && settings_.pause_all_on_rate_limit)
      impl_.paused_until = std::max(impl_.paused_until,
                                    after_seconds(now, std::min(*server_delay, settings_.retry_after_max_seconds)));
    log::event(spdlog::level::debug, "llm.retry",
               fmt::format("retrying in {:.2f} s after attempt {}: {}", delay, job.attempts, error),
               {{"attempt", job.attempts}, {"status", status}, {"delay_seconds", delay}});
    waiting_.emplace(after_seconds(now, delay), &job);
  }

  void abort_batch(Job& job, const std::string& error) {
    stats_.aborted = true;
    stats_.abort_reason = fmt::format(
        "the server rejected the credentials ({}); the batch stopped and the remaining requests were not sent. "
        "Check the API key in the environment variable {}",
        error, settings_.api_key_env);
    log::event(spdlog::level::err, "llm.abort", stats_.abort_reason, {{"status", job.last_status}});
    cancel_all();
    finish(job, Outcome::aborted, {}, {}, error);
    for (auto& other : jobs_)
      if (!other->finished) finish(*other, Outcome::aborted, {}, {}, "not completed: " + stats_.abort_reason);
    ready_.clear();
    waiting_.clear();
  }

  // Handles one finished transfer; returns false when the batch must stop.
  bool on_done(Job& job, CURLcode code, Clock::time_point now) {
    long status = 0;
    curl_easy_getinfo(job.easy, CURLINFO_RESPONSE_CODE, &status);
    long os_errno = 0;
    curl_easy_getinfo(job.easy, CURLINFO_OS_ERRNO, &os_errno);
    std::string curl_detail = job.curl_error[0] ? std::string(job.curl_error.data()) : curl_easy_strerror(code);
    // curl says "Couldn't connect to server" whatever the cause; the system's reason tells a refused connection
    // (nothing listens there: a wrong port, a stopped server) from an unreachable host.
    if (code == CURLE_COULDNT_CONNECT && os_errno != 0) {
      std::string reason = std::strerror(int(os_errno));
      if (!reason.empty()) reason[0] = char(std::tolower(static_cast<unsigned char>(reason[0])));
      curl_detail = reason + " (" + curl_detail + ")";
    }
    release_transfer(job);
    if (status != 0) impl_.server_answered = true;
    if (code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_URL_MALFORMAT)
      fail("LLM client: base_url {}: {}", settings_.base_url, redact(curl_detail));
    if (code != CURLE_OK || status == 0) return on_no_reply(job, code, int(status), curl_detail, now);
    job.last_status = int(status);
    if (status >= 200 && status < 300) return on_reply(job, int(status), now);
    impl_.token_bucket.give(double(job.estimated_tokens));
    const std::string error = fmt::format("HTTP {} from {}: {}", status, url_, server_message(job.reply));
    if (status == 401 || status == 403) {
      job.last_error = error;
      abort_batch(job, error);
      return false;
    }
    if (status == 408 || status == 409 || status == 429 || status >= 500) {
      schedule_retry(job, error, int(status), now);
      return true;
    }
    job.last_error = error;
    finish(job, Outcome::failed, {}, {}, error);
    return true;
  }

  // A transfer that got no HTTP reply: retried, unless the server has never answered and is not there.
  bool on_no_reply(Job& job, CURLcode code, int status, const std::string& curl_detail, Clock::time_point now) {
    impl_.token_bucket.give(double(job.estimated_tokens));
    const bool unreachable =
        code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY;
    if (unreachable && !impl_.server_answered &&
        job.attempts >= std::min(settings_.max_attempts, std::max(1, settings_.unreachable_attempts)))
      fail("LLM server {} cannot be reached: {}; {} attempt{}, and it has not answered any request (is it running, "
           "and is base_url right?)",
           url_, redact(curl_detail), job.attempts, job.attempts == 1 ? "" : "s");
    std::string error = job.reply_too_large
                            ? fmt::format("reply larger than {} bytes", kMaxReplyBytes)
                            : code == CURLE_OPERATION_TIMEDOUT
                                  ? fmt::format("no reply within {} s ({})", settings_.timeout_seconds, curl_detail)
                                  : fmt::format("connection error: {}", curl_detail);
    schedule_retry(job, redact(error), status, now);
    return true;
  }

  // A 2xx reply: its completions, cached and counted, or a retry when it cannot be parsed.
  bool on_reply(Job& job, int status, Clock::time_point now) {
    ChatCompletion completion = parse_chat_completion(job.reply);
    if (!completion.problem.empty()) {
      impl_.token_bucket.give(double(job.estimated_tokens));
      schedule_retry(job, fmt::format("malformed reply (HTTP {}): {}", status, completion.problem), status, now);
      return true;
    }
    const Usage usage = completion.usage;
    if (usage.total_tokens > 0) impl_.token_bucket.give(double(job.estimated_tokens - usage.total_tokens));
    if (impl_.cache)
      impl_.cache->put(job.key, job.canonical,
                       CachedReply{completion.texts, usage.prompt_tokens, usage.completion_tokens, usage.total_tokens});
    stats_.tokens += usage;
    counts_.tokens += usage;
    ++stats_.succeeded;
    finish(job, Outcome::ok, completion.texts, usage, "");
    return true;
  }

  void report(bool finished) {
    if (!progress_) return;
    const auto now = Clock::now();
    counts_.elapsed_seconds = seconds_between(batch_start_, now);
    counts_.in_flight = std::int64_t(in_flight_.size());
    counts_.requests_per_second =
        counts_.elapsed_seconds > 0 ? double(network_done_) / counts_.elapsed_seconds : 0;
    const std::size_t remaining = counts_.total - counts_.done;
    counts_.eta_seconds = remaining == 0                        ? 0
                          : counts_.requests_per_second > 0 ? double(remaining) / counts_.requests_per_second
                                                              : -1;
    counts_.finished = finished;
    last_progress_ = now;
    progress_(counts_);
  }

  // Starts what the concurrency, a rate-limit pause and the rate limits allow; lowers `wait_seconds` to when more
  // may start.
  void start_ready(Clock::time_point now, double& wait_seconds) {
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      ready_.push_front(waiting_.begin()->second);  // retries go first so that early items finish early
      waiting_.erase(waiting_.begin());
    }
    while (int(in_flight_.size()) < settings_.concurrency && !ready_.empty()) {
      if (now < impl_.paused_until) {
        wait_seconds = std::min(wait_seconds, seconds_between(now, impl_.paused_until));
        break;
      }
      Job& job = *ready_.front();
      const double limit_wait = std::max(impl_.request_bucket.wait_for(1, now),
                                         impl_.token_bucket.wait_for(double(job.estimated_tokens), now));
      if (limit_wait > 0) {
        wait_seconds = std::min(wait_seconds, limit_wait);
        break;
      }
      impl_.request_bucket.take(1);
      impl_.token_bucket.take(double(job.estimated_tokens));
      ready_.pop_front();
      start_transfer(job);
    }
    if (!waiting_.empty()) wait_seconds = std::min(wait_seconds, seconds_between(now, waiting_.begin()->first));
  }

  void transfer_until_done() {
    while (unfinished_ > 0) {
      const auto started = Clock::now();
      double wait_seconds = progress_interval_ - seconds_between(last_progress_, started);
      start_ready(started, wait_seconds);

      int running = 0;
      const CURLMcode performed = curl_multi_perform(impl_.multi, &running);
      if (performed != CURLM_OK) fail("libcurl transfer loop failed: {}", curl_multi_strerror(performed));
      bool any_done = false;
      int queued = 0;
      const auto now = Clock::now();
      while (CURLMsg* message = curl_multi_info_read(impl_.multi, &queued)) {
        if (message->msg != CURLMSG_DONE) continue;
        Job* job = nullptr;
        curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &job);
        any_done = true;
        if (!on_done(*job, message->data.result, now)) return;
      }
      if (seconds_between(last_progress_, Clock::now()) >= progress_interval_ && unfinished_ > 0) report(false);
      if (any_done || unfinished_ == 0) continue;
      const int timeout_ms = int(std::clamp(std::ceil(wait_seconds * 1000), 1.0, 1000.0));
      curl_multi_poll(impl_.multi, nullptr, 0, timeout_ms, nullptr);
    }
  }

  void log_summary() const {
    log::event(counts_.total > 1 ? spdlog::level::info : spdlog::level::debug, "llm.batch",
               fmt::format("{} requests: {} ok, {} from cache, {} failed, {} retries, {} tokens in {:.1f} s",
                           counts_.total, counts_.done - counts_.failed, counts_.cache_hits, counts_.failed,
                           counts_.retries, counts_.tokens.total_tokens, seconds_between(batch_start_, Clock::now())),
               {{"total", counts_.total},
                {"failed", counts_.failed},
                {"cache_hits", counts_.cache_hits},
                {"retries", counts_.retries},
                {"prompt_tokens", counts_.tokens.prompt_tokens},
                {"completion_tokens", counts_.tokens.completion_tokens},
                {"aborted", stats_.aborted}});
  }

  Client& client_;
  const ClientSettings& settings_;
  Impl& impl_;
  Stats& stats_;
  const ProgressCallback& progress_;
  const double progress_interval_;
  const Clock::time_point batch_start_ = Clock::now();
  Clock::time_point last_progress_ = Clock::now();
  std::vector<ChatResult> results_;
  const std::string url_;
  std::vector<std::unique_ptr<Job>> jobs_;
  Progress counts_;
  std::deque<Job*> ready_;                            // may start now
  std::multimap<Clock::time_point, Job*> waiting_;    // retries, by the time they may go
  std::vector<Job*> in_flight_;
  std::size_t network_done_ = 0;                      // answered by the server, for the request rate
  std::size_t unfinished_ = 0;
  std::string api_key_;
  curl_slist* headers_ = nullptr;
};

std::vector<ChatResult> Client::map(const std::vector<ChatRequest>& requests, const MapOptions& options,
                                    const ProgressCallback& progress) {
  return Batch(*this, requests, options, progress).run();
}

std::string format_progress(const Progress& progress) {
  const double percent = progress.total ? 100.0 * double(progress.done) / double(progress.total) : 100.0;
  return fmt::format("{}/{} ({:.1f}%) {:.1f} req/s, cache {}, retries {}, failed {}, tokens {}, ETA {}",
                     progress.done, progress.total, percent, progress.requests_per_second, progress.cache_hits,
                     progress.retries, progress.failed, progress.tokens.total_tokens,
                     progress.finished ? "done" : format_duration(progress.eta_seconds));
}

ProgressCallback terminal_progress(std::string label, double plain_interval_seconds) {
  struct State {
    std::string label;
    double interval;
    bool terminal;
    Clock::time_point last_line = Clock::now();
  };
  auto state = std::make_shared<State>(State{std::move(label), plain_interval_seconds, isatty(fileno(stderr)) == 1});
  return [state](const Progress& progress) {
    const std::string line = format_progress(progress);
    if (state->terminal) {
      constexpr int kWidth = 24;
      const int filled = progress.total ? int(kWidth * progress.done / progress.total) : kWidth;
      const std::string bar = std::string(std::size_t(filled), '#') + std::string(std::size_t(kWidth - filled), '.');
      // \x1b[K clears what a longer previous line left behind.
      std::fprintf(stderr, "\r%s [%s] %s\x1b[K%s", state->label.c_str(), bar.c_str(), line.c_str(),
                   progress.finished ? "\n" : "");
      std::fflush(stderr);
      return;
    }
    const auto now = Clock::now();
    if (!progress.finished && seconds_between(state->last_line, now) < state->interval) return;
    state->last_line = now;
    std::fprintf(stderr, "%s: %s\n", state->label.c_str(), line.c_str());
    std::fflush(stderr);
  };
}

}  // namespace ts::llm
