#pragma once
// Tabular text-classification datasets: CSV, TSV and JSON lines, read into a plain column-wise Dataset.
//
// Formats
//   CSV   RFC 4180: comma-separated, a header row, fields may be quoted with '"'; inside quotes '""' is one quote and
//         commas and newlines are literal. A quote inside an unquoted field, text after a closing quote, or a quote
//         left open at the end of the file is an error.
//   TSV   GLUE style: tab-separated, a header row, NO quoting at all ('"' is an ordinary character).
//   JSONL one JSON object per line; keys are the columns. Labels may be JSON strings or integers.
// Lines may end in "\n" or "\r\n"; a UTF-8 byte-order mark is skipped; blank lines (outside a quoted field) are
// skipped. The whole file must be valid UTF-8.
//
// Labels
//   - With `classes` given (the class list fixed by the caller): a label equal to a class name maps to its index;
//     otherwise an integer label 0 <= k < classes.size() is kept as the id k; anything else is an error.
//   - Without: if every label is a non-negative integer, ids are kept as they are and class_names = "0".."max"
//     (an id of 100000 or more is an error); otherwise the class names are the sorted distinct label strings and ids
//     index into them.
//
// Every error is a ts::Error whose message starts "<file>:<line>:<column>:" (or "<file>:<line>:" / "<file>:") and
// says what is wrong and what was expected.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts::data {

enum class TableFormat { Auto, Csv, Tsv, Jsonl };

// What to do with a row whose text (or pair text, when a pair column is read) is empty or only whitespace.
enum class EmptyTextPolicy { Error, Drop };

struct TableOptions {
  TableFormat format = TableFormat::Auto;  // Auto: by extension, .csv / .tsv / .jsonl / .json (JSON lines)
  std::string text_column = "text";
  std::string pair_column;  // empty: no text pair
  std::string label_column = "label";  // empty: unlabelled rows (labels and class_names stay empty)
  std::vector<std::string> classes;  // empty: inferred (see above)
  EmptyTextPolicy empty_text = EmptyTextPolicy::Error;

  // {text = "text", pair = nil, label = "label" | false (unlabelled), classes = {...}, format = "auto" | "csv" |
  //  "tsv" | "jsonl" | "json", empty_text = "error" | "drop"}; unknown keys are errors naming `where`.
  static TableOptions from_json(const nlohmann::json& options, const std::string& where);
};

struct Dataset {
  std::vector<std::string> texts;
  std::vector<std::string> pairs;  // empty when the dataset has no text pair, else one per row
  std::vector<int64_t> labels;     // class ids, 0 <= id < class_names.size(); empty for unlabelled rows
  std::vector<std::string> class_names;
  std::vector<int64_t> row_numbers;  // 1-based line in the source file where the row starts (header is line 1)
  std::string source;                // the file it was read from ("" when built in memory)
  int64_t dropped_empty = 0;         // rows dropped by EmptyTextPolicy::Drop

  int64_t size() const { return static_cast<int64_t>(texts.size()); }
  bool has_pairs() const { return !pairs.empty(); }
  bool has_labels() const { return !labels.empty() || texts.empty(); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  // Rows per class, indexed by class id (length num_classes()).
  std::vector<int64_t> class_counts() const;
  // The rows at `indices`, in that order (repeats allowed). Throws ts::Error on an index out of range.
  Dataset subset(const std::vector<int64_t>& indices) const;
  // Throws ts::Error if the columns have different lengths or a label is outside the class list.
  void validate() const;
};

// Rows of `a` then rows of `b`. Both must have the same class names and both or neither must have pairs.
Dataset concat(const Dataset& a, const Dataset& b);

// Reads a dataset; see the header comment for formats, label rules and errors.
Dataset read_table(const std::string& path, const TableOptions& options = {});

// What read_table does once it has the file's bytes: `text` read as the contents of a file named `path` (whose
// extension chooses the format when it is Auto, and which messages name). For tests and fuzzing without files.
Dataset parse_table(const std::string& text, const std::string& path, const TableOptions& options = {});

// The format for a path by its extension; throws ts::Error for an unknown extension.
TableFormat format_from_extension(const std::string& path);

}  // namespace ts::data
