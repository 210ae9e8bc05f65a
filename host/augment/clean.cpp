#include "augment/clean.h"

#include <algorithm>
#include <cctype>
#include <sstream>

namespace ts::augment {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim_view(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

bool contains_any(std::string_view text, std::initializer_list<std::string_view> needles) {
  return std::any_of(needles.begin(), needles.end(),
                     [&](std::string_view needle) { return text.find(needle) != std::string_view::npos; });
}

// Words that mark a line or prefix as talk about the answer rather than the answer.
bool mentions_the_task(std::string_view lowered) {
  return contains_any(lowered, {"rephras", "paraphras", "phrase", "version", "sentence", "alternative", "rewrit",
                                "reword", "option", "similar meaning", "different way", "another way"});
}

// "Sure!", "Certainly.", "Of course," ... when followed by punctuation (so "Sure enough, ..." stays).
std::size_t interjection_length(std::string_view text) {
  const std::string lowered = lower_ascii(text.substr(0, 16));
  for (std::string_view word : {"of course", "certainly", "absolutely", "sure", "okay"}) {
    if (!starts_with(lowered, word)) continue;
    std::size_t end = word.size();
    if (end >= text.size() || (text[end] != '!' && text[end] != ',' && text[end] != '.')) return 0;
    while (end < text.size() && (text[end] == '!' || text[end] == ',' || text[end] == '.' || is_space(text[end])))
      ++end;
    return end;
  }
  return 0;
}

// "Here is a rephrased version:", "Here's a different phrase with similar meaning:" ... up to and with the colon.
std::size_t here_is_length(std::string_view text) {
  const std::string lowered = lower_ascii(text.substr(0, 160));
  if (!starts_with(lowered, "here")) return 0;
  const std::size_t colon = lowered.find(':');
  if (colon == std::string::npos) return 0;
  return colon + 1;
}

// "Rephrased: ", "Rephrased version: ", "Paraphrase: ", "New phrase: ", "Output: " ... a short label and a colon.
std::size_t label_length(std::string_view text) {
  const std::string lowered = lower_ascii(text.substr(0, 64));
  const std::size_t colon = lowered.find(':');
  if (colon == std::string::npos || colon > 48) return 0;
  const std::string_view label(lowered.data(), colon);
  static constexpr std::string_view kLabelStarts[] = {
      "rephrased", "rephrase",  "rephrasing", "paraphrased", "paraphrase", "paraphrasing", "rewritten",
      "reworded",  "rewording", "new",        "different",   "alternative", "alternate",   "revised",
      "output",    "answer",    "result",     "response",    "reply"};
  for (std::string_view start : kLabelStarts) {
    if (!starts_with(label, start)) continue;
    // A label is a few words, not a sentence that happens to contain a colon.
    if (std::count(label.begin(), label.end(), ' ') > 6) return 0;
    return colon + 1;
  }
  return 0;
}

// "1. ", "2) ", "(3) ", "- ", "* ", "• ".
std::size_t list_marker_length(std::string_view text) {
  std::size_t at = 0;
  if (starts_with(text, "\xE2\x80\xA2")) {  // bullet U+2022
    at = 3;
  } else if (!text.empty() && (text[0] == '-' || text[0] == '*' || text[0] == '+')) {
    at = 1;
    if (text.size() > 1 && text[1] == '*') return 0;  // "**bold**", not a bullet
  } else {
    const bool parenthesised = !text.empty() && text[0] == '(';
    at = parenthesised ? 1 : 0;
    const std::size_t digits_start = at;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) ++at;
    if (at == digits_start || at - digits_start > 3 || at >= text.size()) return 0;
    if (parenthesised ? text[at] != ')' : (text[at] != '.' && text[at] != ')')) return 0;
    ++at;
  }
  if (at >= text.size() || !is_space(text[at])) return 0;
  while (at < text.size() && is_space(text[at])) ++at;
  return at;
}

bool is_separator(std::string_view line) {
  return !line.empty() && std::all_of(line.begin(), line.end(), [](char c) { return c == '-' || c == '=' || c == '*' || c == '_'; });
}

// Removes one pair of matching quotes around the whole text, if there is one. Returns whether it did.
bool strip_quote_pair(std::string& text) {
  static constexpr std::pair<std::string_view, std::string_view> kPairs[] = {
      {"\"", "\""}, {"'", "'"}, {"`", "`"}, {"\xE2\x80\x9C", "\xE2\x80\x9D"},  // “ ”
      {"\xE2\x80\x98", "\xE2\x80\x99"},                                        // ‘ ’
      {"\xC2\xAB", "\xC2\xBB"},                                                // « »
      {"**", "**"}};
  for (const auto& [open, close] : kPairs) {
    if (text.size() < open.size() + close.size() || !starts_with(text, open)) continue;
    if (text.compare(text.size() - close.size(), close.size(), close) != 0) continue;
    const std::string inner = text.substr(open.size(), text.size() - open.size() - close.size());
    // '"Great" acting, "bad" plot' starts and ends with a quote but is not quoted as a whole.
    if (open == "\"" && inner.find('"') != std::string::npos) continue;
    text = std::string(trim_view(inner));
    return true;
  }
  return false;
}

std::vector<std::string_view> content_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim_view(text.substr(start, end - start));
    if (!line.empty() && !is_separator(line)) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

bool is_preamble_line(std::string_view line, bool more_follow) {
  if (!more_follow) return false;
  const std::string lowered = lower_ascii(line);
  if (interjection_length(line) == line.size()) return true;  // "Sure!" alone on its line
  if (lowered.back() != ':') return false;
  const std::size_t skip = interjection_length(line);
  const std::string_view rest(lowered.data() + skip, lowered.size() - skip);
  return starts_with(rest, "here") || mentions_the_task(rest) || label_length(line.substr(skip)) > 0;
}

}  // namespace

