#include "sweep/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>

#include "core/fs.h"
#include "core/log.h"
#include "store/summary.h"
#include "sweep/process.h"

namespace ts::sweep {

namespace fs = std::filesystem;
using nlohmann::json;
using store::Group;
using store::JobRecord;

namespace {

std::optional<double> as_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(value)) return std::nullopt;
  return value;
}

// A string for a gnuplot script: single quotes, a quote doubled. gnuplot ends a command at a line break even inside
// quotes, so a label holding one (a setting's value from a sweep file) would run the rest, `system(...)` included:
// control characters become blanks.
std::string gnuplot_string(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    quoted += c == '\'' ? std::string("''") : std::string(1, c);
  }
  return quoted + "'";
}

// A field of a gnuplot data file: double-quoted when it holds blanks.
std::string data_field(std::string text) {
  std::replace(text.begin(), text.end(), '"', '\'');
  if (text.empty() || text.find_first_of(" \t") != std::string::npos) return "\"" + text + "\"";
  return text;
}

// "vanilla", "vanilla lr=0.001": the label of a series of groups sharing `keys`' values.
std::string series_label(const std::vector<std::string>& keys, const std::vector<std::string>& values) {
  std::string label;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string part = keys[i] == "method" ? values[i] : keys[i] + "=" + values[i];
    label += (label.empty() ? "" : " ") + part;
  }
  return label;
}

// The file name (without extension) of a metric's plot. Metric names come from the jobs' metrics.json, which a
// recipe writes: a '/' in one must not place the plot's files outside plots/.
std::string plot_stem(const std::string& metric) {
  std::string stem = metric;
  for (auto& c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  return stem;
}

std::string without_newlines(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '|', '/');
  return text;
}

std::string gnuplot_header(const fs::path& png, const std::string& title, const std::string& xlabel,
                           const std::string& ylabel) {
  return fmt::format(
      "set terminal pngcairo size 900,560 noenhanced font \"sans,11\"\n"  // names hold underscores
      "set output {}\n"
      "set title {} noenhanced\n"
      "set xlabel {} noenhanced\n"
      "set ylabel {} noenhanced\n"
      "set grid\n"
      "set key outside right top noenhanced\n",
      gnuplot_string(png.string()), gnuplot_string(title), gnuplot_string(xlabel), gnuplot_string(ylabel));
}

struct Plotter {
  fs::path plots_dir;
  std::optional<fs::path> gnuplot = find_program("gnuplot");
  ReportFiles* files;

  // Writes the script and runs gnuplot; a failure becomes a note in the report, not an error of the sweep.
  bool draw(const std::string& name, const std::string& script) {
    const fs::path script_file = plots_dir / (name + ".gp");
    const fs::path png = plots_dir / (name + ".png");
    write_file_atomic(script_file, script);
    if (!gnuplot) {
      files->notes.push_back(fmt::format("{}.png not drawn: gnuplot is not installed (apt-get install gnuplot-nox); "
                                         "`gnuplot {}` draws it",
                                         name, script_file.string()));
      return false;
    }
    fs::remove(png);
    const fs::path log_file = plots_dir / "gnuplot.log";
    const auto exit = run_process(*gnuplot, {script_file.string()}, log_file);
    if (exit.exit_status != 0 || !fs::exists(png)) {
      files->notes.push_back(
          fmt::format("{}.png not drawn: gnuplot {} (see {})", name, exit.describe(), log_file.string()));
      return false;
    }
    files->plots.push_back(png);
    return true;
  }
};

