// Throughput of the LLM client against a local OpenAI-compatible server that answers every request in 200 ms, with
// no rate limit, at concurrency 64. The reference is the ideal rate concurrency / latency = 320 requests/s; the
// target is at least 0.9 of it. Then the size of the reference's SST-2 rate-0.2 augmentation job (75,138 requests)
// is timed in full (about 4 minutes at the ideal rate; target under 10 minutes), or, with --sample N, extrapolated
// from N requests. Both runs commit every reply to a SQLite cache, as a real run does.
//
//   bench_llm [--sample N] [--concurrency C] [--latency-ms L] [--measure N]
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../tests/llm/fake_server.h"
#include "llm/client.h"

namespace {

constexpr std::size_t kSst2Rate02Requests = 75138;  // 37,569 per class at rate 0.2, both classes filled
constexpr double kTargetRatio = 0.9;
constexpr double kTargetJobSeconds = 600;

// Prompts shaped like the reference's: the instruction, a separator, and an SST-2-length sentence (~50 characters).
std::vector<ts::llm::ChatRequest> make_requests(std::size_t count, const std::string& tag) {
  std::vector<ts::llm::ChatRequest> requests;
  requests.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    requests.push_back(ts::llm::ChatRequest::user(
        "Rephrase the following phrase into a different phrase with similar meaning.\n\n---\n\n" + tag +
        " sentence " + std::to_string(i) + ": a gorgeous , witty , seductive movie ."));
  return requests;
}

double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return double(now.tv_sec) + double(now.tv_nsec) * 1e-9;
}

struct Run {
  double seconds = 0;
  double client_cpu_seconds = 0;  // the event loop runs on this thread: all of the client's work
  std::size_t ok = 0;
  ts::llm::Stats stats;
};

Run run_batch(const ts::llm::testing::FakeServer& server, const std::vector<ts::llm::ChatRequest>& requests,
              int concurrency, const std::string& cache_path, bool show_progress) {
  ts::llm::ClientSettings settings;
  settings.base_url = server.base_url();
  settings.api_key_env = "TS_BENCH_LLM_KEY";
  settings.concurrency = concurrency;
  settings.timeout_seconds = 30;
  settings.cache_path = cache_path;
  ts::llm::Client client(settings);
  const auto started = std::chrono::steady_clock::now();
  const double cpu_started = thread_cpu_seconds();
  const auto results =
      client.map(requests, {1.0}, show_progress ? ts::llm::terminal_progress("bench_llm", 15) : ts::llm::ProgressCallback{});
  Run run;
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  run.client_cpu_seconds = thread_cpu_seconds() - cpu_started;
  for (const auto& result : results) run.ok += result.ok();
  run.stats = client.stats();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t sample = 0;  // 0: run the whole job
  std::size_t measure = 5000;
  int concurrency = 64;
  double latency_ms = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--sample")) sample = std::strtoul(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--measure")) measure = std::strtoul(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--concurrency")) concurrency = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--latency-ms")) latency_ms = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  ::setenv("TS_BENCH_LLM_KEY", "sk-bench-not-a-real-key", 1);
  const std::filesystem::path folder =
      std::filesystem::temp_directory_path() / ("ts_bench_llm_" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);

  ts::llm::testing::FakeServer server("sk-bench-not-a-real-key", std::size_t(concurrency) * 2 + 32);
  server.reply_seconds = latency_ms / 1000.0;
  server.record_requests = false;
  const double ideal = concurrency / (latency_ms / 1000.0);
  std::printf("server: 127.0.0.1, every answer after %.0f ms, no rate limit; client concurrency %d\n", latency_ms,
              concurrency);
  std::printf("reference (ideal) rate: concurrency / latency = %.1f requests/s\n", ideal);

  // Throughput on a fixed number of requests (the pipeline fills in the first 200 ms, counted in).
  const auto measured = run_batch(server, make_requests(measure, "measure"), concurrency,
                                  (folder / "measure.sqlite").string(), false);
  const double rate = double(measure) / measured.seconds;
  std::printf("measured: %zu requests in %.2f s = %.1f requests/s; ratio to reference %.3f (target >= %.2f) %s\n",
              measure, measured.seconds, rate, rate / ideal, kTargetRatio, rate / ideal >= kTargetRatio ? "PASS" : "FAIL");
  std::printf("          %zu ok, %lld retries, %lld failures; client CPU %.0f us per request (one thread)\n",
              measured.ok, (long long)measured.stats.retries, (long long)measured.stats.failures,
              1e6 * measured.client_cpu_seconds / double(measure));

  // The SST-2 rate-0.2 job.
  const std::size_t job = sample ? std::min(sample, kSst2Rate02Requests) : kSst2Rate02Requests;
  const auto timed = run_batch(server, make_requests(job, "job"), concurrency, (folder / "job.sqlite").string(), true);
  const double job_rate = double(job) / timed.seconds;
  const double job_seconds = sample ? double(kSst2Rate02Requests) / job_rate : timed.seconds;
  std::printf("SST-2 rate-0.2 job, %zu requests: %s %.1f s (%.1f min) at %.1f requests/s, %zu ok (target < %.0f min) %s\n",
              kSst2Rate02Requests, sample ? "extrapolated from a sample of" : "timed in full:", job_seconds,
              job_seconds / 60, job_rate, timed.ok, kTargetJobSeconds / 60,
              job_seconds < kTargetJobSeconds ? "PASS" : "FAIL");
  if (sample) std::printf("          (sample: %zu requests in %.2f s)\n", job, timed.seconds);

  server.stop();
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);
  return 0;
}
