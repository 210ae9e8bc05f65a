#include "text/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"

namespace ts::text {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// UTF-8

// Decodes one sequence at `s` (n > 0 bytes left). Returns its length, or minus the length of the maximal invalid
// subpart (at least 1) that a decoder replaces by one U+FFFD, as Python does.
inline int decode_utf8(const unsigned char* s, size_t n, char32_t& cp) {
  const unsigned char lead = s[0];
  if (lead < 0x80) {
    cp = lead;
    return 1;
  }
  int continuation_bytes;
  unsigned char low = 0x80, high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuation_bytes = 1;
    cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    continuation_bytes = 2;
    cp = lead & 0x0F;
    if (lead == 0xE0) low = 0xA0;        // overlong
    else if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    continuation_bytes = 3;
    cp = lead & 0x07;
    if (lead == 0xF0) low = 0x90;        // overlong
    else if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return -1;
  }
  for (int i = 1; i <= continuation_bytes; ++i) {
    if (static_cast<size_t>(i) >= n) return -i;
    const unsigned char byte = s[i];
    if (i == 1 ? (byte < low || byte > high) : (byte < 0x80 || byte > 0xBF)) return -i;
    cp = (cp << 6) | (byte & 0x3F);
  }
  return continuation_bytes + 1;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline bool is_ascii(std::string_view text) {
  const char* p = text.data();
  size_t n = text.size();
  while (n >= 8) {
    uint64_t chunk;
    std::memcpy(&chunk, p, 8);
    if (chunk & 0x8080808080808080ull) return false;
    p += 8;
    n -= 8;
  }
  while (n--) {
    if (static_cast<unsigned char>(*p++) & 0x80) return false;
  }
  return true;
}

inline bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// ---------------------------------------------------------------------------------------------------------------
// Character classes, as Hugging Face's tokenization_bert.py defines them.

inline bool is_hf_whitespace(char32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_ZS;
}

inline bool is_hf_control(char32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
      return true;
    default:
      return false;
  }
}

inline bool is_ascii_punctuation(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

inline bool is_hf_punctuation(char32_t cp) {
  if (cp < 0x80) return is_ascii_punctuation(static_cast<unsigned char>(cp));
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

inline bool is_hf_chinese(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Python's str.isspace(), which str.split() uses: after cleaning only U+0020, U+2028 and U+2029 can be left, but
// the whole set keeps the split honest.
inline bool is_python_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Python's str.lower() of one character: the simple mapping, except U+0130, the only character whose full lower
// case mapping is longer (i + combining dot above).
inline void append_python_lower(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
  } else if (cp == 0x130) {
    out.append("i\xCC\x87");
  } else {
    append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
  }
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h;
}

std::string special_token_value(const nlohmann::json& value, const std::string& file, const std::string& key) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  fail("{}: key '{}' must be a string or an object with a string 'content', not {}", file, key, value.dump());
}

nlohmann::json read_json_object(const fs::path& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& error) {
    fail("{}: not valid JSON: {}", path.string(), error.what());
  }
  if (!json.is_object()) fail("{}: expected a JSON object at the top, found {}", path.string(), json.type_name());
  return json;
}

void apply_special_tokens(const nlohmann::json& json, const std::string& file, SpecialTokens& special) {
  const std::pair<const char*, std::string*> keys[] = {{"unk_token", &special.unk}, {"sep_token", &special.sep},
                                                       {"pad_token", &special.pad}, {"cls_token", &special.cls},
                                                       {"mask_token", &special.mask}};
  for (const auto& [key, target] : keys) {
    if (json.contains(key) && !json[key].is_null()) *target = special_token_value(json[key], file, key);
  }
  if (json.contains("additional_special_tokens") && !json["additional_special_tokens"].is_null()) {
    const auto& list = json["additional_special_tokens"];
    if (!list.is_array()) fail("{}: 'additional_special_tokens' must be a list", file);
    special.additional.clear();
    for (const auto& item : list) {
      special.additional.push_back(special_token_value(item, file, "additional_special_tokens"));
    }
  }
}

}  // namespace

// -----------------------------------------------------------------------------------------------------------------
// Open-addressing hash map from token bytes to id; keys live in one pool, lookups take a string_view and allocate
// nothing. Inserting a key again overwrites its id, as Python's dict does when vocab.txt repeats a line.
class Tokenizer::VocabMap {
 public:
  explicit VocabMap(size_t expected) {
    size_t capacity = 16;
    while (capacity < expected * 2) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
  }

