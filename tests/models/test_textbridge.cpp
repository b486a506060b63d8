// Text bridge: scores written out by hand on a tiny example; history in one domain (with no user active in
// both) brings the other domain's items of the same cluster; profile-only users; items added from text;
// per-domain centring against global centring when the domains' text has different means; the ridge
// alignment when the domains' text spaces differ by a permutation; save/load; thread count; errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "test_util.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using testing_util::throws_error;

constexpr size_t kDim = 16;

// Two domains of `per_domain` items each (item i of domain d is global item d * per_domain + i, cluster
// i % clusters). Text vectors: the domain's offset, plus a unit bump on the cluster's coordinate (in domain
// B on coordinate perm[cluster]), plus Gaussian noise. Users: u % 3 == 0 only in A, 1 only in B, 2 in both
// (with overlap = false nobody is in both: those users are A-only too); 85% of picks in the own cluster.
// Profiles: a shared offset plus the cluster's bump (on the A coordinate) plus noise.
struct TextWorld {
  uint32_t n_users = 300, per_domain = 60, clusters = 4, per_user = 8;
  bool overlap = true;
  std::vector<float> offset_a = std::vector<float>(kDim, 1.0f), offset_b = std::vector<float>(kDim, 1.0f);
  std::vector<uint32_t> perm{0, 1, 2, 3};
  float noise = 0.3f;
  uint64_t seed = 9;

  Csr train;
  std::vector<uint16_t> item_domain;
  Matrix item_text, user_text;

  uint32_t cluster_of_item(uint32_t i) const { return (i % per_domain) % clusters; }
  uint32_t cluster_of_user(uint32_t u) const { return (u / 3) % clusters; }
  void item_vector(Rng& rng, uint16_t d, uint32_t c, float* out) const {
    const auto& off = d == 0 ? offset_a : offset_b;
    for (size_t j = 0; j < kDim; ++j) out[j] = off[j] + noise * rng.normal();
    out[d == 0 ? c : perm[c]] += 1.0f;
  }
  void profile_vector(Rng& rng, uint32_t c, float* out) const {
    for (size_t j = 0; j < kDim; ++j) out[j] = 2.0f + 0.15f * rng.normal();
    out[c] += 1.0f;
  }

  void build() {
    Rng rng(seed);
    const uint32_t n_items = 2 * per_domain;
    item_domain.resize(n_items);
    item_text.resize(n_items, kDim);
    for (uint32_t i = 0; i < n_items; ++i) {
      item_domain[i] = uint16_t(i / per_domain);
      item_vector(rng, item_domain[i], cluster_of_item(i), item_text.row(i));
    }
    user_text.resize(n_users, kDim);
    std::vector<uint32_t> rows, cols;
    for (uint32_t u = 0; u < n_users; ++u) {
      profile_vector(rng, cluster_of_user(u), user_text.row(u));
      const uint32_t kind = u % 3;
      for (uint16_t d : {uint16_t(0), uint16_t(1)}) {
        const bool active = kind == 2 ? (overlap || d == 0) : kind == d;
        if (!active) continue;
        std::vector<uint32_t> picked;
        while (picked.size() < per_user) {
          uint32_t i = uint32_t(rng.below(per_domain));
          if (rng.uniform() < 0.85) i = i - i % clusters + cluster_of_user(u);
          if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
        }
        for (uint32_t i : picked) rows.push_back(u), cols.push_back(d * per_domain + i);
      }
    }
    std::vector<float> ones(rows.size(), 1.0f);
    train = Csr::from_triplets(n_users, n_items, rows, cols, ones);
  }
};

std::unique_ptr<Recommender> fit(const std::string& spec, const TextWorld& w, int threads = 1,
                                 bool with_profiles = true) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  ctx.item_domain = w.item_domain;
  ctx.item_text = &w.item_text;
  ctx.user_text = with_profiles ? &w.user_text : nullptr;
  ctx.text_encoder = "test-encoder";
  m->fit(w.train, ctx);
  return m;
}

Matrix score_one(const Recommender& m, uint32_t u) {
  Matrix s;
  m.score(std::vector<uint32_t>{u}, s, 1);
  return s;
}

