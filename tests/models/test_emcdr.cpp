// EMCDR (per-domain iALS + ridge maps between the domains' user factors): users cold in a domain get that
// domain's items from their other domains' history, better than popularity and than one iALS fit on every
// domain; the maps solve their ridge normal equations and reproduce the identity between two copies of a
// domain; fold-in of a new user with one domain's history; save/load; thread-count independence; one domain
// is exactly the iALS model; Douban Book/Music cold users when the data is present.
#include <gtest/gtest.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "test_util.h"
#include "xdrec/metrics.h"
#include "xdrec/nn.h"
#include "xdrec/readers.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

using namespace xdrec;

namespace {

using testing_util::throws_error;

// Users and items of `n_domains` domains fall into the same `clusters` groups. Each of a user's picks in a
// domain is, with probability p_cluster, an item of the user's own cluster (with a popularity skew inside
// the cluster: the r-th item of a cluster has weight 1/(1+r)); with probability p_popular, an item of the
// whole domain drawn by the same skew (a taste for what is popular); otherwise any item. Item i of domain d
// is global item d * per_domain + i, of cluster i % clusters. A user makes per_user[d] picks in domain d, or
// with activity_spread = s > 0 a number drawn log-uniformly from 1 to s * per_user[d] (activity varies by
// orders of magnitude, as in real data). Users flagged cold lose every interaction in `cold_domain`: those
// go to test.
struct GenOptions {
  uint32_t n_users = 600, n_domains = 2, per_domain = 120, clusters = 4;
  std::vector<uint32_t> per_user{12, 6};
  double p_cluster = 0.85, p_popular = 0.0;
  double activity_spread = 0;
  double cold_ratio = 0.25;
  uint16_t cold_domain = 1;
  uint64_t seed = 11;
};

struct MultiDomain {
  uint32_t n_users = 0, per_domain = 0, clusters = 0;
  Csr train, test;
  std::vector<uint16_t> item_domain;
  std::vector<uint8_t> cold;
  uint32_t cluster_of_item(uint32_t i) const { return (i % per_domain) % clusters; }
  uint32_t cluster_of_user(uint32_t u) const { return u % clusters; }
};

MultiDomain make_multi_domain(const GenOptions& o) {
  MultiDomain d;
  d.n_users = o.n_users;
  d.per_domain = o.per_domain;
  d.clusters = o.clusters;
  Rng rng(o.seed);
  auto skewed_cdf = [](uint32_t n) {
    std::vector<double> cdf(n);
    double acc = 0;
    for (uint32_t r = 0; r < n; ++r) cdf[r] = (acc += 1.0 / (1.0 + r));
    return cdf;
  };
  auto draw = [&](const std::vector<double>& cdf) {
    const size_t r =
        size_t(std::lower_bound(cdf.begin(), cdf.end(), rng.uniform() * cdf.back()) - cdf.begin());
    return uint32_t(std::min(r, cdf.size() - 1));
  };
  const uint32_t in_cluster = o.per_domain / o.clusters;
  const std::vector<double> cluster_cdf = skewed_cdf(in_cluster), domain_cdf = skewed_cdf(o.per_domain);
  std::vector<uint32_t> tr_u, tr_i, te_u, te_i;
  d.cold.assign(o.n_users, 0);
  for (uint32_t u = 0; u < o.n_users; ++u) {
    d.cold[u] = rng.uniform() < o.cold_ratio;
    for (uint32_t dom = 0; dom < o.n_domains; ++dom) {
      uint32_t want = o.per_user[dom];
      if (o.activity_spread > 0)
        want =
            std::min(o.per_domain / 2,
                     1 + uint32_t(std::exp(rng.uniform() * std::log(o.activity_spread * o.per_user[dom]))));
      std::vector<uint32_t> picked;
      while (picked.size() < want) {
        const double x = rng.uniform();
        uint32_t i;
        if (x < o.p_cluster) {
          i = draw(cluster_cdf) * o.clusters + d.cluster_of_user(u);
        } else if (x < o.p_cluster + o.p_popular) {
          i = draw(domain_cdf);
        } else {
          i = uint32_t(rng.below(o.per_domain));
        }
        if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
      }
      const bool held = d.cold[u] && dom == o.cold_domain;
      for (uint32_t i : picked) {
        (held ? te_u : tr_u).push_back(u);
        (held ? te_i : tr_i).push_back(dom * o.per_domain + i);
      }
    }
  }
  const uint32_t n_items = o.n_domains * o.per_domain;
  std::vector<float> ones(tr_u.size(), 1.0f), ones_te(te_u.size(), 1.0f);
  d.train = Csr::from_triplets(o.n_users, n_items, tr_u, tr_i, ones);
  d.test = Csr::from_triplets(o.n_users, n_items, te_u, te_i, ones_te);
  d.item_domain.resize(n_items);
  for (uint32_t i = 0; i < n_items; ++i) d.item_domain[i] = uint16_t(i / o.per_domain);
  return d;
}

std::unique_ptr<Recommender> fit(const std::string& spec, const Csr& train, std::span<const uint16_t> domains,
                                 int threads = 1) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  ctx.seed = 3;
  ctx.item_domain = domains;
  m->fit(train, ctx);
  return m;
}

