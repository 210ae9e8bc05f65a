// twostage: the command line. `run` executes a Lua recipe; the other subcommands are plain C++ (host/cli).
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/log.h"
#include "runtime.h"
#include "runtime/blas_core.h"
#include "runtime/environment.h"
#include "sweep.h"
#include "sweep/command.h"

namespace {

constexpr const char* kUsage = R"(usage: twostage <command> [options]

commands:
  run RECIPE.lua [--set key=value]... [--out DIR] [--threads N] [--device cpu|cuda] [--seed N]
                 [--unsafe] [--log-json FILE] [--quiet] [--blas-core auto|as-is|NAME]
        run a recipe; `twostage run RECIPE.lua --help` lists its settings
  tokenize --vocab PATH [--cased] [--max-length N]
        token ids of each line of standard input
  predict --model DIR --input FILE --text-column NAME [--text-pair-column NAME] [--output FILE]
          [--batch-size N] [--max-length N]
        a classifier's predictions and logits as CSV
  sweep SWEEP.lua [--set key=value]... [--out DIR] [--jobs N] [--emit slurm | --collect | --dry-run]
        run a grid of recipe runs (resumable), or write it as a Slurm job array; report.md with plots
  results PATH [--group-by KEY,...] [--metric NAME,...] [--csv FILE]
        mean ± std of a sweep's metrics by group, printed and written as CSV
  --help      this text
  --version   versions of twostage, LibTorch and LuaJIT, and the BLAS in use

run, predict, sweep and --version take --blas-core: auto (the default: OpenBLAS kernels for this CPU's features
when OpenBLAS picked older ones, unless OPENBLAS_CORETYPE is set), as-is, or a core type such as SkylakeX.

A recipe may not run programs, load native code or bytecode, or read environment variables; it reads only its own
folder, the run folder, data/, scripts/ and the paths you name on the command line, writes only its run folder,
--out and the output settings you name, and its LLM client talks only to OpenAI or to a base_url you gave;
--unsafe lifts this for recipes you trust.
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string take_value(const std::vector<std::string>& args, size_t& i) {
  if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
  return args[++i];
}

int parse_int(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') throw UsageError(option + " expects an integer, got '" + text + "'");
  return static_cast<int>(value);
}

int run_command(const std::vector<std::string>& args, const std::string& command_line) {
  ts::lua::RunOptions options;
  options.command_line = command_line;
  std::optional<std::string> json_log;
  bool quiet = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--set") {
      auto [key, value] = ts::split_assignment(take_value(args, i));
      options.overrides[key] = value;
    } else if (arg.rfind("--set=", 0) == 0) {
      auto [key, value] = ts::split_assignment(arg.substr(6));
      options.overrides[key] = value;
    } else if (arg == "--out") {
      options.out = take_value(args, i);
    } else if (arg == "--threads") {
      options.threads = parse_int(arg, take_value(args, i));
    } else if (arg == "--device") {
      options.device = take_value(args, i);
    } else if (arg == "--seed") {
      options.seed = parse_int(arg, take_value(args, i));
    } else if (arg == "--sweep-file-settings") {
      // Written by `twostage sweep` for its jobs: these --set values came from the sweep file, not from the user.
      const std::string keys = take_value(args, i);
      for (size_t start = 0; start <= keys.size();) {
        const size_t comma = std::min(keys.find(',', start), keys.size());
        if (comma > start) options.sweep_file_settings.insert(keys.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (arg == "--unsafe") {
      options.unsafe = true;
    } else if (arg == "--log-json") {
      json_log = take_value(args, i);
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (arg == "--help" || arg == "-h") {
      options.help = true;
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "'");
    } else if (options.recipe.empty()) {
      options.recipe = arg;
    } else {
      throw UsageError("unexpected argument '" + arg + "' (settings are given as --set key=value)");
    }
  }
  if (options.recipe.empty()) throw UsageError("run needs a recipe file");
  if (!std::filesystem::exists(options.recipe)) throw ts::Error("no recipe file '" + options.recipe.string() + "'");

  ts::log::init(quiet ? spdlog::level::warn : spdlog::level::info);
  if (json_log) ts::log::add_json_file(*json_log);
  options.device = ts::runtime::check_device(options.device);
  if (!options.help) {
    const auto plan = ts::runtime::set_threads(options.threads);
    ts::log::info("threads",
                  fmt::format("threads: torch {}, BLAS {}, own loops {} ({}); BLAS: {}; kernels: {}",
                              plan.torch_intra_op, plan.blas ? std::to_string(plan.blas) : std::string("shared"),
                              plan.loops, plan.reason, ts::runtime::blas_description(),
                              ts::runtime::blas_core_report()),
                  {{"torch_threads", plan.torch_intra_op}, {"blas_threads", plan.blas}, {"loop_threads", plan.loops},
                   {"blas", ts::runtime::blas_description()}, {"blas_core", ts::runtime::blas_core_report()}});
    if (ts::runtime::blas_is_reference())
      ts::log::event(spdlog::level::warn, "slow_blas",
                     "LibTorch is using the reference BLAS; apt-get install libopenblas0-pthread", {});
  }
  ts::lua::Runtime runtime(options);
  return runtime.run();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  try {
    // Only the commands that run torch kernels pay for a restart (a sweep's jobs inherit its variables); one
    // restart serves both the BLAS kernels and OpenMP's wait policy, which are read when the libraries load.
    const bool computes = command == "run" || command == "predict" || command == "sweep";
    if (computes || command == "--version" || command == "version") {
      bool restart = ts::runtime::prepare_blas_core(ts::runtime::take_blas_core_flag(rest));
      if (computes) restart = ts::runtime::ask_passive_openmp() || restart;
      if (restart) ts::runtime::restart_process(argv);
    }
    if (computes) ts::runtime::keep_freed_memory();
    if (command == "--version" || command == "version") {
      std::cout << ts::runtime::version_report(ts::lua::luajit_version());
      return 0;
    }
    if (command == "run") return run_command(rest, command_line);
    if (command == "tokenize") return ts::cli::tokenize(rest);
    if (command == "predict") return ts::cli::predict(rest);
    if (command == "sweep") return ts::lua::sweep_command(rest);
    if (command == "results") return ts::sweep::results_command(rest);
    throw UsageError("unknown command '" + command + "'");
  } catch (const UsageError& error) {
    std::cerr << "twostage: " << error.what() << "\n\n" << kUsage;
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
}
