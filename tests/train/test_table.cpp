// Table reader: formats, label rules, and every bad-input case with its error message.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "data/table.h"
#include <nlohmann/json.hpp>

using ts::data::Dataset;
using ts::data::EmptyTextPolicy;
using ts::data::read_table;
using ts::data::TableFormat;
using ts::data::TableOptions;
using Catch::Matchers::Contains;

namespace {

namespace fs = std::filesystem;

// A temporary folder per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() / ("ts_test_table_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    const auto file = path / name;
    std::ofstream(file, std::ios::binary) << content;
    return file.string();
  }
};

std::string error_of(const std::string& path, const TableOptions& options = {}) {
  try {
    read_table(path, options);
  } catch (const ts::Error& e) {
    return e.what();
  }
  FAIL("expected ts::Error reading " << path);
  return {};
}

}  // namespace

TEST_CASE("CSV: RFC 4180 quoting with doubled quotes, commas and newlines in fields", "[table]") {
  TempDir dir;
  const auto path = dir.write("a.csv",
                              "label,text\r\n"
                              "pos,\"he said \"\"hi\"\", then left\"\r\n"
                              "neg,\"two\nlines, one field\"\r\n"
                              "\r\n"
                              "pos,plain\r\n");
  Dataset d = read_table(path);
  REQUIRE(d.size() == 3);
  CHECK(d.texts[0] == "he said \"hi\", then left");
  CHECK(d.texts[1] == "two\nlines, one field");
  CHECK(d.texts[2] == "plain");
  CHECK(d.class_names == std::vector<std::string>{"neg", "pos"});  // sorted distinct names
  CHECK(d.labels == std::vector<int64_t>{1, 0, 1});
  CHECK(d.row_numbers == std::vector<int64_t>{2, 3, 6});  // the quoted newline moves row 3's successor to line 6
  CHECK(d.class_counts() == std::vector<int64_t>{1, 2});
  CHECK(d.source == path);
}

TEST_CASE("TSV has no quoting: a quote is an ordinary character", "[table]") {
  TempDir dir;
  const auto path = dir.write("a.tsv", "sentence\tlabel\n\"quoted start\t1\nit 's \"fine\" \t0\n");
  TableOptions options;
  options.text_column = "sentence";
  Dataset d = read_table(path, options);
  REQUIRE(d.size() == 2);
  CHECK(d.texts[0] == "\"quoted start");
  CHECK(d.texts[1] == "it 's \"fine\" ");
  CHECK(d.labels == std::vector<int64_t>{1, 0});  // integer labels are kept as ids
  CHECK(d.class_names == std::vector<std::string>{"0", "1"});
}

TEST_CASE("JSONL: integer and string labels, text pairs, a fixed class list", "[table]") {
  TempDir dir;
  const auto path = dir.write("a.jsonl",
                              "{\"q\": \"first\", \"p\": \"one\", \"y\": \"sports\"}\n"
                              "\n"
                              "{\"q\": \"second\", \"p\": \"two\", \"y\": 0, \"extra\": [1]}\n");
  TableOptions options;
  options.text_column = "q";
  options.pair_column = "p";
  options.label_column = "y";
  options.classes = {"world", "sports"};
  Dataset d = read_table(path, options);
  REQUIRE(d.size() == 2);
  CHECK(d.has_pairs());
  CHECK(d.pairs == std::vector<std::string>{"one", "two"});
  CHECK(d.labels == std::vector<int64_t>{1, 0});  // "sports" by name, 0 as an id
  CHECK(d.row_numbers == std::vector<int64_t>{1, 3});

  // .json is read as JSON lines too, and the format can be forced for any extension.
  const auto other = dir.write("b.txt", "{\"text\": \"x\", \"label\": 2}\n");
  options = {};
  options.format = TableFormat::Jsonl;
  Dataset forced = read_table(other, options);
  CHECK(forced.class_names == std::vector<std::string>{"0", "1", "2"});
  CHECK(forced.labels == std::vector<int64_t>{2});
}

