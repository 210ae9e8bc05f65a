#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "text/tokenize_command.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;
using ts::text::Encoding;
using ts::text::Tokenizer;
using ts::text::TokenizerOptions;

namespace {

const fs::path kVocabFolder = "../shared/data/vocab/bert-base-uncased";
const fs::path kGolden = "../shared/golden/tokenizer_cases.jsonl";

const Tokenizer& bert(bool lowercase) {
  static const Tokenizer lower = [] {
    TokenizerOptions options;
    options.lowercase = true;
    return Tokenizer::from_vocab(kVocabFolder / "vocab.txt", options);
  }();
  static const Tokenizer cased = [] {
    TokenizerOptions options;
    options.lowercase = false;
    return Tokenizer::from_vocab(kVocabFolder / "vocab.txt", options);
  }();
  return lowercase ? lower : cased;
}

std::string join(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  return out;
}

// A small vocabulary for unit tests that must not depend on the shared data.
Tokenizer tiny(TokenizerOptions options = {}) {
  return Tokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello",
                                 "world", "!", ",", "a", "##b", "e", "é", "i", "straße"},
                                options);
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("twostage_tok_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("every golden Hugging Face tokenizer case is reproduced", "[tokenizer][golden]") {
  std::ifstream in(kGolden);
  REQUIRE(in.good());
  std::string line;
  size_t line_number = 0, cases = 0, pairs = 0, failures = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    const auto json = nlohmann::json::parse(line);
    const auto expected = json.at("ids").get<std::vector<int32_t>>();
    const Tokenizer& tokenizer = bert(json.at("lowercase").get<bool>());
    const std::string text = json.at("text").get<std::string>();
    Encoding got;
    std::vector<int32_t> expected_types;
    if (json.contains("text_pair")) {
      ++pairs;
      got = tokenizer.encode(text, json.at("text_pair").get<std::string>(), json.at("max_length").get<int>());
      expected_types = json.at("token_type_ids").get<std::vector<int32_t>>();
    } else {
      got = tokenizer.encode(text);
      expected_types.assign(expected.size(), 0);
    }
    ++cases;
    if (got.ids != expected || got.type_ids != expected_types) {
      ++failures;
      if (failures <= 20) {
        UNSCOPED_INFO("line " << line_number << " text " << nlohmann::json(text).dump()
                              << (json.contains("text_pair") ? " pair " + json["text_pair"].dump() : "")
                              << "\n  expected ids   " << join(expected) << "\n  got ids        " << join(got.ids)
                              << "\n  expected types " << join(expected_types) << "\n  got types      "
                              << join(got.type_ids));
      }
    }
  }
  INFO(cases << " cases, " << pairs << " pairs");
  CHECK(cases == 2578);
  CHECK(pairs > 0);
  CHECK(failures == 0);
}

TEST_CASE("tokens and ids of a plain sentence", "[tokenizer]") {
  const Tokenizer& tokenizer = bert(true);
  CHECK(tokenizer.vocab_size() == 30522);
  CHECK(tokenizer.cls_id() == 101);
  CHECK(tokenizer.sep_id() == 102);
  CHECK(tokenizer.pad_id() == 0);
  CHECK(tokenizer.mask_id() == 103);
  CHECK(tokenizer.unk_id() == 100);
  CHECK(tokenizer.tokenize("Unaffable, isn't it?") ==
        std::vector<std::string>{"una", "##ffa", "##ble", ",", "isn", "'", "t", "it", "?"});
  CHECK(tokenizer.token_to_id("hello") == 7592);
  CHECK(tokenizer.token_to_id("no-such-token") == 100);
  CHECK_FALSE(tokenizer.find_id("no-such-token").has_value());
  CHECK(tokenizer.id_to_token(7592) == "hello");
  CHECK_THROWS_AS(tokenizer.id_to_token(30522), ts::Error);
  CHECK_THROWS_AS(tokenizer.id_to_token(-1), ts::Error);
}

TEST_CASE("empty and blank texts give [CLS] [SEP] only", "[tokenizer]") {
  const Tokenizer& tokenizer = bert(true);
  CHECK(tokenizer.encode("").ids == std::vector<int32_t>{101, 102});
  CHECK(tokenizer.encode(" \t\n\x01").ids == std::vector<int32_t>{101, 102});
  CHECK(tokenizer.encode("", std::string_view("")).ids == std::vector<int32_t>{101, 102, 102});
  CHECK(tokenizer.encode("", std::string_view("")).type_ids == std::vector<int32_t>{0, 0, 1});
  CHECK(tokenizer.tokenize("").empty());
}

