#pragma once
// What one recipe run may read and write: the path rules of the sandbox, decided from the command line alone, with
// no Lua in sight. A run writes its run folder and the output paths the user typed; it reads those, its recipe's
// folder, the scripts, the project's data/, and every existing path the user named on the command line. Values a
// sweep file wrote (not the user) open nothing. --unsafe lifts every rule.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/fs.h"
#include "core/settings.h"

namespace ts {

struct RunAccess {
  bool unsafe = false;
  // --set values the user typed, by key; values a sweep file wrote are not here.
  std::map<std::string, std::string> user_values;
  WritePolicy write_policy;
  ReadPolicy read_policy;  // besides what write_policy allows

  // The run's reads: `recipe`'s folder, `scripts`, data/, and each existing file or folder the user named, also as
  // an item of a list (a,b) or with a column after it (PATH:COLUMN).
  void allow_reads(const std::filesystem::path& recipe, const std::filesystem::path& scripts);
  // The output settings' paths the user typed (a folder when it ends in '/' or exists as one).
  void allow_outputs(const std::vector<SettingSpec>& specs);

  // Throw ts::Error naming the path and what is allowed.
  void check_write(const std::filesystem::path& path) const;
  void check_read(const std::filesystem::path& path) const;
  // Whether the user typed `value` on the command line.
  bool given_by_user(const std::string& value) const;
};

}  // namespace ts