std::vector<uint32_t> all_users(uint32_t n) {
  std::vector<uint32_t> u(n);
  std::iota(u.begin(), u.end(), 0u);
  return u;
}

Matrix score_all(const Recommender& m, int threads = 1) {
  Matrix out;
  m.score(all_users(m.n_users()), out, threads);
  return out;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// Mean recall@10 of the cold users' held-out items among the items of `domain`.
double cold_recall(const Recommender& m, const MultiDomain& d, int domain) {
  const Matrix s = score_all(m);
  double total = 0;
  int users = 0;
  for (uint32_t u = 0; u < d.n_users; ++u) {
    if (!d.cold[u]) continue;
    auto top = top_k(s.row(u), m.n_items(), 10, d.train.row_indices(u), d.item_domain, domain);
    std::vector<uint32_t> ranked;
    for (auto& it : top) ranked.push_back(it.item);
    total += recall_at_k(ranked, d.test.row_indices(u), 10);
    ++users;
  }
  return total / users;
}

Matrix tensor(const Recommender& m, const std::string& name) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return get_tensor(t, name).to_matrix(name);
}

// Tastes fully determined by the cluster, the same number of picks for every user.
const MultiDomain& two_domains() {
  static const MultiDomain d = make_multi_domain(GenOptions{});
  return d;
}

}  // namespace

TEST(Emcdr, ColdUsersGetTargetItemsFromTheirSourceHistory) {
  // A more realistic world than two_domains(): activity varies by orders of magnitude and a third of the
  // picks follow global popularity. One iALS model on both domains then sees cold users as users who avoid
  // domain B (their B row is all zeros), which pushes their B scores away from what B users share; the maps
  // are learned only on users active in both domains. Over eight seeds of this generator EMCDR led the best
  // joint fit by 0.011 to 0.027 recall@10 (1500 users, about 450 of them cold).
  GenOptions o;
  o.n_users = 1500;
  o.p_cluster = 0.6;
  o.p_popular = 0.3;
  o.activity_spread = 8;
  o.cold_ratio = 0.3;
  const MultiDomain d = make_multi_domain(o);
  auto emcdr = fit("emcdr:factors=16", d.train, d.item_domain);
  auto pop = fit("popular", d.train, d.item_domain);
  const double r_emcdr = cold_recall(*emcdr, d, 1), r_pop = cold_recall(*pop, d, 1);
  std::printf("cold users in domain B, recall@10: emcdr %.3f, popular %.3f\n", r_emcdr, r_pop);
  EXPECT_GT(r_emcdr, r_pop + 0.05);
  for (const char* joint_spec : {"ials:factors=16", "ials:factors=16,alpha=5", "ials:factors=32"}) {
    const double r_joint = cold_recall(*fit(joint_spec, d.train, {}), d, 1);
    std::printf("  joint %s: %.3f\n", joint_spec, r_joint);
    EXPECT_GT(r_emcdr, r_joint + 0.005) << joint_spec;
  }
}

