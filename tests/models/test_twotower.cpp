// Two-tower model on a synthetic clustered data set whose item and user text vectors carry the cluster:
// both merges learn, cold items added from text alone are ranked high for the users of their cluster, a
// profile-only user gets their cluster's items, the model works without text, trains on ratings with
// squared error, and is independent of the thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "test_util.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

constexpr uint32_t kUsers = 400, kItems = 200, kClusters = 4, kPerUser = 12, kTextDim = 24;
constexpr uint32_t kCold = 5;  // per cluster: the last kCold items of each cluster are never seen in training

uint32_t item_cluster(uint32_t i) {
  return i % kClusters;
}
uint32_t user_cluster(uint32_t u) {
  return u % kClusters;
}
// Items kItems - kClusters*kCold .. kItems-1 are cold.
bool is_cold(uint32_t i) {
  return i >= kItems - kClusters * kCold;
}

struct Synthetic {
  Csr train;                   // warm items only (cold items have no interactions)
  std::vector<uint32_t> test;  // one held-out warm item per user
  Matrix item_text, user_text;
  Matrix centroids;
};

// Text: a large shared direction (as sentence encoders give) + the cluster's centroid + noise.
void text_vector(const Synthetic& s, Rng& rng, uint32_t cluster, float noise, float* out) {
  for (uint32_t j = 0; j < kTextDim; ++j) out[j] = 2.0f + s.centroids(cluster, j) + noise * rng.normal();
}

const Synthetic& data() {
  static const Synthetic s = [] {
    Synthetic d;
    Rng rng(77);
    d.centroids.resize(kClusters, kTextDim);
    for (auto& v : d.centroids.data) v = 0.6f * rng.normal();
    std::vector<uint32_t> rows, cols;
    d.test.resize(kUsers);
    for (uint32_t u = 0; u < kUsers; ++u) {
      std::vector<uint32_t> picked;
      while (picked.size() < kPerUser + 1) {
        uint32_t i = uint32_t(rng.below(kItems));
        if (rng.uniform() < 0.9) i = user_cluster(u) + kClusters * uint32_t(rng.below(kItems / kClusters));
        if (is_cold(i) || std::find(picked.begin(), picked.end(), i) != picked.end()) continue;
        picked.push_back(i);
      }
      d.test[u] = picked.back();
      picked.pop_back();
      for (uint32_t i : picked) rows.push_back(u), cols.push_back(i);
    }
    std::vector<float> ones(rows.size(), 1.0f);
    d.train = Csr::from_triplets(kUsers, kItems, rows, cols, ones);
    d.item_text.resize(kItems, kTextDim);
    for (uint32_t i = 0; i < kItems; ++i) text_vector(d, rng, item_cluster(i), 0.4f, d.item_text.row(i));
    d.user_text.resize(kUsers, kTextDim);
    for (uint32_t u = 0; u < kUsers; ++u) {
      if (u % 5 == 0) continue;  // some users have no profile
      text_vector(d, rng, user_cluster(u), 0.6f, d.user_text.row(u));
    }
    return d;
  }();
  return s;
}

std::unique_ptr<Recommender> fit(const std::string& spec, bool item_text, bool user_text, int threads = 1,
                                 const Csr* train = nullptr, const Matrix* itext = nullptr) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  ctx.seed = 3;
  ctx.text_encoder = "synthetic";
  if (item_text) ctx.item_text = itext ? itext : &data().item_text;
  if (user_text) ctx.user_text = &data().user_text;
  m->fit(train ? *train : data().train, ctx);
  return m;
}

Matrix scores(const Recommender& m, uint32_t n_users, int threads = 1) {
  std::vector<uint32_t> users(n_users);
  for (uint32_t u = 0; u < n_users; ++u) users[u] = u;
  Matrix s;
  m.score(users, s, threads);
  return s;
}

