// ItemKNN: hand-computed similarities, a brute-force reference for every weighting and similarity,
// neighbour truncation, fold-in weights, thread independence, and MovieLens 100k against popularity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

Csr from_rows(uint32_t n_items, const std::vector<std::vector<uint32_t>>& rows) {
  std::vector<uint32_t> r, c;
  for (uint32_t u = 0; u < rows.size(); ++u)
    for (uint32_t i : rows[u]) {
      r.push_back(u);
      c.push_back(i);
    }
  std::vector<float> v(r.size(), 1.0f);
  return Csr::from_triplets(uint32_t(rows.size()), n_items, r, c, v);
}

std::unique_ptr<Recommender> fit(const std::string& spec, const Csr& x, int threads = 1) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  m->fit(x, ctx);
  return m;
}

// Row j of the similarity matrix, read through the public interface: a folded-in user whose history is item
// j alone scores every item i with sim(j -> i).
std::vector<float> sim_row(Recommender& m, uint32_t j) {
  std::vector<uint32_t> h{j};
  const uint32_t u = m.fold_in(m.n_users(), h, {});
  Matrix out;
  std::vector<uint32_t> users{u};
  m.score(users, out, 1);
  return out.data;
}

// The three-item example: u0 = {0, 1}, u1 = {0, 1, 2}, u2 = {1, 2}. Item columns: i0 = (1,1,0),
// i1 = (1,1,1), i2 = (0,1,1); dots: <0,1> = 2, <0,2> = 1, <1,2> = 2; squared norms 2, 3, 2.
Csr three() {
  return from_rows(3, {{0, 1}, {0, 1, 2}, {1, 2}});
}

// Brute-force reference of the documented formulas (dense, double precision).
std::vector<std::vector<double>> reference(const Csr& x, const std::string& weighting, const std::string& sim,
                                           double shrink, double alpha, double k1 = 1.2, double b = 0.75) {
  const uint32_t nu = x.n_rows, ni = x.n_cols;
  std::vector<std::vector<double>> w(nu, std::vector<double>(ni, 0.0));
  std::vector<double> len(ni, 0.0);
  for (uint32_t u = 0; u < nu; ++u)
    for (uint32_t i : x.row_indices(u)) len[i] += 1.0;
  double mean = 0;
  int active = 0;
  for (double l : len)
    if (l > 0) mean += l, ++active;
  mean /= active;
  for (uint32_t u = 0; u < nu; ++u) {
    const double df = double(x.row_size(u));
    for (uint32_t i : x.row_indices(u)) {
      if (weighting == "none") w[u][i] = 1.0;
      if (weighting == "tfidf") w[u][i] = std::log(1.0 + ni / df);
      if (weighting == "bm25")
        w[u][i] =
            std::log(1.0 + (ni - df + 0.5) / (df + 0.5)) * (k1 + 1) / (1 + k1 * (1 - b + b * len[i] / mean));
    }
  }
  std::vector<std::vector<double>> s(ni, std::vector<double>(ni, 0.0));
  for (uint32_t j = 0; j < ni; ++j)
    for (uint32_t i = 0; i < ni; ++i) {
      if (i == j) continue;
      double dot = 0, sj = 0, si = 0;
      for (uint32_t u = 0; u < nu; ++u) {
        dot += w[u][j] * w[u][i];
        sj += w[u][j] * w[u][j];
        si += w[u][i] * w[u][i];
      }
      double v = 0;
      if (sim == "dot") v = dot;
      if (sim == "jaccard") v = dot / (sj + si - dot + shrink);
      if (sim == "cosine") v = dot / (std::pow(sj, alpha) * std::pow(si, 1 - alpha) + shrink);
      s[j][i] = v > 0 && std::isfinite(v) ? v : 0.0;
    }
  return s;
}

Csr random_binary(uint32_t users, uint32_t items, double density, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<uint32_t>> rows(users);
  for (uint32_t u = 0; u < users; ++u)
    for (uint32_t i = 0; i < items; ++i)
      if (rng.uniform() < density * (1.0 + double(i % 5))) rows[u].push_back(i);
  return from_rows(items, rows);
}

}  // namespace