const char* rejection_name(Rejection rejection) {
  switch (rejection) {
    case Rejection::accepted: return "accepted";
    case Rejection::empty: return "empty";
    case Rejection::refusal: return "refusal";
    case Rejection::echoed_prompt: return "echoed_prompt";
    case Rejection::same_as_source: return "same_as_source";
    case Rejection::duplicate: return "duplicate";
  }
  return "unknown";
}

std::string comparison_form(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(char(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::string strip_reply(std::string_view reply) {
  std::vector<std::string_view> lines = content_lines(reply);
  while (!lines.empty() && is_preamble_line(lines.front(), lines.size() > 1)) lines.erase(lines.begin());
  if (lines.empty()) return {};

  std::string text;
  if (lines.size() > 1 && list_marker_length(lines.front()) > 0) {
    text = std::string(lines.front());  // a list of alternatives: the first one
  } else {
    for (std::string_view line : lines) {
      if (!text.empty()) text.push_back(' ');
      text.append(line);
    }
  }

  // Inline preambles, labels, markers and quotes can nest ("Sure! Here it is: 1. \"...\""): peel until stable.
  for (bool changed = true; changed && !text.empty();) {
    changed = false;
    for (auto length_of : {interjection_length, here_is_length, label_length, list_marker_length}) {
      const std::size_t length = length_of(text);
      if (length > 0 && length < text.size()) {
        text = std::string(trim_view(std::string_view(text).substr(length)));
        changed = true;
      } else if (length > 0 && length == text.size()) {
        text.clear();  // nothing but a preamble
        changed = true;
      }
    }
    if (strip_quote_pair(text)) changed = true;
  }
  return std::string(trim_view(text));
}

std::string echo_marker(std::string_view prompt) {
  std::string_view instruction = prompt;
  if (const auto slot = prompt.find("{text}"); slot != std::string_view::npos) {
    const auto before = prompt.substr(0, slot), after = prompt.substr(slot + 6);
    instruction = before.size() >= after.size() ? before : after;
  }
  std::istringstream words(comparison_form(instruction));
  std::string word, marker;
  int count = 0;
  while (count < 4 && words >> word) {
    marker += (count++ ? " " : "") + word;
  }
  return count >= 3 ? marker : std::string();
}

Cleaned clean_paraphrase(std::string_view reply, std::string_view source, const std::vector<std::string>& earlier,
                         std::string_view prompt) {
  Cleaned cleaned;
  cleaned.text = strip_reply(reply);
  if (cleaned.text.empty()) {
    cleaned.rejection = Rejection::empty;
    return cleaned;
  }
  const std::string form = comparison_form(cleaned.text);
  for (std::string_view refusal : {"i'm sorry", "i am sorry", "sorry,", "i apologize", "i cannot", "i can't",
                                   "i can not", "as an ai"}) {
    if (starts_with(form, refusal)) {
      cleaned.rejection = Rejection::refusal;
      return cleaned;
    }
  }
  if (const auto marker = echo_marker(prompt); !marker.empty() && form.find(marker) != std::string::npos) {
    cleaned.rejection = Rejection::echoed_prompt;
    return cleaned;
  }
  if (form == comparison_form(source)) {
    cleaned.rejection = Rejection::same_as_source;
    return cleaned;
  }
  for (const std::string& previous : earlier) {
    if (form == comparison_form(previous)) {
      cleaned.rejection = Rejection::duplicate;
      return cleaned;
    }
  }
  return cleaned;
}

Cleaned ParaphraseFilter::add(std::string_view source, std::string_view reply) {
  Cleaned cleaned = clean_paraphrase(reply, source, {}, prompt_);
  auto& accepted = accepted_by_source_[comparison_form(source)];
  if (cleaned.accepted() && !accepted.insert(comparison_form(cleaned.text)).second)
    cleaned.rejection = Rejection::duplicate;
  ++counts_[std::size_t(cleaned.rejection)];
  return cleaned;
}

nlohmann::json ParaphraseFilter::counts_json() const {
  nlohmann::json counts = nlohmann::json::object();
  for (std::size_t kind = 0; kind < kRejectionKinds; ++kind) counts[rejection_name(Rejection(kind))] = counts_[kind];
  return counts;
}

}  // namespace ts::augment