TEST_CASE("invalid UTF-8 throws, or is replaced when asked", "[tokenizer][utf8]") {
  const std::string bad = std::string("hello \xff") + "world \xC3";
  const Tokenizer& strict = bert(true);
  try {
    strict.encode(bad);
    FAIL("no error for invalid UTF-8");
  } catch (const ts::Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("invalid UTF-8 at byte 6"));
  }
  // Overlong, surrogate and out-of-range forms are invalid too, as in Python.
  for (const std::string& text : {std::string("\xC0\xAF"), std::string("\xED\xA0\x80"), std::string("\xF4\x90\x80\x80"),
                                  std::string("\xE0\x80\xAF"), std::string("a\x80")}) {
    CHECK_THROWS_AS(strict.encode(text), ts::Error);
    CHECK(ts::text::find_invalid_utf8(text) != std::string_view::npos);
  }
  CHECK(ts::text::find_invalid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80") == std::string_view::npos);

  TokenizerOptions options;
  options.replace_invalid_utf8 = true;
  const Tokenizer lenient = Tokenizer::from_vocab(kVocabFolder / "vocab.txt", options);
  // Python decodes with errors="replace" to U+FFFD, which BasicTokenizer then drops without splitting the word.
  CHECK(ts::text::replace_invalid_utf8(bad) == "hello \xEF\xBF\xBDworld \xEF\xBF\xBD");
  CHECK(lenient.encode(bad).ids == strict.encode("hello world").ids);
  CHECK(lenient.encode("hel\xfflo").ids == strict.encode("hello").ids);
  CHECK(lenient.encode(std::string("\xED\xA0\x80", 3)).ids == std::vector<int32_t>{101, 102});
}

TEST_CASE("longest_first truncation of pairs", "[tokenizer][truncation]") {
  const Tokenizer& tokenizer = bert(true);
  // 6 and 3 word pieces: "a b c d e f" and "x y z".
  const Encoding full = tokenizer.encode("a b c d e f", std::string_view("x y z"));
  REQUIRE(full.ids.size() == 12);
  // Remove 4: three from the longer first text (6 -> 3 = 3), then one from the second (ties go to the second).
  const Encoding cut = tokenizer.encode("a b c d e f", std::string_view("x y z"), 8);
  const auto a = tokenizer.ids("a b c");
  const auto x = tokenizer.ids("x y");
  std::vector<int32_t> expected = {101};
  expected.insert(expected.end(), a.begin(), a.end());
  expected.push_back(102);
  expected.insert(expected.end(), x.begin(), x.end());
  expected.push_back(102);
  CHECK(cut.ids == expected);
  CHECK(cut.type_ids == std::vector<int32_t>{0, 0, 0, 0, 0, 1, 1, 1});
  // Single texts are cut at the end; texts that fit are untouched.
  CHECK(tokenizer.encode("a b c d e f", std::nullopt, 4).ids == std::vector<int32_t>{101, 1037, 1038, 102});
  CHECK(tokenizer.encode("a b", std::nullopt, 100).ids == tokenizer.encode("a b").ids);
  CHECK(tokenizer.encode("a b c", std::string_view("x"), 3).ids == std::vector<int32_t>{101, 102, 102});
  CHECK_THROWS_AS(tokenizer.encode("a", std::nullopt, 2), ts::Error);
  CHECK_THROWS_AS(tokenizer.encode("a", std::nullopt, -1), ts::Error);
}

TEST_CASE("special tokens written in the text", "[tokenizer]") {
  const Tokenizer& lower = bert(true);
  const Tokenizer& cased = bert(false);
  CHECK(lower.encode("x[MASK]y").ids == std::vector<int32_t>{101, 1060, 103, 1061, 102});
  // Lower-case spellings are ordinary text.
  CHECK(lower.encode("[mask]").ids == std::vector<int32_t>{101, 1031, 7308, 1033, 102});
  // A control character inside a special token is removed, and the word then survives as never_split.
  CHECK(cased.encode("[CLS\x07]").ids == std::vector<int32_t>{101, 101, 102});
  CHECK(lower.encode("[CLS\x07]").ids == lower.encode("[cls]").ids);
}

