// libFuzzer target: arbitrary bytes through the tokenizer, lower-cased and cased, with invalid UTF-8 replaced and
// rejected, single texts and truncated pairs. Only ts::Error (invalid UTF-8 in strict mode) may be thrown; every
// id must be in the vocabulary and every encoding must respect max_length.
//
// Uses ../shared/data/vocab/bert-base-uncased/vocab.txt when run from the repository root, else a small built-in
// vocabulary (set TWOSTAGE_FUZZ_VOCAB to use another vocab.txt).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "text/tokenizer.h"

namespace {

using ts::text::Tokenizer;
using ts::text::TokenizerOptions;

struct Tokenizers {
  std::vector<Tokenizer> lenient;  // replace_invalid_utf8
  std::vector<Tokenizer> strict;
};

Tokenizer make(bool lowercase, bool replace, std::optional<bool> strip_accents) {
  TokenizerOptions options;
  options.lowercase = lowercase;
  options.replace_invalid_utf8 = replace;
  options.strip_accents = strip_accents;
  const char* override_path = std::getenv("TWOSTAGE_FUZZ_VOCAB");
  const std::filesystem::path shared = "../shared/data/vocab/bert-base-uncased/vocab.txt";
  if (override_path) return Tokenizer::from_vocab(override_path, options);
  if (std::filesystem::exists(shared)) return Tokenizer::from_vocab(shared, options);
  options.never_split = {"keep!"};
  return Tokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##a", "b", "##b", "é", "##é",
                                 "中", "!", "?", "the", "##s", "i", "keep!"},
                                options, "built-in fuzz vocabulary");
}

const Tokenizers& tokenizers() {
  static const Tokenizers all = [] {
    Tokenizers t;
    for (bool lowercase : {true, false}) {
      t.lenient.push_back(make(lowercase, true, std::nullopt));
      t.strict.push_back(make(lowercase, false, std::nullopt));
    }
    t.lenient.push_back(make(false, true, true));
    t.lenient.push_back(make(true, true, false));
    return t;
  }();
  return all;
}

void check(const Tokenizer& tokenizer, const ts::text::Encoding& encoding, int max_length, bool pair) {
  if (encoding.ids.size() != encoding.type_ids.size()) std::abort();
  if (encoding.ids.size() < (pair ? 3u : 2u)) std::abort();
  if (max_length > 0 && encoding.ids.size() > static_cast<size_t>(max_length)) std::abort();
  if (encoding.ids.front() != tokenizer.cls_id() || encoding.ids.back() != tokenizer.sep_id()) std::abort();
  for (const int32_t id : encoding.ids) {
    if (id < 0 || static_cast<size_t>(id) >= tokenizer.vocab_size()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizers& all = tokenizers();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The first byte picks a max_length and where a pair splits; the whole input is also tokenized as one text.
  const int max_length = size ? 3 + data[0] % 40 : 0;
  const size_t split = size ? (data[0] * 7u) % (size + 1) : 0;
  const std::string_view first = input.substr(0, split);
  const std::string_view second = input.substr(split);

  for (const Tokenizer& tokenizer : all.lenient) {
    const auto tokens = tokenizer.tokenize(input);
    const auto whole = tokenizer.encode(input);
    check(tokenizer, whole, 0, false);
    if (whole.ids.size() != tokens.size() + 2) std::abort();
    check(tokenizer, tokenizer.encode(input, std::nullopt, max_length), max_length, false);
    check(tokenizer, tokenizer.encode(first, second, max_length), max_length, true);
  }
  const bool valid = ts::text::find_invalid_utf8(input) == std::string_view::npos;
  for (size_t i = 0; i < all.strict.size(); ++i) {
    const Tokenizer& tokenizer = all.strict[i];
    try {
      const auto encoding = tokenizer.encode(input);
      if (!valid) std::abort();  // invalid UTF-8 must not pass silently
      check(tokenizer, encoding, 0, false);
      // On valid text, strict and lenient tokenizers agree.
      if (encoding.ids != all.lenient[i].encode(input).ids) std::abort();
    } catch (const ts::Error&) {
      if (valid) std::abort();
    }
  }
  return 0;
}
