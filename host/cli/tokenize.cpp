// `twostage tokenize`: see host/text/tokenize_command.h, where the logic lives so that it is tested without torch.
#include <iostream>

#include "cli/commands.h"
#include "text/tokenize_command.h"

namespace ts::cli {

int tokenize(const std::vector<std::string>& args) {
  std::ios::sync_with_stdio(false);
  return ts::text::tokenize_command(args, std::cin, std::cout, std::cerr);
}

}  // namespace ts::cli
