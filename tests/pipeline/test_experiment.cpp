// The pipeline: the experiment runner (seeds, mean ± CI, evaluations, target domain, held-out candidates,
// single-domain runs, isolation), fit_model and the text-vector source.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "test_util.h"
#include "xdrec/pipeline.h"
#include "xdrec/synthetic.h"

using namespace xdrec;
namespace fs = std::filesystem;
using xdrec::testing_util::throws_error;

namespace {

const Dataset& data() {
  static const Dataset ds = [] {
    SyntheticOptions o;
    o.n_users = 500;
    o.items_per_domain = 120;
    o.seed = 3;
    return make_synthetic(o);
  }();
  return ds;
}

ExperimentOptions base(std::vector<std::string> specs) {
  ExperimentOptions x;
  x.protocol = "random";
  x.seeds = {1, 2, 3};
  x.threads = 2;
  for (auto& s : specs) x.models.push_back(ModelRun::of(s));
  return x;
}

}  // namespace

TEST(Experiment, MeanAndCiOverSeedsFromThePerSeedRuns) {
  Experiment exp(data(), base({"popular", "ials:iterations=3,factors=16"}));
  std::vector<std::string> seen;
  exp.on_run = [&](const RunRecord& r) { seen.push_back(r.key + "@" + std::to_string(r.seed)); };
  const ExperimentResult res = exp.run();
  EXPECT_EQ(res.keys, (std::vector<std::string>{"popular", "ials:iterations=3,factors=16"}));
  EXPECT_EQ(seen.size(), 6u);
  for (const auto& key : res.keys) {
    const auto& runs = res.runs.at(key);
    ASSERT_EQ(runs.size(), 3u);
    std::vector<double> v;
    for (const auto& r : runs) {
      EXPECT_TRUE(r.error.empty()) << r.error;
      v.push_back(r.metrics.at("ndcg@10"));
      // Per domain and per cohort, flattened.
      EXPECT_TRUE(r.metrics.count("films/ndcg@10")) << key;
      EXPECT_TRUE(r.metrics.count("head-items/recall@10")) << key;
      EXPECT_TRUE(r.metrics.count("tied_share")) << key;
      EXPECT_GT(r.metrics.at("fit_seconds"), 0.0);
    }
    const MeanCI want = mean_ci95(v);
    const MeanCI got = res.summary(key).at("ndcg@10");
    EXPECT_DOUBLE_EQ(got.mean, want.mean);
    EXPECT_DOUBLE_EQ(got.ci95, want.ci95);
    EXPECT_GT(got.ci95, 0.0) << "different splits per seed";
  }
  // iALS learns the taste structure, popularity does not.
  EXPECT_GT(res.summary(res.keys[1]).at("ndcg@10").mean, res.summary("popular").at("ndcg@10").mean);
  const nlohmann::json j = res.to_json();
  EXPECT_TRUE(j["popular"]["ndcg@10"].contains("mean"));
  EXPECT_TRUE(j["popular"]["ndcg@10"].contains("ci95"));
  EXPECT_NE(res.table({"ndcg@10", "tied_share"}).find("popular"), std::string::npos);
}

TEST(Experiment, ResultsDoNotDependOnIsolationOrThreads) {
  ExperimentOptions x = base({"ials:iterations=2,factors=8"});
  x.seeds = {5};
  const auto a = Experiment(data(), x).run();
  x.isolate = true;  // a forked worker per run
  x.threads = 1;
  const auto b = Experiment(data(), x).run();
  const auto& ma = a.runs.begin()->second.front().metrics;
  const auto& mb = b.runs.begin()->second.front().metrics;
  for (const auto& [k, v] : ma)
    if (k != "fit_seconds" && k != "eval_seconds" && k != "peak_rss_delta_mb") {
      EXPECT_EQ(mb.at(k), v) << k;
    }
}

TEST(Experiment, AFailingModelIsReportedNotFatal) {
  ExperimentOptions x = base({"popular", "no-such-model"});
  x.isolate = true;
  const ExperimentResult res = Experiment(data(), x).run();
  ASSERT_EQ(res.runs.at("no-such-model").size(), 1u) << "the remaining seeds are skipped";
  EXPECT_NE(res.runs.at("no-such-model")[0].error.find("unknown model"), std::string::npos);
  EXPECT_EQ(res.runs.at("popular").size(), 3u);
  ASSERT_EQ(res.notes.size(), 1u);
  EXPECT_TRUE(res.to_json().contains("popular"));
  EXPECT_FALSE(res.to_json().contains("no-such-model"));
}

TEST(Experiment, TargetDomainRanksWithinItInTheHeadline) {
  ExperimentOptions x = base({"popular"});
  x.protocol = "cold-users";
  x.target_domain = "films";
  x.seeds = {1};
  const ExperimentResult res = Experiment(data(), x).run();
  const auto& m = res.runs.at("popular")[0].metrics;
  EXPECT_GT(m.at("ndcg@10"), 0.0);
  EXPECT_DOUBLE_EQ(m.at("ndcg@10"), m.at("films/ndcg@10"));
  EXPECT_FALSE(m.count("books/ndcg@10"));
  EXPECT_TRUE(throws_error(
      [&] {
        x.target_domain = "music";
        Experiment(data(), x);
      },
      {"unknown domain 'music'"}));
}

