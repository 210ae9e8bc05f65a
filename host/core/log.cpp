#include "core/log.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>

#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>

#include "core/error.h"

namespace ts::log {
namespace {

// The structured fields of the event being logged; set by event(), read by the JSON sink on the same thread.
thread_local const nlohmann::json* current_fields = nullptr;
thread_local const std::string* current_event = nullptr;

class JsonLinesSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JsonLinesSink(const std::string& path) : out_(path, std::ios::app) {
    if (!out_) fail("cannot open log file '{}'", path);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    nlohmann::json line;
    const auto since_epoch = msg.time.time_since_epoch();
    line["time"] = std::chrono::duration<double>(since_epoch).count();
    line["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                                spdlog::level::to_string_view(msg.level).size());
    line["event"] = current_event ? *current_event : std::string("log");
    line["message"] = std::string(msg.payload.data(), msg.payload.size());
    if (current_fields && current_fields->is_object())
      for (const auto& [key, value] : current_fields->items()) line[key] = value;
    out_ << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out_.flush();
  }
  void flush_() override { out_.flush(); }

 private:
  std::ofstream out_;
};

std::mutex sinks_mutex;
std::shared_ptr<spdlog::sinks::sink> terminal_sink;

std::shared_ptr<spdlog::logger> logger() {
  auto existing = spdlog::get("twostage");
  if (existing) return existing;
  init();
  return spdlog::get("twostage");
}

}  // namespace

void init(spdlog::level::level_enum level) {
  std::lock_guard lock(sinks_mutex);
  // `level` quiets the terminal only: the JSON and log.txt files keep every event from info up.
  const auto logger_level = std::min(level, spdlog::level::info);
  auto existing = spdlog::get("twostage");
  if (existing) {
    terminal_sink->set_level(level);
    existing->set_level(logger_level);
    return;
  }
  terminal_sink = std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>();
  terminal_sink->set_pattern("%^[%H:%M:%S %l]%$ %v");
  terminal_sink->set_level(level);
  auto created = std::make_shared<spdlog::logger>("twostage", terminal_sink);
  created->set_level(logger_level);
  created->flush_on(spdlog::level::info);
  spdlog::register_logger(created);
  spdlog::set_default_logger(created);
}

void add_json_file(const std::string& path) {
  auto sink = std::make_shared<JsonLinesSink>(path);
  auto target = logger();
  std::lock_guard lock(sinks_mutex);
  target->sinks().push_back(sink);
}

void add_text_file(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] %v");
  auto target = logger();
  std::lock_guard lock(sinks_mutex);
  target->sinks().push_back(sink);
}

void close_files() {
  auto target = logger();
  std::lock_guard lock(sinks_mutex);
  auto& sinks = target->sinks();
  sinks.erase(std::remove_if(sinks.begin(), sinks.end(), [](const auto& sink) { return sink != terminal_sink; }),
              sinks.end());
}

void event(spdlog::level::level_enum level, const std::string& name, const std::string& message,
           const nlohmann::json& fields) {
  current_event = &name;
  current_fields = &fields;
  logger()->log(level, "{}", message);
  current_event = nullptr;
  current_fields = nullptr;
}

}  // namespace ts::log
