#pragma once
// An OpenAI-compatible chat-completions server on 127.0.0.1 (ephemeral port), in-process, for tests and the
// benchmark. A policy decides, per request, whether to answer or to inject a fault: 429 with Retry-After, 500, 503,
// an answer slower than the client's timeout, a dropped connection, malformed JSON, 400, 401.
// It counts requests per prompt (the last message's content) and records when each arrived.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace ts::llm::testing {

enum class Fault {
  none,
  rate_limit,      // 429 with Retry-After: retry_after (and retry-after-ms when retry_after_ms is set)
  server_error,    // 500
  unavailable,     // 503
  slow,            // a correct answer after slow_seconds (longer than the client's timeout)
  drop,            // the connection is shut down without any reply
  malformed,       // 200 with a body that is not JSON
  no_choices,      // 200 with JSON but no "choices"
  bad_request,     // 400
  not_found,       // 404
  unauthorized,    // 401, echoing the key it was sent (as OpenAI does, partly), to test redaction
};

class FakeServer {
 public:
  using Clock = std::chrono::steady_clock;
  // policy(prompt, attempt): attempt is 1 for the first request with that prompt, 2 for the second, ...
  using Policy = std::function<Fault(const std::string& prompt, int attempt)>;

  explicit FakeServer(std::string expected_key = "", std::size_t threads = 128)
      : expected_key_(std::move(expected_key)) {
    ::signal(SIGPIPE, SIG_IGN);  // writes to a connection the client gave up on must not kill the test
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_keep_alive_max_count(1000000);
    server_.set_keep_alive_timeout(30);
    server_.set_tcp_nodelay(true);
    server_.Post("/v1/chat/completions",
                 [this](const httplib::Request& request, httplib::Response& response) { handle(request, response); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("fake server: cannot bind 127.0.0.1");
    server_.widen_backlog();
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the accept loop runs, so a server stopped right after starting would never end.
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeServer() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();
  }

  // How long an idle keep-alive connection stays open (30 s by default). stop() waits for open ones to time out,
  // so a test that stops a server its client has talked to shortens it first.
  void set_keep_alive_seconds(time_t seconds) { server_.set_keep_alive_timeout(seconds); }

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

  // Settings; set them before sending requests.
  Policy policy = [](const std::string&, int) { return Fault::none; };
  double reply_seconds = 0;   // every normal answer waits this long (the benchmark's 200 ms)
  double slow_seconds = 1.0;  // Fault::slow waits this long
  std::string retry_after = "1";
  std::string retry_after_ms;  // empty: header not sent
  std::int64_t usage_total = 0;  // 0: usage derived from the text sizes
  // As llama.cpp's server (tests/llm_server): n above its parallel slots is a 400 invalid_request_error, and with
  // n > 1 its usage counts the first choice's completion tokens only. 0 / false: as the OpenAI API.
  int max_n = 0;
  bool usage_first_choice_only = false;
  // As llama.cpp's server: a request with a seed is answered as a function of it, choice i as if asked with
  // seed + i, so that two requests whose seed ranges overlap repeat each other's replies.
  bool answers_follow_seed = false;
  bool record_requests = true;   // keep bodies and Authorization headers (the benchmark turns this off)
  // The content of a normal answer; unset: reply_for(prompt, choice). `attempt` counts this prompt's requests.
  std::function<std::string(const std::string& prompt, int attempt, int choice)> answer;

  int requests_for(const std::string& prompt) const {
    std::lock_guard lock(mutex_);
    auto found = arrivals_.find(prompt);
    return found == arrivals_.end() ? 0 : int(found->second.size());
  }
  std::vector<Clock::time_point> arrivals_for(const std::string& prompt) const {
    std::lock_guard lock(mutex_);
    auto found = arrivals_.find(prompt);
    return found == arrivals_.end() ? std::vector<Clock::time_point>{} : found->second;
  }
  std::map<std::string, int> counts() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, int> counts;
    for (const auto& [prompt, times] : arrivals_) counts[prompt] = int(times.size());
    return counts;
  }
  int total_requests() const { return total_.load(); }
  int answered() const { return answered_.load(); }
  std::vector<nlohmann::json> bodies() const {
    std::lock_guard lock(mutex_);
    return bodies_;
  }
  std::vector<std::string> authorizations() const {
    std::lock_guard lock(mutex_);
    return authorizations_;
  }

  // The answer for a prompt: what a test expects to receive.
  static std::string reply_for(const std::string& prompt, int choice = 0) {
    return choice == 0 ? "paraphrase of: " + prompt : "paraphrase " + std::to_string(choice) + " of: " + prompt;
  }

 private:
  void handle(const httplib::Request& request, httplib::Response& response) {
    ++total_;
    const nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
    std::string prompt;
    if (!body.is_discarded() && body.contains("messages") && body["messages"].is_array() &&
        !body["messages"].empty())
      prompt = body["messages"].back().value("content", "");
    const std::string authorization = request.get_header_value("Authorization");
    int attempt;
    {
      std::lock_guard lock(mutex_);
      auto& times = arrivals_[prompt];
      times.push_back(Clock::now());
      attempt = int(times.size());
      if (record_requests) {
        bodies_.push_back(body);
        authorizations_.push_back(authorization);
      }
    }
    const bool key_ok = expected_key_.empty() || authorization == "Bearer " + expected_key_;
    const Fault fault = key_ok ? policy(prompt, attempt) : Fault::unauthorized;
    switch (fault) {
      case Fault::rate_limit:
        response.status = 429;
        response.set_header("Retry-After", retry_after);
        if (!retry_after_ms.empty()) response.set_header("retry-after-ms", retry_after_ms);
        response.set_content(R"({"error":{"message":"Rate limit reached","type":"requests"}})", "application/json");
        return;
      case Fault::server_error:
        response.status = 500;
        response.set_content(R"({"error":{"message":"The server had an error"}})", "application/json");
        return;
      case Fault::unavailable:
        response.status = 503;
        response.set_content("Service Unavailable", "text/plain");
        return;
      case Fault::drop:
        drop_connection(request.remote_port);
        return;
      case Fault::malformed:
        response.set_content(R"({"id":"chatcmpl-1","choices":[{"message":)", "application/json");
        return;
      case Fault::no_choices:
        response.set_content(R"({"id":"chatcmpl-1","object":"chat.completion"})", "application/json");
        return;
      case Fault::bad_request:
        response.status = 400;
        response.set_content(R"({"error":{"message":"This model's maximum context length is 4097 tokens"}})",
                             "application/json");
        return;
      case Fault::not_found:
        response.status = 404;
        response.set_content(R"({"error":{"message":"The model 'gpt-nope' does not exist"}})", "application/json");
        return;
      case Fault::unauthorized: {
        const std::string sent = authorization.rfind("Bearer ", 0) == 0 ? authorization.substr(7) : authorization;
        response.status = 401;
        response.set_content(
            nlohmann::json{{"error", {{"message", "Incorrect API key provided: " + sent + "."}}}}.dump(),
            "application/json");
        return;
      }
      case Fault::slow:
        std::this_thread::sleep_for(std::chrono::duration<double>(slow_seconds));
        break;
      case Fault::none:
        break;
    }
    if (reply_seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(reply_seconds));
    const int n = body.is_discarded() ? 1 : body.value("n", 1);
    if (max_n > 0 && n > max_n) {  // llama.cpp's words, field and all
      response.status = 400;
      response.set_content(
          nlohmann::json{{"error",
                          {{"code", 400},
                           {"message", "Field 'n': Value must be between 1 <= value <= " + std::to_string(max_n) +
                                           ", but got " + std::to_string(n)},
                           {"type", "invalid_request_error"}}}}
              .dump(),
          "application/json");
      return;
    }
    nlohmann::json choices = nlohmann::json::array();
    const bool seeded = answers_follow_seed && !body.is_discarded() && body.contains("seed");
    const auto content = [&](int choice) {
      if (seeded) {  // of the text after the reference prompt's separator, so that the reply echoes no instruction
        const auto separator = prompt.rfind("---\n\n");
        const std::string text = separator == std::string::npos ? prompt : prompt.substr(separator + 5);
        return "sample " + std::to_string(body["seed"].get<std::int64_t>() + choice) + " of: " + text;
      }
      return answer ? answer(prompt, attempt, choice) : reply_for(prompt, choice);
    };
    // Choices in reverse index order, so that the client has to sort them.
    for (int choice = n - 1; choice >= 0; --choice)
      choices.push_back({{"index", choice},
                         {"message", {{"role", "assistant"}, {"content", content(choice)}}},
                         {"finish_reason", "stop"}});
    const std::int64_t prompt_tokens = usage_total ? usage_total / 2 : std::int64_t(prompt.size() / 4 + 8);
    const std::int64_t completion_tokens =
        usage_total ? usage_total - prompt_tokens : std::int64_t((usage_first_choice_only ? 1 : n) * 6);
    const nlohmann::json reply = {
        {"id", "chatcmpl-test"},
        {"object", "chat.completion"},
        {"choices", choices},
        {"usage",
         {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}}}};
    response.set_content(reply.dump(), "application/json");
    ++answered_;
  }

