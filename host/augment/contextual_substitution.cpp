#include "augment/contextual_substitution.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <utf8proc.h>

#include "core/error.h"
#include "core/options.h"
#include "model/checkpoint.h"
#include "runtime/environment.h"

namespace ts::augment {

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_ascii_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_ascii_lower(char c) { return c >= 'a' && c <= 'z'; }
// ASCII punctuation and symbols: what is trimmed from the ends of a chunk. Bytes >= 0x80 belong to the word.
bool is_ascii_punctuation(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte < 0x80 && !is_ascii_alnum(c) && !is_ascii_space(c);
}

// Whether the UTF-8 text holds a letter or a number (any script), by Unicode category.
bool has_letter_or_digit(std::string_view text) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t at = 0;
  const auto size = static_cast<utf8proc_ssize_t>(text.size());
  while (at < size) {
    utf8proc_int32_t code_point = 0;
    const utf8proc_ssize_t length = utf8proc_iterate(bytes + at, size - at, &code_point);
    if (length <= 0) return false;  // invalid UTF-8: never a candidate
    switch (utf8proc_category(code_point)) {
      case UTF8PROC_CATEGORY_LU:
      case UTF8PROC_CATEGORY_LL:
      case UTF8PROC_CATEGORY_LT:
      case UTF8PROC_CATEGORY_LM:
      case UTF8PROC_CATEGORY_LO:
      case UTF8PROC_CATEGORY_ND:
      case UTF8PROC_CATEGORY_NL:
      case UTF8PROC_CATEGORY_NO:
        return true;
      default:
        break;
    }
    at += length;
  }
  return false;
}

}  // namespace

ContextualSubstitutionConfig ContextualSubstitutionConfig::from_json(const nlohmann::json& json,
                                                                     const std::string& where) {
  const OptionReader read(json, where,
                          {"model", "fraction", "top_k", "temperature", "seed", "max_length", "batch_size", "device"});
  ContextualSubstitutionConfig config;
  config.model = read.string("model").value_or("");
  if (config.model.empty()) fail("{}: model = DIR is required (a Hugging Face BertForMaskedLM folder)", where);
  auto& options = config.options;
  options.fraction = read.number("fraction").value_or(options.fraction);
  options.top_k = static_cast<int>(read.integer("top_k").value_or(options.top_k));
  options.temperature = read.number("temperature").value_or(options.temperature);
  options.max_length = static_cast<int>(read.integer("max_length").value_or(options.max_length));
  options.batch_size = static_cast<int>(read.integer("batch_size").value_or(options.batch_size));
  config.seed = read.seed("seed").value_or(config.seed);
  config.device = runtime::check_device(read.string("device").value_or(config.device));
  return config;
}

struct ContextualSubstitution::Masked {
  std::size_t text_index = 0;
  std::vector<std::int64_t> ids;                       // [CLS] ... [SEP], masked words as one [MASK] each
  std::vector<Word> chosen;                            // the masked words, in text order
  std::vector<std::int64_t> positions;                 // where each chosen word's [MASK] is in `ids`
  std::vector<std::vector<std::int32_t>> own_ids;      // each chosen word's own pieces: never its replacement
  std::vector<std::string> replacements;               // filled by predict()
};