TEST(Emcdr, WarmUsersAreScoredWithTheirOwnFactors) {
  const MultiDomain& d = two_domains();
  auto emcdr = fit("emcdr:factors=16", d.train, d.item_domain);
  // Warm users in B are scored with their own B factors: their training B items rank high.
  const Matrix s = score_all(*emcdr);
  int warm = 0, top_hits = 0;
  for (uint32_t u = 0; u < d.n_users && warm < 100; ++u) {
    if (d.cold[u]) continue;
    ++warm;
    auto top = top_k(s.row(u), emcdr->n_items(), 10, {}, d.item_domain, 1);
    for (auto& it : top) top_hits += d.cluster_of_item(it.item) == d.cluster_of_user(u);
  }
  EXPECT_GE(top_hits, 8 * warm);
}

TEST(Emcdr, OneDomainIsTheIalsModel) {
  const MultiDomain& d = two_domains();
  auto emcdr = fit("emcdr:factors=12,iterations=5,alpha=3,reg=2", d.train, {});
  auto ials = fit("ials:factors=12,iterations=5,alpha=3,reg=2", d.train, {});
  EXPECT_TRUE(bitwise_equal(score_all(*emcdr), score_all(*ials)));
  // Fold-in solves the same row equations.
  std::vector<uint32_t> hist{1, 5, 9, 130};
  const uint32_t a = emcdr->fold_in(emcdr->n_users(), hist, {});
  const uint32_t b = ials->fold_in(ials->n_users(), hist, {});
  Matrix sa, sb;
  emcdr->score(std::vector<uint32_t>{a}, sa, 1);
  ials->score(std::vector<uint32_t>{b}, sb, 1);
  EXPECT_TRUE(bitwise_equal(sa, sb));
}

TEST(Emcdr, UsersWithoutHistoryGetPopularity) {
  const MultiDomain& d = two_domains();
  auto m = fit("emcdr:factors=8,iterations=3", d.train, d.item_domain);
  const uint32_t u = m->fold_in(m->n_users(), {}, {});
  Matrix s;
  m->score(std::vector<uint32_t>{u}, s, 1);
  for (uint32_t i = 0; i < m->n_items(); ++i) EXPECT_EQ(s(0, i), float(d.train.transpose().row_size(i))) << i;
}

TEST(Emcdr, CopiedDomainIsMappedByTheIdentity) {
  // Domain B is an exact copy of domain A (the same users on the same items in the same order), so both
  // domains get bitwise the same iALS factors and the exact map from A to B is the identity.
  const MultiDomain& src = two_domains();
  const uint32_t n = src.per_domain;
  std::vector<uint32_t> rows, cols;
  for (uint32_t u = 0; u < src.n_users; ++u)
    for (uint32_t i : src.train.row_indices(u))
      if (i < n) {
        rows.push_back(u), cols.push_back(i);
        rows.push_back(u), cols.push_back(i + n);
      }
  std::vector<float> ones(rows.size(), 1.0f);
  const Csr x = Csr::from_triplets(src.n_users, 2 * n, rows, cols, ones);
  auto m = fit("emcdr:factors=8,iterations=6,map_reg=1e-9", x, src.item_domain);
  const Matrix ua = tensor(*m, "domain0.user_factors"), ub = tensor(*m, "domain1.user_factors");
  ASSERT_TRUE(bitwise_equal(ua, ub));
  const Matrix map = tensor(*m, "map0_1");  // rows 0..f-1: W, row f: source mean, row f+1: target mean
  ASSERT_EQ(map.rows, 10u);
  ASSERT_EQ(map.cols, 8u);
  for (size_t i = 0; i < 8; ++i) {
    for (size_t j = 0; j < 8; ++j) EXPECT_NEAR(map(i, j), i == j ? 1.0 : 0.0, 1e-4) << i << "," << j;
    EXPECT_NEAR(map(8, i), map(9, i), 1e-7);
  }
  // A new user with history in A only: the B scores are the A scores of the originals.
  std::vector<uint32_t> hist{0, 4, 8, 16, 3};
  const uint32_t u = m->fold_in(m->n_users(), hist, {});
  Matrix s;
  m->score(std::vector<uint32_t>{u}, s, 1);
  for (uint32_t i = 0; i < n; ++i) EXPECT_NEAR(s(0, i + n), s(0, i), 1e-4f + 1e-3f * std::fabs(s(0, i))) << i;
}