  void insert(std::string_view key, int32_t id) {
    const uint64_t hash = hash_bytes(key.data(), key.size());
    size_t index = hash & mask_;
    while (slots_[index].id >= 0) {
      Slot& slot = slots_[index];
      if (slot.hash == hash && key_of(slot) == key) {
        slot.id = id;
        return;
      }
      index = (index + 1) & mask_;
    }
    if ((size_ + 1) * 2 > slots_.size()) {
      grow();
      insert(key, id);
      return;
    }
    slots_[index] = Slot{hash, static_cast<uint32_t>(pool_.size()), static_cast<uint32_t>(key.size()), id};
    pool_.append(key);
    ++size_;
    max_key_bytes_ = std::max(max_key_bytes_, key.size());
  }

  int32_t find(std::string_view key) const {
    if (key.size() > max_key_bytes_) return -1;
    const uint64_t hash = hash_bytes(key.data(), key.size());
    size_t index = hash & mask_;
    while (true) {
      const Slot& slot = slots_[index];
      if (slot.id < 0) return -1;
      if (slot.hash == hash && key_of(slot) == key) return slot.id;
      index = (index + 1) & mask_;
    }
  }

  bool empty() const { return size_ == 0; }
  size_t max_key_bytes() const { return max_key_bytes_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint32_t length = 0;
    int32_t id = -1;
  };

  std::string_view key_of(const Slot& slot) const { return std::string_view(pool_).substr(slot.offset, slot.length); }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& slot : old) {
      if (slot.id < 0) continue;
      size_t index = slot.hash & mask_;
      while (slots_[index].id >= 0) index = (index + 1) & mask_;
      slots_[index] = slot;
    }
  }

  std::vector<Slot> slots_;
  std::string pool_;
  size_t mask_ = 0;
  size_t size_ = 0;
  size_t max_key_bytes_ = 0;
};

// Buffers reused from call to call on one thread, so that tokenizing allocates only while they grow.
struct Tokenizer::Workspace {
  std::string repaired;
  std::string lowered;
  std::string word;
  std::string piece;
  std::vector<char32_t> code_points;
  std::vector<char32_t> token;
  std::vector<utf8proc_int32_t> normalized;
  std::vector<int32_t> first, second;
};

Tokenizer::Workspace& Tokenizer::thread_workspace() {
  static thread_local Workspace workspace;
  return workspace;
}

// -----------------------------------------------------------------------------------------------------------------
// UTF-8 helpers (public)

size_t find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (bytes[i] < 0x80) {
      // Skip ASCII eight bytes at a time.
      if (i + 8 <= n) {
        uint64_t chunk;
        std::memcpy(&chunk, bytes + i, 8);
        if (!(chunk & 0x8080808080808080ull)) {
          i += 8;
          continue;
        }
      }
      ++i;
      continue;
    }
    char32_t cp = 0;
    const int length = decode_utf8(bytes + i, n - i, cp);
    if (length < 0) return i;
    i += static_cast<size_t>(length);
  }
  return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp = 0;
    const int length = decode_utf8(bytes + i, text.size() - i, cp);
    if (length > 0) {
      out.append(text.data() + i, static_cast<size_t>(length));
      i += static_cast<size_t>(length);
    } else {
      out.append("\xEF\xBF\xBD");
      i += static_cast<size_t>(-length);
    }
  }
  return out;
}

// -----------------------------------------------------------------------------------------------------------------
// Loading

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::Tokenizer(const Tokenizer& other) { *this = other; }
Tokenizer& Tokenizer::operator=(const Tokenizer& other) {
  if (this != &other) *this = from_tokens(other.tokens_, other.options_, other.source_);
  return *this;
}

