// The scripts a sweep writes for other programs to read (the sbatch script, gnuplot's plot scripts), attacked as a
// hostile sweep file or a careless --set would: no value may end its quotes, its comment or its line and become an
// option or a command of its own.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <twostage/build_info.h>

#include "core/error.h"
#include "core/fs.h"
#include "sweep/plan.h"
#include "sweep/report.h"
#include "sweep/slurm.h"
#include "lua/executable.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ts::sweep;

namespace {

const std::string kSweep = "tests/fixtures/sweep/small_sweep.lua";  // tests run from the source root
const std::string kTwostage = std::string(TWOSTAGE_BINARY_DIR) + "/twostage";
const std::string kInjection = "debug\" --injected-bogus-option=\"x";

const fs::path kScratch = fs::temp_directory_path() / ("twostage-scripts-" + std::to_string(::getpid()));
struct RemoveScratch {
  ~RemoveScratch() {
    std::error_code ignored;
    fs::remove_all(kScratch, ignored);
  }
} remove_scratch;

fs::path fresh_folder(const std::string& name) {
  const auto folder = kScratch / name;
  fs::remove_all(folder);
  fs::create_directories(folder);
  return folder;
}

using ts::testing::run_command;

std::string sbatch_lines(const json& slurm) {
  std::string text;
  for (const auto& line : sbatch_options(slurm, 2, "twostage-x", "/tmp/logs")) text += line + "\n";
  return text;
}

}  // namespace

TEST_CASE("an sbatch value that would close its quotes and add an option is refused, naming the key") {
  CHECK_THROWS_WITH(sbatch_options(json{{"partition", kInjection}}, 2, "x", "/tmp"),
                    Catch::Equals("slurm.partition: \"debug\\\" --injected-bogus-option=\\\"x\" cannot be an "
                                  "sbatch option value: it holds '\"'"));
  // Each character sbatch or a shell would read as more than text.
  for (const std::string bad : {"a\\\" b", "a\\", "$(id)", "`id`", "debug\n#SBATCH --wrap=id", "a\rb", "a\tb"}) {
    INFO(bad);
    CHECK_THROWS_WITH(sbatch_options(json{{"comment", bad}}, 2, "x", "/tmp"), Catch::StartsWith("slurm.comment: "));
  }
  CHECK_THROWS_WITH(sbatch_options(json{{"account", ""}}, 2, "x", "/tmp"), Catch::Contains("slurm.account"));
  // The job name and the log folder come from the sweep's name and folder; they are checked the same way.
  CHECK_THROWS_WITH(sbatch_options(json::object(), 2, "twostage-a\"b", "/tmp"), Catch::Contains("slurm.job_name"));
  CHECK_THROWS_WITH(sbatch_options(json::object(), 2, "x", "/tmp/$HOME"), Catch::Contains("slurm.output"));

  // Ordinary values: blanks, '#' (a comment outside quotes) and '\'' (a quote of sbatch's own) are kept inside
  // double quotes; plain ones are written as they are.
  const std::string text = sbatch_lines(json{{"comment", "two words"}, {"mail_user", "a#b"}, {"reservation", "o'k"},
                                             {"partition", "debug"}});
  CHECK_THAT(text, Catch::Contains("#SBATCH --comment=\"two words\"\n") &&
                       Catch::Contains("#SBATCH --mail-user=\"a#b\"\n") &&
                       Catch::Contains("#SBATCH --reservation=\"o'k\"\n") &&
                       Catch::Contains("#SBATCH --partition=debug\n"));
}