TEST_CASE("bad input: missing file, unknown extension, missing column", "[table][errors]") {
  TempDir dir;
  const auto missing = (dir.path / "nope.csv").string();
  CHECK_THAT(error_of(missing), Contains(missing) && Contains("not found"));

  const auto odd = dir.write("a.xlsx", "x");
  CHECK_THAT(error_of(odd), Contains("a.xlsx") && Contains(".csv, .tsv, .jsonl"));

  const auto csv = dir.write("cols.csv", "label,sentence\n1,hello\n");
  CHECK_THAT(error_of(csv), Contains(csv + ":1:") && Contains("\"text\"") && Contains("columns present: label, sentence"));

  const auto jsonl = dir.write("cols.jsonl", "{\"label\": 1, \"body\": \"x\"}\n");
  CHECK_THAT(error_of(jsonl), Contains(jsonl + ":1:") && Contains("\"text\"") && Contains("keys present: body, label"));

  TableOptions pair;
  pair.pair_column = "hypothesis";
  const auto tsv = dir.write("cols.tsv", "text\tlabel\nx\t1\n");
  CHECK_THAT(error_of(tsv, pair), Contains("text pair column \"hypothesis\""));

  const auto empty = dir.write("empty.csv", "");
  CHECK_THAT(error_of(empty), Contains("empty"));
}

TEST_CASE("bad input: unparsable rows name file, line and column", "[table][errors]") {
  TempDir dir;
  // Wrong field counts.
  const auto many = dir.write("many.csv", "text,label\nfine,1\ntoo,many,2\n");
  CHECK_THAT(error_of(many), Contains(many + ":3:10:") && Contains("3 fields, the header has 2"));
  const auto few = dir.write("few.tsv", "text\tlabel\nonly text\n");
  CHECK_THAT(error_of(few), Contains(few + ":2:10:") && Contains("1 fields, the header has 2"));
  // Bad quoting.
  const auto open = dir.write("open.csv", "text,label\n\"never closed,1\nmore,0\n");
  CHECK_THAT(error_of(open), Contains(open + ":2:1:") && Contains("never closed"));
  const auto after = dir.write("after.csv", "text,label\n\"closed\"x,1\n");
  CHECK_THAT(error_of(after), Contains(after + ":2:9:") && Contains("after a closing quote"));
  const auto inside = dir.write("inside.csv", "text,label\nsay \"hi\",1\n");
  CHECK_THAT(error_of(inside), Contains(inside + ":2:5:") && Contains("inside an unquoted field"));
  // Bad JSON, and JSON that is not an object or holds the wrong types.
  const auto json = dir.write("bad.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": }\n");
  CHECK_THAT(error_of(json), Contains(json + ":2:") && Contains("bad JSON"));
  const auto array = dir.write("array.jsonl", "[1, 2]\n");
  CHECK_THAT(error_of(array), Contains(array + ":1:1:") && Contains("one JSON object per line"));
  const auto number = dir.write("number.jsonl", "{\"text\": 5, \"label\": 1}\n");
  CHECK_THAT(error_of(number), Contains(number + ":1:") && Contains("\"text\"") && Contains("expected a string"));
}

TEST_CASE("empty text: an error by default, dropped and counted by option", "[table][errors]") {
  TempDir dir;
  const auto path = dir.write("e.csv", "text,label\nkeep,1\n\"  \",0\n,1\nalso,0\n");
  CHECK_THAT(error_of(path), Contains(path + ":3:1:") && Contains("empty text"));
  TableOptions drop;
  drop.empty_text = EmptyTextPolicy::Drop;
  Dataset d = read_table(path, drop);
  CHECK(d.size() == 2);
  CHECK(d.dropped_empty == 2);
  CHECK(d.texts == std::vector<std::string>{"keep", "also"});
  CHECK(d.row_numbers == std::vector<int64_t>{2, 5});
}