TEST(ItemKnn, HandComputedCosine) {
  const Csr x = three();
  auto m = fit("itemknn:weighting=none,shrink=0", x);
  const float s01 = float(2 / std::sqrt(6.0)), s02 = 0.5f;
  Matrix out;
  std::vector<uint32_t> users{0, 1, 2};
  m->score(users, out, 1);
  // u0 = {0, 1}: item 0 <- sim(1->0); item 1 <- sim(0->1); item 2 <- sim(0->2) + sim(1->2).
  EXPECT_NEAR(out(0, 0), s01, 1e-6);
  EXPECT_NEAR(out(0, 1), s01, 1e-6);
  EXPECT_NEAR(out(0, 2), s02 + s01, 1e-6);
  // u2 = {1, 2}: item 0 <- sim(1->0) + sim(2->0).
  EXPECT_NEAR(out(2, 0), s01 + s02, 1e-6);
  // u1 = all items: every item gets the sum of the other two similarities.
  EXPECT_NEAR(out(1, 1), 2 * s01, 1e-6);
  EXPECT_NEAR(sim_row(*m, 0)[0], 0.0f, 0.0f) << "an item is not its own neighbour";
}

TEST(ItemKnn, HandComputedShrinkJaccardAndAsymmetricCosine) {
  const Csr x = three();
  auto shrunk = fit("itemknn:weighting=none,shrink=1", x);
  auto r0 = sim_row(*shrunk, 0);
  EXPECT_NEAR(r0[1], 2 / (std::sqrt(6.0) + 1), 1e-6);
  EXPECT_NEAR(r0[2], 1.0 / 3.0, 1e-6);

  auto jac = fit("itemknn:weighting=none,shrink=0,similarity=jaccard", x);
  r0 = sim_row(*jac, 0);
  EXPECT_NEAR(r0[1], 2.0 / 3.0, 1e-6);  // 2 / (2 + 3 - 2)
  EXPECT_NEAR(r0[2], 1.0 / 3.0, 1e-6);  // 1 / (2 + 2 - 1)

  // alpha = 1: sim(j -> i) = dot / |j|^2, so it is no longer symmetric.
  auto asym = fit("itemknn:weighting=none,shrink=0,alpha=1", x);
  auto r1 = sim_row(*asym, 1);
  EXPECT_NEAR(r1[0], 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(r1[2], 2.0 / 3.0, 1e-6);
  r0 = sim_row(*asym, 0);
  EXPECT_NEAR(r0[1], 1.0, 1e-6);
  EXPECT_NEAR(r0[2], 0.5, 1e-6);

  auto dot = fit("itemknn:weighting=none,similarity=dot", x);
  r1 = sim_row(*dot, 1);
  EXPECT_EQ(r1, (std::vector<float>{2, 0, 2}));
}

TEST(ItemKnn, NeighbourTiesGoToTheLowerIndex) {
  auto m = fit("itemknn:weighting=none,shrink=0,neighbours=1", three());
  // Row 1 has sim(1->0) == sim(1->2): only item 0 is kept.
  EXPECT_EQ(sim_row(*m, 1), (std::vector<float>{float(2 / std::sqrt(6.0)), 0, 0}));
  auto r0 = sim_row(*m, 0);  // sim(0->1) > sim(0->2)
  EXPECT_GT(r0[1], 0.0f);
  EXPECT_EQ(r0[2], 0.0f);
}

TEST(ItemKnn, MatchesTheBruteForceReference) {
  const Csr x = random_binary(45, 24, 0.04, 3);
  for (std::string weighting : {"none", "tfidf", "bm25"}) {
    for (std::string sim : {"cosine", "jaccard", "dot"}) {
      for (double alpha : {0.5, 0.8}) {
        if (sim != "cosine" && alpha != 0.5) continue;
        const double shrink = sim == "dot" ? 0.0 : 2.0;
        std::ostringstream spec;
        spec << "itemknn:neighbours=1000,weighting=" << weighting << ",similarity=" << sim
             << ",alpha=" << alpha << ",shrink=" << shrink;
        auto m = fit(spec.str(), x);
        auto ref = reference(x, weighting, sim, shrink, alpha);
        for (uint32_t j = 0; j < x.n_cols; ++j) {
          auto got = sim_row(*m, j);
          for (uint32_t i = 0; i < x.n_cols; ++i)
            ASSERT_NEAR(got[i], ref[j][i], 1e-5 * (1 + std::fabs(ref[j][i])))
                << spec.str() << " j=" << j << " i=" << i;
        }
      }
    }
  }
}

TEST(ItemKnn, KeepsTheTopNeighboursOfEachItem) {
  const Csr x = random_binary(80, 30, 0.03, 9);
  const int k = 4;
  auto m = fit("itemknn:weighting=tfidf,neighbours=" + std::to_string(k), x);
  auto ref = reference(x, "tfidf", "cosine", 10.0, 0.5);
  for (uint32_t j = 0; j < x.n_cols; ++j) {
    auto got = sim_row(*m, j);
    int kept = 0;
    float min_kept = INFINITY, max_dropped = 0;
    for (uint32_t i = 0; i < x.n_cols; ++i) {
      if (got[i] != 0) {
        ++kept;
        EXPECT_NEAR(got[i], ref[j][i], 1e-5);
        min_kept = std::min(min_kept, got[i]);
      } else {
        max_dropped = std::max(max_dropped, float(ref[j][i]));
      }
    }
    int positive = 0;
    for (uint32_t i = 0; i < x.n_cols; ++i) positive += ref[j][i] > 0;
    EXPECT_EQ(kept, std::min(k, positive)) << "item " << j;
    if (kept) {
      EXPECT_GE(min_kept, max_dropped - 1e-6) << "item " << j;
    }
  }
}

TEST(ItemKnn, HistoryWeights) {
  const Csr x = three();
  auto bin = fit("itemknn:weighting=none,shrink=0", x);
  auto raw = fit("itemknn:weighting=none,shrink=0,implicit=false", x);
  std::vector<uint32_t> h{0};
  std::vector<float> w2{2.0f};
  Matrix a, b;
  const uint32_t ua = bin->fold_in(bin->n_users(), h, w2), ub = raw->fold_in(raw->n_users(), h, w2);
  std::vector<uint32_t> qa{ua}, qb{ub};
  bin->score(qa, a, 1);
  raw->score(qb, b, 1);
  EXPECT_NEAR(a(0, 1), 2 / std::sqrt(6.0), 1e-6) << "implicit: the weight is binarised";
  EXPECT_NEAR(b(0, 1), 4 / std::sqrt(6.0), 1e-6) << "explicit: the weight multiplies";
  // A zero or negative weight drops the item from an implicit history.
  std::vector<uint32_t> h2{0, 1};
  std::vector<float> w_neg{1.0f, -1.0f};
  const uint32_t un = bin->fold_in(bin->n_users(), h2, w_neg);
  std::vector<uint32_t> qn{un};
  bin->score(qn, a, 1);
  EXPECT_NEAR(a(0, 2), 0.5, 1e-6);  // only sim(0->2)
}

TEST(ItemKnn, ExactlyIndependentOfTheThreadCount) {
  const Csr x = random_binary(700, 400, 0.01, 21);
  auto a = fit("itemknn:neighbours=50", x, 1), b = fit("itemknn:neighbours=50", x, 2);
  std::vector<uint32_t> users(700);
  for (uint32_t u = 0; u < 700; ++u) users[u] = u;
  Matrix sa, sb;
  a->score(users, sa, 1);
  b->score(users, sb, 2);
  ASSERT_EQ(sa.data.size(), sb.data.size());
  EXPECT_EQ(std::memcmp(sa.data.data(), sb.data.data(), sa.data.size() * sizeof(float)), 0);
}

TEST(ItemKnn, Errors) {
  EXPECT_THROW(create_model("itemknn:neighbours=0"), Error);
  EXPECT_THROW(create_model("itemknn:weighting=bm26"), Error);
  EXPECT_THROW(create_model("itemknn:alpha=1.5"), Error);
  auto m = create_model("itemknn");
  Csr empty;
  empty.n_rows = 2;
  empty.indptr.assign(3, 0);
  EXPECT_THROW(m->fit(empty, FitContext{}), Error);
}
