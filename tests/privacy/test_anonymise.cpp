// Pseudonymised import: no raw id survives in any file written from the anonymised data (dataset, model,
// metrics), the text scrubber's rules, the same recommendations as on the raw data (through the id map),
// determinism per key, clear errors for a bad key, and the command line (a raw id no longer resolves).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "test_util.h"
#include "xdrec/anonymise.h"
#include "xdrec/rank.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/synthetic.h"

namespace fs = std::filesystem;
using namespace xdrec;
using xdrec::testing_util::throws_error;

namespace {

using Result = testing_util::CliResult;
Result run(const std::string& args) {
  return testing_util::run_cli(args);
}

bool is_alnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// The first raw id found as a whole token (not touching an ASCII letter or digit) in `bytes`, or "".
std::string find_raw_id(const std::string& bytes, const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    for (size_t p = bytes.find(id); p != std::string::npos; p = bytes.find(id, p + 1)) {
      const bool left = p == 0 || !is_alnum(bytes[p - 1]);
      const bool right = p + id.size() == bytes.size() || !is_alnum(bytes[p + id.size()]);
      if (left && right) return id;
    }
  }
  return "";
}

// A small synthetic dataset with personal data planted in its text.
Dataset planted() {
  SyntheticOptions so;
  so.n_users = 300;
  so.items_per_domain = 60;
  so.mean_interactions = 12;
  Dataset ds = make_synthetic(so);
  ds.user_profile[0].text =
      "mail alice.smith@example.org or call +44 20 7946 0958; blog https://alice.example.com/me";
  ds.user_profile[1].text = "friend of u2 and u17, see www.example.net";
  ds.user_profile[2].attributes["contact"] = "bob@mail.example.com";
  ds.item_text[0].description = "Recommended by u5 (tel. (555) 123-4567).";
  ds.item_text[1].title = "Sequel to books:3";
  return ds;
}

constexpr char kAnonymiseTestPrefix[] = "xdrec_anon_";

class AnonymiseTest : public testing_util::TempDirTest<kAnonymiseTestPrefix> {
 protected:
  std::string write(const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
    return (dir / name).string();
  }
};

std::vector<float> scores(const Recommender& m, uint32_t u) {
  Matrix out;
  std::vector<uint32_t> users{u};
  m.score(users, out, 1);
  return out.data;
}

std::unique_ptr<Recommender> fit(const std::string& spec, const Dataset& ds) {
  auto m = create_model(spec);
  m->fit(ds.user_item_matrix(), FitContext{});
  return m;
}

}  // namespace

TEST(Scrub, RemovesContactDataAndKeepsOrdinaryText) {
  const RawIds none;
  ScrubCounts n;
  EXPECT_EQ(scrub_text("write to jane.doe+news@mail.example.co.uk today", none, &n),
            "write to [email] today");
  EXPECT_EQ(scrub_text("see https://example.com/a?b=c, or www.example.org.", none, &n),
            "see [url], or [url].");
  EXPECT_EQ(scrub_text("(ftp://host/file)", none, &n), "([url])");
  EXPECT_EQ(scrub_text("call +1 (555) 123-4567 now", none, &n), "call [phone] now");
  EXPECT_EQ(scrub_text("call 555.123.4567 or 020 7946 0958", none, &n), "call [phone] or [phone]");
  EXPECT_EQ(scrub_text("account 12345678901234", none, &n), "account [phone]");
  EXPECT_EQ(scrub_text("(555) 123-4567.", none, &n), "[phone].");
  EXPECT_EQ(n.emails, 1u);
  EXPECT_EQ(n.urls, 3u);
  EXPECT_EQ(n.phones, 5u);
  // Ordinary text stays as it is: titles with numbers and years, dates, prices, short numbers, symbols.
  for (std::string s :
       {"Apollo 13 (1995)", "Released 1995-07-01 and 01/07/1995", "12 Angry Men", "Price: 12.50",
        "3 stars out of 5", "C++ and C# at 10:30", "Se7en", "1-900 (1994)", "a@b", "user@localhost",
        "e.g. the www page", "1,000,000 copies", "Caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9", ""})
    EXPECT_EQ(scrub_text(s, none), s);
}

