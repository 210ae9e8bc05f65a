#include "core/run_access.h"

#include <algorithm>
#include <system_error>

namespace ts {
namespace {

// Allows `path` when it names an existing file (that file) or folder (all below it); returns whether it did.
bool allow_existing(ReadPolicy& readable, const std::string& path) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (std::filesystem::is_directory(status)) {
    readable.allow_tree(path);
  } else if (std::filesystem::exists(status)) {
    readable.allow_file(path);
  } else {
    return false;
  }
  return true;
}

}  // namespace

void RunAccess::allow_reads(const std::filesystem::path& recipe, const std::filesystem::path& scripts) {
  if (!recipe.empty()) read_policy.allow_tree(std::filesystem::absolute(recipe).parent_path());
  read_policy.allow_tree(scripts);
  read_policy.allow_tree("data");
  for (const auto& [key, value] : user_values) {
    if (value.empty() || allow_existing(read_policy, value)) continue;
    for (size_t start = 0; start < value.size();) {
      const size_t comma = std::min(value.find(',', start), value.size());
      const std::string item = value.substr(start, comma - start);
      start = comma + 1;
      if (item.empty() || allow_existing(read_policy, item)) continue;
      if (const size_t colon = item.rfind(':'); colon != std::string::npos && colon > 0)
        allow_existing(read_policy, item.substr(0, colon));
    }
  }
}

// A recipe's own default, or a sweep file's value, stays inside the run folder.
void RunAccess::allow_outputs(const std::vector<SettingSpec>& specs) {
  for (const auto& spec : specs) {
    if (!spec.output) continue;
    const auto given = user_values.find(spec.name);
    if (given == user_values.end() || given->second.empty()) continue;
    const std::string& value = given->second;
    write_policy.allow_file(value);
    if (value.back() == '/' || std::filesystem::is_directory(value)) write_policy.allow_tree(value);
  }
}

void RunAccess::check_write(const std::filesystem::path& path) const {
  if (!unsafe) write_policy.check(path);
}

void RunAccess::check_read(const std::filesystem::path& path) const {
  if (unsafe || write_policy.allows(path)) return;
  read_policy.check(path);
}

bool RunAccess::given_by_user(const std::string& value) const {
  return std::any_of(user_values.begin(), user_values.end(),
                     [&](const auto& item) { return item.second == value; });
}

}  // namespace ts