// Fraction of items scored below `item` for this user (1: ranked first).
double percentile(const float* s, uint32_t n, uint32_t item) {
  uint32_t below = 0;
  for (uint32_t i = 0; i < n; ++i) below += s[i] < s[item];
  return double(below) / double(n - 1);
}

// Mean percentile of each user's held-out item among the warm items the user has not seen (AUC-like).
double heldout_auc(const Recommender& m) {
  const Matrix s = scores(m, kUsers);
  double total = 0;
  for (uint32_t u = 0; u < kUsers; ++u) {
    const uint32_t t = data().test[u];
    double wins = 0, n = 0;
    for (uint32_t i = 0; i < kItems; ++i) {
      if (is_cold(i) || i == t || data().train.contains(u, i)) continue;
      wins += s(u, t) > s(u, i) ? 1.0 : (s(u, t) == s(u, i) ? 0.5 : 0.0);
      n += 1;
    }
    total += wins / n;
  }
  return total / kUsers;
}

// Mean percentile of the cold items of a user's own cluster, and of the other clusters, over all users.
std::pair<double, double> cold_item_percentiles(const Recommender& m) {
  const Matrix s = scores(m, kUsers);
  double mine = 0, other = 0;
  size_t nm = 0, no = 0;
  for (uint32_t u = 0; u < kUsers; ++u) {
    for (uint32_t i = 0; i < kItems; ++i) {
      if (!is_cold(i)) continue;
      const double p = percentile(s.row(u), kItems, i);
      if (item_cluster(i) == user_cluster(u)) {
        mine += p, ++nm;
      } else {
        other += p, ++no;
      }
    }
  }
  return {mine / double(nm), other / double(no)};
}

bool same(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

const char* kFast = "twotower:factors=16";

}  // namespace

TEST(TwoTower, BothMergesLearnWithAndWithoutText) {
  for (const char* merge : {"dot", "mlp"}) {
    for (bool text : {false, true}) {
      auto m = fit(std::string(kFast) + ",epochs=15,merge=" + merge, text, false);
      EXPECT_EQ(m->uses_text(), text);
      EXPECT_EQ(m->text_encoder(), text ? "synthetic" : "");
      const double auc = heldout_auc(*m);
      std::printf("merge=%s text=%d: held-out AUC %.4f\n", merge, int(text), auc);
      // Chance is 0.5; a model that knows the clusters is near 0.85 (10% of the picks are random).
      EXPECT_GT(auc, 0.75) << merge << " text=" << text;
    }
  }
}

TEST(TwoTower, ColdItemsFromTextRankHighForTheirCluster) {
  // Both merges on the raw text, and the dot merge on an autoencoder code of it.
  for (const char* variant : {"merge=dot,ae=0", "merge=mlp,ae=0", "merge=dot,ae=12"}) {
    // Trained on the warm items' text only (the cold items' rows are zero: no text), then the cold items are
    // added from their text.
    Matrix warm_text = data().item_text;
    for (uint32_t i = 0; i < kItems; ++i)
      if (is_cold(i)) std::fill(warm_text.row(i), warm_text.row(i) + kTextDim, 0.0f);
    // Drop the cold items from the catalogue: train on the first kItems - 20 items.
    const uint32_t n_warm = kItems - kClusters * kCold;
    Csr train = data().train;
    train.n_cols = n_warm;
    Matrix text_warm(n_warm, kTextDim);
    std::copy(warm_text.data.begin(), warm_text.data.begin() + size_t(n_warm) * kTextDim,
              text_warm.data.begin());
    auto m = fit(std::string(kFast) + ",epochs=15," + variant, true, false, 1, &train, &text_warm);
    ASSERT_EQ(m->n_items(), n_warm);
    for (uint32_t i = n_warm; i < kItems; ++i) {
      std::vector<float> v(data().item_text.row(i), data().item_text.row(i) + kTextDim);
      EXPECT_EQ(m->add_item(v, 0), i);
    }
    auto [mine, other] = cold_item_percentiles(*m);
    std::printf("%s: cold items' mean rank percentile %.3f for their cluster's users, %.3f for others\n",
                variant, mine, other);
    EXPECT_GT(mine, 0.75);
    EXPECT_LT(other, 0.5);
    // Wrong dimension and non-finite text are refused without adding an item.
    std::vector<float> bad(kTextDim + 1, 1.0f);
    EXPECT_THROW(m->add_item(bad, 0), Error);
    EXPECT_EQ(m->n_items(), kItems);
  }
}

