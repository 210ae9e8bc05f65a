// twostage predict: a classifier's predictions and logits for each row of a table, as CSV.
#include <algorithm>
#include <iostream>
#include <numeric>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "data/batching.h"
#include "data/loader.h"
#include "data/table.h"
#include "model/checkpoint.h"
#include "runtime/environment.h"
#include "text/tokenizer.h"

namespace ts::cli {
namespace {

constexpr const char* kPredictUsage =
    "usage: twostage predict --model DIR --input FILE --text-column NAME [--text-pair-column NAME]\n"
    "                        [--output FILE] [--batch-size N] [--max-length N]\n"
    "Writes CSV: index,prediction,logit_0,...,logit_{C-1} (index counts input rows from 0).\n"
    "Input as CSV, TSV or JSONL (by extension).\n";

struct PredictArgs {
  std::string model, input, text_column, pair_column, output;
  int64_t batch_size = 32;
  int max_length = 0;  // 0: the model's limit
};

int64_t positive_integer(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value <= 0) fail("{} expects a positive integer, got '{}'", option, text);
  return value;
}

PredictArgs parse(const std::vector<std::string>& args) {
  PredictArgs parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) fail("{} needs a value\n{}", arg, kPredictUsage);
      return args[++i];
    };
    if (arg == "--model") parsed.model = value();
    else if (arg == "--input") parsed.input = value();
    else if (arg == "--text-column") parsed.text_column = value();
    else if (arg == "--text-pair-column") parsed.pair_column = value();
    else if (arg == "--output") parsed.output = value();
    else if (arg == "--batch-size") parsed.batch_size = positive_integer(arg, value());
    else if (arg == "--max-length") parsed.max_length = static_cast<int>(positive_integer(arg, value()));
    else fail("unknown option '{}'\n{}", arg, kPredictUsage);
  }
  if (parsed.model.empty() || parsed.input.empty() || parsed.text_column.empty())
    fail("--model, --input and --text-column are required\n{}", kPredictUsage);
  return parsed;
}

}  // namespace

int predict(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << kPredictUsage;
    return 0;
  }
  const PredictArgs options = parse(args);
  runtime::set_threads(0);

  auto model = load_sequence_classifier(options.model);
  model->eval();
  const auto tokenizer = text::Tokenizer::from_path(options.model);
  int max_length = options.max_length;
  if (max_length == 0) {
    max_length = static_cast<int>(model->config.max_position_embeddings);
    if (auto limit = tokenizer.options().model_max_length) max_length = std::min(max_length, *limit);
  }

  data::TableOptions table_options;
  table_options.text_column = options.text_column;
  table_options.pair_column = options.pair_column;
  table_options.label_column = "";
  const auto table = data::read_table(options.input, table_options);
  const auto encodings =
      tokenizer.encode_batch(table.texts, table.has_pairs() ? &table.pairs : nullptr, max_length, 0);

  const auto rows = data::token_rows(encodings, true);
  // Rows of similar length go together so that little is padded; the output keeps the input order.
  std::vector<int64_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return rows.input_ids[a].size() < rows.input_ids[b].size(); });
  data::BatchingOptions batching;
  batching.batch_size = options.batch_size;
  batching.pad_id = tokenizer.pad_id();

  const int64_t classes = model->config.num_labels();
  std::vector<std::vector<float>> logits(rows.size());
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < order.size(); start += options.batch_size) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(options.batch_size));
    const std::vector<int64_t> indices(order.begin() + start, order.begin() + end);
    const auto output = data::forward(model, data::collate(rows, indices, batching)).logits.contiguous();
    const float* values = output.data_ptr<float>();
    for (size_t r = 0; r < indices.size(); ++r)
      logits[indices[r]].assign(values + r * classes, values + (r + 1) * classes);
  }

  std::ostringstream csv;
  csv << "index,prediction";
  for (int64_t c = 0; c < classes; ++c) csv << ",logit_" << c;
  csv << '\n';
  for (size_t i = 0; i < logits.size(); ++i) {
    const auto& row = logits[i];
    const auto best = std::max_element(row.begin(), row.end()) - row.begin();
    csv << i << ',' << best;
    for (float value : row) csv << ',' << fmt::format("{:.9g}", value);
    csv << '\n';
  }
  if (options.output.empty())
    std::cout << csv.str();
  else
    write_file_atomic(options.output, csv.str());
  return 0;
}

}  // namespace ts::cli
