#pragma once
// BERT WordPiece tokenizer, id-for-id identical to Hugging Face's slow `BertTokenizer` (transformers 4.39):
//
//   1. Text is UTF-8. Invalid bytes throw ts::Error, or with `replace_invalid_utf8` become U+FFFD (which the
//      cleaning step then drops, exactly as Python does with text decoded by errors="replace").
//   2. When lower-casing, the whole text is lower-cased character by character as Python's str.lower() does
//      (so 'İ' becomes "i̇"), except where a special token such as "[CLS]" is written literally.
//   3. Special tokens written in the text ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", additional ones) become
//      their own ids, wherever they occur.
//   4. The rest goes through BasicTokenizer: drop U+0000, U+FFFD and control characters (category C*, except tab,
//      newline, carriage return); turn whitespace into spaces; put spaces around CJK ideographs; NFC; split on
//      whitespace; lower-case and strip accents (NFD, drop Mn) as `lowercase`/`strip_accents` say; split on
//      punctuation (category P*, and every ASCII character that is not a letter, digit or space).
//   5. WordpieceTokenizer: greedy longest match from the left, continuation pieces prefixed "##"; a word longer than
//      100 characters (code points), or one that cannot be covered, becomes [UNK].
//
// Unicode properties and normalisation come from utf8proc. Text that is pure ASCII takes a fused fast path with no
// allocation per word. A Tokenizer is immutable after loading; its const methods may be called from many threads.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ts::text {

struct SpecialTokens {
  std::string unk = "[UNK]";
  std::string sep = "[SEP]";
  std::string pad = "[PAD]";
  std::string cls = "[CLS]";
  std::string mask = "[MASK]";
  // Further tokens never split (Hugging Face's `additional_special_tokens`); each must be in the vocabulary.
  std::vector<std::string> additional;
};

struct TokenizerOptions {
  // Hugging Face `do_lower_case`.
  bool lowercase = true;
  // Hugging Face `strip_accents`: unset follows `lowercase`; true strips even when cased; false never strips.
  std::optional<bool> strip_accents;
  // Hugging Face `tokenize_chinese_chars`: CJK ideographs become words of their own.
  bool tokenize_chinese_chars = true;
  // Hugging Face `model_max_length`; unset when absent or "very large" (HF writes 1e30 for "no limit"). Informative:
  // encode() truncates only to the max_length it is given.
  std::optional<int> model_max_length;
  // Replace invalid UTF-8 by U+FFFD instead of throwing.
  bool replace_invalid_utf8 = false;
  // Hugging Face `never_split`: whitespace-separated words kept whole (neither lower-cased nor split on punctuation).
  std::vector<std::string> never_split;
  SpecialTokens special_tokens;
  // Hugging Face `added_tokens_decoder` entries: matched literally in the text like special tokens. Only tokens that
  // are already in vocab.txt at that id are supported (what BERT checkpoints hold).
  struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool special = true;
  };
  std::vector<AddedToken> added_tokens;
};

// Model inputs for one text or one pair: [CLS] A [SEP] (B [SEP]); type_ids are 0 over [CLS] A [SEP], 1 over B [SEP].
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
};

class Tokenizer {
 public:
  // Longest word, in code points, that WordPiece tries to split (Hugging Face's max_input_chars_per_word).
  static constexpr int kMaxCharsPerWord = 100;

  // Options as Hugging Face would load them from `folder`: defaults, then tokenizer_config.json, then
  // special_tokens_map.json, each only when present. Unknown keys are ignored; settings this tokenizer cannot honour
  // (do_basic_tokenize false, added tokens outside vocab.txt) throw ts::Error naming the file and key.
  static TokenizerOptions read_options(const std::filesystem::path& folder);
  // `folder`/vocab.txt with read_options(folder).
  static Tokenizer from_folder(const std::filesystem::path& folder);
  // A vocab.txt (one token a line, id = line number from 0) with the given options.
  static Tokenizer from_vocab(const std::filesystem::path& vocab_txt, const TokenizerOptions& options = {});
  // A folder (as from_folder) or a vocab.txt file, whose neighbouring tokenizer_config.json, if any, is honoured.
  static Tokenizer from_path(const std::filesystem::path& folder_or_vocab);
  // Tokens in id order (what vocab.txt holds), for tests and tools that build a vocabulary in memory.
  static Tokenizer from_tokens(std::vector<std::string> tokens, const TokenizerOptions& options = {},
                               const std::string& source = "<memory>");

  // WordPiece tokens of `text`, without [CLS]/[SEP] (Hugging Face `tokenize`).
  std::vector<std::string> tokenize(std::string_view text) const;
  // Ids of `text` without [CLS]/[SEP], appended to `ids`.
  void append_ids(std::string_view text, std::vector<int32_t>& ids) const;
  std::vector<int32_t> ids(std::string_view text) const;