TEST(Emcdr, MapsSolveTheRidgeNormalEquations) {
  // On the users active in both domains: x_u (source factors), y_u (target factors); the map y = my + (x -
  // mx) W must satisfy the ridge optimality conditions: mx, my are the means, and
  // Xc^T (Xc W - Yc) + lambda W = 0 with lambda = map_reg * trace(Xc^T Xc) / f.
  const MultiDomain& d = two_domains();
  const double map_reg = 0.5;
  auto m = fit("emcdr:factors=6,iterations=4,map_reg=0.5", d.train, d.item_domain);
  const Matrix counts = tensor(*m, "user_domain_counts");
  for (auto [s, t] : {std::pair<int, int>{0, 1}, {1, 0}}) {
    const Matrix xs = tensor(*m, "domain" + std::to_string(s) + ".user_factors");
    const Matrix yt = tensor(*m, "domain" + std::to_string(t) + ".user_factors");
    const Matrix map = tensor(*m, "map" + std::to_string(s) + "_" + std::to_string(t));
    const size_t f = 6;
    std::vector<uint32_t> both;
    for (uint32_t u = 0; u < d.n_users; ++u)
      if (counts(u, 0) > 0 && counts(u, 1) > 0) both.push_back(u);
    ASSERT_GT(both.size(), 100u);
    Eigen::MatrixXd X(both.size(), f), Y(both.size(), f), W(f, f);
    for (size_t r = 0; r < both.size(); ++r)
      for (size_t k = 0; k < f; ++k) X(r, k) = xs(both[r], k), Y(r, k) = yt(both[r], k);
    for (size_t i = 0; i < f; ++i)
      for (size_t j = 0; j < f; ++j) W(i, j) = map(i, j);
    const Eigen::RowVectorXd mx = X.colwise().mean(), my = Y.colwise().mean();
    for (size_t k = 0; k < f; ++k) {
      EXPECT_NEAR(map(f, k), mx[k], 1e-5);
      EXPECT_NEAR(map(f + 1, k), my[k], 1e-5);
    }
    const Eigen::MatrixXd Xc = X.rowwise() - mx, Yc = Y.rowwise() - my;
    const Eigen::MatrixXd sxx = Xc.transpose() * Xc;
    const double lambda = map_reg * sxx.trace() / double(f);
    const Eigen::MatrixXd grad = Xc.transpose() * (Xc * W - Yc) + lambda * W;
    const double scale = (Xc.transpose() * Yc).norm();
    EXPECT_LT(grad.norm(), 1e-4 * scale) << "map " << s << "->" << t;
    // And the ridge actually shrinks: W is not the least-squares solution.
    const Eigen::MatrixXd ls = sxx.ldlt().solve(Xc.transpose() * Yc);
    EXPECT_GT((ls - W).norm(), 1e-3 * ls.norm());
  }
}

TEST(Emcdr, FoldInOfANewUserWithOnlySourceHistory) {
  const MultiDomain& d = two_domains();
  auto m = fit("emcdr:factors=16", d.train, d.item_domain);
  const Matrix before = score_all(*m);
  for (uint32_t c = 0; c < d.clusters; ++c) {
    std::vector<uint32_t> hist;
    for (uint32_t r = 0; r < 6; ++r) hist.push_back(r * d.clusters + c);  // domain A, cluster c
    const uint32_t u = m->fold_in(m->n_users(), hist, {});
    Matrix s;
    m->score(std::vector<uint32_t>{u}, s, 1);
    for (int dom : {0, 1}) {
      auto top = top_k(s.row(0), m->n_items(), 10, hist, d.item_domain, dom);
      int in_cluster = 0;
      for (auto& it : top) in_cluster += d.cluster_of_item(it.item) == c;
      EXPECT_GE(in_cluster, 8) << "cluster " << c << ", domain " << dom;
    }
  }
  // Replacing a user's history with history in B only moves them to their own B factors and mapped A.
  const uint32_t u = 0;
  std::vector<uint32_t> hist_b;
  for (uint32_t r = 0; r < 6; ++r) hist_b.push_back(d.per_domain + r * d.clusters + 2);
  EXPECT_EQ(m->fold_in(u, hist_b, {}), u);
  Matrix s;
  m->score(std::vector<uint32_t>{u}, s, 1);
  auto top = top_k(s.row(0), m->n_items(), 10, {}, d.item_domain, 0);
  int in_cluster = 0;
  for (auto& it : top) in_cluster += d.cluster_of_item(it.item) == 2;
  EXPECT_GE(in_cluster, 8);
  // Other users are untouched.
  const Matrix after = score_all(*m);
  for (uint32_t v = 1; v < d.n_users; ++v)
    EXPECT_EQ(std::memcmp(before.row(v), after.row(v), before.cols * sizeof(float)), 0) << v;
}

