#include "core/fs.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ts {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}': {}", path.string(), std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("cannot read '{}'", path.string());
  return buffer.str();
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path temporary = path;
  temporary += fmt::format(".tmp.{}", ::getpid());
  FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) fail("cannot write '{}': {}", temporary.string(), std::strerror(errno));
  bool ok = std::fwrite(content.data(), 1, content.size(), file) == content.size();
  ok = std::fflush(file) == 0 && ok;
  ok = ::fsync(::fileno(file)) == 0 && ok;
  ok = std::fclose(file) == 0 && ok;
  if (!ok) {
    std::remove(temporary.c_str());
    fail("cannot write '{}': {}", path.string(), std::strerror(errno));
  }
  std::error_code error;
  fs::rename(temporary, path, error);
  if (error) {
    std::remove(temporary.c_str());
    fail("cannot rename '{}' to '{}': {}", temporary.string(), path.string(), error.message());
  }
}

namespace {
fs::path resolved(const fs::path& path) {
  return fs::weakly_canonical(fs::absolute(path)).lexically_normal();
}

bool is_within(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}
}  // namespace

void PathSet::allow_tree(const fs::path& root) { trees_.push_back(resolved(root)); }
void PathSet::allow_file(const fs::path& file) { files_.push_back(resolved(file)); }

bool PathSet::allows(const fs::path& path) const {
  const fs::path target = resolved(path);
  for (const auto& file : files_)
    if (target == file) return true;
  for (const auto& root : trees_)
    if (is_within(target, root)) return true;
  return false;
}

std::string PathSet::describe() const {
  std::string allowed;
  for (const auto& root : trees_) allowed += fmt::format("\n  {}/...", root.string());
  for (const auto& file : files_) allowed += fmt::format("\n  {}", file.string());
  return allowed.empty() ? "\n  (nothing)" : allowed;
}

void WritePolicy::check(const fs::path& path) const {
  if (allows(path)) return;
  fail("refused to write '{}': a recipe writes only under its run folder, to --out, and to the paths you gave to "
       "its output settings on the command line; --unsafe lifts this. Allowed:{}",
       path.string(), describe());
}

void ReadPolicy::check(const fs::path& path) const {
  if (allows(path)) return;
  fail("refused to read '{}': a recipe reads only its own folder, the run folder, data/, scripts/ and the paths "
       "you gave on the command line (--set key=PATH); --unsafe lifts this. Allowed:{}",
       path.string(), describe());
}

}  // namespace ts