TokenizerOptions Tokenizer::read_options(const fs::path& folder) {
  TokenizerOptions options;
  const fs::path config_path = folder / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    const std::string file = config_path.string();
    const nlohmann::json config = read_json_object(config_path);
    auto read_bool = [&](const char* key, bool& target) {
      if (!config.contains(key) || config[key].is_null()) return;
      if (!config[key].is_boolean()) fail("{}: '{}' must be true or false, not {}", file, key, config[key].dump());
      target = config[key].get<bool>();
    };
    read_bool("do_lower_case", options.lowercase);
    read_bool("tokenize_chinese_chars", options.tokenize_chinese_chars);
    bool basic_tokenize = true;
    read_bool("do_basic_tokenize", basic_tokenize);
    if (!basic_tokenize) {
      fail("{}: 'do_basic_tokenize': false is not supported (WordPiece without BasicTokenizer)", file);
    }
    if (config.contains("strip_accents") && !config["strip_accents"].is_null()) {
      if (!config["strip_accents"].is_boolean()) {
        fail("{}: 'strip_accents' must be true, false or null, not {}", file, config["strip_accents"].dump());
      }
      options.strip_accents = config["strip_accents"].get<bool>();
    }
    if (config.contains("model_max_length") && !config["model_max_length"].is_null()) {
      const auto& value = config["model_max_length"];
      if (!value.is_number()) fail("{}: 'model_max_length' must be a number, not {}", file, value.dump());
      const double length = value.get<double>();
      if (length < 1) fail("{}: 'model_max_length' must be positive, not {}", file, value.dump());
      // Hugging Face writes int(1e30) to mean "no limit".
      if (length <= INT_MAX) options.model_max_length = static_cast<int>(length);
    }
    if (config.contains("never_split") && !config["never_split"].is_null()) {
      const auto& list = config["never_split"];
      if (!list.is_array()) fail("{}: 'never_split' must be a list of strings or null", file);
      for (const auto& item : list) {
        if (!item.is_string()) fail("{}: 'never_split' must hold strings, found {}", file, item.dump());
        options.never_split.push_back(item.get<std::string>());
      }
    }
    apply_special_tokens(config, file, options.special_tokens);
    if (config.contains("added_tokens_decoder") && !config["added_tokens_decoder"].is_null()) {
      const auto& decoder = config["added_tokens_decoder"];
      if (!decoder.is_object()) fail("{}: 'added_tokens_decoder' must be an object", file);
      for (const auto& [id_text, entry] : decoder.items()) {
        TokenizerOptions::AddedToken added;
        try {
          size_t used = 0;
          added.id = std::stoi(id_text, &used);
          if (used != id_text.size() || added.id < 0) throw std::invalid_argument(id_text);
        } catch (const std::exception&) {
          fail("{}: 'added_tokens_decoder' key '{}' is not a token id", file, id_text);
        }
        added.content = special_token_value(entry, file, "added_tokens_decoder." + id_text);
        if (entry.is_object()) {
          for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
            if (entry.contains(flag) && entry[flag].is_boolean() && entry[flag].get<bool>()) {
              fail("{}: added token {} ('{}') sets '{}', which is not supported", file, id_text, added.content, flag);
            }
          }
          if (entry.contains("special") && entry["special"].is_boolean()) added.special = entry["special"].get<bool>();
        }
        options.added_tokens.push_back(std::move(added));
      }
    }
  }
  const fs::path map_path = folder / "special_tokens_map.json";
  if (fs::exists(map_path)) {
    apply_special_tokens(read_json_object(map_path), map_path.string(), options.special_tokens);
  }
  return options;
}

Tokenizer Tokenizer::from_folder(const fs::path& folder) {
  const fs::path vocab = folder / "vocab.txt";
  if (!fs::exists(vocab)) fail("{}: no vocab.txt in this folder", folder.string());
  return from_vocab(vocab, read_options(folder));
}

Tokenizer Tokenizer::from_path(const fs::path& folder_or_vocab) {
  if (fs::is_directory(folder_or_vocab)) return from_folder(folder_or_vocab);
  if (!fs::exists(folder_or_vocab)) fail("{}: no such vocabulary file or folder", folder_or_vocab.string());
  fs::path folder = folder_or_vocab.parent_path();
  if (folder.empty()) folder = ".";
  return from_vocab(folder_or_vocab, read_options(folder));
}

