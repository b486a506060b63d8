// End-to-end tests of cold start through the xdrec command: a text model trained with --encoder serves a new
// user known only by a profile text, or by history in another domain, and an item known only by its text;
// bad requests are one-line errors with a non-zero exit.
//
// The dataset is written by the test: two domains (books, films), four topics with their own words, items
// whose title and categories name their topic, and users who each like one topic in every domain they use.
// Item ids carry domain and topic ("films-spy-3") so a list's topics can be checked; item texts never contain
// the ids.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using Result = xdrec::testing_util::CliResult;  // standard output and standard error together

struct Topic {
  const char* name;
  std::vector<const char*> words;
};

const std::vector<Topic>& topics() {
  static const std::vector<Topic> t = {
      {"spy", {"Spy", "Agent", "Espionage", "Thriller", "Cipher", "Defector"}},
      {"cooking", {"Recipe", "Kitchen", "Baking", "Soup", "Spices", "Chef"}},
      {"space", {"Rocket", "Astronaut", "Galaxy", "Orbit", "Planet", "Comet"}},
      {"garden", {"Garden", "Roses", "Tulips", "Seeds", "Orchard", "Meadow"}},
  };
  return t;
}

const char* kDomains[] = {"books", "films"};
constexpr int kItemsPerCell = 10;  // per (domain, topic)
constexpr int kUsers = 160;

std::string item_id(int d, int t, int k) {
  return std::string(kDomains[d]) + "-" + topics()[t].name + "-" + std::to_string(k);
}

// "films-spy-3" -> "spy"
std::string topic_of(const std::string& id) {
  const size_t a = id.find('-'), b = id.rfind('-');
  return id.substr(a + 1, b - a - 1);
}

class ColdStartCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir = fs::temp_directory_path() / ("xdrec_coldstart_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "data");
    write_dataset(dir / "data");
    data = (dir / "data").string();
    // One text model shared by the tests: hybrid with tfidf vectors of items and profiles.
    trained =
        run("train " + data + " -m " + kModel + " --encoder tfidf:dim=64 -o " + (dir / "hybrid").string());
  }
  static void TearDownTestSuite() { fs::remove_all(dir); }

  static void write_dataset(const fs::path& d) {
    uint64_t state = 12345;
    auto next = [&](uint64_t n) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      return (state >> 33) % n;
    };
    std::ofstream items(d / "items.csv");
    items << "item,domain,title,categories\n";
    for (int dm = 0; dm < 2; ++dm)
      for (int t = 0; t < int(topics().size()); ++t)
        for (int k = 0; k < kItemsPerCell; ++k) {
          const auto& w = topics()[t].words;
          items << item_id(dm, t, k) << "," << kDomains[dm] << ",The " << w[k % w.size()] << " and the "
                << w[(k + 1 + k / w.size()) % w.size()] << "," << topics()[t].name << "\n";
        }
    std::ofstream users(d / "users.csv");
    users << "user,text\n";
    std::ofstream inter(d / "interactions.csv");
    inter << "user,item\n";
    std::ofstream tags(d / "tags.csv");
    tags << "user,item,tag\n";
    for (int u = 0; u < kUsers; ++u) {
      const int t = u % int(topics().size());
      const auto& w = topics()[t].words;
      // Two users in three have a profile naming two words of their topic.
      if (u % 3 != 2)
        users << "u" << u << ",likes " << w[u % w.size()] << " and " << w[(u + 2) % w.size()] << "\n";
      // Every third user uses both domains, the others one of them.
      std::vector<int> doms = u % 3 == 0 ? std::vector<int>{0, 1} : std::vector<int>{(u / 3) % 2};
      for (int dm : doms) {
        std::set<int> picked;
        while (picked.size() < 6) picked.insert(int(next(kItemsPerCell)));
        for (int k : picked) inter << "u" << u << "," << item_id(dm, t, k) << "\n";
        const int other = (t + 1 + int(next(topics().size() - 1))) % int(topics().size());
        inter << "u" << u << "," << item_id(dm, other, int(next(kItemsPerCell))) << "\n";
        if (u % 5 == 0) tags << "u" << u << "," << item_id(dm, t, *picked.begin()) << "," << w[0] << "\n";
      }
    }
  }

  static Result run(const std::string& args) {
    return xdrec::testing_util::run_cli(args + " --threads 2 --quiet",
                                        "XDG_CACHE_HOME='" + (dir / "cache").string() + "' ");
  }

  // Item ids of the first list of `recommend ... --json`.
  static std::vector<std::string> ids(const Result& r) {
    std::vector<std::string> out;
    auto j = nlohmann::json::parse(r.out);
    for (auto& it : j.back()["items"]) out.push_back(it["item"].get<std::string>());
    return out;
  }

  static void expect_one_line_error(const Result& r, const std::string& needle) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_EQ(r.out.rfind("xdrec: error: ", 0), 0u) << r.out;
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
  }

  std::string hybrid() const { return (dir / "hybrid").string(); }

  static constexpr const char* kModel = "hybrid:factors=16,epochs=30";
  static inline fs::path dir;
  static inline std::string data;
  static inline Result trained;
};