TEST(Emcdr, SaveLoadAndThreadCount) {
  GenOptions o;
  o.n_users = 300;
  o.n_domains = 3;
  o.per_domain = 60;
  o.clusters = 3;
  o.per_user = {8, 6, 4};
  o.cold_ratio = 0.3;
  o.cold_domain = 2;
  o.seed = 5;
  const MultiDomain d = make_multi_domain(o);
  for (const char* spec : {"emcdr:factors=8,iterations=4,source=most", "emcdr:factors=8,iterations=4",
                           "emcdr:factors=8,iterations=4,map=mlp,map_hidden=6,map_epochs=30"}) {
    auto a = fit(spec, d.train, d.item_domain, 1), b = fit(spec, d.train, d.item_domain, 2);
    EXPECT_TRUE(bitwise_equal(score_all(*a, 1), score_all(*b, 2))) << spec;
    EXPECT_TRUE(bitwise_equal(score_all(*a, 1), score_all(*a, 3))) << spec;
    a->fold_in(a->n_users(), std::vector<uint32_t>{0, 3, 61, 64}, {});
    a->fold_in(a->n_users(), {}, {});
    const auto dir = std::filesystem::temp_directory_path() / ("xdrec_emcdr_" + std::to_string(::getpid()));
    save_model(*a, dir.string());
    auto l = load_model(dir.string());
    std::filesystem::remove_all(dir);
    EXPECT_EQ(l->spec(), a->spec());
    EXPECT_EQ(l->n_users(), a->n_users());
    EXPECT_TRUE(bitwise_equal(score_all(*a), score_all(*l))) << spec;
    std::vector<uint32_t> hist{5, 125};
    a->fold_in(7, hist, {});
    l->fold_in(7, hist, {});
    EXPECT_TRUE(bitwise_equal(score_all(*a), score_all(*l))) << spec;
  }
}

TEST(Emcdr, MlpMapFitsTheResidualsOfTheRidgeMap) {
  // map=mlp: y = my + (x - mx) W + sy * mlp((x - mx) / sx), the perceptron fitted to the ridge map's
  // residuals on the users active in both domains. Written out here from the saved tensors: its squared
  // error there is below the ridge map's. A model file without the perceptron is refused.
  const MultiDomain& d = two_domains();
  const size_t f = 8;
  auto m = fit("emcdr:factors=8,iterations=4,map=mlp,map_hidden=16,map_epochs=100", d.train, d.item_domain);
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  const Matrix counts = get_tensor(t, "user_domain_counts").to_matrix("c");
  const Matrix x = get_tensor(t, "domain0.user_factors").to_matrix("x");
  const Matrix y = get_tensor(t, "domain1.user_factors").to_matrix("y");
  const Matrix map = get_tensor(t, "map0_1").to_matrix("map");
  const std::vector<float> scale = get_tensor(t, "map0_1.scale").to_f32("scale");
  nn::Mlp<float> net({f, 16, f}, nn::Act::tanh, nn::Act::identity);
  net.load(t, "map0_1.mlp.");
  double err_linear = 0, err_mlp = 0;
  std::vector<float> z(f), r(f);
  for (uint32_t u = 0; u < d.n_users; ++u) {
    if (counts(u, 0) == 0 || counts(u, 1) == 0) continue;
    for (size_t k = 0; k < f; ++k) z[k] = (x(u, k) - map(f, k)) / scale[0];
    net.predict_row(z.data(), r.data());
    for (size_t j = 0; j < f; ++j) {
      double lin = map(f + 1, j);
      for (size_t k = 0; k < f; ++k) lin += (double(x(u, k)) - map(f, k)) * map(k, j);
      err_linear += (y(u, j) - lin) * (y(u, j) - lin);
      err_mlp += (y(u, j) - lin - scale[1] * r[j]) * (y(u, j) - lin - scale[1] * r[j]);
    }
  }
  std::printf("squared error of the maps on shared users: ridge %.5f, ridge + mlp %.5f\n", err_linear,
              err_mlp);
  EXPECT_LT(err_mlp, 0.95 * err_linear);
  t.erase("map0_1.mlp.w0");
  auto fresh = create_model(m->spec());
  EXPECT_THROW(fresh->load(t, extra), Error);
}