Tokenizer Tokenizer::from_vocab(const fs::path& vocab_txt, const TokenizerOptions& options) {
  const std::string content = read_file(vocab_txt);
  // Python's readlines() in text mode: "\n", "\r\n" and "\r" all end a line; then rstrip("\n") leaves the token.
  std::vector<std::string> tokens;
  size_t start = 0;
  for (size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '\n' || content[i] == '\r') {
      tokens.emplace_back(content, start, i - start);
      if (content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < content.size()) tokens.emplace_back(content, start, content.size() - start);
  for (size_t line = 0; line < tokens.size(); ++line) {
    const size_t bad = find_invalid_utf8(tokens[line]);
    if (bad != std::string_view::npos) {
      fail("{}:{}: invalid UTF-8 at byte {} of the token", vocab_txt.string(), line + 1, bad);
    }
  }
  return from_tokens(std::move(tokens), options, vocab_txt.string());
}

Tokenizer Tokenizer::from_tokens(std::vector<std::string> tokens, const TokenizerOptions& options,
                                 const std::string& source) {
  if (tokens.empty()) fail("{}: the vocabulary is empty", source);
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) fail("{}: too many tokens ({})", source, tokens.size());
  Tokenizer tokenizer;
  tokenizer.options_ = options;
  tokenizer.source_ = source;
  tokenizer.tokens_ = std::move(tokens);
  tokenizer.words_ = std::make_unique<VocabMap>(tokenizer.tokens_.size());
  tokenizer.suffixes_ = std::make_unique<VocabMap>(tokenizer.tokens_.size() / 4);
  for (size_t id = 0; id < tokenizer.tokens_.size(); ++id) {
    const std::string_view token = tokenizer.tokens_[id];
    tokenizer.words_->insert(token, static_cast<int32_t>(id));
    if (token.size() > 2 && token.compare(0, 2, "##") == 0) {
      tokenizer.suffixes_->insert(token.substr(2), static_cast<int32_t>(id));
    }
  }

  const SpecialTokens& special = options.special_tokens;
  auto require = [&](const std::string& token, const char* role) {
    const int32_t id = tokenizer.words_->find(token);
    if (id < 0) fail("{}: the {} token '{}' is not in the vocabulary", source, role, token);
    return id;
  };
  tokenizer.unk_id_ = require(special.unk, "unknown");
  tokenizer.sep_id_ = require(special.sep, "separator");
  tokenizer.pad_id_ = require(special.pad, "padding");
  tokenizer.cls_id_ = require(special.cls, "classifier");
  tokenizer.mask_id_ = require(special.mask, "mask");

  // Hugging Face splits every added token out of the text before BasicTokenizer sees it; its special tokens are
  // also never split by BasicTokenizer.
  std::vector<std::string> all_special = {special.unk, special.sep, special.pad, special.cls, special.mask};
  for (const auto& token : special.additional) {
    require(token, "additional special");
    all_special.push_back(token);
  }
  std::vector<std::pair<std::string, int32_t>> literal;
  for (const auto& token : all_special) literal.emplace_back(token, tokenizer.words_->find(token));
  for (const auto& added : options.added_tokens) {
    if (added.id < 0 || static_cast<size_t>(added.id) >= tokenizer.tokens_.size() ||
        tokenizer.tokens_[static_cast<size_t>(added.id)] != added.content) {
      fail("{}: added token {} '{}' is not that line of the vocabulary; added tokens outside vocab.txt are not "
           "supported",
           source, added.id, added.content);
    }
    literal.emplace_back(added.content, added.id);
  }
  std::sort(literal.begin(), literal.end(), [](const auto& a, const auto& b) {
    return a.first.size() != b.first.size() ? a.first.size() > b.first.size() : a.first < b.first;
  });
  literal.erase(std::unique(literal.begin(), literal.end(),
                            [](const auto& a, const auto& b) { return a.first == b.first; }),
                literal.end());
  literal.erase(std::remove_if(literal.begin(), literal.end(), [](const auto& entry) { return entry.first.empty(); }),
                literal.end());
  tokenizer.literal_specials_ = std::move(literal);
  for (const auto& [token, id] : tokenizer.literal_specials_) {
    tokenizer.special_first_bytes_[static_cast<unsigned char>(token[0])] = 1;
    // Lower-casing during the scan is only equivalent to lower-casing first when no lower-cased text can spell a
    // special token, i.e. every special token has a character that lower-casing changes.
    std::string lowered;
    for (char c : token) lowered.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    if (lowered == token) tokenizer.fused_lowercase_ok_ = false;
  }

  tokenizer.never_split_words_ = std::make_unique<VocabMap>(all_special.size() + options.never_split.size());
  tokenizer.never_split_direct_ = std::make_unique<VocabMap>(options.never_split.size());
  for (const auto& token : all_special) tokenizer.never_split_words_->insert(token, 0);
  for (const auto& token : options.never_split) {
    tokenizer.never_split_words_->insert(token, 0);
    tokenizer.never_split_direct_->insert(token, 0);
  }
  tokenizer.strip_accents_ =
      options.lowercase ? options.strip_accents.value_or(true) : options.strip_accents.value_or(false);
  return tokenizer;
}