TEST_F(ColdStartCli, TrainWithEncoderRecordsTheTextConfig) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  EXPECT_NE(trained.out.find("with text vectors from tfidf"), std::string::npos) << trained.out;
  ASSERT_TRUE(fs::exists(dir / "hybrid" / "text.json"));
  auto j = nlohmann::json::parse(std::ifstream(dir / "hybrid" / "text.json"));
  EXPECT_EQ(j["encoder"].get<std::string>().rfind("tfidf:", 0), 0u) << j.dump();
  EXPECT_EQ(j["dim"], 64);
  EXPECT_FALSE(j["fingerprint"].get<std::string>().empty());
}

TEST_F(ColdStartCli, ProfileGivesItemsOfItsTopicInTheAskedDomain) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  // Which film comes first depends on the training run: the most popular film (a cooking one) sometimes
  // edges out the best spy film for the spy profile, with one seed in eight in Release, and with the default
  // seed in a Debug + sanitizer build, whose rounding differs. So the property is checked on three training
  // seeds and must hold on at least two: a majority (2) of the top 3 are of the profile's topic (one in four
  // by chance). With the models of 31 seeds, every choice of three passes.
  std::vector<std::string> models = {hybrid()};
  for (const char* seed : {"1", "2"}) {
    const std::string out = (dir / (std::string("hybrid_seed") + seed)).string();
    const Result r =
        run("train " + data + " -m " + kModel + " --encoder tfidf:dim=64 --seed " + seed + " -o " + out);
    ASSERT_EQ(r.status, 0) << r.out;
    models.push_back(out);
  }
  for (auto [profile, topic] : {std::pair{"loves thrillers and spy novels", "spy"},
                                std::pair{"likes rockets, astronauts and planets", "space"}}) {
    int majorities = 0;
    std::string lists;
    for (const auto& model : models) {
      Result r = run("recommend --model " + model + " --data " + data + " --profile '" + profile +
                     "' --domain films -k 5 --json");
      ASSERT_EQ(r.status, 0) << r.out;
      const auto list = ids(r);
      ASSERT_EQ(list.size(), 5u) << r.out;
      int on_topic = 0;
      lists += "\n ";
      for (size_t k = 0; k < list.size(); ++k) {
        EXPECT_EQ(list[k].rfind("films-", 0), 0u) << list[k];
        if (k < 3) on_topic += topic_of(list[k]) == topic;
        lists += " " + list[k];
      }
      majorities += on_topic >= 2;
    }
    EXPECT_GE(majorities, 2) << profile << ": top 5 of each training seed:" << lists;
  }
  // The plain-text form prints the new user's list with titles.
  Result text = run("recommend --model " + hybrid() + " --data " + data +
                    " --profile 'garden roses and tulips' --domain books -k 3");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("(new user):"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("[books] The "), std::string::npos) << text.out;
}

TEST_F(ColdStartCli, HistoryInAnotherDomainAloneOrWithAProfile) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  // Cooking books only; asked for films.
  const std::string hist = item_id(0, 1, 0) + "," + item_id(0, 1, 3) + "," + item_id(0, 1, 5);
  Result r = run("recommend --model " + hybrid() + " --data " + data + " --history " + hist +
                 " --domain films -k 5 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  int cooking = 0;
  for (auto& id : ids(r)) {
    EXPECT_EQ(id.rfind("films-", 0), 0u) << id;
    cooking += topic_of(id) == "cooking";
  }
  EXPECT_GE(cooking, 3) << r.out;
  // History and profile together; the history's own items are never recommended back.
  Result both = run("recommend --model " + hybrid() + " --data " + data + " --history " + hist +
                    " --profile 'soup recipes from a chef' --domain books -k 5 --json");
  ASSERT_EQ(both.status, 0) << both.out;
  int cooking_books = 0;
  for (auto& id : ids(both)) {
    EXPECT_EQ(hist.find(id + ","), std::string::npos) << id;
    EXPECT_NE(id, item_id(0, 1, 5));
    cooking_books += topic_of(id) == "cooking";
  }
  EXPECT_GE(cooking_books, 3) << both.out;
}

