#include "data/table.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/options.h"
#include "core/log.h"

namespace ts::data {
namespace {

// One parsed cell, with where it starts in the file, so that later checks can point at it.
struct Cell {
  std::string value;
  int64_t line = 0;
  int64_t column = 0;
};

struct Record {
  int64_t line = 0;         // where the record starts
  int64_t end_column = 0;   // column just past the last field on the record's last line
  int64_t end_line = 0;
  std::vector<Cell> cells;  // CSV/TSV: in header order
};

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  return out;
}

std::string shown(const std::string& value) {
  constexpr size_t limit = 60;
  if (value.size() <= limit) return "\"" + value + "\"";
  return "\"" + value.substr(0, limit) + "...\"";
}

// Checks UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF) and names the first bad byte's place.
void check_utf8(const std::string& text, const std::string& path) {
  int64_t line = 1;
  size_t line_start = 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = bytes[i];
    if (c < 0x80) {
      if (c == '\n') {
        ++line;
        line_start = i + 1;
      }
      ++i;
      continue;
    }
    size_t extra = 0;
    uint32_t min_code = 0;
    uint32_t code = 0;
    if ((c & 0xE0) == 0xC0) {
      extra = 1, min_code = 0x80, code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, min_code = 0x800, code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, min_code = 0x10000, code = c & 0x07;
    } else {
      fail("{}:{}:{}: invalid UTF-8 (byte 0x{:02x} cannot start a character); re-encode the file as UTF-8", path,
           line, i - line_start + 1, c);
    }
    bool ok = true;
    for (size_t k = 1; ok && k <= extra; ++k) {
      if (i + k >= n || (bytes[i + k] & 0xC0) != 0x80) {
        ok = false;
        break;
      }
      code = (code << 6) | (bytes[i + k] & 0x3F);
    }
    if (ok && (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))) ok = false;
    if (!ok) {
      fail("{}:{}:{}: invalid UTF-8 (bad sequence starting with byte 0x{:02x}); re-encode the file as UTF-8", path,
           line, i - line_start + 1, c);
    }
    i += extra + 1;
  }
}

// RFC 4180. Records are returned with their cells; blank lines are skipped.
std::vector<Record> parse_csv(const std::string& text, size_t start, const std::string& path) {
  std::vector<Record> records;
  const size_t n = text.size();
  size_t pos = start;
  int64_t line = 1;
  size_t line_start = 0;
  auto column = [&](size_t at) { return static_cast<int64_t>(at - line_start + 1); };
  auto at_line_end = [&](size_t at) {
    return at >= n || text[at] == '\n' || (text[at] == '\r' && at + 1 < n && text[at + 1] == '\n');
  };
  auto skip_line_end = [&]() {
    if (pos < n && text[pos] == '\r') ++pos;
    if (pos < n && text[pos] == '\n') {
      ++pos;
      ++line;
      line_start = pos;
    }
  };

  while (pos < n) {
    if (at_line_end(pos)) {  // blank line
      skip_line_end();
      continue;
    }
    Record record;
    record.line = line;
    while (true) {
      Cell cell;
      cell.line = line;
      cell.column = column(pos);
      if (pos < n && text[pos] == '"') {
        const int64_t open_line = line;
        const int64_t open_column = column(pos);
        ++pos;
        while (true) {
          if (pos >= n) {
            fail("{}:{}:{}: quoted field is never closed (a '\"' opened here has no matching '\"' before the end "
                 "of the file)",
                 path, open_line, open_column);
          }
          char c = text[pos];
          if (c == '"') {
            if (pos + 1 < n && text[pos + 1] == '"') {
              cell.value += '"';
              pos += 2;
              continue;
            }
            ++pos;
            break;
          }
          if (c == '\n') {
            cell.value += c;
            ++pos;
            ++line;
            line_start = pos;
            continue;
          }
          cell.value += c;
          ++pos;
        }
        if (!(pos >= n || text[pos] == ',' || at_line_end(pos))) {
          fail("{}:{}:{}: unexpected character '{}' after a closing quote; a quoted field must end at ',' or the "
               "end of the line (write a quote inside a quoted field as \"\")",
               path, line, column(pos), text[pos]);
        }
      } else {
        while (pos < n && text[pos] != ',' && !at_line_end(pos)) {
          if (text[pos] == '"') {
            fail("{}:{}:{}: '\"' inside an unquoted field; quote the whole field and double the quote (RFC 4180)",
                 path, line, column(pos));
          }
          cell.value += text[pos];
          ++pos;
        }
      }
      record.cells.push_back(std::move(cell));
      if (pos < n && text[pos] == ',') {
        ++pos;
        continue;
      }
      record.end_line = line;
      record.end_column = column(pos);
      skip_line_end();
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

// GLUE TSV: tab-separated, no quoting.
std::vector<Record> parse_tsv(const std::string& text, size_t start) {
  std::vector<Record> records;
  const size_t n = text.size();
  size_t pos = start;
  int64_t line = 1;
  size_t line_start = 0;
  while (pos < n) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = n;
    size_t content_end = end;
    if (content_end > pos && text[content_end - 1] == '\r') --content_end;
    if (content_end > pos) {
      Record record;
      record.line = line;
      record.end_line = line;
      size_t field_start = pos;
      while (true) {
        size_t tab = text.find('\t', field_start);
        if (tab == std::string::npos || tab > content_end) tab = content_end;
        Cell cell;
        cell.value = text.substr(field_start, tab - field_start);
        cell.line = line;
        cell.column = static_cast<int64_t>(field_start - line_start + 1);
        record.cells.push_back(std::move(cell));
        if (tab >= content_end) break;
        field_start = tab + 1;
      }
      record.end_column = static_cast<int64_t>(content_end - line_start + 1);
      records.push_back(std::move(record));
    }
    pos = end + 1;
    ++line;
    line_start = pos;
  }
  return records;
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
                                                            c == '\f' || c == '\v'; });
}

