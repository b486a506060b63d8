// Binary dataset files and the read cache: round trips, staleness, truncation and version errors.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "data/util.h"
#include "xdrec/readers.h"
#include "xdrec/synthetic.h"

namespace xdrec {
namespace {

using testing::TempDir;

void expect_same(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.users.names(), b.users.names());
  EXPECT_EQ(a.items.names(), b.items.names());
  EXPECT_EQ(a.domains.names(), b.domains.names());
  EXPECT_EQ(a.item_domain, b.item_domain);
  ASSERT_EQ(a.item_text.size(), b.item_text.size());
  for (size_t i = 0; i < a.item_text.size(); ++i) {
    EXPECT_EQ(a.item_text[i].title, b.item_text[i].title);
    EXPECT_EQ(a.item_text[i].description, b.item_text[i].description);
    EXPECT_EQ(a.item_text[i].categories, b.item_text[i].categories);
  }
  ASSERT_EQ(a.user_profile.size(), b.user_profile.size());
  for (size_t u = 0; u < a.user_profile.size(); ++u) {
    EXPECT_EQ(a.user_profile[u].text, b.user_profile[u].text);
    EXPECT_EQ(a.user_profile[u].attributes, b.user_profile[u].attributes);
  }
  ASSERT_EQ(a.interactions.size(), b.interactions.size());
  for (size_t k = 0; k < a.interactions.size(); ++k) {
    const auto &x = a.interactions[k], &y = b.interactions[k];
    ASSERT_EQ(x.user, y.user);
    ASSERT_EQ(x.item, y.item);
    ASSERT_EQ(x.has_rating(), y.has_rating());
    if (x.has_rating()) {
      ASSERT_EQ(x.rating, y.rating);
    }
    ASSERT_EQ(x.timestamp, y.timestamp);
  }
  EXPECT_EQ(a.fixed_split, b.fixed_split);
  EXPECT_EQ(a.tag_names.names(), b.tag_names.names());
  ASSERT_EQ(a.tags.size(), b.tags.size());
  for (size_t k = 0; k < a.tags.size(); ++k) {
    EXPECT_EQ(a.tags[k].user, b.tags[k].user);
    EXPECT_EQ(a.tags[k].item, b.tags[k].item);
    EXPECT_EQ(a.tags[k].tag, b.tags[k].tag);
    EXPECT_EQ(a.tags[k].timestamp, b.tags[k].timestamp);
  }
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
}

Dataset small_dataset() {
  Dataset ds;
  ds.name = "small";
  const uint32_t u0 = ds.add_user("u0"), u1 = ds.add_user("u1");
  const uint32_t a = ds.add_item("a", "books"), b = ds.add_item("b", "films");
  ds.item_text[a] = {"Alpha", "first", {"x", "y"}};
  ds.user_profile[u1] = {"likes films", {{"age", "30"}}};
  ds.interactions = {{u0, a, 4.0f, 10}, {u1, b, kNoRating, kNoTimestamp}, {u1, a, 2.5f, 20}};
  ds.fixed_split = {0, 0, 2};
  ds.tags = {{u0, b, ds.tag_names.get_or_add("fun"), 5}};
  return ds;
}

TEST(BinaryDataset, RoundTrip) {
  TempDir t;
  const Dataset ds = small_dataset();
  const std::string p = t.file("small.xds");
  save_dataset_binary(ds, p);
  expect_same(ds, load_dataset_binary(p));

  SyntheticOptions so;
  so.n_users = 300;
  const Dataset syn = make_synthetic(so);
  save_dataset_binary(syn, p);  // overwrites atomically
  expect_same(syn, load_dataset_binary(p));
}

TEST(BinaryDataset, TruncatedWrongVersionAndForeignFiles) {
  TempDir t;
  const std::string p = t.file("d.xds");
  save_dataset_binary(small_dataset(), p);
  const std::string bytes = read_file(p);

  auto expect_error = [&](const std::string& content, const std::string& fragment) {
    write_file_atomic(p, content);
    try {
      load_dataset_binary(p);
      ADD_FAILURE() << "expected Error containing '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_error(bytes.substr(0, bytes.size() - 7), "truncated dataset file (expected " +
                                                      std::to_string(bytes.size()) + " bytes, found " +
                                                      std::to_string(bytes.size() - 7) + ")");
  expect_error(bytes.substr(0, 20), "truncated dataset file (20 bytes, shorter than its header)");
  std::string v2 = bytes;
  v2[8] = 2;  // version field
  expect_error(v2, "dataset file version 2, this build reads version 1");
  std::string flipped = bytes;
  flipped[bytes.size() - 3] ^= 0x5a;
  expect_error(flipped, "checksum mismatch");
  expect_error("user,item\n", "not an xdrec dataset file");
  EXPECT_THROW(load_dataset_binary(t.file("absent.xds")), Error);
}

TEST(ReadCache, HitMissAndStaleness) {
  TempDir t;
  const std::string data_dir = t.file("data");
  t.write("data/interactions.csv", "user,item,rating\nu1,i1,5\nu2,i1,3\nu2,i2,x\n");
  ReadOptions o;
  o.cache_dir = t.file("cache");
  o.skip_errors = true;

  ReadReport r1;
  const Dataset d1 = read_dataset(data_dir, "auto", o, &r1);
  EXPECT_FALSE(r1.from_cache);
  EXPECT_EQ(r1.records, 2u);
  EXPECT_EQ(r1.skipped, 1u);
  size_t cache_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(o.cache_dir)) {
    ++cache_files;
    EXPECT_NE(e.path().filename().string()[0], '.');
  }
  EXPECT_EQ(cache_files, 1u);

  ReadReport r2;
  const Dataset d2 = read_dataset(data_dir, "auto", o, &r2);
  EXPECT_TRUE(r2.from_cache);
  EXPECT_EQ(r2.records, 2u);  // the report of the original parse
  EXPECT_EQ(r2.skipped, 1u);
  EXPECT_EQ(r2.examples, r1.examples);
  expect_same(d1, d2);

  // Different options that change the result are a different cache entry.
  ReadOptions strict = o;
  strict.skip_errors = false;
  EXPECT_THROW(read_dataset(data_dir, "auto", strict), ParseError);

  // Editing the input (size and mtime change) makes the cache stale.
  t.write("data/interactions.csv", "user,item,rating\nu1,i1,5\nu2,i1,3\nu3,i3,10\n");
  ReadReport r3;
  const Dataset d3 = read_dataset(data_dir, "auto", o, &r3);
  EXPECT_FALSE(r3.from_cache);
  EXPECT_EQ(d3.interactions.size(), 3u);
  EXPECT_EQ(d3.n_users(), 3u);
  // Same size, new mtime: still detected.
  std::filesystem::last_write_time(
      t.file("data/interactions.csv"),
      std::filesystem::last_write_time(t.file("data/interactions.csv")) - std::chrono::seconds(100));
  ReadReport r4;
  read_dataset(data_dir, "auto", o, &r4);
  EXPECT_FALSE(r4.from_cache);
  ReadReport r5;
  read_dataset(data_dir, "auto", o, &r5);
  EXPECT_TRUE(r5.from_cache);
  // Adding an items file changes the inputs.
  t.write("data/items.csv", "item,title\ni1,One\ni2,Two\ni3,Three\n");
  ReadReport r6;
  const Dataset d6 = read_dataset(data_dir, "auto", o, &r6);
  EXPECT_FALSE(r6.from_cache);
  EXPECT_EQ(d6.item_text[0].title, "One");

  // A corrupt cache file is rebuilt, not an error.
  for (const auto& e : std::filesystem::directory_iterator(o.cache_dir))
    write_file_atomic(e.path().string(), "junk");
  ReadReport r7;
  expect_same(d6, read_dataset(data_dir, "auto", o, &r7));
  EXPECT_FALSE(r7.from_cache);
  ReadReport r8;
  read_dataset(data_dir, "auto", o, &r8);
  EXPECT_TRUE(r8.from_cache);

  // use_cache = false neither reads nor writes the cache.
  ReadOptions off = o;
  off.use_cache = false;
  off.cache_dir = t.file("cache-off");
  ReadReport r9;
  read_dataset(data_dir, "auto", off, &r9);
  EXPECT_FALSE(r9.from_cache);
  EXPECT_FALSE(std::filesystem::exists(off.cache_dir));
}

TEST(ReadCache, SharedDataThroughTheCache) {
  if (!testing::have_shared("movielens_ml-100k")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  ReadOptions o;
  o.cache_dir = t.path();
  ReadReport r1, r2;
  const Dataset a = read_dataset(testing::shared_data("movielens_ml-100k"), "auto", o, &r1);
  const Dataset b = read_dataset(testing::shared_data("movielens_ml-100k"), "auto", o, &r2);
  EXPECT_FALSE(r1.from_cache);
  EXPECT_TRUE(r2.from_cache);
  expect_same(a, b);
}

}  // namespace
}  // namespace xdrec
