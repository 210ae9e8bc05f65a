#include "llm/cache.h"

#include <chrono>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "core/error.h"

namespace ts::llm {

void ResponseCache::check(int code, const char* what) {
  if (code == SQLITE_OK || code == SQLITE_DONE || code == SQLITE_ROW) return;
  fail("LLM cache '{}': {} failed: {}", path_, what, db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(code));
}

ResponseCache::ResponseCache(const std::string& path) : path_(path) {
  const int opened = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (opened != SQLITE_OK) {
    const std::string reason = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(opened);
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot open LLM cache '{}': {}", path, reason);
  }
  sqlite3_busy_timeout(db_, 10000);
  // WAL with synchronous=NORMAL: a commit survives the process being killed (the WAL is in the OS page cache);
  // only a power loss may drop the last commits, and the cache is rebuilt by asking again.
  const char* setup =
      "PRAGMA journal_mode=WAL;"
      "PRAGMA synchronous=NORMAL;"
      "CREATE TABLE IF NOT EXISTS completions ("
      "  key TEXT PRIMARY KEY,"
      "  request TEXT NOT NULL,"
      "  reply TEXT NOT NULL,"
      "  created REAL NOT NULL);";
  char* message = nullptr;
  if (sqlite3_exec(db_, setup, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string reason = message ? message : "unknown error";
    sqlite3_free(message);
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot set up LLM cache '{}': {}", path, reason);
  }
  check(sqlite3_prepare_v2(db_, "SELECT reply FROM completions WHERE key = ?1", -1, &select_, nullptr), "prepare");
  check(sqlite3_prepare_v2(db_,
                           "INSERT OR REPLACE INTO completions (key, request, reply, created) VALUES (?1, ?2, ?3, ?4)",
                           -1, &insert_, nullptr),
        "prepare");
}

ResponseCache::~ResponseCache() {
  sqlite3_finalize(select_);
  sqlite3_finalize(insert_);
  sqlite3_close(db_);
}

std::optional<CachedReply> ResponseCache::get(const std::string& key) {
  sqlite3_reset(select_);
  sqlite3_bind_text(select_, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
  const int step = sqlite3_step(select_);
  if (step == SQLITE_DONE) return std::nullopt;
  check(step, "lookup");
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(select_, 0));
  const std::string stored = text ? text : "";
  sqlite3_reset(select_);
  const auto json = nlohmann::json::parse(stored, nullptr, false);
  // A row that does not parse is treated as absent and will be overwritten by the next success.
  if (json.is_discarded() || !json.is_object() || !json.contains("texts")) return std::nullopt;
  CachedReply reply;
  for (const auto& text_value : json["texts"]) reply.texts.push_back(text_value.get<std::string>());
  reply.prompt_tokens = json.value("prompt_tokens", std::int64_t(0));
  reply.completion_tokens = json.value("completion_tokens", std::int64_t(0));
  reply.total_tokens = json.value("total_tokens", std::int64_t(0));
  return reply;
}

void ResponseCache::put(const std::string& key, const std::string& request_json, const CachedReply& reply) {
  const nlohmann::json stored = {{"texts", reply.texts},
                                 {"prompt_tokens", reply.prompt_tokens},
                                 {"completion_tokens", reply.completion_tokens},
                                 {"total_tokens", reply.total_tokens}};
  const std::string text = stored.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  sqlite3_reset(insert_);
  sqlite3_bind_text(insert_, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(insert_, 2, request_json.data(), int(request_json.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(insert_, 3, text.data(), int(text.size()), SQLITE_TRANSIENT);
  sqlite3_bind_double(insert_, 4, now);
  const int step = sqlite3_step(insert_);
  sqlite3_reset(insert_);
  check(step, "insert");
}

std::int64_t ResponseCache::size() {
  sqlite3_stmt* count = nullptr;
  check(sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM completions", -1, &count, nullptr), "prepare");
  std::int64_t rows = 0;
  if (sqlite3_step(count) == SQLITE_ROW) rows = sqlite3_column_int64(count, 0);
  sqlite3_finalize(count);
  return rows;
}

}  // namespace ts::llm