TEST_F(ColdStartCli, NewItemKnownOnlyByItsText) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  Result r = run("recommend --model " + hybrid() + " --data " + data +
                 " --profile 'loves thrillers and spy novels' --new-item-text 'The Spy and the Cipher'"
                 " --new-item-domain films --domain films -k 5 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j[0].contains("new_item")) << r.out;
  EXPECT_EQ(j[0]["new_item"]["candidates_in_domain"], 41);  // 40 films + the new one; nothing seen
  // A spy item for a spy lover ranks among the spy films (the top quarter of the domain).
  const int rank = j[0]["new_item"]["rank_in_domain"];
  EXPECT_LE(rank, 11) << r.out;
  // The rank agrees with the list: an item ranked within k is in it, at that place.
  std::vector<std::string> list = ids(r);
  if (rank <= 5) {
    EXPECT_EQ(list[size_t(rank - 1)], "(new item)") << r.out;
  }
  // A known user: the candidates are the films they have not seen.
  Result known =
      run("recommend --model " + hybrid() + " --data " + data +
          " --user u0 --new-item-text 'The Spy and the Cipher' --new-item-domain films --domain films"
          " -k 40 --json");
  ASSERT_EQ(known.status, 0) << known.out;
  auto k = nlohmann::json::parse(known.out);
  const std::vector<std::string> all = ids(known);
  const int krank = k[0]["new_item"]["rank_in_domain"];
  EXPECT_EQ(size_t(k[0]["new_item"]["candidates_in_domain"].get<int>()), all.size());
  ASSERT_LE(size_t(krank), all.size());
  EXPECT_EQ(all[size_t(krank - 1)], "(new item)") << known.out;
  Result half =
      run("recommend --model " + hybrid() + " --data " + data + " --profile 'spy' --new-item-text x");
  expect_one_line_error(half, "--new-item-domain");
}

TEST_F(ColdStartCli, ClearErrors) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  // Unknown domain.
  expect_one_line_error(run("recommend --model " + hybrid() + " --data " + data +
                            " --profile 'spy novels' --domain music -k 5"),
                        "unknown domain 'music' (domains: books, films)");
  // Missing model directory.
  expect_one_line_error(
      run("recommend --model " + (dir / "nope").string() + " --data " + data + " --profile 'spy novels'"),
      "does not exist");
  // A model without text.
  Result ials = run("train " + data + " -m ials:factors=8,iterations=3 -o " + (dir / "ials").string());
  ASSERT_EQ(ials.status, 0) << ials.out;
  EXPECT_FALSE(fs::exists(dir / "ials" / "text.json"));
  expect_one_line_error(run("recommend --model " + (dir / "ials").string() + " --data " + data +
                            " --profile 'spy novels' --domain films"),
                        "model 'ials' does not use text");
  // A text model trained without --encoder has no text to serve a profile with.
  Result plain = run("train " + data + " -m " + std::string(kModel) + " -o " + (dir / "plain").string());
  ASSERT_EQ(plain.status, 0) << plain.out;
  Result p = run("recommend --model " + (dir / "plain").string() + " --data " + data +
                 " --profile 'spy novels' --domain films");
  EXPECT_NE(p.status, 0) << p.out;
  EXPECT_NE(p.out.find("hybrid"), std::string::npos) << p.out;
  // ... but it still serves history from another domain (ids only).
  Result h = run("recommend --model " + (dir / "plain").string() + " --data " + data + " --history " +
                 item_id(0, 2, 1) + " --domain films -k 3 --json");
  EXPECT_EQ(h.status, 0) << h.out;
  // Empty profile.
  expect_one_line_error(run("recommend --model " + hybrid() + " --data " + data + " --profile ' '"),
                        "--profile");
}