TEST(TwoTower, ProfileOnlyUserGetsTheirClustersItems) {
  // With profiles in training (a profile input in the user tower) and without (the profile is pooled with
  // the history text).
  for (bool user_text : {true, false}) {
    auto m = fit(std::string(kFast) + ",epochs=15", true, user_text);
    Rng rng(123);
    int total = 0;
    for (uint32_t c = 0; c < kClusters; ++c) {
      std::vector<float> profile(kTextDim);
      text_vector(data(), rng, c, 0.6f, profile.data());
      const uint32_t u = m->fold_in_profile(m->n_users(), profile, {}, {});
      EXPECT_EQ(u + 1, m->n_users());
      Matrix s;
      std::vector<uint32_t> one{u};
      m->score(one, s, 1);
      auto top = top_k(s.row(0), kItems, 10, {}, {}, -1);
      int in_cluster = 0;
      for (auto& it : top) in_cluster += item_cluster(it.item) == c;
      total += in_cluster;
      EXPECT_GE(in_cluster, 8) << "cluster " << c << " user_text=" << user_text;
    }
    std::printf("user_text=%d: %d of 40 top-10 items of profile-only users in their cluster\n",
                int(user_text), total);
  }
}

TEST(TwoTower, SquaredErrorOnRatings) {
  // Ratings: 5 inside the user's cluster, 1 outside. The model must predict them on held-out pairs.
  const Synthetic& d = data();
  std::vector<uint32_t> rows, cols;
  std::vector<float> vals;
  for (uint32_t u = 0; u < kUsers; ++u)
    for (uint32_t i : d.train.row_indices(u)) {
      rows.push_back(u);
      cols.push_back(i);
      vals.push_back(item_cluster(i) == user_cluster(u) ? 5.0f : 1.0f);
    }
  const Csr ratings = Csr::from_triplets(kUsers, kItems, rows, cols, vals);
  auto m = fit(std::string(kFast) + ",loss=mse,epochs=40", true, false, 1, &ratings);
  const Matrix s = scores(*m, kUsers);
  double se = 0, base = 0;
  for (uint32_t u = 0; u < kUsers; ++u) {
    const uint32_t t = d.test[u];
    const double truth = item_cluster(t) == user_cluster(u) ? 5.0 : 1.0;
    se += std::pow(s(u, t) - truth, 2);
    base += std::pow(4.6 - truth, 2);  // about the mean rating
  }
  const double rmse = std::sqrt(se / kUsers), rmse_mean = std::sqrt(base / kUsers);
  std::printf("mse: held-out RMSE %.3f (mean predictor %.3f)\n", rmse, rmse_mean);
  EXPECT_LT(rmse, 0.5 * rmse_mean);
}

TEST(TwoTower, ThreadCountDoesNotChangeResults) {
  for (const char* merge : {"dot", "mlp"}) {
    // Wide enough hidden layers that the batches run on several threads.
    const std::string spec = std::string("twotower:factors=8,hidden=512,epochs=2,batch=200,merge=") + merge;
    auto a = fit(spec, true, true, 1), b = fit(spec, true, true, 2), c = fit(spec, true, true, 3);
    const Matrix sa = scores(*a, kUsers);
    EXPECT_TRUE(same(sa, scores(*b, kUsers, 2))) << merge;
    EXPECT_TRUE(same(sa, scores(*c, kUsers, 3))) << merge;
  }
}