  // Ids with special tokens and type ids, as Hugging Face's `tokenizer(text, pair)`. max_length > 0 truncates with
  // `longest_first` (one token at a time from the longer sequence, from the second on ties) so that the result,
  // special tokens included, fits; 0 means no truncation. 1 and 2 leave no room for text and throw.
  Encoding encode(std::string_view text, std::optional<std::string_view> pair = std::nullopt,
                  int max_length = 0) const;
  // encode() over many texts (and pairs, when `pairs` is given: same length as `texts`) on `threads` threads
  // (0: hardware concurrency). An invalid text throws ts::Error naming its index.
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts,
                                     const std::vector<std::string>* pairs = nullptr, int max_length = 0,
                                     int threads = 1) const;
  std::vector<Encoding> encode_batch(const std::vector<std::string_view>& texts,
                                     const std::vector<std::string_view>* pairs = nullptr, int max_length = 0,
                                     int threads = 1) const;

  // Id of `token`, or unk_id() when it is not in the vocabulary.
  int32_t token_to_id(std::string_view token) const;
  // Id of `token`, or nullopt.
  std::optional<int32_t> find_id(std::string_view token) const;
  // The token on line `id` of vocab.txt; throws ts::Error when out of range.
  const std::string& id_to_token(int32_t id) const;
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t mask_id() const { return mask_id_; }
  int32_t unk_id() const { return unk_id_; }
  // Number of lines in vocab.txt (the embedding rows a model needs).
  size_t vocab_size() const { return tokens_.size(); }
  const TokenizerOptions& options() const { return options_; }

  // Writes vocab.txt, tokenizer_config.json and special_tokens_map.json into `folder` (created if needed) as
  // Hugging Face's save_pretrained does, so that from_folder() and `BertTokenizer.from_pretrained` read them back.
  void save(const std::filesystem::path& folder) const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&);
  Tokenizer& operator=(const Tokenizer&);
  ~Tokenizer();

 private:
  struct Workspace;
  class VocabMap;
  Tokenizer();
  static Workspace& thread_workspace();
  void emit_word(std::string_view word, std::vector<int32_t>& ids) const;

  void tokenize_into(std::string_view text, Workspace& work, std::vector<int32_t>& ids) const;
  void basic_ascii(std::string_view segment, Workspace& work, std::vector<int32_t>& ids) const;
  void basic_unicode(std::string_view segment, Workspace& work, std::vector<int32_t>& ids) const;
  // ASCII words after cleaning and lower-casing: never_split check, then punctuation split.
  void after_whitespace_split(std::string_view token, Workspace& work, std::vector<int32_t>& ids) const;
  void punctuation_split(std::string_view token, std::vector<int32_t>& ids) const;
  void wordpiece(std::string_view word, std::vector<int32_t>& ids) const;
  void truncate_and_build(std::vector<int32_t>& first, std::vector<int32_t>* second, int max_length,
                          Encoding& out) const;

  TokenizerOptions options_;
  std::string source_;  // where the vocabulary came from, for messages
  std::vector<std::string> tokens_;
  std::unique_ptr<VocabMap> words_;     // tokens that may start a word
  std::unique_ptr<VocabMap> suffixes_;  // "##x" tokens, keyed by "x"
  // Special tokens matched literally in the text, longest first, with their ids.
  std::vector<std::pair<std::string, int32_t>> literal_specials_;
  uint8_t special_first_bytes_[256] = {};
  // Words kept whole by BasicTokenizer (never_split plus special tokens), and those WordPiece then leaves whole
  // (never_split alone), as Hugging Face distinguishes them.
  std::unique_ptr<VocabMap> never_split_words_;
  std::unique_ptr<VocabMap> never_split_direct_;
  // True when lower-casing the text cannot create a special token that was not there before, so the ASCII path may
  // lower-case while it scans (true for the usual upper-case [CLS] style tokens).
  bool fused_lowercase_ok_ = true;
  bool strip_accents_ = true;
  int32_t cls_id_ = -1, sep_id_ = -1, pad_id_ = -1, mask_id_ = -1, unk_id_ = -1;
};

// UTF-8 checks shared with other readers. Validity is Python's: no overlong forms, no surrogates, nothing above
// U+10FFFF.
// Byte offset of the first invalid sequence, or npos.
size_t find_invalid_utf8(std::string_view text);
// `text` with each invalid sequence replaced by U+FFFD.
std::string replace_invalid_utf8(std::string_view text);

}  // namespace ts::text