ContextualSubstitution::ContextualSubstitution(BertForMaskedLM model, text::Tokenizer tokenizer, std::uint64_t seed,
                                               ContextualSubstitutionOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(options), rng_(seed) {
  if (!(options_.fraction > 0 && options_.fraction <= 1))
    fail("contextual substitution: fraction {} must be in (0, 1]", options_.fraction);
  if (options_.top_k < 1) fail("contextual substitution: top_k {} must be at least 1", options_.top_k);
  if (!(options_.temperature > 0))
    fail("contextual substitution: temperature {} must be positive", options_.temperature);
  if (options_.max_length < 3)
    fail("contextual substitution: max_length {} leaves no room between [CLS] and [SEP]", options_.max_length);
  if (options_.batch_size < 1) fail("contextual substitution: batch_size {} must be at least 1", options_.batch_size);
  const auto vocab = static_cast<std::int64_t>(tokenizer_.vocab_size());
  if (vocab > model_->config.vocab_size)
    fail("contextual substitution: the vocabulary has {} tokens but the model only {} embeddings", vocab,
         model_->config.vocab_size);
  // A model with fewer positions than max_length reads what it can: the rest of a long text is left as it is.
  options_.max_length = static_cast<int>(std::min<std::int64_t>(options_.max_length, model_->config.max_position_embeddings));
  model_->eval();

  // Special tokens by id, including additional ones; "[unused12]" and the like are caught by their brackets.
  std::vector<std::int32_t> special = {tokenizer_.cls_id(), tokenizer_.sep_id(), tokenizer_.pad_id(),
                                       tokenizer_.mask_id(), tokenizer_.unk_id()};
  for (const auto& name : tokenizer_.options().special_tokens.additional)
    if (auto id = tokenizer_.find_id(name)) special.push_back(*id);
  for (const auto& added : tokenizer_.options().added_tokens)
    if (added.special) special.push_back(added.id);
  // Rows of the model's vocabulary past the tokenizer's (padding some checkpoints add) are never chosen either.
  allowed_ids_.assign(static_cast<std::size_t>(model_->config.vocab_size), false);
  for (std::int32_t id = 0; id < static_cast<std::int32_t>(vocab); ++id) {
    const std::string& token = tokenizer_.id_to_token(id);
    const bool continuation = token.rfind("##", 0) == 0;
    const bool bracketed = token.size() >= 2 && token.front() == '[' && token.back() == ']';
    const bool is_special = std::find(special.begin(), special.end(), id) != special.end();
    allowed_ids_[static_cast<std::size_t>(id)] = !continuation && !bracketed && !is_special && has_letter_or_digit(token);
  }
  std::vector<std::uint8_t> disallowed(allowed_ids_.size());
  for (std::size_t id = 0; id < allowed_ids_.size(); ++id) disallowed[id] = allowed_ids_[id] ? 0 : 1;
  const torch::Device device = model_->parameters().front().device();
  disallowed_ = torch::from_blob(disallowed.data(), {static_cast<std::int64_t>(disallowed.size())}, torch::kUInt8)
                    .to(torch::kBool)
                    .to(device);
}

ContextualSubstitution ContextualSubstitution::load(const std::filesystem::path& folder, std::uint64_t seed,
                                                    ContextualSubstitutionOptions options, torch::Device device) {
  LoadOptions load_options;
  load_options.device = device;
  auto model = load_masked_lm(folder, load_options);
  return ContextualSubstitution(std::move(model), text::Tokenizer::from_folder(folder), seed, options);
}

std::vector<ContextualSubstitution::Word> ContextualSubstitution::words(std::string_view text) {
  std::vector<Word> found;
  std::size_t at = 0;
  while (at < text.size()) {
    while (at < text.size() && is_ascii_space(text[at])) ++at;
    std::size_t end = at;
    while (end < text.size() && !is_ascii_space(text[end])) ++end;
    std::size_t begin = at, finish = end;
    while (begin < finish && is_ascii_punctuation(text[begin])) ++begin;
    while (finish > begin && is_ascii_punctuation(text[finish - 1])) --finish;
    if (finish > begin && has_letter_or_digit(text.substr(begin, finish - begin))) found.push_back({begin, finish});
    at = end;
  }
  return found;
}

std::size_t ContextualSubstitution::index_below(std::size_t n) {
  // Rejection sampling: uniform and the same on every platform (std::uniform_int_distribution is neither portable).
  const std::uint64_t bound = static_cast<std::uint64_t>(n);
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % bound;
  std::uint64_t draw = rng_();
  while (draw >= limit) draw = rng_();
  return static_cast<std::size_t>(draw % bound);
}

double ContextualSubstitution::unit() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

ContextualSubstitution::Masked ContextualSubstitution::mask_words(std::string_view text, const std::vector<Word>& words,
                                                                  std::size_t max_maskable) {
  const auto wanted = static_cast<std::size_t>(std::lround(options_.fraction * static_cast<double>(words.size())));
  const std::size_t count = std::min(max_maskable, std::max<std::size_t>(1, wanted));
  // A partial Fisher-Yates shuffle of the maskable words picks `count` distinct ones.
  std::vector<std::size_t> order(max_maskable);
  for (std::size_t i = 0; i < max_maskable; ++i) order[i] = i;
  for (std::size_t i = 0; i < count; ++i) std::swap(order[i], order[i + index_below(max_maskable - i)]);
  order.resize(count);
  std::sort(order.begin(), order.end());

  Masked masked;
  std::vector<std::int32_t> ids = {tokenizer_.cls_id()};
  std::size_t cursor = 0;
  for (std::size_t index : order) {
    const Word& word = words[index];
    tokenizer_.append_ids(text.substr(cursor, word.begin - cursor), ids);
    masked.chosen.push_back(word);
    masked.positions.push_back(static_cast<std::int64_t>(ids.size()));
    masked.own_ids.push_back(tokenizer_.ids(text.substr(word.begin, word.end - word.begin)));
    ids.push_back(tokenizer_.mask_id());
    cursor = word.end;
  }
  tokenizer_.append_ids(text.substr(cursor), ids);
  const auto room = static_cast<std::size_t>(options_.max_length - 1);
  if (ids.size() > room) ids.resize(room);
  ids.push_back(tokenizer_.sep_id());
  masked.ids.assign(ids.begin(), ids.end());
  return masked;
}

void ContextualSubstitution::predict(std::vector<Masked>& batch) {
  if (batch.empty()) return;
  std::size_t longest = 0;
  for (const auto& item : batch) longest = std::max(longest, item.ids.size());
  const auto rows = static_cast<std::int64_t>(batch.size());
  const auto columns = static_cast<std::int64_t>(longest);
  torch::Tensor input_ids = torch::full({rows, columns}, static_cast<std::int64_t>(tokenizer_.pad_id()), torch::kInt64);
  torch::Tensor attention_mask = torch::zeros({rows, columns}, torch::kInt64);
  std::vector<std::int64_t> mask_rows, mask_columns, own_rows, own_ids;
  std::int64_t mask_index = 0;
  for (std::int64_t row = 0; row < rows; ++row) {
    const auto& item = batch[static_cast<std::size_t>(row)];
    const auto length = static_cast<std::int64_t>(item.ids.size());
    input_ids[row].narrow(0, 0, length).copy_(torch::tensor(item.ids, torch::kInt64));
    attention_mask[row].narrow(0, 0, length).fill_(1);
    for (std::size_t m = 0; m < item.positions.size(); ++m, ++mask_index) {
      mask_rows.push_back(row);
      mask_columns.push_back(item.positions[m]);
      for (std::int32_t id : item.own_ids[m]) {
        own_rows.push_back(mask_index);
        own_ids.push_back(id);
      }
    }
  }
  if (mask_rows.empty()) return;

  const torch::Device device = model_->parameters().front().device();
  torch::NoGradGuard no_grad;
  const auto outputs = model_->forward(input_ids.to(device), attention_mask.to(device));
  torch::Tensor logits = outputs.logits.index({torch::tensor(mask_rows, torch::kInt64).to(device),
                                               torch::tensor(mask_columns, torch::kInt64).to(device)});
  const float minus_infinity = -std::numeric_limits<float>::infinity();
  logits = logits.masked_fill(disallowed_.unsqueeze(0), minus_infinity);
  if (!own_rows.empty())
    logits.index_put_({torch::tensor(own_rows, torch::kInt64).to(device), torch::tensor(own_ids, torch::kInt64).to(device)},
                      torch::tensor(minus_infinity, logits.options()));
  const auto k = std::min<std::int64_t>(options_.top_k, logits.size(1));
  const auto top = logits.topk(k, /*dim=*/1);
  const torch::Tensor values = std::get<0>(top).to(torch::kCPU, torch::kFloat64).contiguous();
  const torch::Tensor indices = std::get<1>(top).to(torch::kCPU, torch::kInt64).contiguous();
  const double* value = values.data_ptr<double>();
  const std::int64_t* index = indices.data_ptr<std::int64_t>();

  mask_index = 0;
  std::vector<double> weights(static_cast<std::size_t>(k));
  for (auto& item : batch) {
    for (std::size_t m = 0; m < item.positions.size(); ++m, ++mask_index) {
      const double* row_values = value + mask_index * k;
      const std::int64_t* row_indices = index + mask_index * k;
      // Softmax over the k best with temperature; excluded tokens (-inf) get weight 0.
      double total = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        weights[static_cast<std::size_t>(j)] =
            std::isfinite(row_values[j]) ? std::exp((row_values[j] - row_values[0]) / options_.temperature) : 0.0;
        total += weights[static_cast<std::size_t>(j)];
      }
      if (!(total > 0)) fail("contextual substitution: the vocabulary has no token allowed as a replacement");
      std::int64_t pick = 0;
      if (k > 1) {
        double draw = unit() * total;
        for (pick = 0; pick < k - 1; ++pick) {
          draw -= weights[static_cast<std::size_t>(pick)];
          if (draw < 0) break;
        }
        while (weights[static_cast<std::size_t>(pick)] == 0 && pick > 0) --pick;  // rounding at the end
      }
      item.replacements.push_back(tokenizer_.id_to_token(static_cast<std::int32_t>(row_indices[pick])));
    }
  }
}