TEST(TwoTower, AutoencoderCodesAreSavedWithTheModel) {
  auto m = fit("twotower:factors=8,epochs=3,ae=8,ae_epochs=5", true, true);
  EXPECT_TRUE(m->uses_text());
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  EXPECT_TRUE(t.count("text.ae.enc.w0"));
  auto l = create_model(m->spec());
  l->load(t, extra);
  EXPECT_TRUE(same(scores(*m, kUsers), scores(*l, kUsers)));
  // A cold item added to both gets the same scores.
  std::vector<float> v(data().item_text.row(3), data().item_text.row(3) + kTextDim);
  m->add_item(v, 0);
  l->add_item(v, 0);
  EXPECT_TRUE(same(scores(*m, kUsers), scores(*l, kUsers)));
}

TEST(TwoTower, RejectsMismatchedText) {
  auto m = create_model(kFast);
  FitContext ctx;
  Matrix short_text(kItems - 1, kTextDim, 1.0f);
  ctx.item_text = &short_text;
  EXPECT_TRUE(testing_util::throws_error([&] { m->fit(data().train, ctx); }, {"twotower", "item text"}));
  FitContext users_only;
  users_only.user_text = &data().user_text;
  EXPECT_TRUE(testing_util::throws_error([&] { m->fit(data().train, users_only); }, {"item text"}));
}

// The autoencoder setting is real: ae=0 and ae=64 are different models (on text wider than 64 dimensions),
// and a code not shorter than the text is an error rather than a silent drop.
TEST(TwoTower, AutoencoderSettingChangesTheModel) {
  // 96-d text: the suite's 24-d vectors repeated four times with a little noise per copy.
  constexpr size_t kWide = 96;
  Matrix wide(kItems, kWide);
  Rng rng(3);
  for (uint32_t i = 0; i < kItems; ++i)
    for (size_t j = 0; j < kWide; ++j) wide(i, j) = data().item_text(i, j % kTextDim) + 0.05f * rng.normal();
  auto fit_wide = [&](const std::string& spec) {
    auto m = create_model(spec);
    FitContext ctx;
    ctx.seed = 9;
    ctx.item_text = &wide;
    ctx.text_encoder = "wide";
    m->fit(data().train, ctx);
    return m;
  };
  auto plain = fit_wide("twotower:factors=8,epochs=2,merge=dot,ae=0");
  auto coded = fit_wide("twotower:factors=8,epochs=2,merge=dot,ae=64,ae_epochs=3");
  EXPECT_NE(plain->spec(), coded->spec());
  TensorMap tp, tc;
  nlohmann::json ep, ec;
  plain->save(tp, ep);
  coded->save(tc, ec);
  EXPECT_FALSE(tp.count("text.ae.enc.w0"));
  EXPECT_TRUE(tc.count("text.ae.enc.w0")) << "ae=64 on 96-d text must train an autoencoder";
  const Matrix a = scores(*plain, kUsers), b = scores(*coded, kUsers);
  float diff = 0;
  for (size_t k = 0; k < a.data.size(); ++k) diff = std::max(diff, std::fabs(a.data[k] - b.data[k]));
  EXPECT_GT(diff, 1e-3f) << "ae=0 and ae=64 gave the same scores";
}

TEST(TwoTower, AutoencoderNotShorterThanTheTextIsAnError) {
  for (int ae : {int(kTextDim), 64}) {
    auto m = create_model("twotower:factors=8,epochs=1,ae=" + std::to_string(ae));
    FitContext ctx;
    ctx.item_text = &data().item_text;
    EXPECT_TRUE(
        testing_util::throws_error([&] { m->fit(data().train, ctx); },
                                   {"twotower", "ae=" + std::to_string(ae), std::to_string(kTextDim)}));
    EXPECT_EQ(m->n_users(), 0u) << "a refused fit leaves the model unfitted";
  }
  // Without text there is nothing to encode: ae is not used and not checked.
  auto ids = create_model("twotower:factors=8,epochs=1,ae=64");
  FitContext ctx;
  ids->fit(data().train, ctx);
  EXPECT_FALSE(ids->uses_text());
}