std::string trimmed(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n')) --e;
  return s.substr(b, e - b);
}

constexpr int64_t kMaxInferredClasses = 100000;

// A decimal integer label ("3", "-1"), or nothing.
std::optional<int64_t> as_integer(const std::string& s) {
  std::string t = trimmed(s);
  if (t.empty() || t.size() > 18) return std::nullopt;
  size_t i = (t[0] == '-' || t[0] == '+') ? 1 : 0;
  if (i == t.size()) return std::nullopt;
  for (size_t k = i; k < t.size(); ++k)
    if (t[k] < '0' || t[k] > '9') return std::nullopt;
  return std::stoll(t);
}

// The three columns of one row, before labels are mapped to ids.
struct RawRow {
  int64_t line = 0;
  Cell text, pair, label;
};

std::vector<RawRow> rows_from_delimited(const std::vector<Record>& records, const TableOptions& options,
                                        const std::string& path, const char* format_name) {
  if (records.empty()) fail("{}: the file is empty; expected a header row naming the columns", path);
  std::vector<std::string> header;
  for (const auto& cell : records[0].cells) header.push_back(trimmed(cell.value));
  auto find_column = [&](const std::string& name, const char* role) -> size_t {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      fail("{}:1: no {} column \"{}\" in the header; columns present: {}", path, role, name, join(header));
    }
    return static_cast<size_t>(it - header.begin());
  };
  const size_t text_index = find_column(options.text_column, "text");
  const bool has_pair = !options.pair_column.empty();
  const size_t pair_index = has_pair ? find_column(options.pair_column, "text pair") : 0;
  const bool has_label = !options.label_column.empty();
  const size_t label_index = has_label ? find_column(options.label_column, "label") : 0;

  std::vector<RawRow> rows;
  rows.reserve(records.size() - 1);
  for (size_t r = 1; r < records.size(); ++r) {
    const Record& record = records[r];
    if (record.cells.size() != header.size()) {
      const int64_t col = record.cells.size() > header.size() ? record.cells[header.size()].column
                                                              : record.end_column;
      const int64_t at_line = record.cells.size() > header.size() ? record.cells[header.size()].line
                                                                  : record.end_line;
      fail("{}:{}:{}: {} row has {} fields, the header has {} ({}){}", path, at_line, col, format_name,
           record.cells.size(), header.size(), join(header),
           std::string(format_name) == "TSV" ? "; TSV has no quoting, so a tab inside a text splits it" : "");
    }
    RawRow row;
    row.line = record.line;
    row.text = record.cells[text_index];
    if (has_pair) row.pair = record.cells[pair_index];
    if (has_label) row.label = record.cells[label_index];
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<RawRow> rows_from_jsonl(const std::string& text, size_t start, const TableOptions& options,
                                    const std::string& path) {
  std::vector<RawRow> rows;
  const size_t n = text.size();
  size_t pos = start;
  int64_t line = 1;
  size_t line_start = 0;
  auto key_names = [](const nlohmann::json& object) {
    std::vector<std::string> keys;
    for (auto it = object.begin(); it != object.end(); ++it) keys.push_back(it.key());
    return keys;
  };
  while (pos < n) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = n;
    std::string content = text.substr(pos, end - pos);
    if (!content.empty() && content.back() == '\r') content.pop_back();
    if (!is_blank(content)) {
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(content);
      } catch (const nlohmann::json::parse_error& e) {
        const int64_t col = static_cast<int64_t>(pos - line_start) + static_cast<int64_t>(std::max<size_t>(e.byte, 1));
        fail("{}:{}:{}: bad JSON: {}", path, line, col, e.what());
      } catch (const nlohmann::json::exception& e) {
        // Well-formed JSON the library cannot hold, such as a number beyond a double's range (1e400).
        fail("{}:{}:1: bad JSON: {}", path, line, e.what());
      }
      if (!object.is_object()) {
        fail("{}:{}:1: expected one JSON object per line, found a JSON {}", path, line, object.type_name());
      }
      auto get = [&](const std::string& key, const char* role, bool is_label) {
        auto it = object.find(key);
        if (it == object.end()) {
          fail("{}:{}:1: no {} key \"{}\" in this object; keys present: {}", path, line, role, key,
               join(key_names(object)));
        }
        Cell cell;
        cell.line = line;
        cell.column = 1;
        if (it->is_string()) {
          cell.value = it->get<std::string>();
        } else if (is_label && (it->is_number_integer() || it->is_number_unsigned())) {
          cell.value = std::to_string(it->get<int64_t>());
        } else {
          fail("{}:{}:1: key \"{}\" holds a JSON {}; expected a string{}", path, line, key, it->type_name(),
               is_label ? " or an integer" : "");
        }
        return cell;
      };
      RawRow row;
      row.line = line;
      row.text = get(options.text_column, "text", false);
      if (!options.pair_column.empty()) row.pair = get(options.pair_column, "text pair", false);
      if (!options.label_column.empty()) row.label = get(options.label_column, "label", true);
      rows.push_back(std::move(row));
    }
    pos = end + 1;
    ++line;
    line_start = pos;
  }
  return rows;
}

}  // namespace

