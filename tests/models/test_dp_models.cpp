// User-level DP-SGD for every model that has it (twotower, hybrid, sasrec, cfgan), through one suite: the
// guarantee in the manifest is the accountant's for the run's q, noise, steps and delta; a target epsilon is
// met closely from below; the private model still learns with moderate noise and clearly less with huge
// noise; results are fixed by the seed and independent of the thread count; the guarantee survives
// save/load. Per model also: twotower's user-sampled training without noise or clipping learns like its
// usual training; for sasrec and cfgan, with q = 1, one user and no noise or clipping, the DP step is the
// plain step; the losses DP-SGD cannot protect are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "models/clustered.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using testing_util::Data;
using testing_util::make_clustered;

const Data& data() {
  static const Data d = make_clustered(300, 120, 4, 14, 3);
  return d;
}

struct DpCase {
  std::string base;      // the model with its training settings, no dp_* key
  std::string moderate;  // dp_* keys of a run that should still learn
  std::string huge;      // dp_* keys of a run drowned in noise
  int epochs = 0;        // the base's epochs (steps = ceil(epochs / q))
};

std::ostream& operator<<(std::ostream& os, const DpCase& c) {
  return os << c.base;
}

std::unique_ptr<Recommender> fit(const std::string& spec, int threads = 1, uint64_t seed = 1) {
  return testing_util::fit_spec(spec, data().train, threads, seed);
}

nlohmann::json privacy_of(const Recommender& m) {
  const nlohmann::json extra = testing_util::saved_extra(m);
  return extra.contains("privacy") ? extra["privacy"] : nlohmann::json();
}

Matrix scores(const Recommender& m) {
  Matrix s;
  const std::vector<uint32_t> users{0, 1, 2, 150, 299};
  m.score(users, s, 1);
  return s;
}

class DpModel : public ::testing::TestWithParam<DpCase> {};
// The models whose learning under moderate noise is checked with the suite's data and settings (twotower
// has its own test: TwoTowerDp.WithoutNoiseOrClippingItLearnsLikeTheUsualTraining).
class DpLearning : public DpModel {};

TEST_P(DpModel, ManifestEpsilonIsTheAccountants) {
  const DpCase& c = GetParam();
  auto m = fit(c.base + ",dp_noise=1.1,dp_clip=1,dp_delta=1e-5,dp_users=30");
  const nlohmann::json p = privacy_of(*m);
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["unit"], "user");
  EXPECT_DOUBLE_EQ(p["q"].get<double>(), 0.1);  // 30 of 300 users
  EXPECT_EQ(p["steps"].get<int64_t>(), int64_t(c.epochs) * 10);
  EXPECT_EQ(p["noise"].get<double>(), 1.1);
  const privacy::Epsilon e = privacy::compute_epsilon(0.1, 1.1, int64_t(c.epochs) * 10, 1e-5);
  EXPECT_EQ(p["epsilon"].get<double>(), e.epsilon);
  EXPECT_EQ(p["order"].get<double>(), e.order);
  EXPECT_GT(e.epsilon, 0.0);
  // Saved and loaded, the guarantee stays with the model, and so do the scores.
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  auto loaded = create_model(m->spec());
  loaded->load(t, extra);
  EXPECT_EQ(privacy_of(*loaded), p);
  EXPECT_EQ(scores(*loaded).data, scores(*m).data);
  // Without DP there is no guarantee to report.
  EXPECT_TRUE(privacy_of(*fit(c.base)).is_null());
}

TEST_P(DpModel, TargetEpsilonIsMet) {
  auto m = fit(GetParam().base + ",dp_epsilon=4,dp_users=30");
  const nlohmann::json p = privacy_of(*m);
  ASSERT_TRUE(p.is_object());
  const double eps = p["epsilon"].get<double>();
  EXPECT_LE(eps, 4.0 + 1e-6);
  EXPECT_GT(eps, 4.0 - 1e-3);  // the smallest noise that reaches it, so no slack
  EXPECT_EQ(p["target_epsilon"].get<double>(), 4.0);
  const privacy::Epsilon e = privacy::compute_epsilon(p["q"].get<double>(), p["noise"].get<double>(),
                                                      p["steps"].get<int64_t>(), 1e-5);
  EXPECT_EQ(eps, e.epsilon);
}

