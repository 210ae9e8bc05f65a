#pragma once
// A reader of the WordNet 3.0 database files (Debian's wordnet-base: /usr/share/wordnet/index.*, data.*, *.exc),
// enough for EDA's synonym lookups: lemma -> synsets (with NLTK's morphy lemmatisation) -> lemma names.
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ts::augment {

class WordNet {
 public:
  // Loads the database in `directory`; throws ts::Error naming the missing file (and the package to install).
  explicit WordNet(const std::string& directory = default_directory());
  // $WNSEARCHDIR if set, else /usr/share/wordnet.
  static std::string default_directory();
  // One instance per directory for the whole process (the database takes ~0.3 s to index).
  static std::shared_ptr<const WordNet> shared(const std::string& directory = default_directory());

  // EDA's get_synonyms: the lemma names of every synset of every base form of `word` (any part of speech),
  // lower-cased, '_' and '-' as spaces, only [a-z ] kept, without `word` itself; sorted, unique. Memoised.
  const std::vector<std::string>& synonyms(const std::string& word) const;
  // NLTK's morphy for one part of speech (0 noun, 1 verb, 2 adjective, 3 adverb): base forms in the index.
  std::vector<std::string> base_forms(const std::string& word, int part_of_speech) const;
  std::size_t lemma_count() const { return index_.size(); }

 private:
  static constexpr int kPartsOfSpeech = 4;
  std::vector<std::string> synset_lemmas(int part_of_speech, std::uint32_t offset) const;

  std::string directory_;
  // lemma -> synset offsets (byte offsets into data.<pos>) per part of speech
  std::unordered_map<std::string, std::array<std::vector<std::uint32_t>, kPartsOfSpeech>> index_;
  std::array<std::unordered_map<std::string, std::vector<std::string>>, kPartsOfSpeech> exceptions_;
  std::array<std::string, kPartsOfSpeech> data_;
  mutable std::mutex memo_mutex_;
  mutable std::unordered_map<std::string, std::unique_ptr<std::vector<std::string>>> memo_;
};

}  // namespace ts::augment