TableFormat format_from_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".csv") return TableFormat::Csv;
  if (ext == ".tsv") return TableFormat::Tsv;
  if (ext == ".jsonl" || ext == ".json") return TableFormat::Jsonl;
  fail("{}: cannot tell the table format from the extension \"{}\"; use .csv, .tsv, .jsonl or .json (JSON lines), "
       "or set the format explicitly",
       path, ext);
}

TableOptions TableOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"text", "pair", "label", "classes", "format", "empty_text"});
  TableOptions options;
  if (const auto format = read.string("format")) {
    if (*format == "csv")
      options.format = TableFormat::Csv;
    else if (*format == "tsv")
      options.format = TableFormat::Tsv;
    else if (*format == "jsonl" || *format == "json")
      options.format = TableFormat::Jsonl;
    else if (*format != "auto")
      fail("{}: format '{}': expected csv, tsv, jsonl or auto", where, *format);
  }
  options.text_column = read.string("text").value_or(options.text_column);
  options.pair_column = read.string("pair").value_or(options.pair_column);
  if (const auto* label = read.find("label")) {
    if (label->is_boolean() && !label->get<bool>())
      options.label_column.clear();
    else if (label->is_string())
      options.label_column = label->get<std::string>();
    else
      fail("{}: option 'label' expects a column name or false (unlabelled), got {}", where, label->dump());
  }
  options.classes = read.strings("classes").value_or(options.classes);
  if (const auto empty = read.string("empty_text")) {
    if (*empty == "error")
      options.empty_text = EmptyTextPolicy::Error;
    else if (*empty == "drop")
      options.empty_text = EmptyTextPolicy::Drop;
    else
      fail("{}: empty_text '{}': expected \"error\" or \"drop\"", where, *empty);
  }
  return options;
}

