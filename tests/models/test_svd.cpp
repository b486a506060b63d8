// Rating prediction: svd and svdpp recover a low-rank rating matrix, fold in exactly, and reproduce
// Surprise's SVD / SVD++ on MovieLens 100k; evaluate_ratings against hand-computed RMSE / MAE.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "models/low_rank.h"
#include "xdrec/metrics.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using testing_util::LowRank;

double rmse_of_mean(const Csr& train, const Csr& test) {
  double mu = 0;
  for (float v : train.values) mu += v;
  mu /= double(train.nnz());
  double s = 0;
  for (float v : test.values) s += (v - mu) * (v - mu);
  return std::sqrt(s / double(test.nnz()));
}

}  // namespace

TEST(Svd, RecoversALowRankRatingMatrix) {
  const LowRank d;
  const double base = rmse_of_mean(d.train, d.test);
  for (const std::string spec :
       {"svd:factors=8,epochs=80,lr=0.01,reg=0.05", "svdpp:factors=8,epochs=80,lr=0.01,reg=0.05"}) {
    auto m = create_model(spec);
    ASSERT_TRUE(m->predicts_ratings());
    FitContext ctx;
    m->fit(d.train, ctx);
    const EvalResult r = evaluate_ratings(*m, d.test, nullptr);
    EXPECT_LT(r.overall.at("rmse"), 0.6 * base) << spec << " (the global mean gives " << base << ")";
    EXPECT_EQ(r.overall.at("n_ratings"), double(d.test.nnz()));
    // predict() is the score, clipped to the training range.
    Matrix s;
    const uint32_t u[1] = {3};
    m->score(u, s, 1);
    for (uint32_t i = 0; i < 20; ++i) EXPECT_FLOAT_EQ(m->predict(3, i), std::clamp(s(0, i), 1.0f, 5.0f));
  }
}

TEST(Svd, FoldInOfAUsersOwnRatingsPredictsThemAsWellAsTraining) {
  const LowRank d;
  auto m = create_model("svd:factors=8,epochs=80,lr=0.01,reg=0.05");
  FitContext ctx;
  m->fit(d.train, ctx);
  // Fold user 7's training ratings in as a new user: the ridge solution fits them about as well as the
  // trained vector (it is the exact minimiser of the user's regularised squared error).
  const uint32_t u = 7;
  const auto idx = d.train.row_indices(u);
  std::vector<float> w(d.train.values.begin() + long(d.train.indptr[u]),
                       d.train.values.begin() + long(d.train.indptr[u + 1]));
  const uint32_t nu = m->fold_in(m->n_users(), idx, w);
  double se_trained = 0, se_folded = 0;
  for (size_t k = 0; k < idx.size(); ++k) {
    se_trained += std::pow(m->predict(u, idx[k]) - w[k], 2);
    se_folded += std::pow(m->predict(nu, idx[k]) - w[k], 2);
  }
  EXPECT_LT(se_folded, se_trained * 1.5 + 1e-3);
  // A repeated item keeps its last rating: the same as giving it once.
  std::vector<uint32_t> twice(idx.begin(), idx.end());
  std::vector<float> w2 = w;
  twice.push_back(idx[0]);
  w2.push_back(w[0]);
  const uint32_t nu2 = m->fold_in(m->n_users(), twice, w2);
  for (uint32_t i = 0; i < 10; ++i) EXPECT_FLOAT_EQ(m->predict(nu2, i), m->predict(nu, i));
}

// A fixed rating model: score(u, i) = u + i / 10.
class Fixed : public Recommender {
 public:
  std::string name() const override { return "fixed"; }
  std::string spec() const override { return "fixed"; }
  void fit(const Csr&, const FitContext&) override {}
  uint32_t n_users() const override { return 2; }
  uint32_t n_items() const override { return 3; }
  void score(std::span<const uint32_t> users, Matrix& out, int) const override {
    out.resize(users.size(), 3);
    for (size_t r = 0; r < users.size(); ++r)
      for (uint32_t i = 0; i < 3; ++i) out(r, i) = float(users[r]) + float(i) / 10;
  }
  uint32_t fold_in(uint32_t, std::span<const uint32_t>, std::span<const float>) override { return 0; }
  void save(TensorMap&, nlohmann::json&) const override {}
  void load(const TensorMap&, const nlohmann::json&) override {}
  bool predicts_ratings() const override { return true; }
};