TEST(Experiment, HeldOutCandidatesAndTiedPopularity) {
  ExperimentOptions x = base({"popular"});
  x.protocol = "cold-items";
  x.split.cold_ratio = 0.2;
  Evaluation cold;
  cold.name = "cold";
  cold.candidates = Evaluation::Candidates::kHeldOutItems;
  cold.options.per_domain = false;
  x.evaluations = {cold};
  const ExperimentResult res = Experiment(data(), x).run();
  const auto s = res.summary("popular");
  // Cold items have no training interactions: popularity ties them all, and the tie rule gives chance level.
  EXPECT_DOUBLE_EQ(s.at("cold/tied_share").mean, 1.0);
  EXPECT_LT(s.at("cold/ndcg@10").mean, 0.2);
  // A protocol without held-out items cannot rank among them.
  x.protocol = "random";
  const ExperimentResult bad = Experiment(data(), x).run();
  EXPECT_NE(bad.runs.at("popular")[0].error.find("holds out no items"), std::string::npos);
}

TEST(Experiment, SingleDomainRunsFitOneModelPerDomain) {
  ExperimentOptions x = base({"popular"});
  x.seeds = {1};
  ModelRun single = ModelRun::of("popular");
  single.single_domain = true;
  x.models.push_back(single);
  const ExperimentResult res = Experiment(data(), x).run();
  ASSERT_EQ(res.keys.size(), 2u);
  EXPECT_EQ(res.keys[1], "popular [single-domain]");
  const auto& m = res.runs.at(res.keys[1])[0].metrics;
  double sum = 0, n = 0;
  for (const char* d : {"books", "films", "kitchen"}) {
    ASSERT_TRUE(m.count(std::string(d) + "/ndcg@10")) << d;
    sum += m.at(std::string(d) + "/ndcg@10") * m.at(std::string(d) + "/n_users");
    n += m.at(std::string(d) + "/n_users");
  }
  EXPECT_NEAR(m.at("ndcg@10"), sum / n, 1e-12) << "overall: the user-weighted mean over domains";
}

TEST(Pipeline, TextVectorsOneRuleForEmptyTextAndFitModelUsesThem) {
  Dataset ds = data();
  ds.user_profile[0].text.clear();
  ds.item_text[5] = ItemText{};
  const fs::path cache = fs::temp_directory_path() / "xdrec-test-pipeline-cache";
  fs::remove_all(cache);
  TextOptions to;
  to.cache_dir = cache.string();
  to.threads = 2;
  TextVectorSource src(to);
  EXPECT_TRUE(src.available("tfidf:dim=16"));
  std::string why;
  EXPECT_FALSE(src.available("no-such-encoder", &why));
  EXPECT_FALSE(why.empty());
  const Split sp = make_split(ds, "random", SplitOptions{});
  EXPECT_FALSE(src.has(ds, &sp, "tfidf:dim=16"));
  const TextVectors& tv = src.get(ds, &sp, "tfidf:dim=16");
  EXPECT_TRUE(src.has(ds, &sp, "tfidf:dim=16"));
  EXPECT_EQ(&src.get(ds, &sp, "tfidf:dim=16"), &tv) << "made once";
  ASSERT_EQ(tv.items.rows, ds.n_items());
  ASSERT_EQ(tv.users.rows, ds.n_users());
  auto zero = [](const Matrix& m, size_t r) {
    for (size_t k = 0; k < m.cols; ++k)
      if (m(r, k) != 0.0f) return false;
    return true;
  };
  EXPECT_TRUE(zero(tv.items, 5)) << "an item without text gets a zero row";
  EXPECT_TRUE(zero(tv.users, 0)) << "a user without a profile gets a zero row";
  EXPECT_FALSE(zero(tv.items, 6));
  EXPECT_EQ(tv.items_with_text, ds.n_items() - 1);

  FitRequest req;
  req.spec = "textbridge";
  req.text = &tv;
  const Csr train = ds.user_item_matrix(sp.train);
  Fitted f = fit_model(ds, train, req);
  EXPECT_TRUE(f.model->uses_text());
  EXPECT_EQ(f.model->text_encoder(), tv.encoder_spec);
  EXPECT_GE(f.seconds, 0.0);
  fs::remove_all(cache);
}

TEST(Pipeline, CostBeforeWorkRefusesWhatCannotFitAndNamesWhatCan) {
  DataShape shape;
  shape.n_users = 100000;
  shape.n_items = 38000;
  shape.nnz = 2000000;
  const ModelCost ease = estimate_model_cost("ease", shape);
  EXPECT_GT(ease.bytes, uint64_t{10} << 30) << "a dense 38k x 38k item matrix";
  const size_t eight_gib = size_t{8} << 30;
  EXPECT_TRUE(throws_error([&] { check_cost("ease", ease, shape, eight_gib); },
                           {"model 'ease' needs about", "GiB", "38000 items", "8.0 GiB are available",
                            "Models that fit:", "popular"}));  // the smallest ones are named
  // What fits is not refused.
  check_cost("ials", estimate_model_cost("ials", shape), shape, eight_gib);
  // An experiment refuses such a model before any fit, and runs the others.
  ExperimentOptions x = base({"popular", "ease"});
  x.seeds = {1};
  std::vector<std::string> order;
  Experiment exp(data(), x);
  exp.on_run = [&](const RunRecord& r) { order.push_back(r.key + (r.error.empty() ? "" : " refused")); };
  const ExperimentResult res = exp.run();  // fits here: nothing refused
  EXPECT_EQ(order, (std::vector<std::string>{"popular", "ease"}));
}
