#pragma once
// Mean ± sample standard deviation of metrics over jobs grouped by settings: the tables of `twostage results` and of
// a sweep's report.md, printed as text and written as CSV.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "store/results_store.h"

namespace ts::store {

struct MetricSummary {
  int n = 0;                    // rows of the group that have the metric
  double mean = 0;
  std::optional<double> std;    // sample standard deviation (n - 1 in the denominator); none when n < 2
};

struct Group {
  std::vector<std::string> key_values;          // one per grouping key, as setting_text writes it ("" if absent)
  int rows = 0;
  std::vector<std::string> job_ids;
  std::map<std::string, MetricSummary> metrics;  // by metric name; absent when no row of the group has it
};

// The value a row has for a grouping key: "method", "status", or a setting ("" when the job has no such setting).
std::string key_value(const JobRecord& record, const std::string& key);

// Groups `records` (normally the done ones) by `keys`; groups come in key order, numbers compared as numbers.
std::vector<Group> summarize(const std::vector<JobRecord>& records, const std::vector<std::string>& keys,
                             const std::vector<std::string>& metrics);

// Settings whose value differs between `records` (in name order), leaving out `except`; with "method" first when the
// methods differ. The natural grouping of a set of jobs: everything that varies but the seeds. A setting that only
// some jobs have and that follows from the other keys (one method's own data file) is left out too.
std::vector<std::string> varying_keys(const std::vector<JobRecord>& records, const std::vector<std::string>& except);

// Metric names found in any of `records`, in name order.
std::vector<std::string> metric_names(const std::vector<JobRecord>& records);

// "0.812 ± 0.013", "0.812" when there is no std, "-" when the metric is missing. `digits` after the point.
std::string format_mean_std(const std::optional<MetricSummary>& summary, int digits = 3);

// A table for the terminal: the keys, n, and one "mean ± std" column per metric.
std::string format_table(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                         const std::vector<std::string>& metrics);
// The same as a Markdown table (for report.md).
std::string format_markdown(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                            const std::vector<std::string>& metrics);
// CSV: the keys, n, then <metric>_mean, <metric>_std, <metric>_n for each metric; full precision; empty cells for
// missing values. Fields quoted when they hold a comma, quote or newline (RFC 4180).
std::string format_csv(const std::vector<Group>& groups, const std::vector<std::string>& keys,
                       const std::vector<std::string>& metrics);

}  // namespace ts::store