// -----------------------------------------------------------------------------------------------------------------
// Tokenizing

void Tokenizer::tokenize_into(std::string_view text, Workspace& work, std::vector<int32_t>& ids) const {
  const size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos) {
    if (!options_.replace_invalid_utf8) {
      fail("invalid UTF-8 at byte {} (0x{:02x}); the text must be UTF-8 (convert other encodings first, e.g. with "
           "iconv)",
           bad, static_cast<unsigned char>(text[bad]));
    }
    work.repaired = replace_invalid_utf8(text);
    text = work.repaired;
  }

  std::string_view scanned = text;
  if (options_.lowercase && !(fused_lowercase_ok_ && is_ascii(text))) {
    // Hugging Face lower-cases the text before splitting out special tokens, keeping literal special tokens as
    // they are.
    std::string& lowered = work.lowered;
    lowered.clear();
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    size_t i = 0;
    while (i < text.size()) {
      if (special_first_bytes_[bytes[i]]) {
        bool matched = false;
        for (const auto& [token, id] : literal_specials_) {
          if (text.compare(i, token.size(), token) == 0) {
            lowered.append(token);
            i += token.size();
            matched = true;
            break;
          }
        }
        if (matched) continue;
      }
      char32_t cp = 0;
      const int length = decode_utf8(bytes + i, text.size() - i, cp);
      append_python_lower(lowered, cp);
      i += static_cast<size_t>(length);
    }
    scanned = lowered;
  }

  auto run_segment = [&](std::string_view segment) {
    if (segment.empty()) return;
    if (is_ascii(segment)) basic_ascii(segment, work, ids);
    else basic_unicode(segment, work, ids);
  };
  const auto* bytes = reinterpret_cast<const unsigned char*>(scanned.data());
  size_t segment_start = 0;
  size_t i = 0;
  while (i < scanned.size()) {
    if (special_first_bytes_[bytes[i]]) {
      bool matched = false;
      for (const auto& [token, id] : literal_specials_) {
        if (scanned.compare(i, token.size(), token) == 0) {
          run_segment(scanned.substr(segment_start, i - segment_start));
          ids.push_back(id);
          i += token.size();
          segment_start = i;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    ++i;
  }
  run_segment(scanned.substr(segment_start));
}

void Tokenizer::basic_ascii(std::string_view segment, Workspace& work, std::vector<int32_t>& ids) const {
  std::string& word = work.word;
  word.clear();
  const bool lowercase = options_.lowercase;
  for (const char c : segment) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (!word.empty()) {
        after_whitespace_split(word, work, ids);
        word.clear();
      }
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      // Control characters vanish without separating words.
    } else {
      word.push_back(lowercase && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    }
  }
  if (!word.empty()) after_whitespace_split(word, work, ids);
}

// An ASCII word after cleaning and lower-casing (ASCII has no accents to strip).
void Tokenizer::after_whitespace_split(std::string_view token, Workspace& work, std::vector<int32_t>& ids) const {
  if (!never_split_words_->empty() && never_split_words_->find(token) >= 0) {
    emit_word(token, ids);
    return;
  }
  punctuation_split(token, ids);
}

// Splits an ASCII word at punctuation and emits the pieces.
void Tokenizer::punctuation_split(std::string_view token, std::vector<int32_t>& ids) const {
  size_t run_start = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    if (is_ascii_punctuation(static_cast<unsigned char>(token[i]))) {
      if (i > run_start) emit_word(token.substr(run_start, i - run_start), ids);
      emit_word(token.substr(i, 1), ids);
      run_start = i + 1;
    }
  }
  if (run_start < token.size()) emit_word(token.substr(run_start), ids);
}

