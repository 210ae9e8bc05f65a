// OptionReader (core/options.h): what every host options struct's from_json reads its keys through.
#include <type_traits>

#include <catch2/catch.hpp>

#include "core/options.h"

using nlohmann::json;
using ts::OptionReader;

TEST_CASE("an option reader refuses unknown keys, listing the known ones, and values of another type") {
  const json options{{"rate", 0.5}, {"steps", 3}, {"name", "x"}, {"on", true}, {"tags", {"a", "b"}}};
  const OptionReader read(options, "ts.thing", {"rate", "steps", "name", "on", "tags", "absent"});
  CHECK(read.number("rate") == 0.5);
  CHECK(read.integer("steps") == 3);
  CHECK(read.string("name") == "x");
  CHECK(read.boolean("on") == true);
  CHECK(read.strings("tags") == std::vector<std::string>{"a", "b"});
  CHECK_FALSE(read.number("absent").has_value());
  CHECK_THROWS_WITH(read.integer("rate"), "ts.thing: option 'rate' expects an integer, got 0.5");
  CHECK_THROWS_WITH(read.string("steps"), "ts.thing: option 'steps' expects a string, got a number");
  CHECK_THROWS_WITH(read.strings("name"), Catch::Contains("expects a list of strings"));

  const json misspelt{{"rte", 1}}, list = json::array({1, 2}), none = nullptr, empty = json::object();
  CHECK_THROWS_WITH(OptionReader(misspelt, "ts.thing", {"rate", "steps"}),
                    "ts.thing: unknown option 'rte' (known: rate, steps)");
  CHECK_THROWS_WITH(OptionReader(list, "ts.thing", {"rate"}), Catch::Contains("table of named values"));
  CHECK_NOTHROW(OptionReader(none, "ts.thing", {"rate"}));
  CHECK_NOTHROW(OptionReader(empty, "ts.thing", {}));
  // The reader keeps a reference to its options, so a temporary is refused at compile time.
  static_assert(!std::is_constructible_v<OptionReader, json&&, std::string, std::initializer_list<const char*>>);
}

TEST_CASE("an option reader reads lists of integers and 32-bit seeds strictly") {
  const json options{{"counts", {3, 1, 0}}, {"odd", {1, 2.5}}, {"seed", 7}, {"big", 4294967296.0}, {"neg", -1}};
  const OptionReader read(options, "ts.thing", {"counts", "odd", "seed", "big", "neg"});
  CHECK(read.integers("counts") == std::vector<int64_t>{3, 1, 0});
  CHECK_THROWS_WITH(read.integers("odd"), "ts.thing: option 'odd': item 2 is 2.5, expected an integer");
  CHECK(read.seed32("seed") == 7u);
  CHECK(read.seed("seed") == 7u);
  CHECK(read.seed("big") == 4294967296u);  // a 64-bit seed may pass 2^32
  CHECK_THROWS_WITH(read.seed("neg"), "ts.thing: neg must be a whole number of 0 or more, got -1");
  CHECK_THROWS_WITH(read.seed32("big"), Catch::Contains("option 'big' must be a whole number from 0 to 4294967295"));
  CHECK_THROWS_WITH(read.seed32("neg"), Catch::Contains("got -1"));
  const json empty_table{{"counts", json::object()}};
  CHECK(OptionReader(empty_table, "ts.thing", {"counts"}).integers("counts")->empty());
}
