#pragma once
// Files: whole-file reads, atomic writes, and the read and write policies that keep a recipe to its own files.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace ts {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path);

// Writes to a temporary name beside `path`, flushes, then renames, so a reader never sees half a file.
void write_file_atomic(const fs::path& path, std::string_view content);

// A set of paths: everything below any of the trees, or exactly one of the files. Paths are compared after
// resolving `.`, `..` and symbolic links of the existing part of the path, so a link cannot lead out of a tree.
class PathSet {
 public:
  void allow_tree(const fs::path& root);
  void allow_file(const fs::path& file);
  bool allows(const fs::path& path) const;
  const std::vector<fs::path>& trees() const { return trees_; }
  // One indented line per tree ("root/...") and file, for error messages.
  std::string describe() const;

 private:
  std::vector<fs::path> trees_;
  std::vector<fs::path> files_;
};

// Where a recipe may write. check() throws ts::Error naming the path and what is allowed.
class WritePolicy : public PathSet {
 public:
  void check(const fs::path& path) const;
};

// What a recipe may read besides what it may write. check() throws ts::Error naming the path and what is allowed.
class ReadPolicy : public PathSet {
 public:
  void check(const fs::path& path) const;
};

}  // namespace ts
