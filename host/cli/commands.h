#pragma once
// Subcommands of the `twostage` executable that need no Lua. Each takes the arguments after its own name and
// returns the process exit status; errors are reported on stderr.
#include <string>
#include <vector>

namespace ts::cli {

// twostage tokenize --vocab PATH [--cased] [--max-length N]
int tokenize(const std::vector<std::string>& args);

// twostage predict --model DIR --input FILE --text-column NAME [--text-pair-column NAME] [--output FILE]
//                  [--batch-size N] [--max-length N]
int predict(const std::vector<std::string>& args);

}  // namespace ts::cli
