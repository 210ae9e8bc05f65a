#include "augment/wordnet.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"

namespace ts::augment {
namespace {

constexpr const char* kFileSuffix[] = {"noun", "verb", "adj", "adv"};

// NLTK's MORPHOLOGICAL_SUBSTITUTIONS, in its order.
const std::vector<std::pair<std::string, std::string>>& substitutions(int part_of_speech) {
  static const std::vector<std::pair<std::string, std::string>> kRules[] = {
      {{"s", ""}, {"ses", "s"}, {"ves", "f"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"},
       {"men", "man"}, {"ies", "y"}},
      {{"s", ""}, {"ies", "y"}, {"es", "e"}, {"es", ""}, {"ed", "e"}, {"ed", ""}, {"ing", "e"}, {"ing", ""}},
      {{"er", ""}, {"est", ""}, {"er", "e"}, {"est", "e"}},
      {}};
  return kRules[part_of_speech];
}

std::string read_database_file(const std::string& directory, const std::string& name) {
  const fs::path path = fs::path(directory) / name;
  if (!fs::exists(path))
    fail("WordNet file '{}' not found; install Debian's wordnet-base or set WNSEARCHDIR to a WordNet 3.0 dict "
         "folder",
         path.string());
  return read_file(path);
}

}  // namespace

std::string WordNet::default_directory() {
  const char* configured = std::getenv("WNSEARCHDIR");
  return configured && *configured ? configured : "/usr/share/wordnet";
}

std::shared_ptr<const WordNet> WordNet::shared(const std::string& directory) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const WordNet>> loaded;
  std::lock_guard lock(mutex);
  auto& slot = loaded[directory];
  if (!slot) slot = std::make_shared<const WordNet>(directory);
  return slot;
}

WordNet::WordNet(const std::string& directory) : directory_(directory) {
  for (int pos = 0; pos < kPartsOfSpeech; ++pos) {
    const std::string index_name = std::string("index.") + kFileSuffix[pos];
    const std::string index = read_database_file(directory, index_name);
    std::size_t line_start = 0;
    std::size_t line_number = 0;
    while (line_start < index.size()) {
      std::size_t line_end = index.find('\n', line_start);
      if (line_end == std::string::npos) line_end = index.size();
      ++line_number;
      const std::string_view line(index.data() + line_start, line_end - line_start);
      line_start = line_end + 1;
      if (line.empty() || line[0] == ' ') continue;  // the licence header is indented
      // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
      std::istringstream fields{std::string(line)};
      std::string lemma, pos_letter;
      std::size_t synset_count = 0, pointer_count = 0;
      fields >> lemma >> pos_letter >> synset_count >> pointer_count;
      std::string skipped;
      for (std::size_t i = 0; i < pointer_count + 2; ++i) fields >> skipped;
      auto& offsets = index_[lemma][pos];
      for (std::size_t i = 0; i < synset_count; ++i) {
        std::uint32_t offset = 0;
        if (!(fields >> offset))
          fail("WordNet file '{}' line {}: expected {} synset offsets for '{}'", index_name, line_number,
               synset_count, lemma);
        offsets.push_back(offset);
      }
    }
    data_[pos] = read_database_file(directory, std::string("data.") + kFileSuffix[pos]);
    const std::string exceptions = read_database_file(directory, std::string(kFileSuffix[pos]) + ".exc");
    std::istringstream lines(exceptions);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      std::string inflected, base;
      if (!(words >> inflected)) continue;
      auto& bases = exceptions_[pos][inflected];
      while (words >> base) bases.push_back(base);
    }
  }
}

std::vector<std::string> WordNet::base_forms(const std::string& word, int pos) const {
  std::vector<std::string> found;
  const auto keep_indexed = [&](const std::vector<std::string>& forms) {
    std::vector<std::string> kept;
    for (const std::string& form : forms) {
      const auto entry = index_.find(form);
      if (entry == index_.end() || entry->second[pos].empty()) continue;
      if (std::find(kept.begin(), kept.end(), form) == kept.end()) kept.push_back(form);
    }
    return kept;
  };
  const auto apply_rules = [&](const std::vector<std::string>& forms) {
    std::vector<std::string> derived;
    for (const std::string& form : forms)
      for (const auto& [old_ending, new_ending] : substitutions(pos))
        if (form.size() >= old_ending.size() &&
            form.compare(form.size() - old_ending.size(), old_ending.size(), old_ending) == 0)
          derived.push_back(form.substr(0, form.size() - old_ending.size()) + new_ending);
    return derived;
  };
  if (const auto exception = exceptions_[pos].find(word); exception != exceptions_[pos].end()) {
    std::vector<std::string> forms{word};
    forms.insert(forms.end(), exception->second.begin(), exception->second.end());
    return keep_indexed(forms);
  }
  std::vector<std::string> forms = apply_rules({word});
  std::vector<std::string> first{word};
  first.insert(first.end(), forms.begin(), forms.end());
  found = keep_indexed(first);
  while (found.empty() && !forms.empty()) {
    forms = apply_rules(forms);
    found = keep_indexed(forms);
  }
  return found;
}

std::vector<std::string> WordNet::synset_lemmas(int pos, std::uint32_t offset) const {
  const std::string& data = data_[pos];
  if (offset >= data.size()) fail("WordNet data.{}: synset offset {} is past the end of the file", kFileSuffix[pos], offset);
  const std::size_t end = data.find('\n', offset);
  std::istringstream fields(data.substr(offset, end == std::string::npos ? std::string::npos : end - offset));
  // synset_offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id...] ...
  std::string synset_offset, lex_filenum, synset_type, word_count_hex;
  fields >> synset_offset >> lex_filenum >> synset_type >> word_count_hex;
  const unsigned long word_count = std::strtoul(word_count_hex.c_str(), nullptr, 16);
  std::vector<std::string> lemmas;
  for (unsigned long i = 0; i < word_count; ++i) {
    std::string lemma, lex_id;
    if (!(fields >> lemma >> lex_id)) break;
    if (const auto marker = lemma.find('('); marker != std::string::npos) lemma.erase(marker);  // "galore(ip)"
    lemmas.push_back(lemma);
  }
  return lemmas;
}

const std::vector<std::string>& WordNet::synonyms(const std::string& word) const {
  std::lock_guard lock(memo_mutex_);
  auto& slot = memo_[word];
  if (slot) return *slot;
  std::string lowered = word;
  for (char& c : lowered) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::set<std::string> found;
  for (int pos = 0; pos < kPartsOfSpeech; ++pos) {
    for (const std::string& form : base_forms(lowered, pos)) {
      for (std::uint32_t offset : index_.at(form)[pos]) {
        for (std::string name : synset_lemmas(pos, offset)) {
          std::string synonym;
          for (char c : name) {
            c = char(std::tolower(static_cast<unsigned char>(c)));
            if (c == '_' || c == '-') c = ' ';
            if ((c >= 'a' && c <= 'z') || c == ' ') synonym.push_back(c);
          }
          found.insert(synonym);
        }
      }
    }
  }
  found.erase(word);
  slot = std::make_unique<std::vector<std::string>>(found.begin(), found.end());
  return *slot;
}

}  // namespace ts::augment