Dataset read_table(const std::string& path, const TableOptions& options) {
  if (options.text_column.empty()) fail("{}: no text column named; set the text column", path);
  TableOptions resolved = options;
  if (resolved.format == TableFormat::Auto) resolved.format = format_from_extension(path);
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: file not found", path);
  if (fs::is_directory(path, ec)) fail("{}: is a directory, expected a table file", path);
  return parse_table(read_file(path), path, resolved);
}

Dataset parse_table(const std::string& text, const std::string& path, const TableOptions& options) {
  if (options.text_column.empty()) fail("{}: no text column named; set the text column", path);
  const TableFormat format = options.format == TableFormat::Auto ? format_from_extension(path) : options.format;
  check_utf8(text, path);
  const size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;

  std::vector<RawRow> rows;
  switch (format) {
    case TableFormat::Csv:
      rows = rows_from_delimited(parse_csv(text, start, path), options, path, "CSV");
      break;
    case TableFormat::Tsv:
      rows = rows_from_delimited(parse_tsv(text, start), options, path, "TSV");
      break;
    case TableFormat::Jsonl:
      rows = rows_from_jsonl(text, start, options, path);
      break;
    case TableFormat::Auto:
      break;
  }

  Dataset out;
  out.source = path;
  const bool has_pair = !options.pair_column.empty();

  // Empty texts first, so that a dropped row's label does not decide the class list.
  std::vector<RawRow> kept;
  kept.reserve(rows.size());
  for (auto& row : rows) {
    const Cell* empty = is_blank(row.text.value) ? &row.text : (has_pair && is_blank(row.pair.value) ? &row.pair
                                                                                                     : nullptr);
    if (empty) {
      if (options.empty_text == EmptyTextPolicy::Drop) {
        ++out.dropped_empty;
        continue;
      }
      fail("{}:{}:{}: empty {} \"{}\"; fix the row or drop empty rows by option", path, empty->line, empty->column,
           empty == &row.text ? "text in column" : "text pair in column",
           empty == &row.text ? options.text_column : options.pair_column);
    }
    kept.push_back(std::move(row));
  }

  auto label_error = [&](const Cell& cell, const std::string& why) {
    fail("{}:{}:{}: label {} {}", path, cell.line, cell.column, shown(cell.value), why);
  };

  if (options.label_column.empty()) {
    // Unlabelled text (prediction): no labels and no classes.
  } else if (!options.classes.empty()) {
    out.class_names = options.classes;
    std::map<std::string, int64_t> by_name;
    for (size_t i = 0; i < options.classes.size(); ++i) by_name.emplace(options.classes[i], static_cast<int64_t>(i));
    for (const auto& row : kept) {
      // A label that names a class wins over reading it as an id, so that classes like {"1", "0"} work.
      auto it = by_name.find(trimmed(row.label.value));
      if (it != by_name.end()) {
        out.labels.push_back(it->second);
        continue;
      }
      auto id = as_integer(row.label.value);
      if (id && *id >= 0 && *id < static_cast<int64_t>(options.classes.size())) {
        out.labels.push_back(*id);
        continue;
      }
      label_error(row.label, fmt::format("is not in the class list ({}) nor a class id 0..{}", join(options.classes),
                                         options.classes.size() - 1));
    }
  } else {
    bool all_integer = true;
    for (const auto& row : kept) {
      if (!as_integer(row.label.value)) {
        all_integer = false;
        break;
      }
    }
    if (all_integer) {
      int64_t max_id = -1;
      for (const auto& row : kept) {
        int64_t id = *as_integer(row.label.value);
        if (id < 0) label_error(row.label, "is a negative class id; class ids start at 0");
        // Every id up to the largest becomes a class: an id column read as the labels would ask for billions.
        if (id >= kMaxInferredClasses)
          label_error(row.label, fmt::format("is a class id of {} or more; is this the label column? (a class list, "
                                             "when given, names the classes)",
                                             kMaxInferredClasses));
        max_id = std::max(max_id, id);
        out.labels.push_back(id);
      }
      for (int64_t k = 0; k <= max_id; ++k) out.class_names.push_back(std::to_string(k));
    } else {
      std::set<std::string> names;
      for (const auto& row : kept) {
        std::string name = trimmed(row.label.value);
        if (name.empty()) label_error(row.label, "is empty");
        names.insert(name);
      }
      out.class_names.assign(names.begin(), names.end());
      for (const auto& row : kept) {
        std::string name = trimmed(row.label.value);
        out.labels.push_back(std::distance(names.begin(), names.find(name)));
      }
    }
  }

  if (out.dropped_empty > 0) {
    ts::log::info("table.dropped_empty",
                  fmt::format("{}: dropped {} rows with empty text ({} kept)", path, out.dropped_empty, kept.size()),
                  {{"file", path}, {"dropped", out.dropped_empty}, {"kept", kept.size()}});
  }
  out.texts.reserve(kept.size());
  out.row_numbers.reserve(kept.size());
  if (has_pair) out.pairs.reserve(kept.size());
  for (auto& row : kept) {
    out.texts.push_back(std::move(row.text.value));
    if (has_pair) out.pairs.push_back(std::move(row.pair.value));
    out.row_numbers.push_back(row.line);
  }
  return out;
}

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(class_names.size(), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    const int64_t id = labels[i];
    if (id < 0 || id >= static_cast<int64_t>(counts.size())) {
      fail("dataset {}: row {} has label id {}, outside the {} classes", source, i, id, counts.size());
    }
    ++counts[static_cast<size_t>(id)];
  }
  return counts;
}

