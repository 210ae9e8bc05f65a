#include "store/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

namespace ts::store {

std::string key_value(const JobRecord& record, const std::string& key) {
  if (key == "method") return record.method;
  if (key == "status") return to_string(record.status);
  if (record.settings.is_object() && record.settings.contains(key)) return setting_text(key, record.settings.at(key));
  return "";
}

namespace {

std::optional<double> parse_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return value;
}

// Numbers before text, numbers by value, text by its characters: 0.1 < 0.2 < 0.7 < 10 < "abc".
bool key_less(const std::string& a, const std::string& b) {
  const auto x = parse_number(a), y = parse_number(b);
  if (x && y) return *x < *y;
  if (x || y) return x.has_value();
  return a < b;
}

bool keys_less(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (key_less(a[i], b[i])) return true;
    if (key_less(b[i], a[i])) return false;
  }
  return a.size() < b.size();
}

MetricSummary summarize_values(const std::vector<double>& values) {
  MetricSummary summary;
  summary.n = static_cast<int>(values.size());
  double sum = 0;
  for (double value : values) sum += value;
  summary.mean = sum / summary.n;
  if (summary.n >= 2) {
    double squares = 0;
    for (double value : values) squares += (value - summary.mean) * (value - summary.mean);
    summary.std = std::sqrt(squares / (summary.n - 1));
  }
  return summary;
}

// Display width of UTF-8 text: code points, which is right for the "±" and "-" this module prints.
size_t display_width(const std::string& text) {
  size_t width = 0;
  for (unsigned char c : text)
    if ((c & 0xC0) != 0x80) ++width;
  return width;
}

std::string pad(const std::string& text, size_t width, bool right_align) {
  const size_t have = display_width(text);
  const std::string fill(width > have ? width - have : 0, ' ');
  return right_align ? fill + text : text + fill;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::optional<MetricSummary> find_metric(const Group& group, const std::string& metric) {
  auto found = group.metrics.find(metric);
  if (found == group.metrics.end()) return std::nullopt;
  return found->second;
}

// Rows of cells: the header, then a row per group.
std::vector<std::vector<std::string>> cells(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                                            const std::vector<std::string>& metrics) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header(keys.begin(), keys.end());
  header.push_back("n");
  header.insert(header.end(), metrics.begin(), metrics.end());
  rows.push_back(header);
  for (const auto& group : groups) {
    std::vector<std::string> row;
    for (const auto& value : group.key_values) row.push_back(value.empty() ? "-" : value);
    row.push_back(std::to_string(group.rows));
    for (const auto& metric : metrics) row.push_back(format_mean_std(find_metric(group, metric)));
    rows.push_back(row);
  }
  return rows;
}

std::vector<size_t> column_widths(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], display_width(row[c]));
  return widths;
}

}  // namespace

std::vector<Group> summarize(const std::vector<JobRecord>& records, const std::vector<std::string>& keys,
                             const std::vector<std::string>& metrics) {
  std::vector<std::pair<std::vector<std::string>, std::vector<const JobRecord*>>> buckets;
  for (const auto& record : records) {
    std::vector<std::string> values;
    for (const auto& key : keys) values.push_back(key_value(record, key));
    auto found = std::find_if(buckets.begin(), buckets.end(), [&](const auto& bucket) { return bucket.first == values; });
    if (found == buckets.end()) {
      buckets.push_back({values, {&record}});
    } else {
      found->second.push_back(&record);
    }
  }
  std::sort(buckets.begin(), buckets.end(), [](const auto& a, const auto& b) { return keys_less(a.first, b.first); });

  std::vector<Group> groups;
  for (const auto& [values, members] : buckets) {
    Group group;
    group.key_values = values;
    group.rows = static_cast<int>(members.size());
    for (const auto* member : members) group.job_ids.push_back(member->id);
    for (const auto& metric : metrics) {
      std::vector<double> samples;
      for (const auto* member : members) {
        auto found = member->metrics.find(metric);
        if (found != member->metrics.end() && std::isfinite(found->second)) samples.push_back(found->second);
      }
      if (!samples.empty()) group.metrics[metric] = summarize_values(samples);
    }
    groups.push_back(std::move(group));
  }
  return groups;
}

