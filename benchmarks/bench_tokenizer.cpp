// Tokenizer throughput on SST-2 train (column `sentence`), one thread, against a reference measured in the same run:
// a plain whitespace split with one std::unordered_map<std::string_view, int> lookup per word over the same text.
// Prints tokens/s (WordPiece ids, [CLS]/[SEP] not counted), the ratio to the reference, and the target.
//
//   bench_tokenizer [train.tsv] [vocab folder]      (run from the repository root; defaults under ../shared)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/fs.h"
#include "text/tokenizer.h"

namespace {

constexpr double kTargetTokensPerSecond = 2e6;
constexpr int kRepeats = 5;

std::vector<std::string> read_sentences(const std::string& path) {
  const std::string content = ts::read_file(path);
  std::vector<std::string> sentences;
  size_t start = 0;
  bool header = true;
  int column = -1;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + start, end - start);
    start = end + 1;
    std::vector<std::string_view> fields;
    size_t field_start = 0;
    while (true) {
      const size_t tab = line.find('\t', field_start);
      fields.push_back(line.substr(field_start, tab == std::string_view::npos ? std::string_view::npos
                                                                             : tab - field_start));
      if (tab == std::string_view::npos) break;
      field_start = tab + 1;
    }
    if (header) {
      for (size_t i = 0; i < fields.size(); ++i) {
        if (fields[i] == "sentence") column = static_cast<int>(i);
      }
      if (column < 0) {
        std::fprintf(stderr, "%s: no column 'sentence' in the header\n", path.c_str());
        std::exit(1);
      }
      header = false;
      continue;
    }
    if (static_cast<size_t>(column) < fields.size()) sentences.emplace_back(fields[static_cast<size_t>(column)]);
  }
  return sentences;
}

template <typename F>
double best_seconds(F&& run) {
  double best = 1e30;
  for (int repeat = 0; repeat < kRepeats; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string data = argc > 1 ? argv[1] : "../shared/data/sst2/train.tsv";
  const std::string vocab = argc > 2 ? argv[2] : "../shared/data/vocab/bert-base-uncased";
  try {
    const std::vector<std::string> sentences = read_sentences(data);
    const ts::text::Tokenizer tokenizer = ts::text::Tokenizer::from_path(vocab);
    size_t bytes = 0;
    for (const auto& sentence : sentences) bytes += sentence.size();

    // Reference: whitespace split and one hash lookup per word, the least a word-level tokenizer must do.
    std::unordered_map<std::string_view, int> words;
    for (size_t id = 0; id < tokenizer.vocab_size(); ++id) {
      words.emplace(tokenizer.id_to_token(static_cast<int32_t>(id)), static_cast<int>(id));
    }
    size_t reference_words = 0;
    long reference_checksum = 0;
    const double reference_seconds = best_seconds([&] {
      reference_words = 0;
      reference_checksum = 0;
      for (const auto& sentence : sentences) {
        std::string_view rest = sentence;
        while (!rest.empty()) {
          const size_t begin = rest.find_first_not_of(' ');
          if (begin == std::string_view::npos) break;
          rest.remove_prefix(begin);
          const size_t end = std::min(rest.find(' '), rest.size());
          const auto found = words.find(rest.substr(0, end));
          reference_checksum += found == words.end() ? 100 : found->second;
          ++reference_words;
          rest.remove_prefix(end);
        }
      }
    });

    size_t tokens = 0;
    long checksum = 0;
    std::vector<int32_t> ids;
    const double tokenizer_seconds = best_seconds([&] {
      tokens = 0;
      checksum = 0;
      for (const auto& sentence : sentences) {
        ids.clear();
        tokenizer.append_ids(sentence, ids);
        tokens += ids.size();
        for (const int32_t id : ids) checksum += id;
      }
    });

    const double tokens_per_second = static_cast<double>(tokens) / tokenizer_seconds;
    const double reference_per_second = static_cast<double>(reference_words) / reference_seconds;
    std::printf("data: %s, %zu sentences, %.1f MB, best of %d runs, one thread\n", data.c_str(), sentences.size(),
                static_cast<double>(bytes) / 1e6, kRepeats);
    std::printf("tokenizer: %zu tokens in %.3f s = %.2f M tokens/s (%.1f MB/s)  [checksum %ld]\n", tokens,
                tokenizer_seconds, tokens_per_second / 1e6, static_cast<double>(bytes) / tokenizer_seconds / 1e6,
                checksum);
    std::printf("reference (whitespace split + unordered_map lookup): %zu words in %.3f s = %.2f M words/s  "
                "[checksum %ld]\n",
                reference_words, reference_seconds, reference_per_second / 1e6, reference_checksum);
    std::printf("ratio tokenizer/reference: %.2f\n", tokens_per_second / reference_per_second);
    std::printf("target: %.1f M tokens/s: %s (%.2fx)\n", kTargetTokensPerSecond / 1e6,
                tokens_per_second >= kTargetTokensPerSecond ? "met" : "NOT met",
                tokens_per_second / kTargetTokensPerSecond);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", error.what());
    return 1;
  }
  return 0;
}