TEST_P(DpLearning, LearnsWithModerateNoiseNotWithHugeNoise) {
  const DpCase& c = GetParam();
  const double plain = testing_util::held_out_auc(*fit(c.base), data());
  const double moderate = testing_util::held_out_auc(*fit(c.base + "," + c.moderate), data());
  const double huge = testing_util::held_out_auc(*fit(c.base + "," + c.huge), data());
  EXPECT_GT(plain, 0.75);
  EXPECT_GT(moderate, 0.7) << "plain " << plain << " moderate " << moderate;
  EXPECT_LT(huge, moderate - 0.08) << "moderate " << moderate << " huge " << huge;
}

TEST_P(DpModel, SeedFixesTheResultAndThreadsDoNotChangeIt) {
  const std::string spec = GetParam().base + ",dp_noise=1,dp_users=50";
  const Matrix a = scores(*fit(spec, 1)), b = scores(*fit(spec, 2)), c = scores(*fit(spec, 1, 2));
  EXPECT_EQ(a.data, b.data);
  EXPECT_NE(a.data, c.data);
}

const DpCase kTwoTower{"twotower:factors=16,hidden=32,epochs=6,lr=0.01,id_dropout=0,dropout=0", "", "", 6};
const DpCase kHybrid{"hybrid:factors=16,epochs=10,id_dropout=0,lr=0.2", "dp_noise=0.8,dp_users=100",
                     "dp_noise=100,dp_users=100", 10};
const DpCase kSasrec{
    "sasrec:dim=16,blocks=1,max_len=20,epochs=40,batch=32,negatives=30,lr=0.01,warmup=0,"
    "dropout=0.1,min_steps=0,user_state=mean",
    "dp_noise=0.6,dp_users=100", "dp_noise=100,dp_users=100", 40};
// cfgan: every update of either network is an accounted step, so twice the epochs.
const DpCase kCfgan{"cfgan:hidden=32,epochs=60,batch=8,lr_g=0.01,lr_d=0.01,alpha=1",
                    "dp_noise=0.6,dp_users=60", "dp_noise=100,dp_users=100", 120};

std::string case_name(const ::testing::TestParamInfo<DpCase>& info) {
  return info.param.base.substr(0, info.param.base.find(':'));
}

INSTANTIATE_TEST_SUITE_P(Models, DpModel, ::testing::Values(kTwoTower, kHybrid, kSasrec, kCfgan), case_name);
INSTANTIATE_TEST_SUITE_P(Models, DpLearning, ::testing::Values(kHybrid, kSasrec, kCfgan), case_name);

TEST(TwoTowerDp, WithoutNoiseOrClippingItLearnsLikeTheUsualTraining) {
  const std::string base = "twotower:factors=16,hidden=32,epochs=6,lr=0.01,id_dropout=0,dropout=0";
  const double usual = testing_util::held_out_auc(*fit(base), data());
  // About the usual minibatch's size (128 interactions of ~13 per user) and so about its number of steps.
  auto sampled = fit(base + ",dp=true,dp_noise=0,dp_clip=1e30,dp_users=10");
  const double dp0 = testing_util::held_out_auc(*sampled, data());
  EXPECT_EQ(privacy_of(*sampled)["epsilon"], "inf");
  EXPECT_GT(usual, 0.8);
  EXPECT_NEAR(dp0, usual, 0.05) << "usual " << usual << " sampled " << dp0;
  // Heavy noise on a small clip costs accuracy.
  const double noisy =
      testing_util::held_out_auc(*fit(base + ",dp_noise=20,dp_clip=0.1,dp_users=30"), data());
  EXPECT_LT(noisy, dp0 - 0.05) << "noisy " << noisy << " sampled " << dp0;
}

TEST(TwoTowerDp, RatingLossIsRefused) {
  auto m = create_model("twotower:loss=rating,dp_noise=1,epochs=1");
  FitContext ctx;
  EXPECT_THROW(m->fit(data().train, ctx), Error);
}