std::string ContextualSubstitution::match_case(std::string_view original, const std::string& token) const {
  if (!tokenizer_.options().lowercase) return token;
  std::size_t letters = 0, upper = 0;
  for (char c : original) {
    if (is_ascii_upper(c)) ++upper;
    if (is_ascii_upper(c) || is_ascii_lower(c)) ++letters;
  }
  std::string out = token;
  if (letters >= 2 && upper == letters) {
    for (char& c : out)
      if (is_ascii_lower(c)) c = static_cast<char>(c - 'a' + 'A');
  } else if (!original.empty() && is_ascii_upper(original.front()) && !out.empty() && is_ascii_lower(out.front())) {
    out.front() = static_cast<char>(out.front() - 'a' + 'A');
  }
  return out;
}

std::string ContextualSubstitution::render(std::string_view text, const Masked& masked) const {
  std::string out;
  out.reserve(text.size() + 16);
  std::size_t cursor = 0;
  for (std::size_t m = 0; m < masked.chosen.size(); ++m) {
    const Word& word = masked.chosen[m];
    out.append(text.substr(cursor, word.begin - cursor));
    out.append(match_case(text.substr(word.begin, word.end - word.begin), masked.replacements.at(m)));
    cursor = word.end;
  }
  out.append(text.substr(cursor));
  return out;
}

