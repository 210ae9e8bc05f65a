#pragma once
// Files: whole-file reads, atomic writes, and the write policy that keeps a recipe inside its output folder.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace ts {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path);

// Writes to a temporary name beside `path`, flushes, then renames, so a reader never sees half a file.
void write_file_atomic(const fs::path& path, std::string_view content);

// Where a recipe may write: below any of `roots`, or exactly one of `files`. Paths are compared after
// resolving `.`, `..` and symbolic links of the existing part of the path.
class WritePolicy {
 public:
  void allow_tree(const fs::path& root);
  void allow_file(const fs::path& file);
  bool allows(const fs::path& path) const;
  // Throws ts::Error naming the path and what is allowed.
  void check(const fs::path& path) const;
  const std::vector<fs::path>& trees() const { return trees_; }

 private:
  std::vector<fs::path> trees_;
  std::vector<fs::path> files_;
};

}  // namespace ts
