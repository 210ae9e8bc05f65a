// OptionReader (core/options.h): what every host options struct's from_json reads its keys through.
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

  CHECK_THROWS_WITH(OptionReader(json{{"rte", 1}}, "ts.thing", {"rate", "steps"}),
                    "ts.thing: unknown option 'rte' (known: rate, steps)");
  CHECK_THROWS_WITH(OptionReader(json::array({1, 2}), "ts.thing", {"rate"}), Catch::Contains("table of named values"));
  CHECK_NOTHROW(OptionReader(nullptr, "ts.thing", {"rate"}));
  CHECK_NOTHROW(OptionReader(json::object(), "ts.thing", {}));
}