// The metric against x: one line per series, error bars of one sample std.
bool plot_metric(Plotter& plotter, const std::string& metric, const std::string& x,
                 const std::vector<std::string>& series_keys, const std::vector<Group>& groups) {
  // groups are keyed by series_keys then x.
  std::vector<std::vector<std::string>> series;
  std::set<std::string> x_texts;
  bool numeric_x = true;
  for (const auto& group : groups) {
    std::vector<std::string> key(group.key_values.begin(), group.key_values.end() - 1);
    if (std::find(series.begin(), series.end(), key) == series.end()) series.push_back(key);
    x_texts.insert(group.key_values.back());
    numeric_x = numeric_x && as_number(group.key_values.back()).has_value();
  }
  std::vector<std::string> x_order(x_texts.begin(), x_texts.end());
  if (numeric_x)
    std::sort(x_order.begin(), x_order.end(), [](const auto& a, const auto& b) { return *as_number(a) < *as_number(b); });
  auto position = [&](const std::string& text) {
    if (numeric_x) return *as_number(text);
    return static_cast<double>(std::find(x_order.begin(), x_order.end(), text) - x_order.begin());
  };
  // Series are nudged apart along x (1.5% of the range each) so that their error bars do not hide each other.
  double span = numeric_x && x_order.size() > 1 ? position(x_order.back()) - position(x_order.front()) : 1.0;
  if (span <= 0) span = 1.0;
  const double nudge = series.size() > 1 ? 0.015 * span : 0.0;

  const fs::path data_file = plotter.plots_dir / (plot_stem(metric) + ".dat");
  const std::string quoted_data = gnuplot_string(data_file.string());
  std::string data;
  std::string plot;
  int index = 0;
  for (size_t s = 0; s < series.size(); ++s) {
    std::string block;
    for (const auto& text : x_order) {
      auto found = std::find_if(groups.begin(), groups.end(), [&](const Group& group) {
        return group.key_values.back() == text &&
               std::equal(series[s].begin(), series[s].end(), group.key_values.begin());
      });
      if (found == groups.end()) continue;
      auto metric_found = found->metrics.find(metric);
      if (metric_found == found->metrics.end()) continue;
      const double shift = nudge * (static_cast<double>(s) - (static_cast<double>(series.size()) - 1) / 2);
      block += fmt::format("{} {} {} {}\n", position(text) + shift, metric_found->second.mean,
                           metric_found->second.std.value_or(0.0), data_field(text));
    }
    if (block.empty()) continue;
    const std::string label = series_keys.empty() ? metric : series_label(series_keys, series[s]);
    data += "# " + label + "\n" + block + "\n\n";
    plot += fmt::format("{}{} index {} using 1:2:3{} with yerrorlines lw 2 pt 7 ps 1.2 title {}",
                        plot.empty() ? "plot " : ", \\\n     ", quoted_data, index, numeric_x ? "" : ":xtic(4)",
                        gnuplot_string(label));
    ++index;
  }
  if (index == 0) return false;
  write_file_atomic(data_file, data);
  std::string script = gnuplot_header(plotter.plots_dir / (plot_stem(metric) + ".png"),
                                      fmt::format("{} against {} (mean ± std over seeds)", metric, x), x, metric);
  script += "set offsets graph 0.04, graph 0.04, graph 0.08, graph 0.08\n";
  if (!numeric_x) script += "set xtics rotate by -30\n";
  script += plot + "\n";
  return plotter.draw(plot_stem(metric), script);
}

// Per-class F1 bars of each series at one grid point.
bool plot_per_class(Plotter& plotter, const std::string& title, const std::vector<std::string>& series_keys,
                    const std::vector<Group>& groups, const std::vector<std::string>& class_names) {
  std::string data = "class";
  for (const auto& group : groups) {
    const std::string label = series_keys.empty() ? "F1" : series_label(series_keys, group.key_values);
    data += " " + data_field(label) + " " + data_field(label + " std");
  }
  data += "\n";
  for (size_t k = 0; k < class_names.size(); ++k) {
    data += data_field(class_names[k]);
    for (const auto& group : groups) {
      auto found = group.metrics.find("f1_class_" + std::to_string(k));
      if (found == group.metrics.end()) {
        data += " NaN 0";
      } else {
        data += fmt::format(" {} {}", found->second.mean, found->second.std.value_or(0.0));
      }
    }
    data += "\n";
  }
  const fs::path data_file = plotter.plots_dir / "per_class_f1.dat";
  write_file_atomic(data_file, data);
  std::string script = gnuplot_header(plotter.plots_dir / "per_class_f1.png", title, "class", "F1");
  script +=
      "set style data histograms\n"
      "set style histogram errorbars gap 1.5 lw 1\n"
      "set style fill solid 0.75 border -1\n"
      "set yrange [0:1.05]\n"
      "set key autotitle columnhead\n";
  if (class_names.size() > 6) script += "set xtics rotate by -30\n";
  for (size_t g = 0; g < groups.size(); ++g) {
    const int mean_column = static_cast<int>(2 + 2 * g);
    script += fmt::format("{}{} using {}:{}{}", g == 0 ? "plot " : ", \\\n     ",
                          g == 0 ? gnuplot_string(data_file.string()) : std::string("''"), mean_column,
                          mean_column + 1, g == 0 ? ":xtic(1)" : "");
  }
  script += "\n";
  return plotter.draw("per_class_f1", script);
}

}  // namespace