void Tokenizer::basic_unicode(std::string_view segment, Workspace& work, std::vector<int32_t>& ids) const {
  // Clean, and space out CJK ideographs.
  std::vector<char32_t>& cps = work.code_points;
  cps.clear();
  const auto* bytes = reinterpret_cast<const unsigned char*>(segment.data());
  bool all_ascii = true;
  for (size_t i = 0; i < segment.size();) {
    char32_t cp = 0;
    const int length = decode_utf8(bytes + i, segment.size() - i, cp);
    i += static_cast<size_t>(length);
    if (cp == 0 || cp == 0xFFFD || is_hf_control(cp)) continue;
    if (is_hf_whitespace(cp)) {
      cps.push_back(' ');
    } else if (options_.tokenize_chinese_chars && is_hf_chinese(cp)) {
      cps.push_back(' ');
      cps.push_back(cp);
      cps.push_back(' ');
      all_ascii = false;
    } else {
      cps.push_back(cp);
      if (cp >= 0x80) all_ascii = false;
    }
  }

  std::string& utf8 = work.piece;
  auto encode = [&](const char32_t* begin, const char32_t* end) -> std::string& {
    utf8.clear();
    for (const char32_t* p = begin; p != end; ++p) append_utf8(utf8, *p);
    return utf8;
  };
  // Normalises utf8 (NFC or NFD by `options`) into `out`.
  auto normalize = [&](const std::string& text, utf8proc_option_t normal_form, std::vector<char32_t>& out) {
    std::vector<utf8proc_int32_t>& buffer = work.normalized;
    const auto options = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | normal_form);
    if (buffer.size() < text.size() * 2 + 16) buffer.resize(text.size() * 2 + 16);
    utf8proc_ssize_t count = utf8proc_decompose(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                                static_cast<utf8proc_ssize_t>(text.size()), buffer.data(),
                                                static_cast<utf8proc_ssize_t>(buffer.size()), options);
    if (count > static_cast<utf8proc_ssize_t>(buffer.size())) {
      buffer.resize(static_cast<size_t>(count));
      count = utf8proc_decompose(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                 static_cast<utf8proc_ssize_t>(text.size()), buffer.data(),
                                 static_cast<utf8proc_ssize_t>(buffer.size()), options);
    }
    if (count < 0) fail("Unicode normalisation failed: {}", utf8proc_errmsg(count));
    if (normal_form == UTF8PROC_COMPOSE) count = utf8proc_normalize_utf32(buffer.data(), count, options);
    if (count < 0) fail("Unicode normalisation failed: {}", utf8proc_errmsg(count));
    out.assign(buffer.begin(), buffer.begin() + count);
  };

  if (!all_ascii) {
    std::vector<char32_t> composed;
    normalize(encode(cps.data(), cps.data() + cps.size()), UTF8PROC_COMPOSE, composed);
    cps.swap(composed);
  }

  std::vector<char32_t>& token = work.token;
  std::string& word = work.word;
  size_t i = 0;
  while (i < cps.size()) {
    if (is_python_space(cps[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < cps.size() && !is_python_space(cps[end])) ++end;
    const char32_t* begin_cp = cps.data() + i;
    const char32_t* end_cp = cps.data() + end;
    i = end;

    word = encode(begin_cp, end_cp);
    if (!never_split_words_->empty() && never_split_words_->find(word) >= 0) {
      emit_word(word, ids);
      continue;
    }
    if (options_.lowercase) {
      word.clear();
      for (const char32_t* p = begin_cp; p != end_cp; ++p) append_python_lower(word, *p);
    }
    if (strip_accents_) {
      normalize(word, UTF8PROC_DECOMPOSE, token);
      token.erase(std::remove_if(token.begin(), token.end(),
                                 [](char32_t cp) {
                                   return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) ==
                                          UTF8PROC_CATEGORY_MN;
                                 }),
                  token.end());
    } else {
      token.clear();
      const auto* word_bytes = reinterpret_cast<const unsigned char*>(word.data());
      for (size_t j = 0; j < word.size();) {
        char32_t cp = 0;
        j += static_cast<size_t>(decode_utf8(word_bytes + j, word.size() - j, cp));
        token.push_back(cp);
      }
    }
    if (token.empty()) continue;
    if (!never_split_words_->empty() && never_split_words_->find(encode(token.data(), token.data() + token.size())) >= 0) {
      emit_word(utf8, ids);
      continue;
    }
    size_t run_start = 0;
    for (size_t j = 0; j < token.size(); ++j) {
      if (is_hf_punctuation(token[j])) {
        if (j > run_start) emit_word(encode(token.data() + run_start, token.data() + j), ids);
        emit_word(encode(token.data() + j, token.data() + j + 1), ids);
        run_start = j + 1;
      }
    }
    if (run_start < token.size()) emit_word(encode(token.data() + run_start, token.data() + token.size()), ids);
  }
}

