#pragma once
// A persistent cache of successful chat completions in SQLite (WAL mode). Each success is committed on its own as it
// arrives, so a run killed with SIGKILL loses nothing that had completed; the next run finds it here.
//
// Keys are SHA-256 digests of the canonical request (see Client::cache_key); the API key is never part of a key or a
// row. Failures are never stored.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace ts::llm {

struct CachedReply {
  std::vector<std::string> texts;  // choices[i].message.content in choice order
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
};

class ResponseCache {
 public:
  // Opens or creates the database at `path` (its folder must exist). Throws ts::Error naming the path.
  explicit ResponseCache(const std::string& path);
  ~ResponseCache();
  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  std::optional<CachedReply> get(const std::string& key);
  // `request_json` is the canonical request (no credentials), kept so a row can be audited.
  void put(const std::string& key, const std::string& request_json, const CachedReply& reply);
  std::int64_t size();
  const std::string& path() const { return path_; }

 private:
  void check(int code, const char* what);

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* select_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
};

}  // namespace ts::llm