Matrix score_all(const Recommender& m, int threads = 1) {
  std::vector<uint32_t> users(m.n_users());
  std::iota(users.begin(), users.end(), 0u);
  Matrix s;
  m.score(users, s, threads);
  return s;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// Number of the top-10 items of `domain` (history excluded) that belong to cluster c.
int top10_in_cluster(const TextWorld& w, const Matrix& s, std::span<const uint32_t> hist, int domain,
                     uint32_t c) {
  auto top = top_k(s.row(0), uint32_t(s.cols), 10, hist, w.item_domain, domain);
  int n = 0;
  for (auto& it : top) n += it.item < w.item_domain.size() && w.cluster_of_item(it.item) == c;
  return n;
}

// Fraction, over new users with 5 items of one cluster in domain A, of their domain-B top-10 that is in
// that cluster.
double cross_domain_precision(Recommender& m, const TextWorld& w) {
  double total = 0;
  int n = 0;
  for (uint32_t c = 0; c < w.clusters; ++c) {
    for (uint32_t start = 0; start < 3; ++start) {
      std::vector<uint32_t> hist;
      for (uint32_t r = 0; r < 5; ++r) hist.push_back((start + r) * w.clusters + c);
      const uint32_t u = m.fold_in(m.n_users(), hist, {});
      total += top10_in_cluster(w, score_one(m, u), hist, 1, c) / 10.0;
      ++n;
    }
  }
  return total / n;
}

}  // namespace