TEST(EvaluateRatings, HandComputed) {
  // Test: (0,0)=1 -> pred 0.0 err -1; (0,2)=0 -> 0.2 err 0.2; (1,1)=2 -> 1.1 err -0.9.
  const std::vector<uint32_t> rows{0, 0, 1}, cols{0, 2, 1};
  const std::vector<float> vals{1.0f, 0.0f, 2.0f};
  const Csr test = Csr::from_triplets(2, 3, rows, cols, vals);
  Fixed m;
  const std::vector<uint8_t> cold{1, 0};
  const EvalResult r = evaluate_ratings(m, test, nullptr, cold);
  EXPECT_NEAR(r.overall.at("rmse"), std::sqrt((1 + 0.04 + 0.81) / 3), 1e-6);
  EXPECT_NEAR(r.overall.at("mae"), (1 + 0.2 + 0.9) / 3, 1e-6);
  EXPECT_NEAR(r.by_cohort.at("cold-users").at("rmse"), std::sqrt((1 + 0.04) / 2), 1e-6);
  EXPECT_NEAR(r.by_cohort.at("warm-users").at("mae"), 0.9, 1e-6);
  std::vector<std::pair<float, float>> pairs;
  evaluate_ratings(m, test, nullptr, {}, 1, &pairs, 10);
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_FLOAT_EQ(pairs[2].first, 1.1f);
  EXPECT_FLOAT_EQ(pairs[2].second, 2.0f);
  auto ials = create_model("ials");
  EXPECT_THROW(evaluate_ratings(*ials, test, nullptr), Error);  // a ranking model has no ratings to compare
}

// MovieLens 100k fold u1 (the first 20,000 lines of u.data are its test set): Surprise's SVD and SVD++
// settings land where Surprise reports them (5-fold: SVD 0.934, SVD++ 0.919; u1 is a little harder).
TEST(SvdMovieLens, SurpriseSettingsReproduceSurprise) {
  const std::string dir = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k";
  if (!std::filesystem::exists(dir + "/u.data")) GTEST_SKIP() << dir << " is absent";
  const Dataset ds = read_dataset(dir);
  ASSERT_EQ(ds.interactions.size(), 100000u);
  const std::vector<Interaction> test(ds.interactions.begin(), ds.interactions.begin() + 20000),
      train(ds.interactions.begin() + 20000, ds.interactions.end());
  const Csr tr = ds.user_item_matrix(train, true), te = ds.user_item_matrix(test, true);
  double rmse[2];
  for (int k = 0; k < 2; ++k) {
    auto m = create_model(k == 0 ? "svd" : "svdpp");
    FitContext ctx;
    m->fit(tr, ctx);
    rmse[k] = evaluate_ratings(*m, te, &ds).overall.at("rmse");
  }
  EXPECT_GT(rmse[0], 0.92);
  EXPECT_LT(rmse[0], 0.955);
  EXPECT_LT(rmse[1], rmse[0]);
}

// The two-tower model's rating mode (towers -> concatenation -> MLP -> sigmoid scaled to the rating range,
// squared error): predictions stay in the range and beat the global mean on the low-rank ratings.
TEST(TwoTowerRating, PredictsRatingsInTheRange) {
  const LowRank d;
  auto m = create_model("twotower:loss=rating,merge=mlp,epochs=40,factors=8");
  FitContext ctx;
  m->fit(d.train, ctx);
  ASSERT_TRUE(m->predicts_ratings());
  const EvalResult r = evaluate_ratings(*m, d.test, nullptr);
  EXPECT_LT(r.overall.at("rmse"), 0.9 * rmse_of_mean(d.train, d.test));
  Matrix s;
  const uint32_t u[1] = {0};
  m->score(u, s, 1);
  for (size_t i = 0; i < s.cols; ++i) {
    EXPECT_GE(s(0, i), 1.0f);
    EXPECT_LE(s(0, i), 5.0f);
  }
  EXPECT_FALSE(create_model("twotower")->predicts_ratings());
}