TEST(Scrub, RemovesRawIdsAsWholeTokensOnly) {
  const RawIds ids{"u17", "books:12", "196"};
  ScrubCounts n;
  EXPECT_EQ(scrub_text("u17 likes books:12; user 196 too", ids, &n), "[id] likes [id]; user [id] too");
  EXPECT_EQ(n.ids, 3u);
  EXPECT_EQ(scrub_text("u170 xu17 books:123 1960 a196", ids), "u170 xu17 books:123 1960 a196");
  // Two space-separated numbers are not a phone number; three groups are.
  EXPECT_EQ(scrub_text("Top 100 1995", ids), "Top 100 1995");
  EXPECT_EQ(scrub_text("Top 100 1995 1996", ids), "Top [phone]");
  EXPECT_EQ(scrub_text("(u17)", ids), "([id])");
}

TEST(Scrub, HmacMatchesRfc4231) {
  // RFC 4231, test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?", 16), "5bdcc146bf60754e");
}

TEST(Scrub, CoarsensTimestamps) {
  const int64_t t = 1615984496;  // 2021-03-17 12:34:56 UTC, a Wednesday
  EXPECT_EQ(coarsen_timestamp(t, TimeCoarsening::kNone), t);
  EXPECT_EQ(coarsen_timestamp(t, TimeCoarsening::kDay), 1615939200);    // 2021-03-17
  EXPECT_EQ(coarsen_timestamp(t, TimeCoarsening::kWeek), 1615766400);   // Monday 2021-03-15
  EXPECT_EQ(coarsen_timestamp(t, TimeCoarsening::kMonth), 1614556800);  // 2021-03-01
  EXPECT_EQ(coarsen_timestamp(-3600, TimeCoarsening::kDay), -86400);    // before the epoch
  EXPECT_EQ(coarsen_timestamp(-3600, TimeCoarsening::kWeek), -259200);  // Monday 1969-12-29
  EXPECT_EQ(coarsen_timestamp(-3600, TimeCoarsening::kMonth), -2678400);
  EXPECT_EQ(coarsen_timestamp(kNoTimestamp, TimeCoarsening::kDay), kNoTimestamp);
}