TEST(TextBridge, ScoresAreTheHandComputedDotProducts) {
  // Two domains with two items each, text in 2 dimensions; one user who has item 0 (weight 1) and item 2
  // (weight 3); no profiles.
  TextWorld w;
  w.item_domain = {0, 0, 1, 1};
  w.item_text.resize(4, 2);
  const float t[4][2] = {{3, 1}, {1, 1}, {0, 5}, {2, 3}};
  for (int i = 0; i < 4; ++i) w.item_text(i, 0) = t[i][0], w.item_text(i, 1) = t[i][1];
  std::vector<uint32_t> rows{0, 0, 1}, cols{0, 2, 2};
  std::vector<float> vals{1, 3, 1};
  w.train = Csr::from_triplets(2, 4, rows, cols, vals);
  // Per-domain centring: A mean (2, 1) -> items (1, 0), (-1, 0); B mean (1, 4) -> (-1, 1), (1, -1), each
  // then scaled to unit length. Popularity: log(1+n)/log(1+max n in the domain): item 0: 1, item 1: 0,
  // item 2: 1, item 3: 0.
  const double r = 1.0 / std::sqrt(2.0);
  const double f[4][2] = {{1, 0}, {-1, 0}, {-r, r}, {r, -r}};
  const double pop[4] = {1, 0, 1, 0};
  // User 0: (1 * f0 + 3 * f2) / 4.
  const double u0[2] = {(f[0][0] + 3 * f[2][0]) / 4, (f[0][1] + 3 * f[2][1]) / 4};
  for (const char* spec :
       {"textbridge:pop_weight=0.25,align=none", "textbridge:pop_weight=0.25,align=ridge"}) {
    auto m = fit(spec, w, 1, false);
    const Matrix s = score_one(*m, 0);
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(s(0, i), u0[0] * f[i][0] + u0[1] * f[i][1] + 0.25 * pop[i], 1e-6) << spec << " item " << i;
  }
  // Global centring: mean (1.5, 2.5).
  auto g = fit("textbridge:pop_weight=0,center=global,align=none", w, 1, false);
  double fg[4][2];
  for (int i = 0; i < 4; ++i) {
    const double x = t[i][0] - 1.5, y = t[i][1] - 2.5, n = std::sqrt(x * x + y * y);
    fg[i][0] = x / n, fg[i][1] = y / n;
  }
  const Matrix sg = score_one(*g, 0);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(sg(0, i), ((fg[0][0] + 3 * fg[2][0]) * fg[i][0] + (fg[0][1] + 3 * fg[2][1]) * fg[i][1]) / 4,
                1e-6);
  // A profile adds profile_weight times its feature (centred on the mean item: fewer than 20 profiles).
  std::vector<float> profile{4, 2};  // minus the global item mean (1.5, 2.5): (2.5, -0.5)
  auto p = fit("textbridge:pop_weight=0,profile_weight=2,align=none", w, 1, false);
  const uint32_t u = p->fold_in_profile(p->n_users(), profile, {}, {});
  const double pn = std::sqrt(2.5 * 2.5 + 0.25), px = 2.5 / pn, py = -0.5 / pn;
  const Matrix sp = score_one(*p, u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(sp(0, i), 2 * (px * f[i][0] + py * f[i][1]), 1e-6);
}

TEST(TextBridge, HistoryInOneDomainBringsTheOtherDomainsClusterWithoutAnySharedUser) {
  TextWorld w;
  w.overlap = false;
  w.offset_b.assign(kDim, -0.5f);
  w.build();
  for (const char* spec : {"textbridge", "textbridge:align=none"}) {
    auto m = fit(spec, w);
    EXPECT_GT(cross_domain_precision(*m, w), 0.9) << spec;
  }
}

TEST(TextBridge, ProfileOnlyUsersGetTheirClusterInEveryDomain) {
  TextWorld w;
  w.build();
  // Profiles are centred on the mean training profile (300 users have one), not on the item mean. Item
  // text is noisy here (noise of norm 1.2 against a cluster bump of 1), so a few items of other clusters
  // get in.
  auto m = fit("textbridge", w);
  Rng rng(4);
  std::vector<float> profile(kDim);
  for (uint32_t c = 0; c < w.clusters; ++c) {
    w.profile_vector(rng, c, profile.data());
    const Matrix s = score_one(*m, m->fold_in_profile(m->n_users(), profile, {}, {}));
    for (int d : {0, 1}) EXPECT_GE(top10_in_cluster(w, s, {}, d, c), 7) << "cluster " << c << " domain " << d;
  }
  // Profile and history together: a user whose history and profile agree.
  w.profile_vector(rng, 2, profile.data());
  std::vector<uint32_t> hist{2, 6, 10};
  const uint32_t u = m->fold_in_profile(m->n_users(), profile, hist, {});
  EXPECT_GE(top10_in_cluster(w, score_one(*m, u), hist, 1, 2), 8);
}

TEST(TextBridge, AddedItemsAreScoredLikeTrainingItemsWithTheSameText) {
  TextWorld w;
  w.build();
  auto m = fit("textbridge:pop_weight=0", w);
  const uint32_t n0 = m->n_items();
  const Matrix before = score_all(*m);
  // Re-adding item 70's raw text (domain B) gives a new item whose scores equal item 70's (up to the
  // rounding of a GEMM with one more column).
  std::vector<float> raw(w.item_text.row(70), w.item_text.row(70) + kDim);
  const uint32_t i = m->add_item(raw, 1);
  EXPECT_EQ(i, n0);
  EXPECT_EQ(m->n_items(), n0 + 1);
  const Matrix after = score_all(*m);
  for (uint32_t u = 0; u < w.n_users; ++u) {
    EXPECT_NEAR(after(u, i), before(u, 70), 1e-6) << u;
    for (uint32_t k = 0; k < n0; ++k) ASSERT_NEAR(after(u, k), before(u, k), 1e-6) << "old score changed";
  }
  // A new item of cluster 3 in domain B ranks among the 15 best B items (a cluster has 15 per domain) for
  // most cluster-3 users, and for few of the others.
  Rng rng(2);
  w.item_vector(rng, 1, 3, raw.data());
  const uint32_t j = m->add_item(raw, 1);
  const Matrix s = score_all(*m);
  int mine = 0, mine_top = 0, others = 0, others_top = 0;
  for (uint32_t u = 0; u < w.n_users; ++u) {
    int rank = 0;
    for (uint32_t k = w.per_domain; k < 2 * w.per_domain; ++k) rank += s(u, k) > s(u, j);
    const bool top = rank < 15;
    (w.cluster_of_user(u) == 3 ? mine : others) += 1;
    (w.cluster_of_user(u) == 3 ? mine_top : others_top) += top;
  }
  EXPECT_GT(mine_top, mine * 3 / 4);
  EXPECT_LT(others_top, others / 10);
  // Bad input leaves the model unchanged.
  EXPECT_TRUE(throws_error([&] { m->add_item(raw, 2); }, {"textbridge", "domain 2"}));
  std::vector<float> short_raw(kDim - 1, 1.0f);
  EXPECT_TRUE(throws_error([&] { m->add_item(short_raw, 0); }, {"textbridge", "dimensions"}));
  EXPECT_EQ(m->n_items(), n0 + 2);
}

TEST(TextBridge, PerDomainCentringBeatsGlobalCentringWhenTheDomainMeansDiffer) {
  // Domain B's text is shifted by 4 along the coordinates of clusters 0 and 1: after global centring the
  // shift dominates the features and drags A users towards the wrong B clusters.
  TextWorld w;
  w.overlap = false;
  for (size_t j : {0, 1}) w.offset_b[j] += 4.0f;
  w.build();
  auto domain = fit("textbridge:center=domain,align=none", w);
  auto global = fit("textbridge:center=global,align=none", w);
  const double pd = cross_domain_precision(*domain, w), pg = cross_domain_precision(*global, w);
  std::printf("domain-B top-10 precision of A-only users: per-domain centring %.3f, global %.3f\n", pd, pg);
  EXPECT_GT(pd, 0.9);
  EXPECT_GT(pd, pg + 0.2);
}

TEST(TextBridge, RidgeAlignmentLearnsADifferentTextSpaceFromSharedUsers) {
  // Domain B writes cluster c on coordinate perm[c]: text alone matches A's cluster 0 with B's cluster 1.
  // The alignment, learned on the users active in both domains, recovers the correspondence.
  TextWorld w;
  w.perm = {1, 2, 3, 0};
  w.build();
  auto plain = fit("textbridge:align=none", w);
  auto aligned = fit("textbridge:align=ridge", w);
  const double pp = cross_domain_precision(*plain, w), pa = cross_domain_precision(*aligned, w);
  std::printf("domain-B top-10 precision of A-only users, permuted text: no alignment %.3f, ridge %.3f\n", pp,
              pa);
  EXPECT_LT(pp, 0.3);
  EXPECT_GT(pa, 0.8);
  // A very strong penalty keeps the map at the identity.
  auto stiff = fit("textbridge:align=ridge,align_reg=1e6", w);
  EXPECT_LT(cross_domain_precision(*stiff, w), 0.3);
}

TEST(TextBridge, SaveLoadThreadsAndDeterminism) {
  TextWorld w;
  w.build();
  for (const char* spec :
       {"textbridge", "textbridge:align=none,center=global", "textbridge:ae=4,ae_epochs=5"}) {
    auto a = fit(spec, w, 1), b = fit(spec, w, 2);
    EXPECT_TRUE(bitwise_equal(score_all(*a, 1), score_all(*b, 2))) << spec;
    EXPECT_TRUE(bitwise_equal(score_all(*a, 1), score_all(*a, 3))) << spec;
    std::vector<float> raw(w.item_text.row(3), w.item_text.row(3) + kDim);
    a->add_item(raw, 0);
    a->fold_in_profile(a->n_users(), std::vector<float>(w.user_text.row(5), w.user_text.row(5) + kDim),
                       std::vector<uint32_t>{1, 61}, std::vector<float>{1, 2});
    const auto dir =
        std::filesystem::temp_directory_path() / ("xdrec_textbridge_" + std::to_string(::getpid()));
    save_model(*a, dir.string());
    auto l = load_model(dir.string());
    std::filesystem::remove_all(dir);
    EXPECT_EQ(l->spec(), a->spec());
    EXPECT_EQ(l->text_encoder(), "test-encoder");
    EXPECT_TRUE(bitwise_equal(score_all(*a), score_all(*l))) << spec;
    l->add_item(raw, 1);
    a->add_item(raw, 1);
    EXPECT_TRUE(bitwise_equal(score_all(*a), score_all(*l))) << spec;
  }
}

TEST(TextBridge, Errors) {
  TextWorld w;
  w.build();
  auto m = create_model("textbridge");
  FitContext ctx;
  ctx.item_domain = w.item_domain;
  EXPECT_TRUE(throws_error([&] { m->fit(w.train, ctx); }, {"textbridge", "item text"}));
  Matrix wrong(w.item_text.rows - 1, kDim);
  ctx.item_text = &wrong;
  EXPECT_TRUE(throws_error([&] { m->fit(w.train, ctx); }, {"textbridge", "item text"}));
  ctx.item_text = &w.item_text;
  Matrix wrong_users(w.n_users, kDim + 1);
  ctx.user_text = &wrong_users;
  EXPECT_TRUE(throws_error([&] { m->fit(w.train, ctx); }, {"textbridge", "user text"}));
  EXPECT_TRUE(throws_error([&] { m->fold_in(0, {}, {}); }, {"textbridge", "not fitted"}));
  EXPECT_TRUE(throws_error([] { create_model("textbridge:center=none"); }, {"center"}));
  auto f = fit("textbridge", w);
  std::vector<float> nan_profile(kDim, 0.0f);
  nan_profile[2] = std::nanf("");
  const uint32_t n = f->n_users();
  EXPECT_TRUE(
      throws_error([&] { f->fold_in_profile(n, nan_profile, {}, {}); }, {"textbridge", "non-finite"}));
  EXPECT_EQ(f->n_users(), n);
}

TEST(TextBridge, AutoencoderSettingIsSharedWithTheOtherTextModels) {
  TextWorld w;
  w.build();
  // The shared option names; `ae_dim`, the old name, is read as `ae` (saved specs carry it).
  const std::string spec = create_model("textbridge")->spec();
  for (const char* key : {"ae=0", "ae_hidden=256", "ae_noise=0.1", "ae_epochs=30"})
    EXPECT_NE(spec.find(key), std::string::npos) << key << " in " << spec;
  EXPECT_EQ(spec.find("ae_dim"), std::string::npos);
  EXPECT_EQ(create_model("textbridge:ae_dim=4")->spec(), create_model("textbridge:ae=4")->spec());
  EXPECT_TRUE(throws_error([] { create_model("textbridge:ae_dim=4,ae=8"); }, {"textbridge", "ae_dim", "ae"}));
  // A code not shorter than the text is an error naming the model, the value and the text dimension.
  const std::string dim = std::to_string(w.item_text.cols);
  EXPECT_TRUE(throws_error([&] { fit("textbridge:ae=" + dim, w); }, {"textbridge", "ae=" + dim, dim}));
}