TEST_CASE("twostage sweep --set 'slurm.partition=debug\" --injected-bogus-option=\"x' --emit slurm is refused") {
  const auto out = fresh_folder("attack");
  const std::string sweep = kTwostage + " sweep " + kSweep + " --out " + out.string() + " --emit slurm --set seeds=7";
  const auto attack = run_command(sweep + " --set 'slurm.partition=" + kInjection + "'");
  INFO(attack.output);
  CHECK(attack.status == 1);
  CHECK_THAT(attack.output, Catch::Contains("slurm.partition: ") && Catch::Contains("cannot be an sbatch option"));
  CHECK_FALSE(fs::exists(out / "slurm" / "sweep.sbatch"));

  // A value with a blank is an ordinary value: written, and quoted as one word.
  const auto spaced = run_command(sweep + " --set 'slurm.comment=two words' --set slurm.partition=debug");
  INFO(spaced.output);
  REQUIRE(spaced.status == 0);
  const std::string script = ts::read_file(out / "slurm" / "sweep.sbatch");
  CHECK_THAT(script, Catch::Contains("\n#SBATCH --comment=\"two words\"\n") &&
                         Catch::Contains("\n#SBATCH --partition=debug\n") && !Catch::Contains("bogus"));
}

TEST_CASE("a line break in the sbatch script's comments or in a job's setting runs nothing") {
  const auto dir = fresh_folder("comments");
  const fs::path marker = dir / "pwned";
  Job job;
  job.id = "vanilla_x";
  job.method = "vanilla";
  job.recipe_path = "/no/such/recipe.lua";
  job.run_dir = "jobs/vanilla_x";
  job.settings = json{{"note", "a\ntouch " + marker.string() + "\n#"}, {"ratio", 0.2}};
  job.sweep_file_settings = {"note", "ratio"};
  // The collect command (shown as a comment) repeats the user's --set values, line breaks included; /bin/true stands
  // in for twostage so that the task runs its job quickly.
  const auto script = write_slurm_script(dir / "sweep", "small", {&job}, json{{"partition", "debug"}}, "/bin/true",
                                         dir, "twostage sweep s.lua --set 'x=a\ntouch " + marker.string() + "\n#'");
  const std::string text = ts::read_file(script.path);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("\n# touch " + marker.string() + "\n"));
  // The task tells twostage which values the sweep file wrote, as a local run does (job_arguments).
  CHECK_THAT(text, Catch::Contains(" --set ratio=0.2 --sweep-file-settings note,ratio ;;\n"));
  const auto task = run_command("SLURM_ARRAY_TASK_ID=0 bash " + script.path.string());
  INFO(task.output);
  CHECK(task.status == 0);
  CHECK(fs::exists(dir / "sweep" / "jobs" / "vanilla_x" / "job.json"));  // the task did run its job
  CHECK_FALSE(fs::exists(marker));
}

TEST_CASE("a setting's value or a metric's name from a sweep cannot run gnuplot commands or place plots elsewhere") {
  const auto dir = fresh_folder("plots");
  const fs::path marker = dir / "pwned";
  const std::string label = "a\nsystem('touch " + marker.string() + "')\n#";
  const std::string metric = "../../escaped";
  std::vector<ts::store::JobRecord> records;
  for (int i = 0; i < 4; ++i) {
    ts::store::JobRecord record;
    record.id = "job" + std::to_string(i);
    record.method = "vanilla";
    record.settings = json{{"ratio", i % 2 ? 0.5 : 0.2}, {"note", i < 2 ? label : "plain"}};
    record.status = ts::store::JobStatus::Done;
    record.metrics = {{metric, 0.5 + 0.1 * i}, {"f1_class_0", 0.5}, {"f1_class_1", 0.6}};
    records.push_back(record);
  }
  ReportOptions options;
  options.metrics = {metric};
  const auto files = write_report(dir / "sweep", "small", records, options);
  INFO(ts::read_file(files.markdown));
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    CHECK_THAT(entry.path().string(), Catch::StartsWith((dir / "sweep").string()) || Catch::Equals(marker.string()));
  const fs::path script = dir / "sweep" / "plots" / ".._.._escaped.gp";
  REQUIRE(fs::exists(script));
  CHECK_THAT(ts::read_file(script), !Catch::Contains("\nsystem("));
  CHECK_FALSE(fs::exists(marker));
}
