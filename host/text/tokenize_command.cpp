#include "text/tokenize_command.h"

#include <charconv>
#include <filesystem>
#include <istream>
#include <optional>
#include <ostream>

#include "core/error.h"
#include "text/tokenizer.h"

namespace ts::text {

namespace {

constexpr const char* kUsage =
    "usage: twostage tokenize --vocab PATH [--cased] [--max-length N]\n"
    "\n"
    "Reads UTF-8 text from standard input, one text per line, and prints one line per text: its BERT WordPiece\n"
    "token ids, [CLS] and [SEP] included, separated by spaces.\n"
    "\n"
    "  --vocab PATH      a vocab.txt, or a folder holding vocab.txt (and tokenizer_config.json, if any)\n"
    "  --cased           do not lower-case (do_lower_case false); default: as tokenizer_config.json says, else\n"
    "                    lower-case\n"
    "  --max-length N    truncate to N ids, [CLS] and [SEP] included (N >= 3); default: no truncation\n"
    "  -h, --help        show this message\n";

}  // namespace

int tokenize_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err) {
  std::string vocab;
  bool cased = false;
  int max_length = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&](const char* name) -> const std::string* {
      if (i + 1 >= args.size()) {
        err << "twostage tokenize: " << name << " needs a value\n\n" << kUsage;
        return nullptr;
      }
      return &args[++i];
    };
    if (arg == "-h" || arg == "--help") {
      out << kUsage;
      return 0;
    } else if (arg == "--vocab") {
      const std::string* path = value("--vocab");
      if (!path) return 2;
      vocab = *path;
    } else if (arg == "--cased") {
      cased = true;
    } else if (arg == "--max-length") {
      const std::string* text = value("--max-length");
      if (!text) return 2;
      const char* end = text->data() + text->size();
      const auto [rest, error] = std::from_chars(text->data(), end, max_length);
      if (error != std::errc() || rest != end || max_length < 0 || (max_length > 0 && max_length < 3)) {
        err << "twostage tokenize: --max-length must be 0 (no truncation) or an integer >= 3, not '" << *text
            << "'\n";
        return 2;
      }
    } else {
      err << "twostage tokenize: unknown argument '" << arg << "'\n\n" << kUsage;
      return 2;
    }
  }
  if (vocab.empty()) {
    err << "twostage tokenize: --vocab is required\n\n" << kUsage;
    return 2;
  }

  std::optional<Tokenizer> tokenizer;
  try {
    namespace fs = std::filesystem;
    const fs::path path(vocab);
    fs::path vocab_file = path;
    if (fs::is_directory(path)) vocab_file = path / "vocab.txt";
    if (!fs::exists(vocab_file)) {
      err << "twostage tokenize: " << vocab_file.string() << ": no such file; --vocab takes a vocab.txt or its folder\n";
      return 1;
    }
    fs::path folder = vocab_file.parent_path();
    if (folder.empty()) folder = ".";
    TokenizerOptions options = Tokenizer::read_options(folder);
    if (cased) options.lowercase = false;
    tokenizer.emplace(Tokenizer::from_vocab(vocab_file, options));
  } catch (const std::exception& error) {
    err << "twostage tokenize: " << error.what() << "\n";
    return 1;
  }

  std::string line;
  std::string buffer;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    Encoding encoding;
    try {
      encoding = tokenizer->encode(line, std::nullopt, max_length);
    } catch (const std::exception& error) {
      out << buffer << std::flush;
      err << "twostage tokenize: <stdin>:" << line_number << ": " << error.what() << "\n";
      return 1;
    }
    for (size_t i = 0; i < encoding.ids.size(); ++i) {
      if (i) buffer.push_back(' ');
      char digits[16];
      const auto [end, error] = std::to_chars(digits, digits + sizeof digits, encoding.ids[i]);
      buffer.append(digits, end);
    }
    buffer.push_back('\n');
    if (buffer.size() > (1u << 16)) {
      out << buffer;
      buffer.clear();
    }
  }
  out << buffer << std::flush;
  return 0;
}

}  // namespace ts::text
