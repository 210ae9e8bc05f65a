#pragma once
// `twostage tokenize`: the logic behind host/cli/tokenize.cpp, on streams so that it is testable without a process
// (and without torch, which the cli library links).
#include <iosfwd>
#include <string>
#include <vector>

namespace ts::text {

// twostage tokenize --vocab PATH [--cased] [--max-length N]
// Reads UTF-8 text from `in`, one text per line, and writes one line per text to `out`: its token ids with [CLS] and
// [SEP], separated by single spaces, no padding. --vocab is a vocab.txt or a folder holding one (its
// tokenizer_config.json is honoured); --cased means do_lower_case false; --max-length truncates (0: none).
// Returns 0 on success, 2 on bad usage, 1 on a bad vocabulary or a bad line (the message on `err` names the line;
// the lines before it have been written).
int tokenize_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace ts::text