  // httplib has no way to hang up from a handler, so find this connection's socket by its ports and shut it down:
  // the client then sees the connection closed with no reply at all.
  void drop_connection(int remote_port) {
    std::vector<int> descriptors;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      try {
        descriptors.push_back(std::stoi(entry.path().filename().string()));
      } catch (const std::exception&) {
      }
    }
    for (int fd : descriptors) {
      sockaddr_in peer{}, local{};
      socklen_t peer_size = sizeof peer, local_size = sizeof local;
      if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0) continue;
      if (peer.sin_family != AF_INET || ntohs(peer.sin_port) != remote_port) continue;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0) continue;
      if (ntohs(local.sin_port) != port_) continue;
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
  }

  // httplib listens with a backlog of 5: a burst of new connections beyond that waits for a SYN retransmission
  // (a second or more), which looks like a dead server. Listening again on the same socket widens the queue.
  struct Server : httplib::Server {
    void widen_backlog() { ::listen(svr_sock_, 4096); }
  };

  std::string expected_key_;
  Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<Clock::time_point>> arrivals_;
  std::vector<nlohmann::json> bodies_;
  std::vector<std::string> authorizations_;
  std::atomic<int> total_{0};
  std::atomic<int> answered_{0};
};

}  // namespace ts::llm::testing
