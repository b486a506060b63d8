// DP-SGD for the two-tower model: the guarantee in the manifest is the accountant's for the q, noise and
// steps the model used; a target epsilon is met; without noise and clipping the user-sampled training
// learns as well as the usual minibatch training; noise costs accuracy; the result is thread independent.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

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

// The held-out AUC of the suite's data.
double held_out_auc(const Recommender& model) {
  return testing_util::held_out_auc(model, data());
}

std::unique_ptr<Recommender> fit(const std::string& spec, int threads = 1) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.seed = 1;
  ctx.threads = threads;
  m->fit(data().train, ctx);
  return m;
}

nlohmann::json privacy_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return extra.contains("privacy") ? extra["privacy"] : nlohmann::json();
}

const std::string kBase = "twotower:factors=16,hidden=32,epochs=6,lr=0.01,id_dropout=0,dropout=0";

}  // namespace

TEST(TwoTowerDp, ManifestEpsilonIsTheAccountants) {
  auto m = fit(kBase + ",dp_noise=1.1,dp_clip=1,dp_delta=1e-5,dp_users=30");
  const nlohmann::json p = privacy_of(*m);
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["unit"], "user");
  EXPECT_DOUBLE_EQ(p["q"].get<double>(), 0.1);  // 30 of 300 users
  EXPECT_EQ(p["steps"].get<int64_t>(), 60);     // 6 epochs / q
  EXPECT_EQ(p["noise"].get<double>(), 1.1);
  const privacy::Epsilon e = privacy::compute_epsilon(0.1, 1.1, 60, 1e-5);
  EXPECT_EQ(p["epsilon"].get<double>(), e.epsilon);
  EXPECT_EQ(p["order"].get<double>(), e.order);
  EXPECT_GT(e.epsilon, 0.0);
  // Saved and loaded, the guarantee stays with the model.
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  auto loaded = create_model(m->spec());
  loaded->load(t, extra);
  EXPECT_EQ(privacy_of(*loaded), p);
}

TEST(TwoTowerDp, TargetEpsilonIsMet) {
  auto m = fit(kBase + ",dp_epsilon=4,dp_users=30");
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

TEST(TwoTowerDp, WithoutNoiseOrClippingItLearnsLikeTheUsualTraining) {
  const double usual = held_out_auc(*fit(kBase));
  // About the usual minibatch's size (128 interactions of ~13 per user) and so about its number of steps.
  auto sampled = fit(kBase + ",dp=true,dp_noise=0,dp_clip=1e30,dp_users=10");
  const double dp0 = held_out_auc(*sampled);
  EXPECT_EQ(privacy_of(*sampled)["epsilon"], "inf");
  EXPECT_GT(usual, 0.8);
  EXPECT_NEAR(dp0, usual, 0.05) << "usual " << usual << " sampled " << dp0;
  EXPECT_TRUE(privacy_of(*fit(kBase)).is_null());
  // Heavy noise costs accuracy.
  const double noisy = held_out_auc(*fit(kBase + ",dp_noise=20,dp_clip=0.1,dp_users=30"));
  EXPECT_LT(noisy, dp0 - 0.05) << "noisy " << noisy << " sampled " << dp0;
}

TEST(TwoTowerDp, ThreadCountDoesNotChangeResults) {
  const std::string spec =
      "twotower:factors=16,hidden=32,epochs=2,lr=0.01,dp_noise=1,dp_users=50,id_dropout=0.25,dropout=0.1";
  auto a = fit(spec, 1), b = fit(spec, 2);
  Matrix sa, sb;
  std::vector<uint32_t> users{0, 1, 2, 150, 299};
  a->score(users, sa, 1);
  b->score(users, sb, 1);
  EXPECT_EQ(sa.data, sb.data);
}

TEST(TwoTowerDp, RatingLossIsRefused) {
  auto m = create_model("twotower:loss=rating,dp_noise=1,epochs=1");
  FitContext ctx;
  EXPECT_THROW(m->fit(data().train, ctx), Error);
}
