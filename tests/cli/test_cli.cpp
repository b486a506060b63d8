// End-to-end tests of the xdrec command on synthetic data and on bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace fs = std::filesystem;
using namespace xdrec;

namespace {

using Result = testing_util::CliResult;
Result run(const std::string& args) {
  return testing_util::run_cli(args);
}

constexpr char kCliTestPrefix[] = "xdrec_cli_";

class CliTest : public testing_util::TempDirTest<kCliTestPrefix> {
 protected:
  void write(const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
  }
};

}  // namespace

TEST_F(CliTest, HelpForEveryCommand) {
  for (std::string c : {"import", "split", "train", "eval", "recommend", "quickstart", "models", "serve",
                        "replay", "report", "privacy epsilon", "privacy noise"}) {
    Result r = run(c + " --help");
    EXPECT_EQ(r.status, 0) << c << ": " << r.out;
    EXPECT_NE(r.out.find("--"), std::string::npos) << c;
  }
}

TEST_F(CliTest, ModelsListsEveryModelWithParameters) {
  Result r = run("models");
  ASSERT_EQ(r.status, 0) << r.out;
  for (std::string m : {"popular", "itemknn", "ease", "ials", "bpr"})
    EXPECT_NE(r.out.find(m + ":"), std::string::npos) << m;
}