ReportFiles write_report(const fs::path& sweep_dir, const std::string& title, const std::vector<JobRecord>& records,
                         const ReportOptions& options) {
  ReportFiles files;
  files.markdown = sweep_dir / "report.md";
  files.csv = sweep_dir / "summary.csv";
  const fs::path plots_dir = sweep_dir / "plots";
  fs::create_directories(plots_dir);
  Plotter plotter{plots_dir, find_program("gnuplot"), &files};

  std::vector<JobRecord> done;
  std::map<store::JobStatus, int> counts;
  for (const auto& record : records) {
    ++counts[record.status];
    if (record.status == store::JobStatus::Done) done.push_back(record);
  }

  const auto keys = options.group_by.empty() ? store::varying_keys(done, kSeedKeys) : options.group_by;
  std::vector<std::string> metrics;
  const auto present = store::metric_names(done);
  for (const auto& metric : options.metrics)
    if (std::find(present.begin(), present.end(), metric) != present.end()) metrics.push_back(metric);
  for (const auto& metric : options.metrics)
    if (!done.empty() && std::find(metrics.begin(), metrics.end(), metric) == metrics.end())
      files.notes.push_back(fmt::format("no job reported the metric '{}'", metric));
  std::vector<std::string> table_metrics = metrics;
  for (const char* extra : {"accuracy", "balanced_accuracy"})
    if (std::find(present.begin(), present.end(), extra) != present.end() &&
        std::find(table_metrics.begin(), table_metrics.end(), extra) == table_metrics.end())
      table_metrics.push_back(extra);

  std::string md = fmt::format("# Sweep `{}`\n\n", title);
  md += fmt::format("{} jobs: {} done, {} failed, {} pending, {} running. Results store: `results.sqlite` "
                    "(`twostage results {}`). Updated {}.\n\n",
                    records.size(), counts[store::JobStatus::Done], counts[store::JobStatus::Failed],
                    counts[store::JobStatus::Pending], counts[store::JobStatus::Running], sweep_dir.string(),
                    store::utc_timestamp_now());

  const auto table_groups = store::summarize(done, keys, table_metrics);
  write_file_atomic(files.csv, store::format_csv(table_groups, keys, table_metrics));

  // Plots against x.
  std::vector<std::string> series_keys;
  for (const auto& key : keys)
    if (key != options.x) series_keys.push_back(key);
  const bool has_x = std::any_of(done.begin(), done.end(), [&](const JobRecord& record) {
    return !store::key_value(record, options.x).empty();
  });
  if (!done.empty() && !has_x)
    files.notes.push_back(fmt::format("no plots against '{}': the jobs have no such setting", options.x));
  if (has_x) {
    std::vector<std::string> plot_keys = series_keys;
    plot_keys.push_back(options.x);
    const auto groups = store::summarize(done, plot_keys, metrics);
    for (const auto& metric : metrics) {
      if (plot_metric(plotter, metric, options.x, series_keys, groups))
        md += fmt::format("## {} against {}\n\n![{} against {}](plots/{}.png)\n\n", metric, options.x, metric,
                          options.x, plot_stem(metric));
    }
  }

  md += "## Results\n\n";
  if (done.empty()) {
    md += "No job has finished yet.\n\n";
  } else {
    md += fmt::format("Mean ± sample standard deviation over {} (n: jobs in the group); as CSV in `summary.csv`.\n\n",
                      std::any_of(done.begin(), done.end(),
                                  [](const JobRecord& r) { return !store::key_value(r, "seeds").empty(); })
                          ? "seeds"
                          : "jobs");
    md += store::format_markdown(table_groups, keys, table_metrics) + "\n";
  }

  // Per-class F1 at one point of the grid: the one the sweep names, else the smallest x.
  std::optional<double> smallest_x;
  std::string smallest_x_text;
  for (const auto& record : done)
    if (auto value = as_number(store::key_value(record, options.x)); value && (!smallest_x || *value < *smallest_x)) {
      smallest_x = value;
      smallest_x_text = store::key_value(record, options.x);
    }
  json at = options.per_class_at;
  if (at.empty() && smallest_x) at = json{{options.x, parse_value(smallest_x_text)}};
  if (!at.empty() && !done.empty()) {
    std::vector<JobRecord> selected;
    for (const auto& record : done) {
      bool matches = true;
      for (const auto& [key, value] : at.items())
        matches = matches && store::key_value(record, key) == store::setting_text(key, value);
      if (matches) selected.push_back(record);
    }
    std::string where;
    for (const auto& [key, value] : at.items())
      where += (where.empty() ? "" : ", ") + key + " = " + store::setting_text(key, value);
    // A point the grid does not have (after --set ratio=...): the smallest x instead, said in a note.
    if (selected.empty() && has_x && !smallest_x_text.empty()) {
      files.notes.push_back(fmt::format("per-class F1: no finished job at {}; shown at {} = {} instead", where,
                                        options.x, smallest_x_text));
      where = options.x + " = " + smallest_x_text;
      at = json{{options.x, parse_value(smallest_x_text)}};
      for (const auto& record : done)
        if (store::key_value(record, options.x) == smallest_x_text) selected.push_back(record);
    }
    int classes = 0;
    for (const auto& record : selected)
      for (const auto& item : record.metrics)
        if (item.first.rfind("f1_class_", 0) == 0) classes = std::max(classes, std::atoi(item.first.c_str() + 9) + 1);
    if (selected.empty() || classes == 0) {
      files.notes.push_back(fmt::format("no per-class F1 at {}: no finished job there reports f1_per_class", where));
    } else {
      std::vector<std::string> names;
      const json& first = selected.front().metrics_json;
      for (int k = 0; k < classes; ++k) {
        if (first.contains("classes") && first["classes"].is_array() && k < static_cast<int>(first["classes"].size()) &&
            first["classes"][k].is_string())
          names.push_back(first["classes"][k].get<std::string>());
        else
          names.push_back("class " + std::to_string(k));
      }
      std::vector<std::string> class_metrics;
      for (int k = 0; k < classes; ++k) class_metrics.push_back("f1_class_" + std::to_string(k));
      std::vector<std::string> bar_keys;
      for (const auto& key : keys)
        if (!at.contains(key)) bar_keys.push_back(key);
      const auto groups = store::summarize(selected, bar_keys, class_metrics);
      md += fmt::format("## Per-class F1 at {}\n\n", where);
      if (plot_per_class(plotter, "per-class F1 at " + where + " (mean ± std over seeds)", bar_keys, groups, names))
        md += "![per-class F1](plots/per_class_f1.png)\n\n";
      // A table: a row per class, a column per series.
      md += "| class |";
      for (const auto& group : groups)
        md += " " + (bar_keys.empty() ? std::string("F1") : series_label(bar_keys, group.key_values)) + " |";
      md += "\n|---|";
      for (size_t g = 0; g < groups.size(); ++g) md += "---:|";
      md += "\n";
      for (int k = 0; k < classes; ++k) {
        md += "| " + without_newlines(names[k]) + " |";
        for (const auto& group : groups) {
          auto found = group.metrics.find(class_metrics[k]);
          md += " " + store::format_mean_std(found == group.metrics.end() ? std::nullopt
                                                                          : std::optional(found->second)) + " |";
        }
        md += "\n";
      }
      md += "\n";
    }
  }

  std::vector<const JobRecord*> failed;
  for (const auto& record : records)
    if (record.status == store::JobStatus::Failed) failed.push_back(&record);
  if (!failed.empty()) {
    md += "## Failed jobs\n\n| job | attempts | error | output |\n|---|---:|---|---|\n";
    for (const auto* record : failed) {
      const std::string first_line = record->error.substr(0, record->error.find('\n'));
      std::string last_line = record->error.substr(record->error.rfind('\n') + 1);
      md += fmt::format("| {} | {} | {}{} | `{}/output.txt` |\n", record->id, record->attempts,
                        without_newlines(first_line), last_line != first_line ? ": " + without_newlines(last_line) : "",
                        record->run_dir);
    }
    md += "\n";
  }
  if (!files.notes.empty()) {
    md += "## Notes\n\n";
    for (const auto& note : files.notes) md += "- " + note + "\n";
    md += "\n";
  }
  write_file_atomic(files.markdown, md);
  for (const auto& note : files.notes) log::event(spdlog::level::warn, "report_note", note, {});
  return files;
}

}  // namespace ts::sweep
