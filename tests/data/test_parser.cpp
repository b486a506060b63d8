// Canonical CSV / TSV / JSON-lines reading: every malformed record gives the exact file, line, column and
// reason; skip mode; UTF-8 validation; write_canonical round trips.

#include <gtest/gtest.h>

#include <cmath>

#include "data/util.h"
#include "xdrec/readers.h"

namespace xdrec {
namespace {

using testing::TempDir;

ReadOptions no_cache() {
  ReadOptions o;
  o.use_cache = false;
  return o;
}

Dataset read(const std::string& path, ReadReport* rep = nullptr, ReadOptions o = no_cache()) {
  return read_dataset(path, "canonical", o, rep);
}

// Runs f, which must throw ParseError, and checks every part of it.
template <class F>
void expect_parse_error(F f, const std::string& file, size_t line, size_t column, const std::string& reason) {
  try {
    f();
    ADD_FAILURE() << "expected ParseError " << file << ":" << line << ":" << column << ": " << reason;
  } catch (const ParseError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_EQ(e.line(), line);
    EXPECT_EQ(e.column(), column);
    EXPECT_EQ(e.reason(), reason);
    EXPECT_EQ(std::string(e.what()),
              file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + reason);
  }
}

// Writes interactions.csv with the given content into a fresh directory and expects a ParseError in it.
void expect_csv_error(const std::string& content, size_t line, size_t column, const std::string& reason,
                      const std::string& name = "interactions.csv") {
  TempDir t;
  const std::string p = t.write(name, content);
  SCOPED_TRACE(content);
  expect_parse_error([&] { read(p); }, p, line, column, reason);
}

TEST(CsvParser, QuotedFieldsCommasDoubledQuotesAndCrlf) {
  TempDir t;
  const std::string p = t.write("interactions.csv",
                                "user,item,rating,timestamp\r\n"
                                "\"u,1\",i1,4.5,100\r\n"
                                "u2,\"i \"\"2\"\"\",3,-200\r\n"
                                "u2,\"\",,\n");
  // The last record has an empty item: an error, so read the first two via skip mode.
  ReadOptions o = no_cache();
  o.skip_errors = true;
  ReadReport rep;
  Dataset ds = read(p, &rep, o);
  ASSERT_EQ(ds.interactions.size(), 2u);
  EXPECT_EQ(ds.users.name(0), "u,1");
  EXPECT_EQ(ds.items.name(1), "i \"2\"");
  EXPECT_FLOAT_EQ(ds.interactions[0].rating, 4.5f);
  EXPECT_EQ(ds.interactions[0].timestamp, 100);
  EXPECT_EQ(ds.interactions[1].timestamp, -200);
  EXPECT_EQ(rep.records, 2u);
  EXPECT_EQ(rep.skipped, 1u);
  ASSERT_EQ(rep.examples.size(), 1u);
  EXPECT_EQ(rep.examples[0], p + ":4:4: empty item id");
  EXPECT_EQ(rep.bytes, std::filesystem::file_size(p));
}

TEST(CsvParser, QuotedNewlineKeepsLineNumbers) {
  TempDir t;
  const std::string items = t.write("items.csv", "item,title\ni1,\"two\nlines\"\ni2,plain\n");
  const std::string inter = t.write("interactions.csv", "user,item\nu1,i1\n");
  Dataset ds = read(t.path());
  EXPECT_EQ(ds.item_text[0].title, "two\nlines");
  EXPECT_EQ(ds.item_text[1].title, "plain");
  // An error after a multi-line record is reported on its physical line.
  t.write("items.csv", "item,title\ni1,\"two\nlines\"\ni2,x\"y\n");
  expect_parse_error([&] { read(t.path()); }, items, 4, 5,
                     "quote inside an unquoted field (quote the whole field and double inner quotes)");
}

TEST(CsvParser, StructuralErrors) {
  expect_csv_error("user,item\nu1,\"abc\n", 2, 4,
                   "unterminated quoted field (no closing quote before end of file)");
  expect_csv_error("user,item\nu1,ab\"c\n", 2, 6,
                   "quote inside an unquoted field (quote the whole field and double inner quotes)");
  expect_csv_error("user,item\nu1,\"ab\"c\n", 2, 8, "unexpected character after a closing quote");
}

TEST(CsvParser, MissingAndExtraFields) {
  expect_csv_error("user,item,rating\nu1,i1\n", 2, 6, "missing column: expected 3 fields, found 2");
  expect_csv_error("user,item,rating\r\nu1,i1\r\n", 2, 6, "missing column: expected 3 fields, found 2");
  expect_csv_error("user,item\nu1,i1,x\n", 2, 7, "too many fields: expected 2, found 3");
  // Blank lines are not records but still count as lines.
  expect_csv_error("user,item\n\nu1,i1\n\nu2\n", 5, 3, "missing column: expected 2 fields, found 1");
}

TEST(CsvParser, BadNumbers) {
  expect_csv_error("user,item,rating\nu1,i1,abc\n", 2, 7, "bad rating 'abc' (expected a number)");
  expect_csv_error("user,item,rating\nu1,i1,nan\n", 2, 7, "bad rating 'nan' (expected a number)");
  expect_csv_error("user,item,rating\nu1,i1,inf\n", 2, 7, "bad rating 'inf' (expected a number)");
  expect_csv_error("user,item,rating\nu1,i1, 4\n", 2, 7, "bad rating ' 4' (expected a number)");
  expect_csv_error("user,item,rating\nu1,i1,4.5.1\n", 2, 7, "bad rating '4.5.1' (expected a number)");
  expect_csv_error("user,item,timestamp\nu1,i1,12x\n", 2, 7,
                   "bad timestamp '12x' (expected integer seconds)");
  expect_csv_error("user,item,timestamp\nu1,i1,1.5\n", 2, 7,
                   "bad timestamp '1.5' (expected integer seconds)");
  expect_csv_error("user,item,timestamp\nu1,i1,99999999999999999999\n", 2, 7,
                   "bad timestamp '99999999999999999999' (expected integer seconds)");
}

TEST(CsvParser, HeaderErrors) {
  expect_csv_error("", 1, 1, "empty file");
  expect_csv_error("\n\n", 1, 1, "empty file");
  expect_csv_error("user,item,user\nu1,i1,u2\n", 1, 11,
                   "duplicate column 'user' in the header (also column 1)");
  expect_csv_error("user,rating\nu1,3\n", 1, 1, "header lacks required column 'item' (found: user,rating)");
  expect_csv_error("user,item,ratings\nu1,i1,3\n", 1, 11,
                   "unknown column 'ratings' in the interactions file (expected user, item, domain, rating, "
                   "timestamp, split)");
  expect_csv_error("user,,item\n", 1, 6, "empty column name in the header");
}

TEST(CsvParser, InvalidUtf8ReportsTheFirstBadByte) {
  expect_csv_error(
      "user,item\nu1,ab\xff"
      "cd\n",
      2, 6, "invalid UTF-8 (byte 0xFF)");
  expect_csv_error("user,item\nu1,\xc3\xa9t\xc3\xa9\xc0\xaf\n", 2, 9,
                   "invalid UTF-8 (byte 0xC0)");                                            // overlong
  expect_csv_error("user,item\nu1,\xed\xa0\x80\n", 2, 4, "invalid UTF-8 (byte 0xED)");      // surrogate
  expect_csv_error("user,item\nu1,\xf4\x90\x80\x80\n", 2, 4, "invalid UTF-8 (byte 0xF4)");  // > U+10FFFF
  expect_csv_error("user,item\nu1,ok\xe2\x82", 2, 6, "invalid UTF-8 (byte 0xE2)");          // truncated
  expect_csv_error("user,item\nu1,\x80x\n", 2, 4, "invalid UTF-8 (byte 0x80)");  // stray continuation byte
  // Valid multi-byte text (2, 3 and 4 bytes) passes, a byte-order mark is skipped.
  TempDir t;
  t.write("interactions.csv", "\xef\xbb\xbfuser,item\nJos\xc3\xa9,\xe2\x82\xac\xf0\x9f\x8e\xb5\n");
  Dataset ds = read(t.path());
  EXPECT_EQ(ds.users.name(0), "Jos\xc3\xa9");
  EXPECT_EQ(ds.items.name(0), "\xe2\x82\xac\xf0\x9f\x8e\xb5");
}

TEST(CsvParser, UnknownItemWhenAnItemsFileIsGiven) {
  TempDir t;
  const std::string items = t.write("items.csv", "item,title\ni1,First\n");
  const std::string inter = t.write("interactions.csv", "user,item\nu1,i1\nu1,i2\n");
  expect_parse_error([&] { read(t.path()); }, inter, 3, 4, "unknown item 'i2' (not in " + items + ")");
}

TEST(CsvParser, DuplicatesAndDomainConflicts) {
  TempDir t;
  const std::string items = t.write("items.csv", "item,domain\ni1,books\ni2,films\ni1,books\n");
  t.write("interactions.csv", "user,item\nu1,i1\n");
  expect_parse_error([&] { read(t.path()); }, items, 4, 1, "duplicate item 'i1' (first on line 2)");
  t.write("items.csv", "item,domain\ni1,books\n");
  const std::string inter = t.write("interactions.csv", "user,item,domain\nu1,i1,films\n");
  expect_parse_error([&] { read(t.path()); }, inter, 2, 7, "item 'i1' is in domain 'books', not 'films'");
  const std::string users = t.write("users.csv", "user,age\nu1,3\nu1,4\n");
  t.write("interactions.csv", "user,item\nu1,i1\n");
  expect_parse_error([&] { read(t.path()); }, users, 3, 1, "duplicate user 'u1' (first on line 2)");
}

TEST(CsvParser, SkipModeCountsAndKeepsTheFirstExamples) {
  TempDir t;
  const std::string p = t.write("interactions.csv",
                                "user,item,rating\n"
                                "u1,i1,5\n"
                                "u1,i2,x\n"  // bad rating
                                "u2,i1\n"    // missing column
                                "u2,i3,4\n"
                                "u3,\"i4\n");  // unterminated quote (to the end of the file)
  ReadOptions o = no_cache();
  o.skip_errors = true;
  o.max_examples = 2;
  ReadReport rep;
  Dataset ds = read(p, &rep, o);
  EXPECT_EQ(ds.interactions.size(), 2u);
  EXPECT_EQ(ds.n_users(), 2u);  // a skipped record adds nothing
  EXPECT_EQ(ds.n_items(), 2u);
  EXPECT_EQ(rep.records, 2u);
  EXPECT_EQ(rep.skipped, 3u);
  ASSERT_EQ(rep.examples.size(), 2u);
  EXPECT_EQ(rep.examples[0], p + ":3:7: bad rating 'x' (expected a number)");
  EXPECT_EQ(rep.examples[1], p + ":4:6: missing column: expected 3 fields, found 2");
  // Without skipping, the first error stops the read.
  expect_parse_error([&] { read(p); }, p, 3, 7, "bad rating 'x' (expected a number)");
  // Invalid UTF-8 is skipped line by line too.
  t.write("interactions.csv", "user,item\nu1,\xff\nu2,i2\n");
  ds = read(p, &rep, o);
  EXPECT_EQ(ds.interactions.size(), 1u);
  EXPECT_EQ(rep.skipped, 1u);
  // Header errors are never skipped.
  t.write("interactions.csv", "user,user\nu1,i1\n");
  expect_parse_error([&] { read(p, nullptr, o); }, p, 1, 6,
                     "duplicate column 'user' in the header (also column 1)");
}

TEST(CsvParser, HeaderNamesIgnoreCase) {
  TempDir t;
  t.write("interactions.csv", "User,ITEM,Rating\nu1,i1,2\n");
  Dataset ds = read(t.path());
  ASSERT_EQ(ds.interactions.size(), 1u);
  EXPECT_EQ(ds.interactions[0].rating, 2.0f);
}

TEST(TsvParser, EscapesAndNoQuoting) {
  TempDir t;
  t.write("items.tsv", "item\ttitle\tcategories\ni1\tsay \"hi\"\\there\\\\now\\x\tA|B||C\n");
  t.write("interactions.tsv", "user\titem\trating\nu1\ti1\t\n");
  Dataset ds = read(t.path());
  EXPECT_EQ(ds.item_text[0].title, "say \"hi\"\there\\now\\x");
  EXPECT_EQ(ds.item_text[0].categories, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_FALSE(ds.interactions[0].has_rating());  // an empty rating is no rating
  EXPECT_EQ(ds.domains.name(0), "default");
}

TEST(JsonlParser, ObjectsPerLine) {
  TempDir t;
  t.write("items.jsonl",
          "{\"item\": \"i1\", \"title\": \"T\", \"categories\": [\"a\", \"b\"], \"domain\": \"books\"}\n"
          "{\"item\": 7, \"categories\": \"c|d\", \"domain\": \"films\"}\n");
  t.write("users.jsonl", "{\"user\": \"u1\", \"text\": \"likes maps\", \"age\": 31, \"city\": \"Oslo\"}\n");
  const std::string p = t.write("interactions.jsonl",
                                "{\"user\": \"u1\", \"item\": \"i1\", \"rating\": 4.5, \"timestamp\": 10}\n"
                                "\n"
                                "{\"user\": \"u2\", \"item\": 7, \"rating\": null}\n");
  Dataset ds = read(t.path());
  ASSERT_EQ(ds.n_items(), 2u);
  EXPECT_EQ(ds.items.name(1), "7");
  EXPECT_EQ(ds.item_text[0].categories, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ds.item_text[1].categories, (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(ds.domains.name(ds.item_domain[1]), "films");
  EXPECT_EQ(ds.user_profile[0].text, "likes maps");
  EXPECT_EQ(ds.user_profile[0].attributes.at("age"), "31");
  EXPECT_EQ(ds.user_profile[0].attributes.at("city"), "Oslo");
  ASSERT_EQ(ds.interactions.size(), 2u);
  EXPECT_FLOAT_EQ(ds.interactions[0].rating, 4.5f);
  EXPECT_EQ(ds.interactions[0].timestamp, 10);
  EXPECT_FALSE(ds.interactions[1].has_rating());

  t.write("interactions.jsonl", "{\"user\": \"u1\", \"item\": \"i1\"}\n{\"user\": \"u2\"}\n");
  expect_parse_error([&] { read(t.path()); }, p, 2, 1, "missing field 'item'");
  t.write("interactions.jsonl", "{\"user\": \"u1\", \"item\": \"i1\", \"rating\": \"high\"}\n");
  expect_parse_error([&] { read(t.path()); }, p, 1, 30, "bad rating 'high' (expected a number)");
  t.write("interactions.jsonl", "{\"user\": \"u1\", \"item\": \"i1\", \"colour\": 3}\n");
  expect_parse_error([&] { read(t.path()); }, p, 1, 30,
                     "unknown field 'colour' in the interactions file (expected user, item, domain, rating, "
                     "timestamp, split)");
  t.write("interactions.jsonl", "[1, 2]\n");
  expect_parse_error([&] { read(t.path()); }, p, 1, 1, "expected a JSON object");
  t.write("interactions.jsonl", "{\"user\": \"u\xff\"}\n");
  expect_parse_error([&] { read(t.path()); }, p, 1, 12, "invalid UTF-8 (byte 0xFF)");
  t.write("interactions.jsonl", "");
  expect_parse_error([&] { read(t.path()); }, p, 1, 1, "empty file");
  t.write("interactions.jsonl", "{\"user\": \"u1\", \"item\": }\n");
  try {
    read(t.path());
    ADD_FAILURE() << "expected ParseError";
  } catch (const ParseError& e) {
    EXPECT_EQ(e.file(), p);
    EXPECT_EQ(e.line(), 1u);
    EXPECT_EQ(e.column(), 24u);  // the '}' where a value should be
    EXPECT_EQ(e.reason().rfind("invalid JSON: ", 0), 0u) << e.reason();
  }
}

TEST(CanonicalReader, SingleFileAndDefaultDomain) {
  TempDir t;
  const std::string p = t.write("events.csv", "user,item\nu1,i1\nu1,i2\n");
  t.write("items.csv", "item\nzzz\n");  // not used: the file is not named interactions.*
  ReadOptions o = no_cache();
  o.domain = "news";
  Dataset ds = read(p, nullptr, o);
  EXPECT_EQ(ds.n_items(), 2u);
  EXPECT_EQ(ds.domains.name(0), "news");
  EXPECT_THROW(read(t.file("missing.csv")), Error);
  EXPECT_THROW(read_dataset(t.path(), "no-such-format", o), Error);
}

TEST(CanonicalReader, WriteCanonicalRoundTrip) {
  Dataset ds;
  ds.name = "round";
  const uint32_t u0 = ds.add_user("ann\tlee");
  const uint32_t u1 = ds.add_user("bob");
  ds.add_user("carl");  // no interactions, only a profile
  ds.user_profile[u0].text = "likes\nnew lines and \\backslashes";
  ds.user_profile[u0].attributes = {{"age", "31"}, {"city", "Z\xc3\xbcrich"}};
  ds.user_profile[2].attributes = {{"age", "40"}};
  const uint32_t i0 = ds.add_item("b:1", "books");
  const uint32_t i1 = ds.add_item("f:1", "films");
  ds.item_text[i0] = {"Title, with \"quotes\"", "desc\twith tab", {"a", "b c"}};
  ds.item_text[i1] = {"\xe2\x98\x85 star", "", {}};
  ds.interactions = {{u0, i0, 4.5f, 100}, {u1, i1, kNoRating, kNoTimestamp}, {u1, i0, 0.1f, -5}};
  ds.fixed_split = {0, 2, 1};
  ds.tags = {{u1, i0, ds.tag_names.get_or_add("cosy"), 77}};
  TempDir t;
  write_canonical(ds, t.path());
  Dataset back = read(t.path());
  EXPECT_EQ(back.users.names(), ds.users.names());
  EXPECT_EQ(back.items.names(), ds.items.names());
  EXPECT_EQ(back.domains.names(), ds.domains.names());
  EXPECT_EQ(back.item_domain, ds.item_domain);
  for (uint32_t i = 0; i < ds.n_items(); ++i) {
    EXPECT_EQ(back.item_text[i].title, ds.item_text[i].title);
    EXPECT_EQ(back.item_text[i].description, ds.item_text[i].description);
    EXPECT_EQ(back.item_text[i].categories, ds.item_text[i].categories);
  }
  for (uint32_t u = 0; u < ds.n_users(); ++u) {
    EXPECT_EQ(back.user_profile[u].text, ds.user_profile[u].text);
    EXPECT_EQ(back.user_profile[u].attributes, ds.user_profile[u].attributes);
  }
  ASSERT_EQ(back.interactions.size(), ds.interactions.size());
  for (size_t k = 0; k < ds.interactions.size(); ++k) {
    const auto &a = ds.interactions[k], &b = back.interactions[k];
    EXPECT_EQ(a.user, b.user);
    EXPECT_EQ(a.item, b.item);
    EXPECT_EQ(a.has_rating(), b.has_rating());
    if (a.has_rating()) {  // exact: written with 9 significant digits
      EXPECT_EQ(a.rating, b.rating);
    }
    EXPECT_EQ(a.timestamp, b.timestamp);
  }
  EXPECT_EQ(back.fixed_split, ds.fixed_split);
  ASSERT_EQ(back.tags.size(), 1u);
  EXPECT_EQ(back.tag_names.name(back.tags[0].tag), "cosy");
  EXPECT_EQ(back.tags[0].timestamp, 77);
  EXPECT_EQ(back.fingerprint(), ds.fingerprint());
  // No temporary files are left behind by the atomic writes.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(t.path())) {
    ++files;
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
  EXPECT_EQ(files, 4u);
}

}  // namespace
}  // namespace xdrec