TEST(Emcdr, SourceDomainChoiceWithThreeDomains) {
  // Cold in C, users have plenty of A and a little B history. Both ways of choosing the source beat
  // popularity; the averaged maps, which use the B history too, were ahead in 8 of 12 seeds of this
  // generator (by 0.004 recall@10 on average), hence the default source=weighted.
  GenOptions o;
  o.n_users = 900;
  o.n_domains = 3;
  o.per_domain = 90;
  o.clusters = 3;
  o.per_user = {10, 3, 6};
  o.p_cluster = 0.6;
  o.p_popular = 0.3;
  o.activity_spread = 8;
  o.cold_domain = 2;
  o.seed = 8;
  const MultiDomain d = make_multi_domain(o);
  auto most = fit("emcdr:factors=8,source=most", d.train, d.item_domain);
  auto weighted = fit("emcdr:factors=8,source=weighted", d.train, d.item_domain);
  auto pop = fit("popular", d.train, d.item_domain);
  const double r_most = cold_recall(*most, d, 2), r_weighted = cold_recall(*weighted, d, 2),
               r_pop = cold_recall(*pop, d, 2);
  std::printf("cold users in domain C, recall@10: most %.3f, weighted %.3f, popular %.3f\n", r_most,
              r_weighted, r_pop);
  EXPECT_GT(r_most, r_pop + 0.05);
  EXPECT_GT(r_weighted, r_pop + 0.05);
}

TEST(Emcdr, BadInput) {
  const MultiDomain& d = two_domains();
  std::vector<uint16_t> short_domains(d.item_domain.begin(), d.item_domain.end() - 1);
  EXPECT_TRUE(
      throws_error([&] { fit("emcdr:factors=4", d.train, short_domains); }, {"emcdr", "item_domain"}));
  EXPECT_TRUE(throws_error([] { create_model("emcdr:map=cubic"); }, {"map"}));
  auto m = create_model("emcdr");
  EXPECT_TRUE(throws_error([&] { m->fold_in(0, {}, {}); }, {"emcdr", "not fitted"}));
}

TEST(Emcdr, DoubanColdUsersBeatPopularity) {
  const std::string path = std::string(XDREC_SHARED_DATA) + "/douban_book-music_gadtcdr";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "Douban data not found at " << path;
  ReadOptions ro;
  ro.use_cache = false;
  const Dataset ds = read_dataset(path, "auto", ro);
  const Split sp = make_split(ds, "cold-users:target=book,cold=0.2,seed=42", {});
  const Csr train = ds.user_item_matrix(sp.train), test = ds.user_item_matrix(sp.test);
  EvalOptions eo;
  eo.threads = 2;
  double ndcg[2];
  int k = 0;
  for (const char* spec : {"popular", "emcdr"}) {
    auto m = fit(spec, train, ds.item_domain, 2);
    const EvalResult r = evaluate(*m, train, test, &ds, eo);
    ndcg[k++] = r.by_domain.at("book").at("ndcg@10");
    std::printf("douban cold users, book: %s ndcg@10 %.4f recall@10 %.4f (%g users)\n", spec,
                r.by_domain.at("book").at("ndcg@10"), r.by_domain.at("book").at("recall@10"),
                r.by_domain.at("book").at("n_users"));
  }
  EXPECT_GT(ndcg[1], ndcg[0]);
}