void Tokenizer::emit_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (!never_split_direct_->empty() && never_split_direct_->find(word) >= 0) {
    // Hugging Face hands never_split words to the vocabulary as they are, without WordPiece.
    const int32_t id = words_->find(word);
    ids.push_back(id >= 0 ? id : unk_id_);
    return;
  }
  wordpiece(word, ids);
}

void Tokenizer::wordpiece(std::string_view word, std::vector<int32_t>& ids) const {
  size_t chars = 0;
  for (const char c : word) {
    if (!is_continuation_byte(c) && ++chars > static_cast<size_t>(kMaxCharsPerWord)) {
      ids.push_back(unk_id_);
      return;
    }
  }
  const size_t mark = ids.size();
  size_t start = 0;
  while (start < word.size()) {
    const VocabMap& map = start == 0 ? *words_ : *suffixes_;
    size_t end = std::min(word.size(), start + map.max_key_bytes());
    int32_t found = -1;
    while (end > start) {
      if (end < word.size() && is_continuation_byte(word[end])) {
        --end;
        continue;
      }
      found = map.find(word.substr(start, end - start));
      if (found >= 0) break;
      --end;
    }
    if (found < 0) {
      ids.resize(mark);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(found);
    start = end;
  }
}

void Tokenizer::append_ids(std::string_view text, std::vector<int32_t>& ids) const {
  tokenize_into(text, thread_workspace(), ids);
}

std::vector<int32_t> Tokenizer::ids(std::string_view text) const {
  std::vector<int32_t> ids;
  append_ids(text, ids);
  return ids;
}

std::vector<std::string> Tokenizer::tokenize(std::string_view text) const {
  std::vector<std::string> tokens;
  for (const int32_t id : ids(text)) tokens.push_back(tokens_[static_cast<size_t>(id)]);
  return tokens;
}

void Tokenizer::truncate_and_build(std::vector<int32_t>& first, std::vector<int32_t>* second, int max_length,
                                   Encoding& out) const {
  if (max_length < 0) fail("max_length must be 0 (no truncation) or positive, not {}", max_length);
  const size_t specials = second ? 3 : 2;
  if (max_length > 0) {
    if (max_length < 3) {
      fail("max_length {} leaves no room for text after [CLS] and [SEP]; use 0 (no truncation) or at least 3",
           max_length);
    }
    const size_t limit = static_cast<size_t>(max_length);
    const size_t total = first.size() + (second ? second->size() : 0) + specials;
    if (total > limit) {
      const size_t remove = total - limit;
      if (!second) {
        first.resize(first.size() - remove);
      } else {
        // Hugging Face's longest_first: trim the longer sequence down to the shorter one, then both alternately,
        // the second first (so on an odd count the second loses one more).
        const size_t a = first.size(), b = second->size();
        const size_t first_remove = std::min(a > b ? a - b : b - a, remove);
        const size_t second_remove = remove - first_remove;
        size_t from_a, from_b;
        if (a > b) {
          from_a = first_remove + second_remove / 2;
          from_b = second_remove - second_remove / 2;
        } else {
          from_a = second_remove / 2;
          from_b = first_remove + second_remove - second_remove / 2;
        }
        first.resize(a - std::min(from_a, a));
        second->resize(b - std::min(from_b, b));
      }
    }
  }
  out.ids.clear();
  out.type_ids.clear();
  out.ids.reserve(first.size() + (second ? second->size() : 0) + specials);
  out.ids.push_back(cls_id_);
  out.ids.insert(out.ids.end(), first.begin(), first.end());
  out.ids.push_back(sep_id_);
  out.type_ids.assign(out.ids.size(), 0);
  if (second) {
    out.ids.insert(out.ids.end(), second->begin(), second->end());
    out.ids.push_back(sep_id_);
    out.type_ids.resize(out.ids.size(), 1);
  }
}

Encoding Tokenizer::encode(std::string_view text, std::optional<std::string_view> pair, int max_length) const {
  Workspace& work = thread_workspace();
  work.first.clear();
  tokenize_into(text, work, work.first);
  Encoding encoding;
  if (pair) {
    work.second.clear();
    tokenize_into(*pair, work, work.second);
    truncate_and_build(work.first, &work.second, max_length, encoding);
  } else {
    truncate_and_build(work.first, nullptr, max_length, encoding);
  }
  return encoding;
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                              const std::vector<std::string_view>* pairs, int max_length,
                                              int threads) const {
  if (pairs && pairs->size() != texts.size()) {
    fail("encode_batch: {} texts but {} pairs; give one pair per text", texts.size(), pairs->size());
  }
  std::vector<Encoding> encodings(texts.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(texts.size(), 1)));

  std::mutex error_mutex;
  size_t error_index = texts.size();
  std::string error_message;
  auto work_on = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      try {
        encodings[i] = pairs ? encode(texts[i], (*pairs)[i], max_length) : encode(texts[i], std::nullopt, max_length);
      } catch (const std::exception& error) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (i < error_index) {
          error_index = i;
          error_message = error.what();
        }
        return;
      }
    }
  };
  if (threads == 1) {
    work_on(0, texts.size());
  } else {
    std::vector<std::thread> workers;
    const size_t chunk = (texts.size() + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
    for (size_t begin = 0; begin < texts.size(); begin += chunk) {
      workers.emplace_back(work_on, begin, std::min(texts.size(), begin + chunk));
    }
    for (auto& worker : workers) worker.join();
  }
  if (error_index < texts.size()) fail("text {}: {}", error_index, error_message);
  return encodings;
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              const std::vector<std::string>* pairs, int max_length,
                                              int threads) const {
  const std::vector<std::string_view> text_views(texts.begin(), texts.end());
  if (!pairs) return encode_batch(text_views, nullptr, max_length, threads);
  const std::vector<std::string_view> pair_views(pairs->begin(), pairs->end());
  return encode_batch(text_views, &pair_views, max_length, threads);
}