TEST(HybridDp, SquaredErrorIsRefused) {
  auto m = create_model("hybrid:loss=mse,dp_noise=1,epochs=1");
  FitContext ctx;
  EXPECT_THROW(m->fit(data().train, ctx), Error);
}

}  // namespace

namespace {

// One user whose history holds every item (so the plain fit samples negatives from the whole catalogue, as
// DP-SGD does), long enough for four max_len windows.
Csr one_user() {
  Csr x;
  x.n_rows = 1;
  x.n_cols = 24;
  for (uint32_t i = 0; i < x.n_cols; ++i) x.indices.push_back(i), x.values.push_back(1.0f);
  x.indptr = {0, x.n_cols};
  return x;
}

Matrix fit_scores(const std::string& spec, const Csr& x) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.seed = 3;
  m->fit(x, ctx);
  Matrix s;
  const std::vector<uint32_t> users{0};
  m->score(users, s, 1);
  return s;
}

// A DP-SGD step with q = 1 and one user is a plain step on the batch of that user's windows: the per-user
// gradient (every window, the user's own negatives) is the plain path's, and without noise or clipping the
// training is the same up to the order of the windows' float sums.
TEST(SasrecDp, OneUserGradientIsThePlainBatchGradient) {
  const Csr x = one_user();
  const std::string base =
      "sasrec:dim=16,blocks=1,max_len=6,epochs=5,batch=64,negatives=10,lr=0.01,warmup=2,dropout=0,clip=0,"
      "min_steps=0";
  const Matrix plain = fit_scores(base, x);
  const Matrix dp = fit_scores(base + ",dp=true,dp_noise=0,dp_clip=1e9,dp_users=1", x);
  ASSERT_EQ(plain.data.size(), dp.data.size());
  double diff = 0, scale = 0;
  for (size_t k = 0; k < plain.data.size(); ++k) {
    diff = std::max(diff, double(std::abs(plain.data[k] - dp.data[k])));
    scale = std::max(scale, double(std::abs(plain.data[k])));
  }
  EXPECT_LT(diff, 1e-4 * scale) << "max |plain - dp| " << diff << " of " << scale;
  // Clipped to a bound below the gradient's norm, every contribution is scaled down and training changes.
  auto m = create_model(base + ",dp=true,dp_noise=0,dp_clip=1e-3,dp_users=1");
  FitContext ctx;
  ctx.seed = 3;
  m->fit(x, ctx);
  EXPECT_EQ(privacy_of(*m)["clipped_fraction"].get<double>(), 1.0);
  auto unclipped = create_model(base + ",dp=true,dp_noise=0,dp_clip=1e9,dp_users=1");
  unclipped->fit(x, ctx);
  EXPECT_EQ(privacy_of(*unclipped)["clipped_fraction"].get<double>(), 0.0);
}

// cfgan without random masks or noise: with q = 1 and one user, the DP-SGD updates (discriminator, then
// generator, each on the user's batch of one) are the plain updates with batch=1.
TEST(CfganDp, OneUserUpdatesAreThePlainUpdates) {
  const Csr x = one_user();
  const std::string base = "cfgan:hidden=8,epochs=6,batch=1,lr_g=0.01,lr_d=0.01,pm=0,zr=0";
  const Matrix plain = fit_scores(base, x);
  const Matrix dp = fit_scores(base + ",dp=true,dp_noise=0,dp_clip=1e9,dp_users=1", x);
  ASSERT_EQ(plain.data.size(), dp.data.size());
  for (size_t k = 0; k < plain.data.size(); ++k) EXPECT_NEAR(plain.data[k], dp.data[k], 1e-5) << k;
  // Training moved the scores (the comparison is not between two untrained models).
  const Matrix untrained = fit_scores("cfgan:hidden=8,epochs=0", x);
  double moved = 0;
  for (size_t k = 0; k < plain.data.size(); ++k)
    moved = std::max(moved, double(std::abs(plain.data[k] - untrained.data[k])));
  EXPECT_GT(moved, 1e-2);
}

TEST(SasrecDp, BalanceIsRefused) {
  auto m = create_model("sasrec:balance=true,dp_noise=1,epochs=1");
  FitContext ctx;
  EXPECT_THROW(m->fit(data().train, ctx), Error);
}

}  // namespace
