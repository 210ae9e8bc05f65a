#pragma once
// Cleaning of LLM paraphrase replies before they become training rows: preambles ("Sure, here is ...:",
// "Rephrased: "), surrounding quotes, list numbering and bullets are removed; empty replies, refusals, echoes of the
// source or of the prompt, and duplicates of earlier accepted paraphrases are rejected with a countable reason.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts::augment {

enum class Rejection {
  accepted = 0,
  empty,           // nothing left after cleaning
  refusal,         // "I'm sorry, but ...", "As an AI language model ..."
  echoed_prompt,   // the reply repeats the instruction
  same_as_source,  // equal to the source, ignoring case and spacing
  duplicate,       // equal to an earlier accepted paraphrase of the same source
};
constexpr std::size_t kRejectionKinds = 6;
const char* rejection_name(Rejection rejection);

struct Cleaned {
  std::string text;  // the cleaned paraphrase (also filled for rejections other than `empty`, for inspection)
  Rejection rejection = Rejection::accepted;
  bool accepted() const { return rejection == Rejection::accepted; }
};

// Removes preambles, surrounding quotes, list numbering and bullets; keeps the first item of a list.
std::string strip_reply(std::string_view reply);
// Lower-case (ASCII), whitespace runs collapsed to one space, trimmed: the form duplicates are compared in.
std::string comparison_form(std::string_view text);
// The reference's instruction (recipes/augment_llm.lua's default prompt).
inline constexpr std::string_view kDefaultInstruction =
    "Rephrase the following phrase into a different phrase with similar meaning.";
// What a reply that echoes `prompt` contains: the first four words of its instruction (the prompt without its
// {text} slot, the longer side of it), in comparison form; empty, so that no echo is looked for, when the
// instruction has fewer than three words.
std::string echo_marker(std::string_view prompt);
// Cleans `reply` and checks it against `source`, the `earlier` accepted paraphrases of the same source and the
// prompt's instruction (echo_marker) that the reply was asked with.
Cleaned clean_paraphrase(std::string_view reply, std::string_view source,
                         const std::vector<std::string>& earlier = {},
                         std::string_view prompt = kDefaultInstruction);

// Cleans a stream of replies to one prompt, remembering accepted paraphrases per source, and counts the outcomes.
class ParaphraseFilter {
 public:
  explicit ParaphraseFilter(std::string_view prompt = kDefaultInstruction) : prompt_(prompt) {}
  Cleaned add(std::string_view source, std::string_view reply);
  std::int64_t count(Rejection rejection) const { return counts_[std::size_t(rejection)]; }
  // {"accepted": n, "empty": n, ...}
  nlohmann::json counts_json() const;

 private:
  std::string prompt_;
  std::unordered_map<std::string, std::unordered_set<std::string>> accepted_by_source_;
  std::array<std::int64_t, kRejectionKinds> counts_{};
};

}  // namespace ts::augment