namespace {

// Whether `key` has one value within every group of `records` by `others`.
bool determined_by(const std::vector<JobRecord>& records, const std::string& key,
                   const std::vector<std::string>& others) {
  std::map<std::vector<std::string>, std::string> seen;
  for (const auto& record : records) {
    std::vector<std::string> group;
    for (const auto& other : others) group.push_back(key_value(record, other));
    auto [found, inserted] = seen.emplace(group, key_value(record, key));
    if (!inserted && found->second != key_value(record, key)) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> varying_keys(const std::vector<JobRecord>& records, const std::vector<std::string>& except) {
  std::set<std::string> names;
  for (const auto& record : records)
    if (record.settings.is_object())
      for (const auto& item : record.settings.items()) names.insert(item.key());
  std::vector<std::string> keys;
  std::set<std::string> methods;
  for (const auto& record : records) methods.insert(record.method);
  if (methods.size() > 1 && std::find(except.begin(), except.end(), "method") == except.end()) keys.push_back("method");
  for (const auto& name : names) {
    if (std::find(except.begin(), except.end(), name) != except.end()) continue;
    std::set<std::string> values;
    for (const auto& record : records) values.insert(key_value(record, name));
    if (values.size() > 1) keys.push_back(name);
  }
  // A setting only some jobs have (one method's own, such as the augmentation variant's data file) that follows
  // from the other keys adds a column but no group: leave it out.
  for (size_t i = keys.size(); i-- > 0;) {
    const std::string key = keys[i];
    const bool everywhere = std::all_of(records.begin(), records.end(), [&](const JobRecord& record) {
      return record.settings.is_object() && record.settings.contains(key);
    });
    if (key == "method" || everywhere) continue;
    std::vector<std::string> others = keys;
    others.erase(others.begin() + static_cast<std::ptrdiff_t>(i));
    if (determined_by(records, key, others)) keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(i));
  }
  return keys;
}

std::vector<std::string> metric_names(const std::vector<JobRecord>& records) {
  std::set<std::string> names;
  for (const auto& record : records)
    for (const auto& item : record.metrics) names.insert(item.first);
  return {names.begin(), names.end()};
}

std::string format_mean_std(const std::optional<MetricSummary>& summary, int digits) {
  if (!summary) return "-";
  if (!summary->std) return fmt::format("{:.{}f}", summary->mean, digits);
  return fmt::format("{:.{}f} ± {:.{}f}", summary->mean, digits, *summary->std, digits);
}

std::string format_table(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                         const std::vector<std::string>& metrics) {
  const auto rows = cells(groups, keys, metrics);
  const auto widths = column_widths(rows);
  std::string text;
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < rows[r].size(); ++c) {
      // Keys left-aligned, n and the metrics right-aligned so that the decimal points line up.
      line += (c ? "  " : "") + pad(rows[r][c], widths[c], c >= keys.size());
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    text += line + "\n";
    if (r == 0) {
      size_t total = 0;
      for (size_t c = 0; c < widths.size(); ++c) total += widths[c] + (c ? 2 : 0);
      text += std::string(total, '-') + "\n";
    }
  }
  return text;
}

std::string format_markdown(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                            const std::vector<std::string>& metrics) {
  const auto rows = cells(groups, keys, metrics);
  std::string text;
  for (size_t r = 0; r < rows.size(); ++r) {
    text += "|";
    for (const auto& cell : rows[r]) text += " " + cell + " |";
    text += "\n";
    if (r == 0) {
      text += "|";
      for (size_t c = 0; c < rows[r].size(); ++c) text += c < keys.size() ? "---|" : "---:|";
      text += "\n";
    }
  }
  return text;
}

std::string format_csv(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                       const std::vector<std::string>& metrics) {
  std::vector<std::string> header(keys.begin(), keys.end());
  header.push_back("n");
  for (const auto& metric : metrics) {
    header.push_back(metric + "_mean");
    header.push_back(metric + "_std");
    header.push_back(metric + "_n");
  }
  std::string text;
  auto write_row = [&](const std::vector<std::string>& fields) {
    for (size_t i = 0; i < fields.size(); ++i) text += (i ? "," : "") + csv_field(fields[i]);
    text += "\n";
  };
  write_row(header);
  for (const auto& group : groups) {
    std::vector<std::string> fields(group.key_values.begin(), group.key_values.end());
    fields.push_back(std::to_string(group.rows));
    for (const auto& metric : metrics) {
      const auto summary = find_metric(group, metric);
      fields.push_back(summary ? fmt::format("{}", summary->mean) : "");
      fields.push_back(summary && summary->std ? fmt::format("{}", *summary->std) : "");
      fields.push_back(std::to_string(summary ? summary->n : 0));
    }
    write_row(fields);
  }
  return text;
}

}  // namespace ts::store