TEST_F(CliTest, QuickstartRunsAndRecommends) {
  Result r = run("quickstart --users 800 --items 150 --threads 2 -o " + (dir / "qs.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("ndcg@10"), std::string::npos);
  EXPECT_NE(r.out.find("top 3 in films"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "qs.json"));
  // On data with taste structure a personalised model beats popularity.
  EXPECT_GT(j["ease"]["overall"]["ndcg@10"].get<double>(), j["popular"]["overall"]["ndcg@10"].get<double>());
}

TEST_F(CliTest, SplitTrainRecommendEvalRoundTrip) {
  const std::string data = "synthetic:users=600,items=120";
  Result s = run("split " + data + " --protocol random --test 0.2 --val 0.1 -o " + (dir / "split").string());
  ASSERT_EQ(s.status, 0) << s.out;
  EXPECT_TRUE(fs::exists(dir / "split" / "train.tsv"));
  EXPECT_TRUE(fs::exists(dir / "split" / "split.json"));
  Result t = run("train " + data + " --split " + (dir / "split").string() +
                 " -m ials:factors=16,iterations=5 -o " + (dir / "model").string());
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_TRUE(fs::exists(dir / "model" / "manifest.json"));
  EXPECT_TRUE(fs::exists(dir / "model" / "model.safetensors"));
  Result rec = run("recommend --model " + (dir / "model").string() + " --data " + data + " --split " +
                   (dir / "split").string() + " --user u0 --domain films -k 5 --json");
  ASSERT_EQ(rec.status, 0) << rec.out;
  auto j = nlohmann::json::parse(rec.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["items"].size(), 5u);
  for (auto& it : j[0]["items"]) EXPECT_EQ(it["domain"], "films");
  Result ev = run("eval " + data + " --split " + (dir / "split").string() + " -m popular -m itemknn -o " +
                  (dir / "m.json").string());
  ASSERT_EQ(ev.status, 0) << ev.out;
  auto m = nlohmann::json::parse(std::ifstream(dir / "m.json"));
  EXPECT_TRUE(m["models"]["popular"]["overall"].contains("ndcg@10"));
  EXPECT_TRUE(m["models"]["itemknn"]["overall"].contains("precision@10"));
  EXPECT_TRUE(m["models"]["itemknn"]["by_domain"].contains("books"));
}

TEST_F(CliTest, MalformedInputNamesFileLineAndColumn) {
  write("interactions.csv", "user,item,rating\nu1,i1,5\nu2,i2,notanumber\n");
  Result r = run("import " + dir.string());
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("interactions.csv:3:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
  Result skip = run("import " + dir.string() + " --on-error skip");
  EXPECT_EQ(skip.status, 0) << skip.out;
  EXPECT_NE(skip.out.find("skipped 1"), std::string::npos) << skip.out;
}

TEST_F(CliTest, BadModelSpecAndMissingModelAreClearErrors) {
  Result r = run("eval synthetic:users=200,items=50 -m ials:factorz=3");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("unknown parameter 'factorz'"), std::string::npos) << r.out;
  Result m =
      run("recommend --model " + (dir / "nope").string() + " --data synthetic:users=200,items=50 --user u0");
  EXPECT_EQ(m.status, 1);
  EXPECT_NE(m.out.find("does not exist"), std::string::npos) << m.out;
}

TEST_F(CliTest, DiversityUsesTextVectorsFromEmbed) {
  const std::string data = "synthetic:users=300,items=60";
  const std::string vecs = (dir / "emb.safetensors").string();
  Result e = run("embed " + data + " --encoder tfidf:dim=32 --cache-dir " + (dir / "cache").string() +
                 " -o " + vecs);
  ASSERT_EQ(e.status, 0) << e.out;
  Result text =
      run("eval " + data + " -m itemknn --item-vectors " + vecs + " -o " + (dir / "t.json").string());
  ASSERT_EQ(text.status, 0) << text.out;
  Result cats = run("eval " + data + " -m itemknn -o " + (dir / "c.json").string());
  ASSERT_EQ(cats.status, 0) << cats.out;
  const double d_text =
      nlohmann::json::parse(std::ifstream(dir / "t.json"))["models"]["itemknn"]["overall"]["diversity@10"];
  const double d_cats =
      nlohmann::json::parse(std::ifstream(dir / "c.json"))["models"]["itemknn"]["overall"]["diversity@10"];
  // Same lists, different item vectors: both in [0, 2] and not the same number.
  EXPECT_GT(d_text, 0.0);
  EXPECT_LE(d_text, 2.0);
  EXPECT_NE(d_text, d_cats);
  Result bad = run("eval " + data + " -m popular --item-vectors " + (dir / "missing.safetensors").string());
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("missing.safetensors"), std::string::npos) << bad.out;
}

TEST_F(CliTest, RealDataImportSplitEvalWithSeeds) {
  const std::string ml = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
  if (!fs::exists(ml + "/u.data")) GTEST_SKIP() << "../shared/data/movielens_ml-100k is absent";
  const std::string xdb = (dir / "ml.xdb").string();
  Result imp = run("import " + ml + " -o " + xdb);
  ASSERT_EQ(imp.status, 0) << imp.out;
  EXPECT_NE(imp.out.find("943 users, 1682 items, 100000 interactions"), std::string::npos) << imp.out;
  EXPECT_NE(imp.out.find("lines/s"), std::string::npos) << imp.out;
  Result ev =
      run("eval " + xdb + " -m popular -m ease --seeds 3 --threads 2 -o " + (dir / "m.json").string());
  ASSERT_EQ(ev.status, 0) << ev.out;
  auto m = nlohmann::json::parse(std::ifstream(dir / "m.json"));
  EXPECT_EQ(m["seeds"], 3);
  const double pop = m["models"]["popular"]["overall"]["ndcg@10"],
               ease = m["models"]["ease"]["overall"]["ndcg@10"];
  EXPECT_GT(ease, pop + 0.1);  // EASE is far above popularity on MovieLens
  EXPECT_GT(m["models"]["ease"]["ci95"]["ndcg@10"].get<double>(), 0.0);
  Result s = run("eval " + xdb + " -m ease --sampled 100 --threads 2 -o " + (dir / "s.json").string());
  ASSERT_EQ(s.status, 0) << s.out;
  auto sj = nlohmann::json::parse(std::ifstream(dir / "s.json"));
  // Sampled metrics are inflated: a target among 100 random negatives lands in the top 10 far more often than
  // among all 1,682 items.
  EXPECT_GT(sj["models"]["ease"]["overall"]["recall@10"].get<double>(),
            2 * m["models"]["ease"]["overall"]["recall@10"].get<double>());
  EXPECT_FALSE(sj["models"]["ease"]["overall"].contains("coverage@10"));
}

TEST_F(CliTest, TargetDomainProtocolRanksWithinItInTheHeadline) {
  // Cold users of films: the headline metrics rank films only, so they equal the films row.
  Result r =
      run("eval synthetic:users=600,items=100 --protocol cold-users --target-domain films -m popular "
          "--threads 2 -o " +
          (dir / "cold.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("within films"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "cold.json"));
  const auto& m = j["models"]["popular"];
  EXPECT_GT(m["overall"]["ndcg@10"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(m["overall"]["ndcg@10"].get<double>(), m["by_domain"]["films"]["ndcg@10"].get<double>());
  EXPECT_FALSE(m["by_domain"].contains("books"));
  EXPECT_TRUE(m["overall"].contains("tied_share"));
  EXPECT_EQ(j["target_domain"], "films");
}

TEST_F(CliTest, SequenceModelReadsTimestampsUnderLeaveLastOut) {
  // Users walk along a fixed cycle of 30 items; the rows are written newest first, so only the timestamps
  // give the order. The last item of each walk is the test target: it follows from the walk's order, not from
  // the set of items (popularity is flat).
  std::string csv = "user,item,timestamp\n";
  uint64_t state = 7;
  for (int u = 0; u < 200; ++u) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int start = int((state >> 33) % 30);
    for (int t = 9; t >= 0; --t)
      csv += "u" + std::to_string(u) + ",i" + std::to_string((start + t) * 7 % 30) + "," +
             std::to_string(1000 + 10 * t) + "\n";
  }
  write("interactions.csv", csv);
  const std::string spec =
      "sasrec:dim=16,epochs=30,batch=32,negatives=29,lr=0.005,warmup=10,dropout=0.1,min_steps=0";
  Result r = run("eval " + dir.string() + " --protocol leave-last-out -m " + spec +
                 " -m popular --threads 2 -o " + (dir / "m.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "m.json"));
  EXPECT_EQ(j["fit_on"], "train+validation");
  EXPECT_EQ(j["scored_on"], "test");
  const double seq = j["models"][spec]["overall"]["hr@10"].get<double>();
  const double pop = j["models"]["popular"]["overall"]["hr@10"].get<double>();
  EXPECT_GT(seq, 0.9) << r.out;
  EXPECT_LT(pop, seq - 0.25) << r.out;
  // A new user's history keeps its order through `recommend --history`: positions 3, 4, 5 of the cycle
  // (items 21, 28, 5) are followed by position 6 (item 12); reversed, by position 2 (item 14) no longer.
  Result t = run("train " + dir.string() + " -m " + spec + " --threads 2 -o " + (dir / "model").string());
  ASSERT_EQ(t.status, 0) << t.out;
  Result rec = run("recommend --model " + (dir / "model").string() + " --data " + dir.string() +
                   " --history i21,i28,i5 -k 1 --json --quiet");
  ASSERT_EQ(rec.status, 0) << rec.out;
  auto jr = nlohmann::json::parse(rec.out);
  EXPECT_EQ(jr[0]["items"][0]["item"], "i12") << rec.out;
  // Tuning: fitted on train, scored on the validation part.
  Result v =
      run("eval " + dir.string() + " --protocol leave-last-out --val 0.5 --on-validation -m popular -o " +
          (dir / "v.json").string());
  ASSERT_EQ(v.status, 0) << v.out;
  auto jv = nlohmann::json::parse(std::ifstream(dir / "v.json"));
  EXPECT_EQ(jv["scored_on"], "validation");
  EXPECT_EQ(jv["fit_on"], "train");
}

TEST_F(CliTest, EvalDiversityGridTradesAccuracyForDiversity) {
  Result r = run("eval synthetic:users=600,items=150 -m ials --diversity 0.4,0.9 --quiet -o " +
                 (dir / "d.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("diversity re-ranking (MMR"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "d.json"));
  const auto& g = j["models"]["ials"]["diversity_grid"];
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0]["lambda"], 0.0);
  EXPECT_EQ(g[0]["metrics"]["ndcg@10"], j["models"]["ials"]["overall"]["ndcg@10"]);
  // More diversity, less accuracy: monotone along the grid on this data.
  for (size_t k = 1; k < g.size(); ++k) {
    EXPECT_GT(g[k]["metrics"]["diversity@10"].get<double>(),
              g[k - 1]["metrics"]["diversity@10"].get<double>());
    EXPECT_LT(g[k]["metrics"]["ndcg@10"].get<double>(), g[k - 1]["metrics"]["ndcg@10"].get<double>());
  }
  EXPECT_NE(run("eval synthetic:users=100,items=20 -m popular --diversity 1.5").status, 0);
  EXPECT_NE(run("eval synthetic:users=100,items=20 -m popular --diversity 0.5 --sampled 50").status, 0);
}

TEST_F(CliTest, ReplayComparesRoundsWithAndWithoutFeedback) {
  const std::string ml = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
  if (!fs::exists(ml + "/u.data")) GTEST_SKIP() << "../shared/data/movielens_ml-100k is absent";
  Result r = run("replay " + ml + " -m ials:factors=16 --rounds 3 --quiet -o " + (dir / "r.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "r.json"));
  ASSERT_EQ(j["rounds"].size(), 3u);
  EXPECT_EQ(j["train_interactions"].get<size_t>() + j["later_interactions"].get<size_t>(), 100000u);
  // Round 1 comes before any feedback: the three conditions give the same lists.
  const auto& r1 = j["rounds"][0];
  EXPECT_EQ(r1["no_feedback"], r1["feedback"]);
  EXPECT_EQ(r1["no_feedback"], r1["exclusion_only"]);
  EXPECT_EQ(r1["new_users"]["ndcg"], 0.0);  // nobody can serve a user before their first event
  // Later, new users are served only thanks to their feedback, and excluding taken items never hurts.
  const auto& all = j["all_rounds"];
  EXPECT_GT(all["new_users"]["ndcg"].get<double>(), 0.0);
  EXPECT_GE(all["exclusion_only"]["ndcg"].get<double>(), all["no_feedback"]["ndcg"].get<double>());
  EXPECT_GT(all["user_rounds"].get<size_t>(), 50u);
  Result bad = run("replay synthetic:users=50,items=10 --first 1.5");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("--first must be in (0, 1)"), std::string::npos) << bad.out;
}

TEST_F(CliTest, RatingTaskReportsRmseAndMae) {
  const std::string ml = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
  if (!fs::exists(ml + "/u.data")) GTEST_SKIP() << "../shared/data/movielens_ml-100k is absent";
  Result r = run("eval " + ml + " --task rating -m svd -m svdpp --quiet -o " + (dir / "r.json").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("rmse"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("f1@10"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "r.json"));
  EXPECT_EQ(j["task"], "rating");
  const double svd = j["models"]["svd"]["overall"]["rmse"], svdpp = j["models"]["svdpp"]["overall"]["rmse"];
  EXPECT_GT(svd, 0.85);
  EXPECT_LT(svd, 0.96);
  EXPECT_LT(svdpp, svd);
  EXPECT_GT(j["models"]["svd"]["overall"]["mae"].get<double>(), 0.6);
  Result bad = run("eval " + ml + " --task rating -m ials --quiet");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("does not predict ratings"), std::string::npos) << bad.out;
  EXPECT_NE(run("eval " + ml + " --task ratings -m svd --quiet").status, 0);
}

TEST_F(CliTest, TrainAndEvalWithAugmentation) {
  const std::string data = "synthetic:users=300,items=60";
  Result t = run("train " + data +
                 " -m ials:factors=8,iterations=3 --augment popular:domain=kitchen,per_user=2 -o " +
                 (dir / "m").string());
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_NE(t.out.find("augmented"), std::string::npos) << t.out;
  Result e = run("eval " + data +
                 " -m ials:factors=8,iterations=3 --augment gan:domain=kitchen,epochs=2 --quiet -o " +
                 (dir / "e.json").string());
  ASSERT_EQ(e.status, 0) << e.out;
  auto j = nlohmann::json::parse(std::ifstream(dir / "e.json"));
  const auto& m = j["models"]["ials:factors=8,iterations=3 +gan:domain=kitchen,epochs=2"];
  EXPECT_GT(m["augment"]["added"].get<double>(), 0);
  EXPECT_EQ(m["long_tail"]["recommended"].size(), 10u);
  EXPECT_TRUE(m["overall"].contains("serendipity@10"));
  Result bad = run("train " + data + " -m ials --augment vae -o " + (dir / "m2").string());
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("unknown generator"), std::string::npos) << bad.out;
}

TEST_F(CliTest, TrainResumeContinuesASavedModel) {
  const std::string data = "synthetic:users=300,items=60";
  ASSERT_EQ(
      run("train " + data + " -m ials:factors=8,iterations=3 --quiet -o " + (dir / "a").string()).status, 0);
  Result r =
      run("train " + data + " --resume " + (dir / "a").string() + " --sweeps 1 -o " + (dir / "b").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ials:"), std::string::npos) << r.out;
  EXPECT_EQ(run("recommend --model " + (dir / "b").string() + " --data " + data + " --user u1 -k 3").status,
            0);
  Result both =
      run("train " + data + " -m ials --resume " + (dir / "a").string() + " -o " + (dir / "c").string());
  EXPECT_NE(both.status, 0);
  EXPECT_NE(both.out.find("leave out -m"), std::string::npos) << both.out;
  // The SGD models resume too; a text model re-creates its encoder (tfidf here: the same texts give the same
  // vector space) for the items it reads through text.
  ASSERT_EQ(run("train " + data + " -m bpr:factors=8,epochs=3 --quiet -o " + (dir / "bpr").string()).status,
            0);
  Result bpr = run("train " + data + " --resume " + (dir / "bpr").string() + " --sweeps 2 -o " +
                   (dir / "bpr2").string());
  ASSERT_EQ(bpr.status, 0) << bpr.out;
  EXPECT_NE(bpr.out.find("resumed from"), std::string::npos) << bpr.out;
  ASSERT_EQ(run("train " + data + " -m hybrid:factors=8,epochs=2 --encoder tfidf --quiet -o " +
                (dir / "h").string())
                .status,
            0);
  Result hyb =
      run("train " + data + " --resume " + (dir / "h").string() + " --sweeps 1 -o " + (dir / "h2").string());
  ASSERT_EQ(hyb.status, 0) << hyb.out;
  EXPECT_NE(hyb.out.find("with text vectors from tfidf"), std::string::npos) << hyb.out;
  ASSERT_EQ(run("train " + data + " -m twotower:factors=8,hidden=8,epochs=1 --encoder tfidf --quiet -o " +
                (dir / "t").string())
                .status,
            0);
  Result tt =
      run("train " + data + " --resume " + (dir / "t").string() + " --sweeps 1 -o " + (dir / "t2").string());
  ASSERT_EQ(tt.status, 0) << tt.out;
  EXPECT_NE(tt.out.find("resumed from"), std::string::npos) << tt.out;
  EXPECT_EQ(run("recommend --model " + (dir / "t2").string() + " --data " + data + " --user u1 -k 3").status,
            0);
  ASSERT_EQ(run("train " + data + " -m popular --quiet -o " + (dir / "p").string()).status, 0);
  Result pop = run("train " + data + " --resume " + (dir / "p").string() + " -o " + (dir / "q").string());
  EXPECT_NE(pop.status, 0);
  EXPECT_NE(pop.out.find("no incremental update"), std::string::npos) << pop.out;
}

TEST_F(CliTest, PrivacyEpsilonMatchesTheFixtureAndNoiseInvertsIt) {
  const fs::path fixture = fs::path(XDREC_SHARED_DATA) / ".." / "fixtures" / "dp" / "rdp_reference.jsonl";
  if (!fs::exists(fixture)) GTEST_SKIP() << "no fixture at " << fixture;
  // The first number printed is epsilon (at least 10 significant digits), then the order.
  auto first_number = [](const std::string& out) {
    const size_t p = out.find_first_of("0123456789");
    return p == std::string::npos ? -1.0 : std::stod(out.substr(p));
  };
  std::ifstream in(fixture);
  std::string line;
  size_t rows = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    char args[256];
    std::snprintf(args, sizeof args, "privacy epsilon --q %.17g --noise %.17g --steps %lld --delta %.17g",
                  j["q"].get<double>(), j["noise_multiplier"].get<double>(),
                  static_cast<long long>(j["steps"].get<int64_t>()), j["delta"].get<double>());
    for (std::string conv : {"classic", "improved"}) {
      Result r = run(std::string(args) + " --conversion " + conv);
      ASSERT_EQ(r.status, 0) << r.out;
      const double want = j["epsilon_" + conv];
      EXPECT_NEAR(first_number(r.out), want, 1e-9 * want) << args << " " << conv << ": " << r.out;
      EXPECT_NE(r.out.find(" order " + std::to_string(j["order_" + conv].get<int>()) + " "),
                std::string::npos)
          << r.out;
    }
    ++rows;
  }
  EXPECT_EQ(rows, 8u);
  Result d = run("privacy epsilon --q 0.01 --noise 1.1 --steps 1000 --delta 1e-5");  // classic by default
  EXPECT_EQ(d.out.rfind("epsilon 2.0867961135", 0), 0u) << d.out;
  Result n = run("privacy noise --q 0.01 --steps 1000 --delta 1e-5 --epsilon 2.086796113574304");
  ASSERT_EQ(n.status, 0) << n.out;
  EXPECT_NEAR(first_number(n.out), 1.1, 1e-7) << n.out;
  Result frac = run("privacy epsilon --q 0.01 --noise 1.1 --steps 1000 --delta 1e-5 --orders 4.5,10.25");
  ASSERT_EQ(frac.status, 0) << frac.out;
  EXPECT_NE(frac.out.find(" order 10.25 "), std::string::npos) << frac.out;
  EXPECT_GT(first_number(frac.out), 2.086796113574304);  // the integer optimum (order 10) is not among these
  Result bad = run("privacy epsilon --q 2 --noise 1 --steps 10 --delta 1e-5");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("sampling rate"), std::string::npos) << bad.out;
  EXPECT_NE(run("privacy noise --q 0.01 --steps 1000 --delta 1e-5 --epsilon 0.01").status, 0);
  EXPECT_NE(run("privacy epsilon --q 0.01 --steps 1000 --delta 1e-5").status, 0);  // --noise is required
}

TEST_F(CliTest, TrainWithDpSgdPrintsAndRecordsTheAccountantsEpsilon) {
  const std::string data = "synthetic:users=300,items=60";
  Result t =
      run("train " + data +
          " -m twotower:factors=8,hidden=16,epochs=2,dp_noise=1.1,dp_clip=1.0,dp_delta=1e-5,dp_users=30"
          " --threads 2 -o " +
          (dir / "m").string());
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_NE(t.out.find("privacy: epsilon "), std::string::npos) << t.out;
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "m" / "manifest.json"));
  const auto& p = manifest["extra"]["privacy"];
  char args[256];
  std::snprintf(args, sizeof args, "privacy epsilon --q %.17g --noise %.17g --steps %lld --delta %.17g",
                p["q"].get<double>(), p["noise"].get<double>(),
                static_cast<long long>(p["steps"].get<int64_t>()), p["delta"].get<double>());
  Result e = run(args);
  ASSERT_EQ(e.status, 0) << e.out;
  const double cli_eps = std::stod(e.out.substr(e.out.find_first_of("0123456789")));
  EXPECT_NEAR(p["epsilon"].get<double>(), cli_eps, 1e-9 * cli_eps) << e.out;
  // A target epsilon is met.
  Result g = run("train " + data + " -m twotower:factors=8,hidden=16,epochs=2,dp_epsilon=4,dp_users=30 -o " +
                 (dir / "m4").string());
  ASSERT_EQ(g.status, 0) << g.out;
  const auto m4 = nlohmann::json::parse(std::ifstream(dir / "m4" / "manifest.json"));
  EXPECT_LE(m4["extra"]["privacy"]["epsilon"].get<double>(), 4.0 + 1e-6);
}

TEST_F(CliTest, FederatedTrainPrintsEpsilonAndTraffic) {
  Result t = run("train synthetic:users=300,items=60 -m fcf:factors=8,rounds=20,clients=30,dp_noise=1.1 -o " +
                 (dir / "f").string());
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_NE(t.out.find("DP on the federated aggregate"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("federated: 20 rounds"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("(masked;"), std::string::npos) << t.out;
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "f" / "manifest.json"));
  const auto& p = manifest["extra"]["privacy"];
  EXPECT_EQ(p["steps"].get<int64_t>(), 20);
  char args[256];
  std::snprintf(args, sizeof args, "privacy epsilon --q %.17g --noise 1.1 --steps 20 --delta 1e-5",
                p["q"].get<double>());
  Result e = run(args);
  ASSERT_EQ(e.status, 0) << e.out;
  const double cli_eps = std::stod(e.out.substr(e.out.find_first_of("0123456789")));
  EXPECT_NEAR(p["epsilon"].get<double>(), cli_eps, 1e-9 * cli_eps) << e.out;
  // A bad option is one clear line.
  Result bad = run("train synthetic:users=300,items=60 -m fcf:optimiser=lbfgs -o " + (dir / "g").string());
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("optimiser"), std::string::npos) << bad.out;
}

TEST_F(CliTest, DpFlagsSetTheModelsDeltaAndTargetEpsilon) {
  const std::string data = "synthetic:users=300,items=60";
  // train: --dp-epsilon / --dp-delta turn DP-SGD on; epsilon is printed and stored in the manifest.
  Result t = run("train " + data +
                 " -m hybrid:factors=8,epochs=2,lr=0.2,dp_users=30 --dp-epsilon 4 --dp-delta 1e-6" +
                 " --quiet -o " + (dir / "h").string());
  ASSERT_EQ(t.status, 0) << t.out;
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "h" / "manifest.json"));
  const auto& p = manifest["extra"]["privacy"];
  ASSERT_TRUE(p.is_object()) << manifest.dump();
  const double eps = p["epsilon"].get<double>();
  EXPECT_LE(eps, 4.0 + 1e-6);
  EXPECT_GT(eps, 4.0 - 1e-3);
  EXPECT_EQ(p["delta"].get<double>(), 1e-6);
  EXPECT_NE(t.out.find("privacy: epsilon " + p["epsilon"].dump()), std::string::npos) << t.out;
  EXPECT_NE(manifest["spec"].get<std::string>().find("dp_epsilon=4"), std::string::npos) << manifest["spec"];
  // --dp-delta alone: DP-SGD at the spec's noise, the flag's delta.
  Result d = run("train " + data +
                 " -m twotower:factors=8,hidden=16,epochs=1,dp_noise=1,dp_users=30 --dp-delta 1e-4" +
                 " --quiet -o " + (dir / "t").string());
  ASSERT_EQ(d.status, 0) << d.out;
  const auto mt = nlohmann::json::parse(std::ifstream(dir / "t" / "manifest.json"));
  EXPECT_EQ(mt["extra"]["privacy"]["delta"].get<double>(), 1e-4);
  EXPECT_NE(d.out.find("privacy: epsilon "), std::string::npos) << d.out;
  // eval prints each DP model's epsilon and puts it in the JSON.
  Result e = run("eval " + data + " -m hybrid:factors=8,epochs=2,dp_users=30 --dp-epsilon 2 --quiet -o " +
                 (dir / "e.json").string());
  ASSERT_EQ(e.status, 0) << e.out;
  EXPECT_NE(e.out.find("privacy (hybrid:"), std::string::npos) << e.out;
  const auto ej = nlohmann::json::parse(std::ifstream(dir / "e.json"));
  ASSERT_EQ(ej["models"].size(), 1u);
  EXPECT_LE(ej["models"].begin().value()["privacy"]["epsilon"].get<double>(), 2.0 + 1e-6);
  // A model without DP-SGD: a clear error naming the models that have it.
  Result bad = run("train " + data + " -m ials --dp-epsilon 4 -o " + (dir / "i").string());
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("model 'ials' has no DP-SGD training (models with it: "), std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find("hybrid"), std::string::npos) << bad.out;
  EXPECT_NE(run("train " + data + " -m hybrid --dp-delta 0.9 -o " + (dir / "x").string()).status, 0);
}
