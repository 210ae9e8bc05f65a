#pragma once
// A sweep's report: report.md in the sweep folder with the tables of mean ± std over seeds, summary.csv, and PNG
// plots drawn by gnuplot (Debian's gnuplot-nox): each report metric against the x setting, one line per method
// with error bars, and per-class F1 bars at one point of the grid.
#include <filesystem>
#include <string>
#include <vector>

#include "store/results_store.h"
#include "sweep/plan.h"

namespace ts::sweep {

struct ReportFiles {
  std::filesystem::path markdown;
  std::filesystem::path csv;
  std::vector<std::filesystem::path> plots;  // the PNGs drawn
  std::vector<std::string> notes;            // what could not be drawn, and why
};

// Writes report.md, summary.csv and plots/ under `sweep_dir` from `records` (the plan's jobs, any status).
// The seeds axes are averaged over; every other setting that varies is a grouping key.
ReportFiles write_report(const std::filesystem::path& sweep_dir, const std::string& title,
                         const std::vector<store::JobRecord>& records, const ReportOptions& options);

// The settings averaged over in tables and plots.
inline const std::vector<std::string> kSeedKeys = {"seeds", "seed"};

}  // namespace ts::sweep