void Dataset::validate() const {
  const size_t n = texts.size();
  if (!labels.empty() && labels.size() != n) fail("dataset {}: {} texts but {} labels", source, n, labels.size());
  if (!pairs.empty() && pairs.size() != n) fail("dataset {}: {} texts but {} text pairs", source, n, pairs.size());
  if (!row_numbers.empty() && row_numbers.size() != n) {
    fail("dataset {}: {} texts but {} row numbers", source, n, row_numbers.size());
  }
  class_counts();
}

Dataset Dataset::subset(const std::vector<int64_t>& indices) const {
  Dataset out;
  out.class_names = class_names;
  out.source = source;
  out.texts.reserve(indices.size());
  out.labels.reserve(indices.size());
  for (int64_t index : indices) {
    if (index < 0 || index >= size()) {
      fail("dataset {}: subset index {} is out of range for {} rows", source, index, size());
    }
    const auto i = static_cast<size_t>(index);
    out.texts.push_back(texts[i]);
    if (has_pairs()) out.pairs.push_back(pairs[i]);
    if (!labels.empty()) out.labels.push_back(labels[i]);
    if (!row_numbers.empty()) out.row_numbers.push_back(row_numbers[i]);
  }
  return out;
}

Dataset concat(const Dataset& a, const Dataset& b) {
  if (a.class_names != b.class_names) {
    fail("cannot concatenate datasets with different classes: [{}] ({}) and [{}] ({})", join(a.class_names),
         a.source, join(b.class_names), b.source);
  }
  if (a.has_pairs() != b.has_pairs() && a.size() > 0 && b.size() > 0) {
    fail("cannot concatenate a dataset with text pairs and one without ({} and {})", a.source, b.source);
  }
  if (a.size() > 0 && b.size() > 0 && a.labels.empty() != b.labels.empty()) {
    fail("cannot concatenate a labelled dataset and an unlabelled one ({} and {})", a.source, b.source);
  }
  Dataset out = a;
  if (a.source != b.source) out.source = a.source.empty() ? b.source : (b.source.empty() ? a.source : a.source + "+" + b.source);
  out.texts.insert(out.texts.end(), b.texts.begin(), b.texts.end());
  out.pairs.insert(out.pairs.end(), b.pairs.begin(), b.pairs.end());
  out.labels.insert(out.labels.end(), b.labels.begin(), b.labels.end());
  // Row numbers only mean something when every row has one.
  if (a.row_numbers.size() == static_cast<size_t>(a.size()) && b.row_numbers.size() == static_cast<size_t>(b.size())) {
    out.row_numbers.insert(out.row_numbers.end(), b.row_numbers.begin(), b.row_numbers.end());
  } else {
    out.row_numbers.clear();
  }
  out.dropped_empty = a.dropped_empty + b.dropped_empty;
  return out;
}

}  // namespace ts::data
