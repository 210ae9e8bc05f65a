#include "sweep/plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include <twostage/build_info.h>

#include "core/error.h"

namespace ts::sweep {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::set<std::string> kSweepKeys = {"description", "methods", "recipe",          "grid",  "random",
                                          "settings",    "method_settings", "slurm", "report"};

bool is_seed_axis(const std::string& name) { return name == "seeds" || name == "seed"; }

bool is_scalar(const json& value) { return value.is_number() || value.is_string() || value.is_boolean(); }

// A grid or choice value: a scalar or a flat list of scalars (a job may take a list, e.g. seeds = {7, 42}).
void check_value(const std::string& where, const json& value) {
  if (is_scalar(value)) return;
  if (value.is_array() && std::all_of(value.begin(), value.end(), is_scalar)) return;
  fail("{}: {} is not a number, string, boolean or list of those", where, value.dump());
}

std::string describe_keys(const std::set<std::string>& keys) {
  std::string text;
  for (const auto& key : keys) text += (text.empty() ? "" : ", ") + key;
  return text;
}

fs::path installed_recipes_directory() {
  std::error_code error;
  const auto executable = fs::read_symlink("/proc/self/exe", error);
  if (error) return {};
  return executable.parent_path().parent_path() / "share" / "twostage" / "recipes";
}

Method resolve_method(const std::string& entry, const fs::path& sweep_file) {
  if (entry.empty()) fail("sweep '{}': a method name is empty", sweep_file.string());
  const fs::path sweep_dir = fs::absolute(sweep_file).parent_path();
  std::vector<fs::path> candidates;
  Method method;
  const bool is_path = entry.size() > 4 && entry.compare(entry.size() - 4, 4, ".lua") == 0;
  if (is_path) {
    const fs::path path(entry);
    method.name = path.stem().string();
    if (path.is_absolute()) {
      candidates.push_back(path);
    } else {
      candidates.push_back(sweep_dir / path);
      candidates.push_back(fs::absolute(path));
    }
  } else {
    method.name = entry;
    candidates.push_back(sweep_dir / (entry + ".lua"));
    candidates.push_back(fs::absolute(fs::path("recipes") / (entry + ".lua")));
    const auto installed = installed_recipes_directory();
    if (!installed.empty()) candidates.push_back(installed / (entry + ".lua"));
    candidates.push_back(fs::path(TWOSTAGE_SOURCE_DIR) / "recipes" / (entry + ".lua"));
  }
  for (char c : method.name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
      fail("sweep '{}': method '{}' may use only letters, digits, '_', '-' and '.'", sweep_file.string(), method.name);
  for (const auto& candidate : candidates) {
    if (fs::is_regular_file(candidate)) {
      method.recipe = fs::weakly_canonical(candidate);
      return method;
    }
  }
  std::string tried;
  for (const auto& candidate : candidates) tried += "\n  " + candidate.lexically_normal().string();
  fail("sweep '{}': no recipe for method '{}'; looked for:{}", sweep_file.string(), entry, tried);
}

std::vector<std::string> string_list(const json& value, const std::string& where) {
  std::vector<std::string> items;
  if (value.is_string()) return {value.get<std::string>()};
  if (!value.is_array() || value.empty()) fail("{} must be a non-empty list of names", where);
  for (const auto& item : value) {
    if (!item.is_string()) fail("{}: {} is not a name", where, item.dump());
    items.push_back(item.get<std::string>());
  }
  return items;
}

std::vector<json> axis_values(const json& value, const std::string& where) {
  if (!value.is_array() || value.empty())
    fail("{} must be a non-empty list of values (a single value belongs in `settings`)", where);
  std::vector<json> values;
  for (const auto& item : value) {
    check_value(where, item);
    values.push_back(item);
  }
  return values;
}

RandomAxis parse_random_axis(const std::string& name, const json& spec, const std::string& where) {
  static const std::set<std::string> distributions = {"uniform", "log_uniform", "int_uniform", "choice"};
  if (!spec.is_object() || spec.size() != 1)
    fail("{}: expected one of {{uniform = {{a, b}}}}, {{log_uniform = {{a, b}}}}, {{int_uniform = {{a, b}}}}, "
         "{{choice = {{...}}}}, got {}",
         where, spec.dump());
  RandomAxis axis{name, spec.begin().key(), spec.begin().value()};
  if (!distributions.count(axis.distribution))
    fail("{}: unknown distribution '{}' ({})", where, axis.distribution, describe_keys(distributions));
  const json& arguments = axis.arguments;
  if (axis.distribution == "choice") {
    axis_values(arguments, where + ".choice");
    return axis;
  }
  if (!arguments.is_array() || arguments.size() != 2 || !arguments[0].is_number() || !arguments[1].is_number())
    fail("{}.{} expects {{low, high}}, got {}", where, axis.distribution, arguments.dump());
  const double low = arguments[0].get<double>(), high = arguments[1].get<double>();
  if (!(low <= high)) fail("{}.{}: low {} is above high {}", where, axis.distribution, low, high);
  if (axis.distribution == "log_uniform" && low <= 0)
    fail("{}.log_uniform: bounds must be positive, got {}", where, arguments.dump());
  if (axis.distribution == "int_uniform" && (low != std::floor(low) || high != std::floor(high)))
    fail("{}.int_uniform: bounds must be integers, got {}", where, arguments.dump());
  return axis;
}

// Four significant digits keep drawn values readable in job names and tables.
double round_significant(double value) { return std::strtod(fmt::format("{:.4g}", value).c_str(), nullptr); }

json draw(const RandomAxis& axis, std::mt19937_64& generator) {
  // (x >> 11) * 2^-53: a uniform double in [0, 1) that is the same on every platform, unlike std::*_distribution.
  const double u = static_cast<double>(generator() >> 11) * 0x1.0p-53;
  const json& arguments = axis.arguments;
  if (axis.distribution == "choice") {
    const size_t index = std::min(arguments.size() - 1, static_cast<size_t>(u * arguments.size()));
    return arguments[index];
  }
  const double low = arguments[0].get<double>(), high = arguments[1].get<double>();
  if (axis.distribution == "uniform") return round_significant(low + (high - low) * u);
  if (axis.distribution == "log_uniform")
    return round_significant(std::exp(std::log(low) + (std::log(high) - std::log(low)) * u));
  const auto span = static_cast<int64_t>(high - low) + 1;
  return static_cast<int64_t>(low) + std::min(span - 1, static_cast<int64_t>(u * static_cast<double>(span)));
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string sanitize(const std::string& text) {
  std::string clean;
  for (char c : text) clean += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_';
  return clean;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) names.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

bool is_name_char(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (!first && std::isdigit(static_cast<unsigned char>(c)));
}

// "{ratio}" in `text` -> the job's ratio; "{method}" -> its method; other braces stay.
std::string interpolate(const std::string& text, const std::string& method, const json& settings) {
  std::string result;
  size_t at = 0;
  while (at < text.size()) {
    const size_t open = text.find('{', at);
    if (open == std::string::npos) break;
    size_t end = open + 1;
    while (end < text.size() && is_name_char(text[end], end == open + 1)) ++end;
    const std::string name = text.substr(open + 1, end - open - 1);
    const bool closed = end < text.size() && text[end] == '}' && !name.empty();
    std::string replacement;
    bool known = false;
    if (closed && name == "method") {
      replacement = method;
      known = true;
    } else if (closed && settings.contains(name) && !settings[name].is_string()) {
      replacement = store::setting_text(name, settings[name]);
      known = true;
    } else if (closed && settings.contains(name)) {
      replacement = settings[name].get<std::string>();  // one level only: never re-expanded
      known = true;
    }
    result += text.substr(at, open - at);
    if (known) {
      result += replacement;
      at = end + 1;
    } else {
      result += '{';
      at = open + 1;
    }
  }
  return result + text.substr(std::min(at, text.size()));
}

json interpolate_settings(const json& settings, const std::string& method) {
  json result = settings;
  for (auto& [name, value] : result.items()) {
    if (value.is_string()) {
      value = interpolate(value.get<std::string>(), method, settings);
    } else if (value.is_array()) {
      for (auto& item : value)
        if (item.is_string()) item = interpolate(item.get<std::string>(), method, settings);
    }
  }
  return result;
}

}  // namespace

json parse_value(const std::string& text) {
  auto scalar = [](const std::string& item) -> json {
    if (item == "true") return true;
    if (item == "false") return false;
    if (!item.empty()) {
      char* end = nullptr;
      const long long integer = std::strtoll(item.c_str(), &end, 10);
      if (*end == '\0') return static_cast<int64_t>(integer);
      const double number = std::strtod(item.c_str(), &end);
      if (*end == '\0' && std::isfinite(number)) return number;
    }
    return item;
  };
  if (text.find(',') == std::string::npos) return scalar(text);
  json list = json::array();
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.erase(item.begin());
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.pop_back();
    if (!item.empty()) list.push_back(scalar(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return list;
}

SweepPlan parse_plan(const json& sweep, const fs::path& sweep_file, const std::vector<Override>& overrides) {
  const std::string file = sweep_file.string();
  if (!sweep.is_object()) fail("sweep '{}' must return a table, got {}", file, sweep.dump());
  for (const auto& item : sweep.items())
    if (!kSweepKeys.count(item.key()))
      fail("sweep '{}': unknown key '{}' (known: {})", file, item.key(), describe_keys(kSweepKeys));

  SweepPlan plan;
  plan.sweep_file = sweep_file;
  plan.name = sweep_file.stem().string();
  plan.source = sweep;
  if (sweep.contains("description")) {
    if (!sweep["description"].is_string()) fail("sweep '{}': description must be a string", file);
    plan.description = sweep["description"].get<std::string>();
  }

  std::vector<std::string> method_entries;
  if (sweep.contains("methods") && sweep.contains("recipe"))
    fail("sweep '{}': give `methods` or `recipe`, not both", file);
  if (sweep.contains("methods")) method_entries = string_list(sweep["methods"], "sweep '" + file + "': methods");
  if (sweep.contains("recipe")) method_entries = string_list(sweep["recipe"], "sweep '" + file + "': recipe");

  std::map<std::string, std::vector<json>> grid;
  if (sweep.contains("grid")) {
    if (!sweep["grid"].is_object()) fail("sweep '{}': grid must be a table of lists", file);
    for (const auto& [name, values] : sweep["grid"].items()) {
      if (name == "method" || name == "methods") {
        if (!method_entries.empty()) fail("sweep '{}': methods are given twice (grid.{} and methods)", file, name);
        method_entries = string_list(values, "sweep '" + file + "': grid." + name);
        continue;
      }
      grid[name] = axis_values(values, "sweep '" + file + "': grid." + name);
    }
  }

  std::map<std::string, RandomAxis> random_axes;
  if (sweep.contains("random")) {
    const json& random = sweep["random"];
    const std::string where = "sweep '" + file + "': random";
    if (!random.is_object()) fail("{} must be a table {{count = N, seed = S, axes = {{...}}}}", where);
    for (const auto& item : random.items())
      if (item.key() != "count" && item.key() != "seed" && item.key() != "axes")
        fail("{}: unknown key '{}' (count, seed, axes)", where, item.key());
    const json count = random.value("count", json(nullptr));
    if (!count.is_number_integer() || count.get<int64_t>() < 1) fail("{}.count must be a positive integer", where);
    plan.random_count = static_cast<int>(count.get<int64_t>());
    const json seed = random.value("seed", json(0));
    if (!seed.is_number_integer()) fail("{}.seed must be an integer", where);
    plan.random_seed = static_cast<std::uint64_t>(seed.get<int64_t>());
    if (!random.contains("axes") || !random["axes"].is_object() || random["axes"].empty())
      fail("{}.axes must be a table of distributions", where);
    for (const auto& [name, spec] : random["axes"].items()) {
      if (grid.count(name)) fail("{}: '{}' is both a grid axis and a random axis", where, name);
      random_axes.emplace(name, parse_random_axis(name, spec, where + ".axes." + name));
    }
  }

  if (sweep.contains("settings")) {
    const json& settings = sweep["settings"];
    if (!settings.is_object()) fail("sweep '{}': settings must be a table", file);
    for (const auto& [name, value] : settings.items()) {
      check_value("sweep '" + file + "': settings." + name, value);
      if (grid.count(name) || random_axes.count(name))
        fail("sweep '{}': '{}' is both a fixed setting and an axis", file, name);
      plan.settings[name] = value;
    }
  }

  if (sweep.contains("method_settings")) {
    const json& by_method = sweep["method_settings"];
    if (!by_method.is_object()) fail("sweep '{}': method_settings must be a table {{method = {{key = value}}}}", file);
    for (const auto& [method, settings] : by_method.items()) {
      if (!settings.is_object()) fail("sweep '{}': method_settings.{} must be a table of settings", file, method);
      for (const auto& [name, value] : settings.items()) {
        check_value("sweep '" + file + "': method_settings." + method + "." + name, value);
        plan.method_settings[method][name] = value;
      }
    }
  }

  if (sweep.contains("slurm")) {
    if (!sweep["slurm"].is_object()) fail("sweep '{}': slurm must be a table of sbatch options", file);
    for (const auto& [name, value] : sweep["slurm"].items()) {
      if (!is_scalar(value)) fail("sweep '{}': slurm.{} must be a number, string or boolean", file, name);
      plan.slurm[name] = value;
    }
  }

  if (sweep.contains("report")) {
    const json& report = sweep["report"];
    const std::string where = "sweep '" + file + "': report";
    if (!report.is_object()) fail("{} must be a table", where);
    for (const auto& [name, value] : report.items()) {
      if (name == "x") {
        if (!value.is_string()) fail("{}.x must be a setting name", where);
        plan.report.x = value.get<std::string>();
      } else if (name == "metrics") {
        plan.report.metrics = string_list(value, where + ".metrics");
      } else if (name == "per_class_at") {
        if (!value.is_object()) fail("{}.per_class_at must be a table such as {{ratio = 0.2}}", where);
        for (const auto& [key, item] : value.items()) check_value(where + ".per_class_at." + key, item);
        plan.report.per_class_at = value;
      } else if (name == "group_by") {
        plan.report.group_by = string_list(value, where + ".group_by");
      } else {
        fail("{}: unknown key '{}' (x, metrics, per_class_at, group_by)", where, name);
      }
    }
  }

  // --set, in command-line order.
  std::set<std::string> methods_set_on_command_line;
  for (const auto& [key, text] : overrides) {
    const std::string where = "--set " + key + "=" + text;
    if (key.empty()) fail("{}: the key is empty", where);
    if (key == "methods" || key == "method" || key == "recipe") {
      method_entries = split_names(text);
      if (method_entries.empty()) fail("{}: no method named", where);
    } else if (key.rfind("slurm.", 0) == 0) {
      plan.slurm[key.substr(6)] = parse_value(text);
    } else if (const size_t dot = key.find('.'); dot != std::string::npos) {
      const json value = parse_value(text);
      check_value(where, value);
      plan.method_settings[key.substr(0, dot)][key.substr(dot + 1)] = value;
      methods_set_on_command_line.insert(key.substr(0, dot));
      plan.set_by_user.insert(key);
    } else if (grid.count(key) || random_axes.count(key)) {
      json values = parse_value(text);
      if (!values.is_array()) values = json::array({values});
      grid[key] = axis_values(values, where);
      random_axes.erase(key);
      plan.set_by_user.insert(key);
    } else {
      const json value = parse_value(text);
      check_value(where, value);
      plan.settings[key] = value;
      plan.set_by_user.insert(key);
    }
  }

  if (method_entries.empty())
    fail("sweep '{}' names no recipe: add methods = {{\"vanilla\", ...}} or recipe = \"path/to/recipe.lua\"", file);
  std::set<std::string> method_names;
  for (const auto& entry : method_entries) {
    auto method = resolve_method(entry, sweep_file);
    if (!method_names.insert(method.name).second) fail("sweep '{}': method '{}' is listed twice", file, method.name);
    plan.methods.push_back(std::move(method));
  }
  // method_settings of a method left out (--set methods=...) are unused; a --set METHOD.key must name a method.
  for (const auto& method : methods_set_on_command_line)
    if (!method_names.count(method))
      fail("--set {}.KEY: '{}' is not a method of sweep '{}' ({}); slurm.KEY sets sbatch options", method, method,
           file, describe_keys(method_names));
  for (const auto& [method, settings] : plan.method_settings.items()) {
    for (const auto& item : settings.items())
      if (grid.count(item.key()) || random_axes.count(item.key()))
        fail("sweep '{}': '{}' is both a setting of method {} and an axis", file, item.key(), method);
  }
  for (auto& [name, values] : grid) plan.grid.emplace_back(name, std::move(values));
  for (auto& [name, axis] : random_axes) plan.random_axes.push_back(std::move(axis));
  if (plan.random_axes.empty()) plan.random_count = 0;
  return plan;
}

std::string job_id(const std::string& method, const json& settings, const std::vector<std::string>& varying) {
  std::string readable = method;
  for (const auto& key : varying) {
    if (!settings.contains(key)) continue;
    readable += "-" + key + "_" + store::setting_text(key, settings.at(key));
  }
  readable = sanitize(readable);
  if (readable.size() > 96) readable.resize(96);
  const std::uint64_t hash = fnv1a(json{{"method", method}, {"settings", settings}}.dump());
  return fmt::format("{}-{:08x}", readable, static_cast<std::uint32_t>(hash ^ (hash >> 32)));
}

std::vector<Job> expand(const SweepPlan& plan) {
  // The axes in nesting order, outermost first: seeds, then methods (index -1 below), then the rest of the grid.
  std::vector<const std::pair<std::string, std::vector<json>>*> seed_axes, other_axes;
  for (const auto& axis : plan.grid) (is_seed_axis(axis.first) ? seed_axes : other_axes).push_back(&axis);
  std::vector<std::string> varying;
  for (const auto* axis : other_axes) varying.push_back(axis->first);
  for (const auto& axis : plan.random_axes) varying.push_back(axis.name);
  for (const auto* axis : seed_axes) varying.push_back(axis->first);

  // The random draws are made once, so every method and grid point gets the same configurations.
  std::vector<json> draws;
  std::mt19937_64 generator(plan.random_seed);
  for (int i = 0; i < plan.random_count; ++i) {
    json values = json::object();
    for (const auto& axis : plan.random_axes) values[axis.name] = draw(axis, generator);
    draws.push_back(values);
  }
  if (draws.empty()) draws.push_back(json::object());

  // The dimensions in nesting order, outermost first; the last one turns fastest.
  struct Dimension {
    enum Kind { Axis, Methods, Draws } kind;
    const std::pair<std::string, std::vector<json>>* axis;
    size_t size;
  };
  std::vector<Dimension> dimensions;
  for (const auto* axis : seed_axes) dimensions.push_back({Dimension::Axis, axis, axis->second.size()});
  dimensions.push_back({Dimension::Methods, nullptr, plan.methods.size()});
  for (const auto* axis : other_axes) dimensions.push_back({Dimension::Axis, axis, axis->second.size()});
  dimensions.push_back({Dimension::Draws, nullptr, draws.size()});

  std::vector<Job> jobs;
  std::map<std::string, json> seen;  // id -> method and settings, to tell repeats from collisions
  std::vector<size_t> position(dimensions.size(), 0);
  while (true) {
    const Method* method = nullptr;
    json settings = plan.settings;
    for (size_t d = 0; d < dimensions.size(); ++d) {
      const auto& dimension = dimensions[d];
      if (dimension.kind == Dimension::Axis) {
        settings[dimension.axis->first] = dimension.axis->second[position[d]];
      } else if (dimension.kind == Dimension::Methods) {
        method = &plan.methods[position[d]];
      } else {
        for (const auto& [name, value] : draws[position[d]].items()) settings[name] = value;
      }
    }
    if (plan.method_settings.contains(method->name))
      for (const auto& [name, value] : plan.method_settings[method->name].items()) settings[name] = value;
    settings = interpolate_settings(settings, method->name);

    Job job;
    for (const auto& [name, value] : settings.items()) {
      const bool method_setting =
          plan.method_settings.contains(method->name) && plan.method_settings[method->name].contains(name);
      const std::string key = method_setting ? method->name + "." + name : name;
      if (!plan.set_by_user.count(key)) job.sweep_file_settings.push_back(name);
    }
    job.method = method->name;
    job.recipe = method->recipe.string();
    job.recipe_path = method->recipe;
    job.settings = settings;
    job.varying = varying;
    job.id = job_id(job.method, settings, varying);
    job.run_dir = (fs::path("jobs") / job.id).string();
    auto [found, inserted] = seen.emplace(job.id, json{{"method", job.method}, {"settings", settings}});
    if (inserted) {
      jobs.push_back(std::move(job));
    } else if (found->second != json{{"method", job.method}, {"settings", settings}}) {
      fail("sweep '{}': two different jobs have the id '{}'; rename a method or change a setting",
           plan.sweep_file.string(), job.id);
    }  // else: the same job listed twice (a repeated grid value or random draw): run once

    size_t digit = dimensions.size();
    while (digit > 0) {
      --digit;
      if (++position[digit] < dimensions[digit].size) break;
      position[digit] = 0;
      if (digit == 0) return jobs;
    }
  }
}

std::vector<std::string> job_arguments(const Job& job, const fs::path& job_dir, int threads) {
  std::vector<std::string> arguments = {"run", job.recipe_path.string()};
  for (const auto& [key, value] : job.settings.items()) {
    arguments.push_back("--set");
    arguments.push_back(key + "=" + store::setting_text(key, value));
  }
  if (!job.sweep_file_settings.empty()) {
    std::string keys;
    for (const auto& key : job.sweep_file_settings) keys += (keys.empty() ? "" : ",") + key;
    arguments.insert(arguments.end(), {"--sweep-file-settings", keys});
  }
  arguments.insert(arguments.end(), {"--out", job_dir.string(), "--threads", std::to_string(threads), "--quiet"});
  return arguments;
}

json plan_json(const SweepPlan& plan, const std::vector<Job>& jobs) {
  json methods = json::array();
  for (const auto& method : plan.methods) methods.push_back({{"name", method.name}, {"recipe", method.recipe.string()}});
  json grid = json::object();
  for (const auto& [name, values] : plan.grid) grid[name] = values;
  json random = json::object();
  if (!plan.random_axes.empty()) {
    random["count"] = plan.random_count;
    random["seed"] = plan.random_seed;
    for (const auto& axis : plan.random_axes) random["axes"][axis.name] = {{axis.distribution, axis.arguments}};
  }
  json listed = json::array();
  for (const auto& job : jobs)
    listed.push_back({{"id", job.id}, {"method", job.method}, {"recipe", job.recipe}, {"settings", job.settings},
                      {"run_dir", job.run_dir}});
  return {{"sweep_file", fs::absolute(plan.sweep_file).string()},
          {"name", plan.name},
          {"methods", methods},
          {"grid", grid},
          {"random", random},
          {"settings", plan.settings},
          {"method_settings", plan.method_settings},
          {"slurm", plan.slurm},
          {"report", {{"x", plan.report.x}, {"metrics", plan.report.metrics}, {"per_class_at", plan.report.per_class_at}, {"group_by", plan.report.group_by}}},
          {"jobs", listed}};
}

}  // namespace ts::sweep
