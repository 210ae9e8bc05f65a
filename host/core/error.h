#pragma once
// Errors a user can act on: the message names the file, line, key or value at fault.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace ts {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace ts
