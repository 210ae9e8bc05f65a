#pragma once
// Runs the built twostage executable as a user would, capturing its output, for tests of whole commands.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <twostage/build_info.h>

namespace ts::testing {

struct Result {
  int status;          // exit status, -1 when killed by a signal
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing what it prints on stdout and stderr.
inline Result run_command(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  size_t read = 0;
  while ((read = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, read);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

inline Result run_twostage(const std::string& arguments) {
  return run_command(std::string(TWOSTAGE_BINARY_DIR) + "/twostage " + arguments);
}

}  // namespace ts::testing