// -----------------------------------------------------------------------------------------------------------------
// Vocabulary access and saving

std::optional<int32_t> Tokenizer::find_id(std::string_view token) const {
  const int32_t id = words_->find(token);
  if (id < 0) return std::nullopt;
  return id;
}

int32_t Tokenizer::token_to_id(std::string_view token) const { return find_id(token).value_or(unk_id_); }

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) {
    fail("token id {} is outside the vocabulary of {} ({} tokens)", id, source_, tokens_.size());
  }
  return tokens_[static_cast<size_t>(id)];
}

void Tokenizer::save(const fs::path& folder) const {
  fs::create_directories(folder);
  std::string vocab;
  for (const auto& token : tokens_) {
    vocab += token;
    vocab += '\n';
  }
  write_file_atomic(folder / "vocab.txt", vocab);

  const SpecialTokens& special = options_.special_tokens;
  nlohmann::json added = nlohmann::json::object();
  auto add = [&](int32_t id, const std::string& content, bool is_special) {
    added[std::to_string(id)] = {{"content", content}, {"lstrip", false},      {"normalized", false},
                                 {"rstrip", false},    {"single_word", false}, {"special", is_special}};
  };
  for (const auto& token : options_.added_tokens) add(token.id, token.content, token.special);
  for (const auto& token : {special.pad, special.unk, special.cls, special.sep, special.mask}) {
    add(token_to_id(token), token, true);
  }
  for (const auto& token : special.additional) add(token_to_id(token), token, true);

  nlohmann::json config = {
      {"added_tokens_decoder", added},
      {"clean_up_tokenization_spaces", true},
      {"cls_token", special.cls},
      {"do_basic_tokenize", true},
      {"do_lower_case", options_.lowercase},
      {"mask_token", special.mask},
      {"pad_token", special.pad},
      {"sep_token", special.sep},
      {"tokenize_chinese_chars", options_.tokenize_chinese_chars},
      {"tokenizer_class", "BertTokenizer"},
      {"unk_token", special.unk},
  };
  config["never_split"] = options_.never_split.empty() ? nlohmann::json(nullptr) : nlohmann::json(options_.never_split);
  config["strip_accents"] = options_.strip_accents ? nlohmann::json(*options_.strip_accents) : nlohmann::json(nullptr);
  // Hugging Face's "no limit" is int(1e30).
  config["model_max_length"] =
      options_.model_max_length ? nlohmann::json(*options_.model_max_length) : nlohmann::json(1e30);
  nlohmann::json map = {{"cls_token", special.cls}, {"mask_token", special.mask}, {"pad_token", special.pad},
                        {"sep_token", special.sep}, {"unk_token", special.unk}};
  if (!special.additional.empty()) {
    config["additional_special_tokens"] = special.additional;
    map["additional_special_tokens"] = special.additional;
  }
  write_file_atomic(folder / "tokenizer_config.json", config.dump(2) + "\n");
  write_file_atomic(folder / "special_tokens_map.json", map.dump(2) + "\n");
}

}  // namespace ts::text