TEST_F(ColdStartCli, RefittedEncoderMustMatchTheRecordedOne) {
  ASSERT_EQ(trained.status, 0) << trained.out;
  // Same model, but the text config says the item texts were rendered differently: the refitted tfidf
  // differs from the one the model was trained with.
  fs::create_directories(dir / "tampered");
  for (auto& f : fs::directory_iterator(dir / "hybrid"))
    fs::copy_file(f.path(), dir / "tampered" / f.path().filename(), fs::copy_options::overwrite_existing);
  auto j = nlohmann::json::parse(std::ifstream(dir / "tampered" / "text.json"));
  j["item_template"] = "{title}";
  std::ofstream(dir / "tampered" / "text.json") << j.dump(2);
  expect_one_line_error(run("recommend --model " + (dir / "tampered").string() + " --data " + data +
                            " --profile 'spy novels' --domain films"),
                        "differs from the one it was trained with");
  // Without the text config a fitted encoder cannot be rebuilt.
  fs::remove(dir / "tampered" / "text.json");
  expect_one_line_error(run("recommend --model " + (dir / "tampered").string() + " --data " + data +
                            " --profile 'spy novels' --domain films"),
                        "text.json");
}

TEST_F(ColdStartCli, TrainOnAColdItemSplitThenServeFromItsFairTexts) {
  // Item texts built from the split's fair tags; recommend rebuilds the same tfidf from the recorded split.
  const std::string split = (dir / "split").string();
  Result s = run("split " + data + " --protocol cold-items --cold 0.2 -o " + split);
  ASSERT_EQ(s.status, 0) << s.out;
  Result t = run("train " + data + " --split " + split + " -m " + std::string(kModel) +
                 " --encoder tfidf:dim=64 -o " + (dir / "split_model").string());
  ASSERT_EQ(t.status, 0) << t.out;
  auto cfg = nlohmann::json::parse(std::ifstream(dir / "split_model" / "text.json"));
  EXPECT_TRUE(cfg["split_tags"].get<bool>());
  Result r = run("recommend --model " + (dir / "split_model").string() + " --data " + data +
                 " --profile 'loves thrillers and spy novels' --domain books -k 5 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  int spy = 0;
  for (auto& id : ids(r)) spy += topic_of(id) == "spy";
  EXPECT_GE(spy, 3) << r.out;
}

TEST_F(ColdStartCli, EvalWithEncoderHelpsColdItems) {
  // Cold items have no interactions: with text the hybrid model ranks them by content; without text it
  // cannot tell them apart.
  Result r = run("eval " + data + " --protocol cold-items --cold 0.25 -m " + std::string(kModel) +
                 " --encoder tfidf:dim=64 -o " + (dir / "with.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("text models use item and profile text vectors from tfidf"), std::string::npos)
      << r.out;
  Result n = run("eval " + data + " --protocol cold-items --cold 0.25 -m " + std::string(kModel) + " -o " +
                 (dir / "without.json").string());
  ASSERT_EQ(n.status, 0) << n.out;
  auto with = nlohmann::json::parse(std::ifstream(dir / "with.json"));
  auto without = nlohmann::json::parse(std::ifstream(dir / "without.json"));
  const double a = with["models"][kModel]["overall"]["ndcg@10"],
               b = without["models"][kModel]["overall"]["ndcg@10"];
  EXPECT_GT(a, b + 0.05) << "with text " << a << ", without " << b;
}

}  // namespace

namespace {

TEST_F(ColdStartCli, EvalCanRankOnlyTheHeldOutItems) {
  // Held-out items have no training interactions, so popularity puts them below every warm item: among all
  // items it never hits one; among the held-out items only, it must.
  auto eval = [&](const std::string& cand, const std::string& out) {
    Result r = run("eval " + data + " --protocol cold-items --cold 0.25 -m popular --candidates " + cand +
                   " -o " + (dir / out).string());
    EXPECT_EQ(r.status, 0) << r.out;
    return nlohmann::json::parse(std::ifstream(dir / out))["models"]["popular"]["overall"];
  };
  const auto all = eval("all", "all.json"), cold = eval("cold-items", "cold.json");
  EXPECT_EQ(all["hr@10"].get<double>(), 0.0);
  EXPECT_GT(cold["hr@10"].get<double>(), 0.0);
  Result bad = run("eval " + data + " --protocol random -m popular --candidates cold-items");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("holds out no items"), std::string::npos) << bad.out;
}

}  // namespace