TEST_F(AnonymiseTest, NoRawIdSurvivesInAnyWrittenFile) {
  const Dataset raw = planted();
  std::vector<std::string> ids = raw.users.names();
  ids.insert(ids.end(), raw.items.names().begin(), raw.items.names().end());
  AnonymiseOptions opt;
  opt.key = "a test key of some length";
  const Anonymised a = anonymise(raw, opt);
  EXPECT_EQ(a.data.n_users(), raw.n_users());
  EXPECT_EQ(a.data.n_items(), raw.n_items());
  EXPECT_EQ(a.data.interactions.size(), raw.interactions.size());
  EXPECT_GE(a.scrubbed.emails, 2u);
  EXPECT_GE(a.scrubbed.phones, 2u);
  EXPECT_GE(a.scrubbed.urls, 2u);
  EXPECT_GE(a.scrubbed.ids, 4u);

  const std::string xdb = (dir / "anon.xdb").string();
  save_dataset_binary(a.data, xdb);
  write_canonical(a.data, (dir / "canonical").string());
  // A model and the metrics of an evaluation, through the command line.
  Result r = run("train " + xdb + " -m popular -o " + (dir / "model").string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("eval " + xdb + " -m popular -m ease --quiet -o " + (dir / "metrics.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(find_raw_id(read_file(e.path().string()), ids), "") << e.path();
  }
  EXPECT_GE(files, 7u);
  // The raw dataset written the same way does hold them (the scan finds what it looks for).
  save_dataset_binary(raw, (dir / "raw.xdb").string());
  EXPECT_NE(find_raw_id(read_file((dir / "raw.xdb").string()), ids), "");
}

TEST_F(AnonymiseTest, RecommendationsAreTheSameThroughTheIdMap) {
  const Dataset raw = planted();
  AnonymiseOptions opt;
  opt.key = "another key";
  const Anonymised a = anonymise(raw, opt);
  std::unordered_map<std::string, uint32_t> user_new, item_new;  // raw id -> anonymised index
  for (uint32_t u = 0; u < a.user_ids.size(); ++u) user_new[a.user_ids[u].first] = u;
  for (uint32_t i = 0; i < a.item_ids.size(); ++i) item_new[a.item_ids[i].first] = i;
  for (uint32_t i = 0; i < raw.n_items(); ++i)
    ASSERT_EQ(a.data.items.name(item_new[raw.items.name(i)]), a.item_ids[item_new[raw.items.name(i)]].second);

  const Csr raw_x = raw.user_item_matrix(), anon_x = a.data.user_item_matrix();
  for (std::string spec : {"popular", "ease"}) {
    SCOPED_TRACE(spec);
    auto m_raw = fit(spec, raw), m_anon = fit(spec, a.data);
    RecommendOptions ro;
    ro.k = 10;
    size_t compared = 0;
    for (uint32_t u = 0; u < raw.n_users(); u += 7) {
      const uint32_t v = user_new[raw.users.name(u)];
      // Scores agree item by item (popular exactly; EASE up to the summation order).
      const std::vector<float> s_raw = scores(*m_raw, u), s_anon = scores(*m_anon, v);
      for (uint32_t i = 0; i < raw.n_items(); ++i)
        ASSERT_NEAR(s_anon[item_new[raw.items.name(i)]], s_raw[i], 1e-4f * (1 + std::abs(s_raw[i])))
            << u << " " << i;
      // Lists agree up to the order of equal scores.
      ro.exclude = &raw_x;
      std::vector<uint32_t> one{u};
      const auto l_raw = recommend(*m_raw, one, ro)[0];
      ro.exclude = &anon_x;
      one[0] = v;
      const auto l_anon = recommend(*m_anon, one, ro)[0];
      ASSERT_EQ(l_raw.size(), l_anon.size());
      std::map<std::string, float> got, want;
      for (size_t k = 0; k < l_raw.size(); ++k) {
        EXPECT_NEAR(l_anon[k].score, l_raw[k].score, 1e-4f * (1 + std::abs(l_raw[k].score)));
        if (l_raw[k].score > l_raw.back().score + 1e-4f)
          want[a.item_ids[item_new[raw.items.name(l_raw[k].item)]].second] = 1;
        if (l_anon[k].score > l_anon.back().score + 1e-4f) got[a.data.items.name(l_anon[k].item)] = 1;
      }
      EXPECT_EQ(got, want) << "user " << raw.users.name(u);
      ++compared;
    }
    EXPECT_GT(compared, 40u);
  }
}

TEST_F(AnonymiseTest, SameKeySameBytesOtherKeyOtherIds) {
  const Dataset raw = planted();
  AnonymiseOptions opt;
  opt.key = "key one";
  opt.coarsen_time = TimeCoarsening::kWeek;
  save_dataset_binary(anonymise(raw, opt).data, (dir / "a.xdb").string());
  save_dataset_binary(anonymise(raw, opt).data, (dir / "b.xdb").string());
  EXPECT_TRUE(read_file((dir / "a.xdb").string()) == read_file((dir / "b.xdb").string()));
  const Anonymised one = anonymise(raw, opt);
  opt.key = "key two";
  const Anonymised two = anonymise(raw, opt);
  std::unordered_set<std::string> first;
  for (const auto& [r, p] : one.user_ids) first.insert(p);
  for (const auto& [r, p] : one.item_ids) first.insert(p);
  for (const auto& [r, p] : two.user_ids) EXPECT_EQ(first.count(p), 0u) << r;
  for (const auto& [r, p] : two.item_ids) EXPECT_EQ(first.count(p), 0u) << r;
  // Users and items of the same raw name get different pseudonyms (separate namespaces).
  Dataset clash;
  clash.add_user("x");
  clash.add_item("x", "d");
  clash.interactions.push_back({0, 0});
  const Anonymised c = anonymise(clash, opt);
  EXPECT_NE(c.user_ids[0].second, c.item_ids[0].second);
  EXPECT_EQ(c.user_ids[0].second, hmac_sha256_hex("key two", "user:x", 16));
}

TEST_F(AnonymiseTest, CollisionsAreErrorsAndBadKeysAreClear) {
  SyntheticOptions so;
  so.n_users = 2000;
  so.items_per_domain = 20;
  so.mean_interactions = 2;
  const Dataset ds = make_synthetic(so);
  AnonymiseOptions opt;
  opt.key = "k";
  opt.hex_chars = 4;  // 65,536 pseudonyms for 2,000 users: a collision is all but certain
  EXPECT_TRUE(throws_error([&] { anonymise(ds, opt); }, {"same 4-digit pseudonym", "longer pseudonyms"}));
  opt.key = "";
  opt.hex_chars = 16;
  EXPECT_TRUE(throws_error([&] { anonymise(ds, opt); }, {"key is empty"}));

  EXPECT_TRUE(throws_error([&] { read_key_file((dir / "missing.key").string()); },
                           {"missing.key", "does not exist"}));
  const std::string empty = write("empty.key", "");
  EXPECT_TRUE(throws_error([&] { read_key_file(empty); }, {"empty.key", "is empty"}));
  EXPECT_EQ(read_key_file(write("k.key", "secret\n")), "secret\n");
}

TEST_F(AnonymiseTest, CommandLineImportTrainRecommend) {
  Dataset raw = planted();
  write_canonical(raw, (dir / "raw").string());
  const std::string key = write("key", "0123456789abcdef0123456789abcdef");
  const std::string in = (dir / "raw").string(), xdb = (dir / "anon.xdb").string(),
                    map = (dir / "ids.tsv").string();
  // Bad keys first: nothing is written.
  Result r = run("import " + in + " --anonymise " + (dir / "nokey").string() + " -o " + xdb);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("does not exist"), std::string::npos) << r.out;
  r = run("import " + in + " --anonymise " + write("empty", "") + " -o " + xdb);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("is empty"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(xdb));
  EXPECT_NE(run("import " + in + " --id-map " + map + " -o " + xdb).status, 0);  // --id-map needs --anonymise

  r = run("import " + in + " --anonymise " + key + " --id-map " + map + " --coarsen-time day -o " + xdb);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("pseudonymised 300 users and 180 items"), std::string::npos) << r.out;
  const std::string bytes = read_file(xdb), map_text = read_file(map);
  struct stat st {};
  ASSERT_EQ(::stat(map.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // the id map is a secret
  // Same key, same bytes (the dataset and the map).
  const std::string xdb2 = (dir / "anon2.xdb").string();
  ASSERT_EQ(
      run("import " + in + " --anonymise " + key + " --id-map " + map + ".2 --coarsen-time day -o " + xdb2)
          .status,
      0);
  EXPECT_TRUE(read_file(xdb2) == bytes);
  EXPECT_TRUE(read_file(map + ".2") == map_text);
  // Without --id-map no map is written.
  ASSERT_EQ(run("import " + in + " --anonymise " + key + " -o " + (dir / "anon3.xdb").string()).status, 0);
  EXPECT_FALSE(fs::exists(map + ".3"));

  // The map: a header, then one line per user and item.
  std::map<std::string, std::string> user_map;
  std::istringstream lines(map_text);
  std::string line;
  size_t n_lines = 0;
  while (std::getline(lines, line)) {
    ++n_lines;
    const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    if (line.substr(0, t1) == "user") user_map[line.substr(t1 + 1, t2 - t1 - 1)] = line.substr(t2 + 1);
  }
  EXPECT_EQ(n_lines, 1u + 300 + 180);
  ASSERT_EQ(user_map.size(), 300u);

  const std::string model = (dir / "model").string();
  ASSERT_EQ(run("train " + xdb + " -m popular -o " + model + " --quiet").status, 0);
  r = run("recommend --model " + model + " --data " + xdb + " --user u7 -k 3");
  EXPECT_NE(r.status, 0) << r.out;  // a raw id no longer resolves
  r = run("recommend --model " + model + " --data " + xdb + " --user " + user_map["u7"] + " -k 3");
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST_F(AnonymiseTest, MovieLensRawUserIdDoesNotResolve) {
  const std::string ml = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
  if (!fs::exists(ml + "/u.data")) GTEST_SKIP() << "no MovieLens 100k at " << ml;
  const std::string key = write("key", "a MovieLens test key, 32 bytes.");
  const std::string xdb = (dir / "anon.xdb").string(), model = (dir / "model").string();
  ASSERT_EQ(run("import " + ml + " --anonymise " + key + " -o " + xdb).status, 0);
  ASSERT_EQ(run("train " + xdb + " -m popular -o " + model + " --quiet").status, 0);
  Result r = run("recommend --model " + model + " --data " + xdb + " --user 196 -k 3");
  EXPECT_NE(r.status, 0) << r.out;
  // No raw id is left in any id or text field (ages and other numbers equal to an id are scrubbed too).
  ReadOptions ro;
  ro.use_cache = false;
  const Dataset raw = read_dataset(ml, "auto", ro);
  std::vector<std::string> ids = raw.users.names();
  ids.insert(ids.end(), raw.items.names().begin(), raw.items.names().end());
  const Dataset anon = load_dataset_binary(xdb);
  std::string text;
  for (const auto& n : anon.users.names()) text += n + "\n";
  for (const auto& n : anon.items.names()) text += n + "\n";
  for (const auto& t : anon.item_text) {
    text += t.title + "\n" + t.description + "\n";
    for (const auto& c : t.categories) text += c + "\n";
  }
  for (const auto& p : anon.user_profile) {
    text += p.text + "\n";
    for (const auto& [k, v] : p.attributes) text += v + "\n";
  }
  EXPECT_EQ(find_raw_id(text, ids), "");
  EXPECT_EQ(anon.interactions.size(), raw.interactions.size());
}
