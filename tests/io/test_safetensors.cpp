#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
namespace st = ts::safetensors;

namespace {

std::string le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A file image with `header` as its JSON header followed by `data_bytes` bytes of data.
std::string image(const std::string& header, std::size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\x01');
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("twostage_test_io_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

void write_raw(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Opens `bytes` both from a file on disk and from memory; both must fail with a message naming the file and
// containing `problem`.
void require_rejected(const std::string& bytes, const std::string& problem) {
  TempDir dir;
  const fs::path path = dir.path / "bad.safetensors";
  write_raw(path, bytes);
  try {
    st::File::open(path);
    FAIL("accepted a malformed file; expected: " << problem);
  } catch (const ts::Error& error) {
    const std::string message = error.what();
    INFO(message);
    CHECK(message.find(path.string()) != std::string::npos);
    CHECK(message.find(problem) != std::string::npos);
  }
  try {
    st::File::from_bytes(bytes, "in-memory.safetensors");
    FAIL("accepted malformed bytes; expected: " << problem);
  } catch (const ts::Error& error) {
    const std::string message = error.what();
    INFO(message);
    CHECK(message.find("in-memory.safetensors") != std::string::npos);
    CHECK(message.find(problem) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("safetensors: write then read gives back names, dtypes, shapes and bytes", "[io][safetensors]") {
  TempDir dir;
  const std::vector<float> weights{1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, -7.0f};
  const std::vector<uint16_t> halves{0x3c00, 0xc000, 0x7bff};  // F16: 1, -2, 65504
  const std::vector<int64_t> ids{101, 102, 0, -5};
  const std::vector<uint8_t> flags{1, 0, 1};
  std::vector<st::TensorToWrite> tensors{
      {"layer.weight", st::DType::F32, {2, 3}, weights.data(), weights.size() * sizeof(float)},
      {"a.half", st::DType::F16, {3}, halves.data(), halves.size() * 2},
      {"ids", st::DType::I64, {4}, ids.data(), ids.size() * 8},
      {"mask", st::DType::BOOL, {3}, flags.data(), flags.size()},
      {"empty", st::DType::F32, {0, 4}, nullptr, 0},
      {"scalar", st::DType::F32, {}, weights.data(), 4},
  };
  const fs::path path = dir.path / "sub" / "model.safetensors";
  st::write(path, tensors);

  const st::File file = st::File::open(path);
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.names() == std::vector<std::string>{"a.half", "empty", "ids", "layer.weight", "mask", "scalar"});
  const auto& weight = file.at("layer.weight");
  CHECK(weight.dtype == st::DType::F32);
  CHECK(weight.shape == std::vector<int64_t>{2, 3});
  CHECK(weight.numel() == 6);
  REQUIRE(weight.size_bytes == 24);
  CHECK(std::memcmp(weight.data, weights.data(), 24) == 0);
  CHECK(std::memcmp(file.at("a.half").data, halves.data(), 6) == 0);
  CHECK(std::memcmp(file.at("ids").data, ids.data(), 32) == 0);
  CHECK(file.at("empty").size_bytes == 0);
  CHECK(file.at("scalar").shape.empty());
  CHECK(file.at("scalar").numel() == 1);
  CHECK(file.find("missing") == nullptr);
  CHECK_THROWS_WITH(file.at("missing"), Catch::Contains("missing") && Catch::Contains(path.string()));

  // No temporary left behind, and the header is padded to 8 bytes with sorted keys, as the reference writer does.
  CHECK(std::distance(fs::directory_iterator(path.parent_path()), fs::directory_iterator()) == 1);
  const std::string bytes = st::serialize(tensors);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(header_size % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, header_size));
  CHECK(header["__metadata__"] == nlohmann::json{{"format", "pt"}});
  CHECK(header["a.half"]["data_offsets"] == nlohmann::json{0, 6});
  CHECK(header["empty"]["data_offsets"] == nlohmann::json{6, 6});
  CHECK(fs::file_size(path) == bytes.size());
}

TEST_CASE("safetensors: reads every dtype the format names", "[io][safetensors]") {
  for (const char* name : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "BF16", "F32", "F64"}) {
    const st::DType dtype = st::parse_dtype(name);
    CHECK(st::dtype_name(dtype) == name);
    const std::size_t size = st::dtype_size(dtype);
    const std::string header = nlohmann::json{{"t", {{"dtype", name}, {"shape", {2}}, {"data_offsets", {0, 2 * size}}}}}.dump();
    const st::File file = st::File::from_bytes(image(header, 2 * size));
    CHECK(file.at("t").dtype == dtype);
  }
  CHECK_THROWS_WITH(st::parse_dtype("F8"), Catch::Contains("unknown safetensors dtype 'F8'"));
}

TEST_CASE("safetensors: __metadata__ may be present or absent, header padding is allowed", "[io][safetensors]") {
  const std::string header = R"({"__metadata__":{"format":"pt","note":"x"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   )";
  const st::File file = st::File::from_bytes(image(header, 4));
  CHECK(file.metadata().size() == 2);
  CHECK(file.tensors().size() == 1);
  const st::File bare = st::File::from_bytes(image(R"({})", 0));
  CHECK(bare.tensors().empty());
}

TEST_CASE("safetensors: malformed files give an error naming the file and the problem", "[io][safetensors]") {
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string good = image(good_header, 12);
  REQUIRE(st::File::from_bytes(good).tensors().size() == 2);

  SECTION("empty and shorter than the length prefix") {
    require_rejected("", "fewer than the 8-byte header length");
    require_rejected("\x05\x00\x00", "fewer than the 8-byte header length");
  }
  SECTION("truncated in the header") { require_rejected(good.substr(0, 20), "runs past the end of the file"); }
  SECTION("truncated in the data") { require_rejected(good.substr(0, good.size() - 3), "past the end of the data area"); }
  SECTION("header length past the end") {
    require_rejected(le64(1000) + good_header, "runs past the end of the file");
    require_rejected(le64(~0ull) + good_header, "above the 100 MB limit");
  }
  SECTION("header length zero") { require_rejected(le64(0) + "{}", "header length is 0"); }
  SECTION("header not JSON") {
    require_rejected(image("{not json", 0), "not valid JSON");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", 4), "not valid JSON");
  }
  SECTION("header not an object") {
    require_rejected(image("[1,2,3]", 0), "does not start with '{'");
    require_rejected(image(R"({"a":[1,2]})", 0), "not an object");
    require_rejected(image(R"({"__metadata__":{"format":1}})", 0), "not a string");
  }
  SECTION("missing or mistyped fields") {
    require_rejected(image(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4), "has no \"dtype\"");
    require_rejected(image(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4), "has no \"shape\"");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "has no \"data_offsets\"");
    require_rejected(image(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4), "unknown safetensors dtype 'Q4'");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "a negative number");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4), "floating-point");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4), "not an array [begin, end]");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4), "end before they begin");
  }
  SECTION("dtype and shape not matching the byte size") {
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes");
    require_rejected(image(R"({"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,4]}})", 4), "needs 8 bytes");
    require_rejected(image(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                     "overflows 64 bits");
  }
  SECTION("offsets out of range") {
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12), "past the end of the data area");
  }
  SECTION("offsets overlapping") {
    require_rejected(
        image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
        "overlap");
  }
  SECTION("gaps and trailing bytes") {
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "must be contiguous");
    require_rejected(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "trailing bytes");
  }
  SECTION("a name given twice") {
    require_rejected(
        image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
        "more than once");
  }
}

TEST_CASE("safetensors: missing files and bad writes are errors", "[io][safetensors]") {
  CHECK_THROWS_WITH(st::File::open("/nonexistent/model.safetensors"),
                    Catch::Contains("/nonexistent/model.safetensors") && Catch::Contains("cannot open"));
  const float value = 1.0f;
  CHECK_THROWS_WITH(st::serialize({{"w", st::DType::F32, {2}, &value, 4}}), Catch::Contains("needs 8 bytes"));
  CHECK_THROWS_WITH(st::serialize({{"w", st::DType::F32, {1}, &value, 4}, {"w", st::DType::F32, {1}, &value, 4}}),
                    Catch::Contains("two safetensors tensors named 'w'"));
}