TEST_CASE("labels outside the class list, negative ids", "[table][errors]") {
  TempDir dir;
  const auto path = dir.write("l.tsv", "text\tlabel\na\tpositive\nb\tneutral\n");
  TableOptions fixed;
  fixed.classes = {"negative", "positive"};
  CHECK_THAT(error_of(path, fixed), Contains(path + ":3:3:") && Contains("\"neutral\"") &&
                                        Contains("not in the class list (negative, positive)"));
  const auto ids = dir.write("ids.tsv", "text\tlabel\na\t1\nb\t2\n");
  CHECK_THAT(error_of(ids, fixed), Contains(ids + ":3:3:") && Contains("\"2\""));
  const auto negative = dir.write("neg.tsv", "text\tlabel\na\t-1\n");
  CHECK_THAT(error_of(negative), Contains(negative + ":2:3:") && Contains("negative class id"));
  // An id column taken for the labels would make a class of every id up to the largest: refused, not allocated.
  const auto huge = dir.write("huge.tsv", "text\tlabel\na\t1\nb\t99999999999999999\n");
  CHECK_THAT(error_of(huge), Contains(huge + ":3:3: label \"99999999999999999\" is a class id of 100000 or more"));
}

TEST_CASE("a JSON number beyond a double's range is an error naming the line", "[table][errors]") {
  // Found by tests/fuzz/fuzz_tables: the JSON library's out_of_range escaped as an exception without a file.
  TempDir dir;
  const auto path = dir.write("big.jsonl", "{\"text\": \"x\", \"label\": 0}\n{\"text\": \"y\", \"label\": 1e400}\n");
  CHECK_THAT(error_of(path), Contains(path + ":2:1: bad JSON: ") && Contains("number overflow"));
}

TEST_CASE("parse_table reads text as read_table reads the file of that name", "[table]") {
  TempDir dir;
  const std::string csv = "text,label\n\"a, b\",pos\nc,neg\n";
  const Dataset from_file = read_table(dir.write("same.csv", csv));
  const Dataset from_text = ts::data::parse_table(csv, (dir.path / "same.csv").string());
  CHECK(from_text.texts == from_file.texts);
  CHECK(from_text.labels == from_file.labels);
  CHECK(from_text.class_names == from_file.class_names);
  CHECK(from_text.row_numbers == from_file.row_numbers);
  CHECK(from_text.source == from_file.source);
  CHECK_THROWS_WITH(ts::data::parse_table("text\tlabel\na\tb\n", "in-memory.xlsx"), Contains("in-memory.xlsx"));
}

TEST_CASE("invalid UTF-8 names the file and line", "[table][errors]") {
  TempDir dir;
  const auto path = dir.write("u.tsv", "text\tlabel\ngood\t1\nbad \xC3\x28 byte\t0\n");
  CHECK_THAT(error_of(path), Contains(path + ":3:5:") && Contains("invalid UTF-8"));
  const auto overlong = dir.write("o.jsonl", "{\"text\": \"\xC0\xAF\", \"label\": 0}\n");
  CHECK_THAT(error_of(overlong), Contains(overlong + ":1:") && Contains("invalid UTF-8"));
  // A byte-order mark is not an error, and multi-byte characters pass.
  const auto bom = dir.write("b.csv", "\xEF\xBB\xBFtext,label\nna\xC3\xAFve \xF0\x9F\x98\x80,1\n");
  Dataset d = read_table(bom);
  CHECK(d.texts[0] == "na\xC3\xAFve \xF0\x9F\x98\x80");
}

TEST_CASE("unlabelled rows: no label column", "[table]") {
  TempDir dir;
  const auto path = dir.write("u.csv", "text\nfirst\nsecond\n");
  TableOptions options;
  options.label_column = "";
  Dataset d = read_table(path, options);
  CHECK(d.size() == 2);
  CHECK(d.labels.empty());
  CHECK(d.class_names.empty());
  d.validate();
  Dataset s = d.subset({1});
  CHECK(s.texts == std::vector<std::string>{"second"});
  CHECK(s.labels.empty());
}