TEST_CASE("options: cased, strip_accents, Chinese characters, never_split", "[tokenizer][options]") {
  TokenizerOptions options;
  // "##t" is not in the tiny vocabulary, so the whole word is [UNK].
  CHECK(tiny(options).tokenize("Été") == std::vector<std::string>{"[UNK]"});
  CHECK(tiny(options).tokenize("É") == std::vector<std::string>{"e"});
  options.strip_accents = false;
  CHECK(tiny(options).tokenize("É") == std::vector<std::string>{"é"});
  options.lowercase = false;
  options.strip_accents.reset();
  CHECK(tiny(options).tokenize("é") == std::vector<std::string>{"é"});
  CHECK(tiny(options).tokenize("Hello") == std::vector<std::string>{"[UNK]"});
  options.strip_accents = true;
  CHECK(tiny(options).tokenize("é") == std::vector<std::string>{"e"});

  const Tokenizer& lower = bert(true);
  CHECK(lower.tokenize("中文") == std::vector<std::string>{"中", "文"});
  TokenizerOptions no_chinese;
  no_chinese.tokenize_chinese_chars = false;
  const Tokenizer whole = Tokenizer::from_vocab(kVocabFolder / "vocab.txt", no_chinese);
  CHECK(whole.tokenize("中文") == std::vector<std::string>{"中", "##文"});

  TokenizerOptions never;
  never.never_split = {"hello!"};
  CHECK(tiny(never).tokenize("hello! hello,") == std::vector<std::string>{"[UNK]", "hello", ","});
  CHECK(tiny().tokenize("hello! unaffable") == std::vector<std::string>{"hello", "!", "un", "##aff", "##able"});
}

TEST_CASE("tokenizer_config.json and special_tokens_map.json are honoured", "[tokenizer][options]") {
  TempDir dir;
  fs::copy_file(kVocabFolder / "vocab.txt", dir.path / "vocab.txt");
  ts::write_file_atomic(dir.path / "tokenizer_config.json",
                        R"({"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false,
                            "model_max_length": 512, "never_split": ["Hello"]})");
  const auto options = Tokenizer::read_options(dir.path);
  CHECK_FALSE(options.lowercase);
  CHECK(options.strip_accents == std::optional<bool>(true));
  CHECK_FALSE(options.tokenize_chinese_chars);
  CHECK(options.model_max_length == std::optional<int>(512));
  const Tokenizer tokenizer = Tokenizer::from_folder(dir.path);
  CHECK(tokenizer.tokenize("café") == std::vector<std::string>{"cafe"});
  CHECK(tokenizer.tokenize("Hello") == std::vector<std::string>{"[UNK]"});  // kept whole; not in the vocabulary

  // The shipped bert-base-uncased settings: lower case, "no limit" written as 1e30.
  const auto shipped = Tokenizer::read_options(kVocabFolder);
  CHECK(shipped.lowercase);
  CHECK_FALSE(shipped.model_max_length.has_value());
  CHECK(shipped.added_tokens.size() == 5);
  CHECK(Tokenizer::from_path(kVocabFolder / "vocab.txt").encode("Hello").ids ==
        std::vector<int32_t>{101, 7592, 102});

  ts::write_file_atomic(dir.path / "special_tokens_map.json", R"({"mask_token": {"content": "[unused0]"}})");
  CHECK(Tokenizer::from_folder(dir.path).mask_id() == 1);

  ts::write_file_atomic(dir.path / "tokenizer_config.json", R"({"do_lower_case": "yes"})");
  try {
    Tokenizer::from_folder(dir.path);
    FAIL("no error for a string do_lower_case");
  } catch (const ts::Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("tokenizer_config.json") && Catch::Contains("do_lower_case"));
  }
  ts::write_file_atomic(dir.path / "tokenizer_config.json", "{not json");
  CHECK_THROWS_AS(Tokenizer::from_folder(dir.path), ts::Error);
  ts::write_file_atomic(dir.path / "tokenizer_config.json", R"({"added_tokens_decoder": {"40000": {"content": "<x>"}}})");
  CHECK_THROWS_AS(Tokenizer::from_folder(dir.path), ts::Error);
}

TEST_CASE("save and load round trip", "[tokenizer][save]") {
  TempDir dir;
  TokenizerOptions options;
  options.lowercase = false;
  options.strip_accents = true;
  options.model_max_length = 128;
  const Tokenizer original = tiny(options);
  original.save(dir.path / "saved");
  const Tokenizer loaded = Tokenizer::from_folder(dir.path / "saved");
  CHECK(loaded.vocab_size() == original.vocab_size());
  for (int32_t id = 0; id < static_cast<int32_t>(original.vocab_size()); ++id) {
    CHECK(loaded.id_to_token(id) == original.id_to_token(id));
  }
  CHECK_FALSE(loaded.options().lowercase);
  CHECK(loaded.options().strip_accents == std::optional<bool>(true));
  CHECK(loaded.options().model_max_length == std::optional<int>(128));
  for (const char* text : {"hello world", "Hello", "é unaffable", "[MASK] a"}) {
    CHECK(loaded.encode(text).ids == original.encode(text).ids);
  }
  const auto config = nlohmann::json::parse(ts::read_file(dir.path / "saved" / "tokenizer_config.json"));
  CHECK(config["tokenizer_class"] == "BertTokenizer");
  CHECK(config["do_lower_case"] == false);
  CHECK(config["added_tokens_decoder"]["2"]["content"] == "[CLS]");

  const Tokenizer& bert_lower = bert(true);
  bert_lower.save(dir.path / "bert");
  CHECK(ts::read_file(dir.path / "bert" / "vocab.txt") == ts::read_file(kVocabFolder / "vocab.txt"));
  const Tokenizer reloaded = Tokenizer::from_folder(dir.path / "bert");
  CHECK_FALSE(reloaded.options().model_max_length.has_value());
  CHECK(reloaded.encode("Café au lait").ids == bert_lower.encode("Café au lait").ids);
}

