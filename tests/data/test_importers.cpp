// Importers of the real datasets under ../shared/data: the counts stated in each PROVENANCE.md.

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "data/util.h"
#include "xdrec/readers.h"
#include "xdrec/split.h"

namespace xdrec {
namespace {

using testing::have_shared;
using testing::shared_data;

#define REQUIRE_SHARED(sub) \
  if (!have_shared(sub)) GTEST_SKIP() << "shared data '" << shared_data(sub) << "' is absent"

Dataset load(const std::string& sub, const std::string& format, ReadReport* rep = nullptr) {
  ReadOptions o;
  o.use_cache = false;
  return read_dataset(shared_data(sub), format, o, rep);
}

// Distinct users with at least one interaction in each domain.
std::vector<size_t> users_per_domain(const Dataset& ds) {
  std::vector<std::set<uint32_t>> s(ds.n_domains());
  for (const auto& x : ds.interactions) s[ds.item_domain[x.item]].insert(x.user);
  std::vector<size_t> n;
  for (auto& v : s) n.push_back(v.size());
  return n;
}

std::vector<size_t> interactions_per_domain(const Dataset& ds) {
  std::vector<size_t> n(ds.n_domains(), 0);
  for (const auto& x : ds.interactions) ++n[ds.item_domain[x.item]];
  return n;
}

TEST(Importers, MovieLens100k) {
  REQUIRE_SHARED("movielens_ml-100k");
  ReadReport rep;
  Dataset ds = load("movielens_ml-100k", "auto", &rep);
  EXPECT_EQ(ds.name, "ml-100k");
  EXPECT_EQ(ds.n_users(), 943u);
  EXPECT_EQ(ds.n_items(), 1682u);
  EXPECT_EQ(ds.interactions.size(), 100000u);
  EXPECT_EQ(ds.n_domains(), 1u);
  EXPECT_EQ(rep.skipped, 0u);
  EXPECT_GT(rep.bytes, 1979173u);
  std::map<float, size_t> hist;
  for (const auto& x : ds.interactions) {
    ASSERT_TRUE(x.has_rating() && x.has_timestamp());
    ++hist[x.rating];
  }
  EXPECT_EQ(hist.size(), 5u);
  // First line of u.data: 196 242 3 881250949.
  const auto& first = ds.interactions[0];
  EXPECT_EQ(ds.users.name(first.user), "196");
  EXPECT_EQ(ds.items.name(first.item), "242");
  EXPECT_EQ(first.rating, 3.0f);
  EXPECT_EQ(first.timestamp, 881250949);
  // u.item line 1: Toy Story, genres Animation, Children's, Comedy.
  const uint32_t toy = *ds.items.find("1");
  EXPECT_EQ(ds.item_text[toy].title, "Toy Story (1995)");
  EXPECT_EQ(ds.item_text[toy].categories, (std::vector<std::string>{"Animation", "Children's", "Comedy"}));
  // u.user line 1: 1|24|M|technician|85711.
  const uint32_t u1 = *ds.users.find("1");
  EXPECT_EQ(ds.user_profile[u1].text, "24 year old male technician");
  EXPECT_EQ(ds.user_profile[u1].attributes.at("zip"), "85711");
  EXPECT_EQ(ds.user_profile[u1].attributes.at("occupation"), "technician");
  // Every user has at least 20 ratings.
  std::vector<int> per_user(ds.n_users(), 0);
  for (const auto& x : ds.interactions) ++per_user[x.user];
  EXPECT_GE(*std::min_element(per_user.begin(), per_user.end()), 20);
}

TEST(Importers, MovieLensLatestSmall) {
  REQUIRE_SHARED("movielens_ml-latest-small");
  Dataset ds = load("movielens_ml-latest-small", "auto");
  EXPECT_EQ(ds.name, "ml-latest-small");
  EXPECT_EQ(ds.n_users(), 610u);
  EXPECT_EQ(ds.n_items(), 9742u);  // every listed movie
  EXPECT_EQ(ds.interactions.size(), 100836u);
  std::set<uint32_t> rated;
  std::map<float, size_t> hist;
  for (const auto& x : ds.interactions) {
    rated.insert(x.item);
    ++hist[x.rating];
  }
  EXPECT_EQ(rated.size(), 9724u);
  // Rating histogram from the PROVENANCE (0.5 to 5.0 in half stars).
  const std::vector<size_t> expected = {1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211};
  std::vector<size_t> got;
  for (auto& [r, n] : hist) got.push_back(n);
  EXPECT_EQ(got, expected);
  // Tags: 3,683 rows from 58 users on 1,572 movies, kept apart from item text.
  EXPECT_EQ(ds.tags.size(), 3683u);
  std::set<uint32_t> tag_users, tag_items;
  for (const auto& a : ds.tags) {
    tag_users.insert(a.user);
    tag_items.insert(a.item);
  }
  EXPECT_EQ(tag_users.size(), 58u);
  EXPECT_EQ(tag_items.size(), 1572u);
  // The PROVENANCE caution: 3,476 tags were written by a user who rated the same movie.
  std::set<std::pair<uint32_t, uint32_t>> pairs;
  for (const auto& x : ds.interactions) pairs.insert({x.user, x.item});
  size_t leaky = 0;
  for (const auto& a : ds.tags) leaky += pairs.count({a.user, a.item});
  EXPECT_EQ(leaky, 3476u);
  // Quoted titles and '|' genres.
  const uint32_t m11 = *ds.items.find("11");
  EXPECT_EQ(ds.item_text[m11].title, "American President, The (1995)");
  EXPECT_EQ(ds.item_text[m11].categories, (std::vector<std::string>{"Comedy", "Drama", "Romance"}));
  const uint32_t m7789 = *ds.items.find("7789");
  EXPECT_EQ(ds.item_text[m7789].title, "11'09\"01 - September 11 (2002)");
  size_t no_genre = 0;
  for (const auto& t : ds.item_text) no_genre += t.categories.empty();
  EXPECT_EQ(no_genre, 34u);  // "(no genres listed)"
  for (const auto& t : ds.item_text)
    for (const auto& c : t.categories) EXPECT_EQ(c.find('|'), std::string::npos);

  // Tags enter item text only where the split does not hold the tagger's pair out.
  SplitOptions so;
  so.cold_ratio = 0.2;
  Split cold = split_cold_items(ds, so);
  const auto text = item_text_with_tags(ds, cold, 1000);
  std::set<std::pair<uint32_t, uint32_t>> held;
  for (const auto& x : cold.test) held.insert({x.user, x.item});
  size_t added = 0, fair = 0;
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    added += text[i].categories.size() - ds.item_text[i].categories.size();
  std::set<std::pair<uint32_t, uint32_t>> fair_item_tags;
  for (const auto& a : ds.tags)
    if (!held.count({a.user, a.item})) fair_item_tags.insert({a.item, a.tag});
  fair = fair_item_tags.size();
  EXPECT_GT(added, 0u);
  EXPECT_LE(added, fair);
  for (uint32_t i = 0; i < ds.n_items(); ++i) {
    if (!cold.cold_item[i]) continue;
    for (size_t k = ds.item_text[i].categories.size(); k < text[i].categories.size(); ++k) {
      const auto tag = *ds.tag_names.find(text[i].categories[k]);
      bool from_outsider = false;
      for (const auto& a : ds.tags)
        if (a.item == i && a.tag == tag && !held.count({a.user, a.item})) from_outsider = true;
      EXPECT_TRUE(from_outsider) << "tag '" << text[i].categories[k]
                                 << "' on a cold item leaks its test users";
    }
  }
}

TEST(Importers, Douban) {
  REQUIRE_SHARED("douban_book-music_gadtcdr");
  Dataset ds = load("douban_book-music_gadtcdr", "auto");
  ASSERT_EQ(ds.n_domains(), 2u);
  EXPECT_EQ(ds.domains.name(0), "book");
  EXPECT_EQ(ds.domains.name(1), "music");
  EXPECT_EQ(interactions_per_domain(ds), (std::vector<size_t>{96041, 69709}));
  EXPECT_EQ(users_per_domain(ds), (std::vector<size_t>{2110, 1672}));
  EXPECT_EQ(ds.n_users(), 2216u);
  std::vector<size_t> items(2, 0);
  for (uint32_t i = 0; i < ds.n_items(); ++i) ++items[ds.item_domain[i]];
  EXPECT_EQ(items, (std::vector<size_t>{6777, 5567}));
  // Overlap: users in both domains.
  std::vector<int> mask(ds.n_users(), 0);
  for (const auto& x : ds.interactions) mask[x.user] |= 1 << ds.item_domain[x.item];
  EXPECT_EQ(std::count(mask.begin(), mask.end(), 3), 1566);
  // Item ids are prefixed with their domain; the last line (no trailing newline) is read.
  EXPECT_TRUE(ds.items.find("book:1630").has_value());
  const auto& last = ds.interactions.back();
  EXPECT_EQ(ds.users.name(last.user), "2718");
  EXPECT_EQ(ds.domains.name(ds.item_domain[last.item]), "music");
  std::map<float, size_t> hist;
  for (const auto& x : ds.interactions)
    if (ds.item_domain[x.item] == 0) ++hist[x.rating];
  EXPECT_EQ(hist[1.0f], 1605u);
  EXPECT_EQ(hist[5.0f], 30236u);
}

TEST(Importers, FoodKitchen) {
  REQUIRE_SHARED("amazon_food-kitchen_llmcdsr");
  Dataset ds = load("amazon_food-kitchen_llmcdsr", "auto");
  EXPECT_EQ(ds.name, "food-kitchen");
  ASSERT_EQ(ds.n_domains(), 2u);
  EXPECT_EQ(ds.domains.name(0), "food");
  EXPECT_EQ(ds.domains.name(1), "kitchen");
  std::vector<size_t> items(2, 0);
  for (uint32_t i = 0; i < ds.n_items(); ++i) ++items[ds.item_domain[i]];
  EXPECT_EQ(items, (std::vector<size_t>{8661, 27637}));
  EXPECT_EQ(ds.n_users(), 5472u + 38191u + 7501u + 960u + 937u);
  EXPECT_EQ(interactions_per_domain(ds),
            (std::vector<size_t>{37281 + 45849 + 8739 + 6447, 265817 + 53321 + 9394 + 9279}));
  // Fixed split: one validation target per valid user, one test target per test user.
  ASSERT_EQ(ds.fixed_split.size(), ds.interactions.size());
  Split s = split_fixed(ds);
  EXPECT_EQ(s.validation.size(), 960u);
  EXPECT_EQ(s.test.size(), 937u);
  size_t val_food = 0, test_food = 0;
  for (const auto& x : s.validation) val_food += ds.item_domain[x.item] == 0;
  for (const auto& x : s.test) test_food += ds.item_domain[x.item] == 0;
  EXPECT_EQ(val_food, 363u);
  EXPECT_EQ(test_food, 300u);
  // Valid/test users are their own users (ids prefixed by file), and their history is in train.
  const uint32_t v1 = *ds.users.find("valid:1");
  EXPECT_TRUE(ds.users.find("train_overlap:1").has_value());
  size_t hist_v1 = 0;
  for (const auto& x : s.train) hist_v1 += x.user == v1;
  EXPECT_EQ(hist_v1, 9u);  // valid.txt line 1 has 10 items, the last is the target
  for (const auto& x : s.validation)
    if (x.user == v1) {
      EXPECT_EQ(ds.items.name(x.item), "kitchen:" + std::to_string(35882 - 8661));
    }
  // The target is the latest interaction of its user (synthetic increasing timestamps).
  std::vector<int64_t> latest(ds.n_users(), 0);
  for (const auto& x : s.train) latest[x.user] = std::max(latest[x.user], x.timestamp);
  for (const auto& x : s.test) EXPECT_GT(x.timestamp, latest[x.user]);
  // Titles, with HTML entities decoded.
  EXPECT_EQ(ds.item_text[*ds.items.find("kitchen:2")].title, "Keurig Mini B31 Plus Platinum Coffee Maker");
  size_t entities = 0;
  for (const auto& t : ds.item_text) {
    EXPECT_FALSE(t.title.empty());
    entities += t.title.find("&amp;") != std::string::npos || t.title.find("&quot;") != std::string::npos;
  }
  EXPECT_EQ(entities, 0u);
}

TEST(Importers, DisenCdrScenario) {
  REQUIRE_SHARED("amazon_4pairs_disencdr/sport_cloth");
  Dataset ds = load("amazon_4pairs_disencdr/sport_cloth", "auto");
  ASSERT_EQ(ds.n_domains(), 2u);
  EXPECT_EQ(ds.domains.name(0), "sport");
  EXPECT_EQ(ds.domains.name(1), "cloth");
  EXPECT_EQ(ds.n_users(), 9928u);
  EXPECT_EQ(users_per_domain(ds), (std::vector<size_t>{9928, 9928}));
  Split s = split_fixed(ds);
  std::vector<size_t> train(2, 0), test(2, 0);
  for (const auto& x : s.train) ++train[ds.item_domain[x.item]];
  for (const auto& x : s.test) ++test[ds.item_domain[x.item]];
  EXPECT_EQ(train, (std::vector<size_t>{92612, 87829}));
  EXPECT_EQ(test, (std::vector<size_t>{8326, 7540}));
  std::vector<std::set<uint32_t>> train_items(2);
  for (const auto& x : s.train) train_items[ds.item_domain[x.item]].insert(x.item);
  EXPECT_EQ(train_items[0].size(), 30796u);
  EXPECT_EQ(train_items[1].size(), 39008u);
  EXPECT_EQ(ds.n_items(), 30796u + 39008u);  // test items are all seen in training
  EXPECT_TRUE(s.validation.empty());

  // Another pair, read from its other side: domains follow the folder name.
  REQUIRE_SHARED("amazon_4pairs_disencdr/electronic_phone");
  Dataset ep = load("amazon_4pairs_disencdr/electronic_phone", "disencdr");
  EXPECT_EQ(ep.domains.name(0), "electronic");
  EXPECT_EQ(ep.n_users(), 3325u);
  EXPECT_EQ(interactions_per_domain(ep), (std::vector<size_t>{115554 + 2560, 50407 + 2559}));
  // The root folder is not a scenario: the error names the choices.
  try {
    load("amazon_4pairs_disencdr", "disencdr");
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sport_cloth"), std::string::npos) << e.what();
  }
}

TEST(Importers, LastFm) {
  REQUIRE_SHARED("lastfm_hetrec2011-2k");
  ReadReport rep;
  Dataset ds = load("lastfm_hetrec2011-2k", "auto", &rep);
  EXPECT_EQ(ds.name, "lastfm");
  EXPECT_EQ(ds.n_users(), 1892u);
  EXPECT_EQ(ds.n_items(), 17632u);
  EXPECT_EQ(ds.interactions.size(), 92834u);
  EXPECT_EQ(ds.tag_names.size(), 11946u);
  // 186,479 assignments, less those on artists missing from artists.dat.
  EXPECT_LE(ds.tags.size(), 186479u);
  EXPECT_GT(ds.tags.size(), 180000u);
  // Play counts are the weights; first row: 2 51 13883.
  EXPECT_EQ(ds.users.name(ds.interactions[0].user), "2");
  EXPECT_EQ(ds.items.name(ds.interactions[0].item), "51");
  EXPECT_EQ(ds.interactions[0].rating, 13883.0f);
  EXPECT_EQ(ds.item_text[*ds.items.find("1")].title, "MALICE MIZER");
  // tags.dat is Latin-1: converted to UTF-8.
  EXPECT_TRUE(ds.tag_names.find("tropic\xc3\xa1lia").has_value());
  EXPECT_TRUE(ds.tag_names
                  .find("fu\xc3\x9f"
                        "ball")
                  .has_value());
  // Tag timestamps come from day/month/year: 2 52 13 1 4 2009 -> 2009-04-01.
  EXPECT_EQ(ds.tags[0].timestamp, 1238544000);
}

// ---- Small made-up files in each format (no shared data needed) ----------------------------------------

Dataset read_tmp(const std::string& dir, const std::string& format = "auto") {
  ReadOptions o;
  o.use_cache = false;
  return read_dataset(dir, format, o);
}

template <class F>
void expect_parse_error(F f, const std::string& file, size_t line, size_t column, const std::string& reason) {
  try {
    f();
    ADD_FAILURE() << "expected ParseError " << reason;
  } catch (const ParseError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_EQ(e.line(), line);
    EXPECT_EQ(e.column(), column);
    EXPECT_EQ(e.reason(), reason);
  }
}

TEST(ImporterFormats, MovieLens100kLayout) {
  testing::TempDir t;
  t.write("u.genre", "unknown|0\nAction|1\nDrama|2\n\n");
  const std::string item =
      t.write("u.item", "1|Caf\xe9 Noir (1990)|01-Jan-1990||http://x|0|1|1\n2|Blank (1991)|||x|1|0|0\n");
  t.write("u.user", "1|24|M|technician|85711\n2|53|F|none|94043\n");
  const std::string data = t.write("u.data", "1\t1\t3\t881250949\n2\t2\t5\t881250950\n");
  Dataset ds = read_tmp(t.path());
  EXPECT_EQ(ds.name, "ml-100k");
  EXPECT_EQ(ds.item_text[0].title, "Caf\xc3\xa9 Noir (1990)");  // Latin-1 converted
  EXPECT_EQ(ds.item_text[0].categories, (std::vector<std::string>{"Action", "Drama"}));
  EXPECT_TRUE(ds.item_text[1].categories.empty());  // "unknown" is not a genre
  EXPECT_EQ(ds.user_profile[1].text, "53 year old female with no occupation");
  EXPECT_EQ(ds.interactions.size(), 2u);

  t.write("u.data", "1\t1\t3\t881250949\n2\t9\t5\t881250950\n");
  expect_parse_error([&] { read_tmp(t.path()); }, data, 2, 3, "unknown item '9' (not in u.item)");
  t.write("u.data", "1\t1\t3\t88125x\n");
  expect_parse_error([&] { read_tmp(t.path()); }, data, 1, 7, "bad timestamp '88125x' (expected an integer)");
  t.write("u.data", "1\t1\t3\n");
  expect_parse_error([&] { read_tmp(t.path()); }, data, 1, 6, "missing column: expected 4 fields, found 3");
  t.write("u.item", "1|Film (1990)|||x|0|2|1\n");
  expect_parse_error([&] { read_tmp(t.path()); }, item, 1, 21, "bad genre flag '2' (expected 0 or 1)");
}

TEST(ImporterFormats, DoubanLayout) {
  testing::TempDir t;
  t.write("book_ratings.dat", "1\t10\t4\n2\t11\t5");  // no trailing newline
  const std::string music = t.write("music_ratings.dat", "2\t10\t3\n3\t12\tfive\n");
  expect_parse_error([&] { read_tmp(t.path()); }, music, 2, 6, "bad rating 'five' (expected a number)");
  t.write("music_ratings.dat", "2\t10\t3\n3\t12\t1");
  Dataset ds = read_tmp(t.path());
  EXPECT_EQ(ds.name, "douban");
  EXPECT_EQ(ds.items.names(), (std::vector<std::string>{"book:10", "book:11", "music:10", "music:12"}));
  EXPECT_EQ(ds.users.names(), (std::vector<std::string>{"1", "2", "3"}));  // shared ids
  EXPECT_EQ(ds.interactions.size(), 4u);
  EXPECT_EQ(ds.interactions[1].rating, 5.0f);
}

TEST(ImporterFormats, SequenceLayout) {
  testing::TempDir t;
  t.write("items_food.tsv",
          "global_item_id\tdomain_item_id\tasin\ttitle\n0\t0\tA1\tTea &amp; Honey\n1\t1\tA2\tOat&#153;\n");
  t.write("items_kitchen.tsv",
          "global_item_id\tdomain_item_id\tasin\ttitle\n2\t0\tB1\tPan &quot;Pro&quot;\n");
  t.write("train_A.txt", "1\t0,1\n");
  t.write("train_overlap.txt", "1\t1,2,0\n");
  t.write("valid.txt", "1\t0,2\n");
  const std::string test = t.write("test.txt", "1\t2,1\n");
  Dataset ds = read_tmp(t.path());
  EXPECT_EQ(ds.items.names(), (std::vector<std::string>{"food:0", "food:1", "kitchen:0"}));
  EXPECT_EQ(ds.item_text[0].title, "Tea & Honey");
  EXPECT_EQ(ds.item_text[1].title, "Oat\xe2\x84\xa2");  // &#153; is the Windows-1252 trade mark
  EXPECT_EQ(ds.item_text[2].title, "Pan \"Pro\"");
  EXPECT_EQ(ds.users.names(),
            (std::vector<std::string>{"train_A:1", "train_overlap:1", "valid:1", "test:1"}));
  EXPECT_EQ(ds.fixed_split, (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 0, 2}));
  EXPECT_EQ(ds.interactions[4].timestamp, 3);  // third item of its sequence
  t.write("test.txt", "1\t2,7\n");
  expect_parse_error([&] { read_tmp(t.path()); }, test, 1, 5,
                     "unknown item 7 (not in the items_*.tsv files)");
}

TEST(ImporterFormats, DisenCdrLayout) {
  testing::TempDir t;
  t.write("x_y/train.txt", "0\t5\t1\n1\t6\t1\n");
  t.write("x_y/test.txt", "0\t6\t1\n");
  t.write("y_x/train.txt", "0\t5\t1\n1\t7\t1\n");
  t.write("y_x/test.txt", "1\t5\t1\n");
  Dataset ds = read_tmp(t.file("x_y"));
  EXPECT_EQ(ds.name, "disencdr:x_y");
  EXPECT_EQ(ds.items.names(), (std::vector<std::string>{"x:5", "x:6", "y:5", "y:7"}));
  EXPECT_EQ(ds.fixed_split, (std::vector<uint8_t>{0, 0, 0, 0, 2, 2}));
  EXPECT_FALSE(ds.interactions[0].has_rating());
  Dataset other = read_tmp(t.file("y_x"));
  EXPECT_EQ(other.domains.name(0), "y");
}

TEST(ImporterFormats, LastFmLayout) {
  testing::TempDir t;
  t.write("artists.dat", "id\tname\turl\tpictureURL\n1\tBj\xc3\xb6rk\tu\tp\n2\tABBA\tu\t\n");
  t.write("user_artists.dat", "userID\tartistID\tweight\n7\t1\t120\n8\t2\t3\n");
  t.write("tags.dat",
          "tagID\ttagValue\n1\tfran\xe7"
          "ais\n2\tpop\n");
  t.write("user_taggedartists.dat",
          "userID\tartistID\ttagID\tday\tmonth\tyear\n7\t1\t1\t2\t1\t1970\n8\t99\t2\t1\t1\t2000\n");
  Dataset ds = read_tmp(t.path());
  EXPECT_EQ(ds.name, "lastfm");
  EXPECT_EQ(ds.item_text[0].title, "Bj\xc3\xb6rk");
  EXPECT_EQ(ds.interactions[0].rating, 120.0f);
  ASSERT_EQ(ds.tags.size(), 1u);  // artist 99 is unknown: its tag has nothing to attach to
  EXPECT_EQ(ds.tag_names.name(ds.tags[0].tag),
            "fran\xc3\xa7"
            "ais");
  EXPECT_EQ(ds.tags[0].timestamp, 86400);
}

TEST(Importers, AutoDetectionFailsClearly) {
  testing::TempDir t;
  t.write("readme.txt", "nothing here\n");
  try {
    read_dataset(t.path(), "auto");
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot detect the dataset format"), std::string::npos);
  }
}

}  // namespace
}  // namespace xdrec
