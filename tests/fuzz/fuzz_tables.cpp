// libFuzzer target: the table readers (CSV, TSV, JSON lines) must turn any bytes into either a Dataset that keeps
// its invariants or a ts::Error; never a crash, a hang, an out-of-bounds read or an allocation the input does not
// pay for (a label "99999999999999999" once asked for that many class names).
//
// The first byte chooses the format (by the name's extension, as Auto does, or set explicitly) and the options; the
// rest is the file. Columns have one-letter names (t, p, l) so that headers are cheap to find.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "data/table.h"

namespace {

using ts::data::Dataset;
using ts::data::EmptyTextPolicy;
using ts::data::TableFormat;
using ts::data::TableOptions;

void check(bool condition) {
  if (!condition) std::abort();
}

bool is_blank(const std::string& text) {
  return text.find_first_not_of(" \t\n\r\f\v") == std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    ts::log::init(spdlog::level::off);  // dropped empty rows are logged; the terminal need not see them
    return true;
  }();
  (void)quiet;
  if (size < 1) return 0;
  const uint8_t choice = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  static const char* const kNames[] = {"fuzz.csv", "fuzz.tsv", "fuzz.jsonl", "fuzz.json"};
  static const TableFormat kFormats[] = {TableFormat::Csv, TableFormat::Tsv, TableFormat::Jsonl, TableFormat::Jsonl};
  TableOptions options;
  std::string name = kNames[choice & 3];
  if (choice & 64) {
    options.format = kFormats[choice & 3];
    name = "fuzz.data";  // no known extension: only the explicit format can read it
  }
  options.text_column = "t";
  if (choice & 4) options.pair_column = "p";
  if (choice & 8) options.label_column.clear();
  else options.label_column = "l";
  if (choice & 16) options.classes = {"neg", "pos", "1"};
  options.empty_text = choice & 32 ? EmptyTextPolicy::Drop : EmptyTextPolicy::Error;

  try {
    const Dataset d = ts::data::parse_table(text, name, options);
    const size_t n = d.texts.size();
    check(d.row_numbers.size() == n);
    check(d.pairs.size() == (options.pair_column.empty() ? 0 : n));
    check(d.source == name);
    check(options.empty_text == EmptyTextPolicy::Drop || d.dropped_empty == 0);
    int64_t previous_line = 0;
    for (size_t i = 0; i < n; ++i) {
      check(!is_blank(d.texts[i]));
      if (!options.pair_column.empty()) check(!is_blank(d.pairs[i]));
      check(d.row_numbers[i] > previous_line);  // rows in file order, each on its own line
      previous_line = d.row_numbers[i];
    }
    if (options.label_column.empty()) {
      check(d.labels.empty() && d.class_names.empty());
    } else {
      check(d.labels.size() == n);
      if (!options.classes.empty()) check(d.class_names == options.classes);
      for (const int64_t label : d.labels) check(label >= 0 && label < d.num_classes());
      // Inferred classes: no more of them than the labels (an id each, up to the largest) ask for.
      if (options.classes.empty() && n > 0) check(d.num_classes() <= 100000);
    }
    d.validate();
    if (n > 0) {
      const Dataset first = d.subset({0});
      check(first.size() == 1 && first.texts[0] == d.texts[0]);
    }
  } catch (const ts::Error&) {
    // Rejected with a message naming the file and line: the expected outcome for most inputs.
  }
  return 0;
}
