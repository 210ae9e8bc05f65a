// Cleaning of paraphrase replies.
#include <catch2/catch.hpp>

#include "augment/clean.h"

using namespace ts::augment;

TEST_CASE("Preambles, labels, quotes and list markers are removed", "[llm][clean]") {
  const std::string expected = "The film is a delight from start to finish.";
  const std::vector<std::string> replies = {
      "The film is a delight from start to finish.",
      "  The film is a delight from start to finish.\n",
      "Sure, here is a rephrased version: The film is a delight from start to finish.",
      "Sure! Here's a different phrase with similar meaning:\n\nThe film is a delight from start to finish.",
      "Here's a rephrased version:\n\"The film is a delight from start to finish.\"",
      "Rephrased: The film is a delight from start to finish.",
      "Rephrased version: \"The film is a delight from start to finish.\"",
      "Paraphrase: 'The film is a delight from start to finish.'",
      "\u201cThe film is a delight from start to finish.\u201d",
      "Certainly. The film is a delight from start to finish.",
      "1. The film is a delight from start to finish.\n2. The movie delights throughout.",
      "- The film is a delight from start to finish.",
      "Here are some options:\n1. \"The film is a delight from start to finish.\"\n2. Another one.",
      "Sure!\nThe film is a delight from start to finish.",
      "---\nThe film is a delight from start to finish.\n---",
      "**The film is a delight from start to finish.**",
  };
  for (const auto& reply : replies) {
    INFO(reply);
    CHECK(strip_reply(reply) == expected);
  }
}

TEST_CASE("Text that only looks like a preamble is kept", "[llm][clean]") {
  CHECK(strip_reply("Sure enough, the plot falls apart.") == "Sure enough, the plot falls apart.");
  CHECK(strip_reply("\"Great\" acting, \"bad\" plot") == "\"Great\" acting, \"bad\" plot");
  CHECK(strip_reply("It's a film about 1. love and 2. loss") == "It's a film about 1. love and 2. loss");
  CHECK(strip_reply("A two-part story:\nlove, then loss") == "A two-part story: love, then loss");
  CHECK(strip_reply("'tis a fine film") == "'tis a fine film");
}

TEST_CASE("Empty replies, refusals, echoes and duplicates are rejected with a reason", "[llm][clean]") {
  const std::string source = "a gorgeous , witty , seductive movie .";
  CHECK(clean_paraphrase("", source).rejection == Rejection::empty);
  CHECK(clean_paraphrase("  \n ", source).rejection == Rejection::empty);
  CHECK(clean_paraphrase("Sure, here is a rephrased version:", source).rejection == Rejection::empty);
  CHECK(clean_paraphrase("\"\"", source).rejection == Rejection::empty);
  CHECK(clean_paraphrase("I'm sorry, but I can't help with that.", source).rejection == Rejection::refusal);
  CHECK(clean_paraphrase("As an AI language model, I cannot", source).rejection == Rejection::refusal);
  CHECK(clean_paraphrase("Rephrase the following phrase into a different phrase with similar meaning. a movie",
                         source)
            .rejection == Rejection::echoed_prompt);
  CHECK(clean_paraphrase("A Gorgeous ,  witty , SEDUCTIVE movie .", source).rejection == Rejection::same_as_source);
  CHECK(clean_paraphrase("\"a gorgeous , witty , seductive movie .\"", source).rejection == Rejection::same_as_source);
  const auto accepted = clean_paraphrase("A beautiful, clever and alluring film.", source);
  CHECK(accepted.accepted());
  CHECK(accepted.text == "A beautiful, clever and alluring film.");
  CHECK(clean_paraphrase("a beautiful, clever and  alluring FILM.", source, {accepted.text}).rejection ==
        Rejection::duplicate);
  CHECK(std::string(rejection_name(Rejection::same_as_source)) == "same_as_source");
}

TEST_CASE("An echo is recognised by the instruction of the prompt the reply answers, not by the default's",
          "[llm][clean]") {
  const std::string source = "a gorgeous , witty , seductive movie .";
  const std::string own = "Paraphrase this movie review and keep its sentiment: {text}";
  CHECK(echo_marker(own) == "paraphrase this movie review");
  CHECK(echo_marker(kDefaultInstruction) == "rephrase the following phrase");
  CHECK(echo_marker("Rewrite: {text}").empty());  // too short to tell an echo from a paraphrase
  CHECK(clean_paraphrase("Paraphrase this movie review and keep its sentiment: a movie", source, {}, own).rejection ==
        Rejection::echoed_prompt);
  // The default prompt's words are no echo of another prompt.
  CHECK(clean_paraphrase("Rephrase the following phrase, a lovely film", source, {}, own).accepted());
  ParaphraseFilter filter(own);
  // (with a colon right after it, the instruction would be stripped as a preamble instead)
  CHECK(filter.add(source, "paraphrase this movie review and keep it witty and seductive").rejection ==
        Rejection::echoed_prompt);
  CHECK(filter.add(source, "A witty, seductive and gorgeous film.").accepted());
}

TEST_CASE("ParaphraseFilter remembers accepted paraphrases per source and counts outcomes", "[llm][clean]") {
  ParaphraseFilter filter;
  CHECK(filter.add("good movie", "Rephrased: A fine film.").accepted());
  CHECK(filter.add("good movie", "a fine  film.").rejection == Rejection::duplicate);
  CHECK(filter.add("bad movie", "A fine film.").accepted());  // another source: not a duplicate
  CHECK(filter.add("good movie", "Good movie").rejection == Rejection::same_as_source);
  CHECK(filter.add("good movie", "").rejection == Rejection::empty);
  CHECK(filter.add("good movie", "A nice picture.").accepted());
  CHECK(filter.count(Rejection::accepted) == 3);
  CHECK(filter.count(Rejection::duplicate) == 1);
  const auto counts = filter.counts_json();
  CHECK(counts["accepted"] == 3);
  CHECK(counts["same_as_source"] == 1);
  CHECK(counts["empty"] == 1);
  CHECK(counts["refusal"] == 0);
}