TEST_CASE("subset and concat", "[table]") {
  Dataset d;
  d.texts = {"a", "b", "c"};
  d.labels = {0, 1, 1};
  d.class_names = {"x", "y"};
  d.row_numbers = {2, 3, 4};
  Dataset s = d.subset({2, 0, 2});
  CHECK(s.texts == std::vector<std::string>{"c", "a", "c"});
  CHECK(s.labels == std::vector<int64_t>{1, 0, 1});
  CHECK(s.row_numbers == std::vector<int64_t>{4, 2, 4});
  CHECK_THROWS_AS(d.subset({3}), ts::Error);
  Dataset both = ts::data::concat(d, s);
  CHECK(both.size() == 6);
  CHECK(both.class_counts() == std::vector<int64_t>{2, 4});
  Dataset other = d;
  other.class_names = {"y", "x"};
  CHECK_THROWS_WITH(ts::data::concat(d, other), Contains("different classes"));
}

TEST_CASE("the shared data sets load", "[table][data]") {
  TableOptions sst2;
  sst2.text_column = "sentence";
  Dataset train = read_table("../shared/data/sst2/train.tsv", sst2);
  CHECK(train.size() == 67349);
  CHECK(train.class_counts() == std::vector<int64_t>{29780, 37569});
  CHECK(train.texts[0] == "hide new secretions from the parental units ");
  CHECK(train.row_numbers[0] == 2);

  Dataset agnews = read_table("../shared/data/agnews/train_imbalanced.csv");
  CHECK(agnews.class_counts() == std::vector<int64_t>{500, 1000, 1500, 2000});
  Dataset reuters = read_table("../shared/data/reuters10/train.csv");
  CHECK(reuters.class_counts() == std::vector<int64_t>{3734, 2125, 355, 333, 259, 211, 97, 156, 135, 114});

  Dataset dbpedia = read_table("../shared/data/dbpedia/train.csv");
  CHECK(dbpedia.class_counts() == std::vector<int64_t>(14, 1000));
  Dataset newsgroups = read_table("../shared/data/20ng/train.jsonl");
  CHECK(newsgroups.size() == 11314);
  CHECK(newsgroups.num_classes() == 20);
  CHECK(newsgroups.class_names[0] == "alt.atheism");

  TableOptions trec;
  trec.label_column = "coarse";
  Dataset questions = read_table("../shared/data/trec/train.tsv", trec);
  CHECK(questions.class_names == std::vector<std::string>{"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"});
  CHECK(questions.class_counts() == std::vector<int64_t>{86, 1162, 1250, 1223, 835, 896});
}

TEST_CASE("table options are read strictly from a recipe's table", "[table]") {
  using nlohmann::json;
  const auto options = TableOptions::from_json(
      json{{"text", "sentence"}, {"pair", "hypothesis"}, {"label", false}, {"classes", {"neg", "pos"}},
           {"format", "tsv"}, {"empty_text", "drop"}},
      "ts.read_table");
  CHECK(options.text_column == "sentence");
  CHECK(options.pair_column == "hypothesis");
  CHECK(options.label_column.empty());
  CHECK(options.classes == std::vector<std::string>{"neg", "pos"});
  CHECK(options.format == TableFormat::Tsv);
  CHECK(options.empty_text == EmptyTextPolicy::Drop);
  const auto defaults = TableOptions::from_json(nullptr, "ts.read_table");
  CHECK(defaults.text_column == "text");
  CHECK(defaults.label_column == "label");
  CHECK(defaults.format == TableFormat::Auto);
  CHECK(TableOptions::from_json(json{{"format", "json"}}, "ts.read_table").format == TableFormat::Jsonl);
  CHECK_THROWS_WITH(TableOptions::from_json(json{{"txt", "sentence"}}, "ts.read_table"),
                    "ts.read_table: unknown option 'txt' (known: text, pair, label, classes, format, empty_text)");
  CHECK_THROWS_WITH(TableOptions::from_json(json{{"label", true}}, "ts.read_table"),
                    Contains("option 'label' expects a column name or false"));
  CHECK_THROWS_WITH(TableOptions::from_json(json{{"format", "xlsx"}}, "ts.read_table"),
                    Contains("format 'xlsx': expected csv, tsv, jsonl or auto"));
  CHECK_THROWS_WITH(TableOptions::from_json(json{{"empty_text", "keep"}}, "ts.read_table"),
                    Contains("empty_text 'keep'"));
}
