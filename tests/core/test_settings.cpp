// The settings parser's number rules at the edges of double, as tests/fuzz/fuzz_settings checks them: a value that
// parses prints as text that parses back to the same value.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/settings.h"

using ts::SettingType;

TEST_CASE("a subnormal number parses however it is written, and again as printed, overflow is refused") {
  // Found by the fuzzer: "0x1p-1074" was accepted, but its printed form "5e-324" was refused as out of range.
  const double hex = std::get<double>(ts::parse_setting("lr", SettingType::Number, "0x1p-1074"));
  CHECK(hex > 0);
  CHECK(ts::format_setting(hex) == "5e-324");
  CHECK(std::get<double>(ts::parse_setting("lr", SettingType::Number, ts::format_setting(hex))) == hex);
  CHECK(std::get<double>(ts::parse_setting("lr", SettingType::Number, "4e-320")) == 4e-320);
  const auto list = std::get<std::vector<double>>(ts::parse_setting("lrs", SettingType::NumberList, "1e-310, 2"));
  CHECK(list == std::vector<double>{1e-310, 2});

  CHECK_THROWS_WITH(ts::parse_setting("lr", SettingType::Number, "1e400"), "setting 'lr' expects number, got '1e400'");
  CHECK_THROWS_AS(ts::parse_setting("lr", SettingType::Number, "nan"), ts::Error);
  CHECK(std::isinf(std::get<double>(ts::parse_setting("lr", SettingType::Number, "inf"))));
}