TEST_CASE("vocab.txt lines as Python reads them", "[tokenizer][vocab]") {
  TempDir dir;
  ts::write_file_atomic(dir.path / "vocab.txt", "[PAD]\r\n[UNK]\r[CLS]\n[SEP]\n[MASK]\n\nhello");
  const Tokenizer tokenizer = Tokenizer::from_vocab(dir.path / "vocab.txt");
  CHECK(tokenizer.vocab_size() == 7);
  CHECK(tokenizer.cls_id() == 2);
  CHECK(tokenizer.id_to_token(5).empty());
  CHECK(tokenizer.token_to_id("hello") == 6);
  ts::write_file_atomic(dir.path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
  try {
    Tokenizer::from_vocab(dir.path / "vocab.txt");
    FAIL("no error for a vocabulary without [MASK]");
  } catch (const ts::Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("[MASK]") && Catch::Contains("vocab.txt"));
  }
}

TEST_CASE("batch encoding equals one-by-one encoding, on several threads", "[tokenizer][batch]") {
  const Tokenizer& tokenizer = bert(true);
  std::vector<std::string> texts, pairs;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("sentence number " + std::to_string(i) + (i % 3 ? " with Ünïcödé 中" : " plain"));
    pairs.push_back(std::string(static_cast<size_t>(i % 7), 'x') + " pair");
  }
  const auto single = tokenizer.encode_batch(texts, nullptr, 0, 3);
  const auto paired = tokenizer.encode_batch(texts, &pairs, 10, 0);
  REQUIRE(single.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    CHECK(single[i].ids == tokenizer.encode(texts[i]).ids);
    CHECK(paired[i].ids == tokenizer.encode(texts[i], std::string_view(pairs[i]), 10).ids);
    CHECK(paired[i].ids.size() <= 10);
  }
  texts[150] = "bad \xff";
  try {
    tokenizer.encode_batch(texts, nullptr, 0, 2);
    FAIL("no error for invalid UTF-8 in a batch");
  } catch (const ts::Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("text 150"));
  }
}

TEST_CASE("tokenize command", "[tokenizer][cli]") {
  std::istringstream in("Hello world!\nCafé\n\nbad \xff line\nnot reached\n");
  std::ostringstream out, err;
  const int status = ts::text::tokenize_command({"--vocab", kVocabFolder.string()}, in, out, err);
  CHECK(status == 1);
  CHECK(out.str() == "101 7592 2088 999 102\n101 7668 102\n101 102\n");
  // The message names the line and the byte, and suggests no option that the command does not have.
  CHECK(err.str() == "twostage tokenize: <stdin>:4: invalid UTF-8 at byte 4 (0xff); the text must be UTF-8 (convert "
                     "other encodings first, e.g. with iconv)\n");

  std::istringstream cased_in("Hello world!\n");
  std::ostringstream cased_out, cased_err;
  CHECK(ts::text::tokenize_command({"--vocab", (kVocabFolder / "vocab.txt").string(), "--cased", "--max-length", "4"},
                                   cased_in, cased_out, cased_err) == 0);
  CHECK(cased_out.str() == "101 100 2088 102\n");

  std::istringstream none;
  std::ostringstream usage_out, usage_err;
  CHECK(ts::text::tokenize_command({}, none, usage_out, usage_err) == 2);
  CHECK_THAT(usage_err.str(), Catch::Contains("usage: twostage tokenize"));
  std::ostringstream bad_out, bad_err;
  CHECK(ts::text::tokenize_command({"--vocab", "x", "--max-length", "two"}, none, bad_out, bad_err) == 2);
  CHECK(ts::text::tokenize_command({"--vocab", "/no/such/vocab"}, none, bad_out, bad_err) == 1);
  CHECK(ts::text::tokenize_command({"--bogus"}, none, bad_out, bad_err) == 2);
}