std::vector<std::vector<std::string>> ContextualSubstitution::augment(const std::vector<std::string>& texts, int n) {
  if (n < 0) fail("contextual substitution: {} variants asked for", n);
  std::vector<std::vector<std::string>> results(texts.size());
  std::vector<Masked> batch;
  auto flush = [&] {
    predict(batch);
    for (const auto& item : batch) results[item.text_index].push_back(render(texts[item.text_index], item));
    batch.clear();
  };
  for (std::size_t t = 0; t < texts.size(); ++t) {
    const std::string_view text = texts[t];
    const auto candidates = words(text);
    if (candidates.empty() || n == 0) continue;
    // Only words whose first piece lies before the last position ([SEP]) can be masked: a masked sequence is never
    // longer than the unmasked one, so a word's [MASK] sits at or before its first piece.
    std::size_t maskable = 0;
    std::vector<std::int32_t> ids;
    std::size_t cursor = 0;
    for (const Word& word : candidates) {
      tokenizer_.append_ids(text.substr(cursor, word.begin - cursor), ids);
      if (1 + ids.size() >= static_cast<std::size_t>(options_.max_length - 1)) break;
      ++maskable;
      tokenizer_.append_ids(text.substr(word.begin, word.end - word.begin), ids);
      cursor = word.end;
    }
    if (maskable == 0) continue;
    for (int variant = 0; variant < n; ++variant) {
      batch.push_back(mask_words(text, candidates, maskable));
      batch.back().text_index = t;
      if (static_cast<int>(batch.size()) >= options_.batch_size) flush();
    }
  }
  flush();
  return results;
}

std::vector<std::string> ContextualSubstitution::augment(std::string_view text, int n) {
  return augment(std::vector<std::string>{std::string(text)}, n).front();
}

}  // namespace ts::augment
