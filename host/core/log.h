#pragma once
// Logging: one readable line per event on the terminal (stderr), the same events as JSON lines in a file
// (--log-json), and a plain copy in the run folder's log.txt.
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace ts::log {

// Sets up the terminal logger, showing events from `level` up; safe to call more than once (tests do).
void init(spdlog::level::level_enum level = spdlog::level::info);
// Adds a sink writing every event as one JSON object a line: {"time","level","event","message", fields...}.
void add_json_file(const std::string& path);
// Adds a sink writing the readable lines to a file (a run folder's log.txt).
void add_text_file(const std::string& path);
// Removes file sinks (at the end of a run, or between runs in tests).
void close_files();

// A structured event: `message` is what a person reads; `fields` go into the JSON line as they are.
void event(spdlog::level::level_enum level, const std::string& name, const std::string& message,
           const nlohmann::json& fields = nlohmann::json::object());
inline void info(const std::string& name, const std::string& message,
                 const nlohmann::json& fields = nlohmann::json::object()) {
  event(spdlog::level::info, name, message, fields);
}

}  // namespace ts::log
