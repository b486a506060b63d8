// iALS: the per-row solvers against the normal equations written out directly, the objective decreasing over
// iterations, thread-count independence, determinism, fold-in, save/load and parameter errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "models/clustered.h"
#include "models/mf_kernels.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using testing_util::Data;
using testing_util::held_out_auc;
using testing_util::make_clustered;

struct Factors2 {
  Matrix users, items;
};

Factors2 factors_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return {get_tensor(t, "user_factors").to_matrix("user_factors"),
          get_tensor(t, "item_factors").to_matrix("item_factors")};
}

// The iALS objective written out over every (user, item) pair:
//   sum c_ui (p_ui - x_u . y_i)^2 + sum reg_u |x_u|^2 + sum reg_i |y_i|^2,
// c_ui = 1 + alpha |r_ui| and p_ui = [r_ui > 0] on observed entries, c = 1 and p = 0 elsewhere; a row with n
// non-zero entries has reg_row = reg * (1 + n)^reg_exponent.
double ials_objective(const Csr& m, const Factors2& f, double reg, double alpha, double reg_exponent) {
  double loss = 0;
  std::vector<size_t> item_count(m.n_cols, 0);
  for (uint32_t u = 0; u < m.n_rows; ++u) {
    std::vector<double> r(m.n_cols, 0.0);
    auto idx = m.row_indices(u);
    auto val = m.row_values(u);
    size_t n = 0;
    for (size_t k = 0; k < idx.size(); ++k) {
      r[idx[k]] = val[k];
      if (val[k] != 0) ++n, ++item_count[idx[k]];
    }
    double norm = 0;
    for (size_t k = 0; k < f.users.cols; ++k) norm += double(f.users(u, k)) * f.users(u, k);
    loss += reg * std::pow(1.0 + double(n), reg_exponent) * norm;
    for (uint32_t i = 0; i < m.n_cols; ++i) {
      double s = 0;
      for (size_t k = 0; k < f.users.cols; ++k) s += double(f.users(u, k)) * f.items(i, k);
      const double c = 1.0 + alpha * std::fabs(r[i]);
      const double p = r[i] > 0 ? 1.0 : 0.0;
      loss += c * (p - s) * (p - s);
    }
  }
  for (uint32_t i = 0; i < m.n_cols; ++i) {
    double norm = 0;
    for (size_t k = 0; k < f.items.cols; ++k) norm += double(f.items(i, k)) * f.items(i, k);
    loss += reg * std::pow(1.0 + double(item_count[i]), reg_exponent) * norm;
  }
  return loss;
}

bool same_bits(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// A small problem written out: m items with factors y (ld-padded), one row with given entries.
struct RowProblem {
  size_t f, ld, m;
  mf::Factors y;
  mf::AlignedFloats g;
  std::vector<uint32_t> idx;
  std::vector<float> val;
};

RowProblem make_row_problem(size_t f, size_t m, uint64_t seed) {
  RowProblem p{f, mf::padded_width(f), m, {}, {}, {}, {}};
  p.y.resize(m, f);
  p.y.init_normal(seed, 0, 0.5f);
  mf::gram(p.y, p.g, 1);
  Rng rng(seed + 1);
  for (uint32_t i = 0; i < m; i += 1 + uint32_t(rng.below(3))) {
    p.idx.push_back(i);
    // Mostly positive weights, one zero (skipped) and one negative (preference 0).
    p.val.push_back(p.idx.size() == 3 ? 0.0f : p.idx.size() == 5 ? -1.5f : float(1 + rng.below(4)));
  }
  return p;
}

// Residual |A x - b| / |b| of the row's normal equations, built directly in double precision.
double normal_equation_residual(const RowProblem& p, float reg, float alpha, const float* x) {
  const size_t f = p.f;
  std::vector<double> a(f * f, 0.0), b(f, 0.0);
  for (size_t i = 0; i < p.m; ++i)  // Y^T Y over all items
    for (size_t r = 0; r < f; ++r)
      for (size_t c = 0; c < f; ++c) a[r * f + c] += double(p.y.row(i)[r]) * p.y.row(i)[c];
  for (size_t r = 0; r < f; ++r) a[r * f + r] += reg;
  for (size_t e = 0; e < p.idx.size(); ++e) {
    const double v = p.val[e];
    if (v == 0) continue;
    const double conf = 1.0 + alpha * std::fabs(v), pref = v > 0 ? 1.0 : 0.0;
    const float* y = p.y.row(p.idx[e]);
    for (size_t r = 0; r < f; ++r) {
      for (size_t c = 0; c < f; ++c) a[r * f + c] += (conf - 1.0) * y[r] * y[c];
      b[r] += conf * pref * y[r];
    }
  }
  double num = 0, den = 0;
  for (size_t r = 0; r < f; ++r) {
    double ax = 0;
    for (size_t c = 0; c < f; ++c) ax += a[r * f + c] * x[c];
    num += (ax - b[r]) * (ax - b[r]);
    den += b[r] * b[r];
  }
  return std::sqrt(num / den);
}

std::string temp_dir(const std::string& tag) {
  auto d =
      std::filesystem::temp_directory_path() / ("xdrec_test_ials_" + tag + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST(IalsKernels, GramMatchesDirectSumAcrossBlocks) {
  mf::Factors y;
  y.resize(9000, 10);  // more rows than one GEMM block
  y.init_normal(7, 0, 1.0f);
  mf::AlignedFloats g1, g2;
  mf::gram(y, g1, 1);
  mf::gram(y, g2, 2);
  ASSERT_EQ(0, std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)));
  for (size_t r = 0; r < y.ld; ++r) {
    for (size_t c = 0; c < y.ld; ++c) {
      double s = 0;
      for (size_t i = 0; i < y.rows; ++i) s += double(y.row(i)[r]) * y.row(i)[c];
      EXPECT_NEAR(g1[r * y.ld + c], s, 1e-4 * (std::fabs(s) + 100)) << r << "," << c;
    }
  }
}

TEST(IalsKernels, ExactSolveSatisfiesNormalEquations) {
  for (size_t f : {5, 8, 20, 64}) {
    RowProblem p = make_row_problem(f, 120, 11 + f);
    mf::AlignedFloats x(p.ld, 0.0f);
    mf::CholScratch chol(f);
    mf::ials_exact_solve(p.g.data(), 0.3f, p.y.data.data(), p.ld, f,
                         {p.idx.data(), p.val.data(), p.idx.size()}, 2.0f, x.data(), chol);
    EXPECT_LT(normal_equation_residual(p, 0.3f, 2.0f, x.data()), 1e-5) << "f=" << f;
    for (size_t k = f; k < p.ld; ++k) EXPECT_EQ(x[k], 0.0f);
  }
}

TEST(IalsKernels, ExactSolveRejectsSingularSystems) {
  // One item with factors (1, 0) and no regularisation: the second direction is undetermined.
  mf::Factors y;
  y.resize(1, 2);
  y.row(0)[0] = 1.0f;
  mf::AlignedFloats g, x(y.ld, 0.0f);
  mf::gram(y, g, 1);
  mf::CholScratch chol(2);
  EXPECT_THROW(mf::ials_exact_solve(g.data(), 0.0f, y.data.data(), y.ld, 2, {nullptr, nullptr, 0}, 1.0f,
                                    x.data(), chol),
               Error);
  EXPECT_NO_THROW(mf::ials_exact_solve(g.data(), 0.1f, y.data.data(), y.ld, 2, {nullptr, nullptr, 0}, 1.0f,
                                       x.data(), chol));
  EXPECT_EQ(x[0], 0.0f);  // nothing observed: the solution is zero
  EXPECT_EQ(x[1], 0.0f);
}

TEST(IalsKernels, ConjugateGradientConvergesToCholesky) {
  for (size_t f : {5, 8, 20, 64, 136}) {  // 136: beyond the unrolled widths (run-time vector count)
    RowProblem p = make_row_problem(f, 300, 3 + f);
    const mf::IalsRow row{p.idx.data(), p.val.data(), p.idx.size()};
    mf::AlignedFloats exact(p.ld, 0.0f), x(p.ld, 0.0f);
    mf::CholScratch chol(f);
    mf::ials_exact_solve(p.g.data(), 0.5f, p.y.data.data(), p.ld, f, row, 3.0f, exact.data(), chol);
    mf::CgScratch cg(p.ld);
    // A few warm-started calls of 3 steps each, as in training; the residual must shrink overall.
    double first = 0;
    for (int call = 0; call < 40; ++call) {
      mf::ials_cg_solve(p.g.data(), 0.5f, p.y.data.data(), p.ld, row, 3.0f, 3, x.data(), cg);
      if (call == 0) first = normal_equation_residual(p, 0.5f, 3.0f, x.data());
    }
    const double last = normal_equation_residual(p, 0.5f, 3.0f, x.data());
    EXPECT_LT(last, first) << "f=" << f;
    EXPECT_LT(last, 1e-3) << "f=" << f;
    double scale = 0;
    for (size_t k = 0; k < f; ++k) scale = std::max(scale, double(std::fabs(exact[k])));
    for (size_t k = 0; k < f; ++k) EXPECT_NEAR(x[k], exact[k], 2e-3 * scale) << "f=" << f << " k=" << k;
    for (size_t k = f; k < p.ld; ++k) EXPECT_EQ(x[k], 0.0f) << "padding must stay zero";
  }
}

TEST(Ials, ObjectiveDecreasesEveryIteration) {
  Data d = make_clustered(150, 90, 5, 12, 1);
  // Weighted entries, one of them negative (preference 0, confidence 1 + alpha*1.5).
  for (size_t k = 0; k < d.train.values.size(); k += 7) d.train.values[k] = k % 2 ? 3.0f : -1.5f;
  for (const char* solver : {"cg", "cholesky"}) {
    for (double exponent : {0.0, 0.5}) {
      double prev = 0;
      for (int it = 0; it <= 6; ++it) {
        auto m =
            create_model(std::string("ials:factors=6,reg=0.1,alpha=4,init=0.1,seed=3,solver=") + solver +
                         ",reg_exponent=" + std::to_string(exponent) + ",iterations=" + std::to_string(it));
        m->fit(d.train, {});
        const double loss = ials_objective(d.train, factors_of(*m), 0.1, 4.0, exponent);
        if (it > 0) {
          EXPECT_LE(loss, prev * (1 + 1e-6)) << solver << " exponent " << exponent << " iteration " << it;
        }
        if (it == 1) {
          EXPECT_LT(loss, 0.9 * prev) << solver;
        }
        prev = loss;
      }
    }
  }
}

TEST(Ials, RanksHeldOutItemsAboveRandom) {
  Data d = make_clustered(400, 200, 8, 15, 2);
  auto m = create_model("ials:factors=16,iterations=10,reg=0.05,alpha=5,seed=1");
  m->fit(d.train, {});
  // Random scores give 0.5; a perfect model of the clusters about 0.87.
  EXPECT_GT(held_out_auc(*m, d), 0.75);
}

TEST(Ials, BitwiseIndependentOfThreadCount) {
  // More users than one Gram block (4096 rows) and many row chunks.
  Data d = make_clustered(9000, 600, 10, 8, 4);
  FitContext c1, c2;
  c1.threads = 1;
  c2.threads = 2;
  for (const char* spec :
       {"ials:factors=24,iterations=3,seed=5", "ials:factors=12,iterations=2,solver=cholesky"}) {
    auto a = create_model(spec), b = create_model(spec);
    a->fit(d.train, c1);
    b->fit(d.train, c2);
    auto fa = factors_of(*a), fb = factors_of(*b);
    EXPECT_TRUE(same_bits(fa.users, fb.users)) << spec;
    EXPECT_TRUE(same_bits(fa.items, fb.items)) << spec;
    std::vector<uint32_t> users{0, 17, 8999, 17};
    Matrix s1, s2;
    a->score(users, s1, 1);
    a->score(users, s2, 2);
    EXPECT_TRUE(same_bits(s1, s2)) << spec;
  }
}

TEST(Ials, DeterministicBySeed) {
  Data d = make_clustered(300, 100, 4, 10, 5);
  auto a = create_model("ials:factors=8,iterations=3,seed=9");
  auto b = create_model("ials:factors=8,iterations=3,seed=9");
  auto c = create_model("ials:factors=8,iterations=3,seed=10");
  a->fit(d.train, {});
  b->fit(d.train, {});
  c->fit(d.train, {});
  EXPECT_TRUE(same_bits(factors_of(*a).users, factors_of(*b).users));
  EXPECT_TRUE(same_bits(factors_of(*a).items, factors_of(*b).items));
  EXPECT_FALSE(same_bits(factors_of(*a).users, factors_of(*c).users));
  // seed=0 takes the fit context's seed.
  auto e = create_model("ials:factors=8,iterations=3");
  FitContext ctx;
  ctx.seed = 9;
  e->fit(d.train, ctx);
  EXPECT_TRUE(same_bits(factors_of(*a).users, factors_of(*e).users));
}

TEST(Ials, ScoresAreFactorDotProducts) {
  Data d = make_clustered(50, 40, 3, 6, 6);
  auto m = create_model("ials:factors=7,iterations=2");
  m->fit(d.train, {});
  auto f = factors_of(*m);
  std::vector<uint32_t> users{3, 49, 0, 3};
  Matrix s;
  m->score(users, s, 2);
  ASSERT_EQ(s.rows, users.size());
  ASSERT_EQ(s.cols, 40u);
  for (size_t r = 0; r < users.size(); ++r)
    for (uint32_t i = 0; i < 40; ++i) {
      double e = 0;
      for (size_t k = 0; k < 7; ++k) e += double(f.users(users[r], k)) * f.items(i, k);
      EXPECT_NEAR(s(r, i), e, 1e-5);
    }
  EXPECT_THROW(m->score(std::vector<uint32_t>{50}, s, 1), Error);
}

TEST(Ials, FoldInOfOwnHistoryReproducesTrainedScores) {
  Data d = make_clustered(300, 150, 6, 14, 7);
  auto m = create_model("ials:factors=10,iterations=40,reg=0.1,alpha=5,seed=2");
  m->fit(d.train, {});
  const uint32_t n = m->n_users();
  std::vector<uint32_t> users{0, 1, 50, 299};
  Matrix before;
  m->score(users, before, 1);
  for (size_t r = 0; r < users.size(); ++r) {
    auto idx = d.train.row_indices(users[r]);
    auto val = d.train.row_values(users[r]);
    EXPECT_EQ(m->fold_in(users[r], idx, val), users[r]);
    // The same history as a new user, with items in another order and implicit weights.
    std::vector<uint32_t> rev(idx.rbegin(), idx.rend());
    EXPECT_EQ(m->fold_in(m->n_users(), rev, {}), n + r);
  }
  EXPECT_EQ(m->n_users(), n + users.size());
  Matrix after, added;
  m->score(users, after, 1);
  std::vector<uint32_t> new_users(users.size());
  std::iota(new_users.begin(), new_users.end(), n);
  m->score(new_users, added, 1);
  for (size_t r = 0; r < users.size(); ++r) {
    for (uint32_t i = 0; i < before.cols; ++i) {
      // The trained row was solved against the previous iteration's item factors and ALS converges
      // slowly, so the exact re-solve moves scores (of order 1) by about 1% after 40 iterations.
      EXPECT_NEAR(after(r, i), before(r, i), 0.03) << "user " << users[r] << " item " << i;
      EXPECT_EQ(added(r, i), after(r, i));
    }
  }
}

TEST(Ials, FoldInValidatesInput) {
  Data d = make_clustered(20, 30, 2, 5, 8);
  auto m = create_model("ials:factors=4,iterations=1");
  m->fit(d.train, {});
  std::vector<uint32_t> items{1, 2};
  std::vector<float> w{1.0f};
  EXPECT_THROW(m->fold_in(0, items, w), Error);
  EXPECT_THROW(m->fold_in(21, items, {}), Error);
  std::vector<uint32_t> bad{1, 30};
  EXPECT_THROW(m->fold_in(0, bad, {}), Error);
  std::vector<float> nan{1.0f, std::nanf("")};
  EXPECT_THROW(m->fold_in(0, items, nan), Error);
  EXPECT_EQ(m->n_users(), 20u);
  // Not fitted yet.
  EXPECT_THROW(create_model("ials")->fold_in(0, items, {}), Error);
  // Repeated items count once with summed weights: {1: 2, 2: 1} either way.
  std::vector<uint32_t> rep{2, 1, 1};
  std::vector<uint32_t> uniq{1, 2};
  std::vector<float> summed{2.0f, 1.0f};
  const uint32_t a = m->fold_in(20, rep, {}), b = m->fold_in(21, uniq, summed);
  Matrix sa, sb;
  m->score(std::vector<uint32_t>{a}, sa, 1);
  m->score(std::vector<uint32_t>{b}, sb, 1);
  EXPECT_TRUE(same_bits(sa, sb));
}

TEST(Ials, SaveLoadRoundTrip) {
  Data d = make_clustered(60, 45, 3, 8, 9);
  auto m = create_model("ials:factors=5,iterations=3,reg=0.2");
  m->fit(d.train, {});
  const std::string dir = temp_dir("roundtrip");
  save_model(*m, dir, 1234);
  uint64_t fp = 0;
  auto l = load_model(dir, &fp);
  EXPECT_EQ(fp, 1234u);
  EXPECT_EQ(l->spec(), m->spec());
  EXPECT_EQ(l->n_users(), 60u);
  EXPECT_EQ(l->n_items(), 45u);
  std::vector<uint32_t> users(60);
  std::iota(users.begin(), users.end(), 0u);
  Matrix a, b;
  m->score(users, a, 1);
  l->score(users, b, 1);
  EXPECT_TRUE(same_bits(a, b));
  // Fold-in works after loading (the Gram matrix is rebuilt).
  auto idx = d.train.row_indices(5);
  EXPECT_EQ(l->fold_in(60, idx, {}), 60u);
  // Factor width must match the spec.
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  auto other = create_model("ials:factors=6");
  EXPECT_THROW(other->load(t, extra), Error);
  t.erase("item_factors");
  EXPECT_THROW(m->load(t, extra), Error);
  std::filesystem::remove_all(dir);
}

TEST(Ials, SpecListsEveryParameter) {
  auto m = create_model("ials:factors=32,alpha=2.5");
  const std::string s = m->spec();
  EXPECT_EQ(s.rfind("ials:", 0), 0u);
  for (const char* key :
       {"factors=32", "alpha=2.5", "reg=", "iterations=", "cg_steps=", "init=", "seed=", "solver=cg"})
    EXPECT_NE(s.find(key), std::string::npos) << key << " in " << s;
  // The canonical spec recreates an identical configuration.
  EXPECT_EQ(create_model(s)->spec(), s);
}

TEST(Ials, BadParametersThrow) {
  for (const char* spec :
       {"ials:factors=0", "ials:factors=abc", "ials:reg=-1", "ials:alpha=-0.5", "ials:cg_steps=0",
        "ials:solver=qr", "ials:bogus=1", "ials:iterations=-2", "ials:factors=100000"}) {
    EXPECT_THROW(create_model(spec), Error) << spec;
  }
}

TEST(Ials, RejectsInconsistentMatrices) {
  Data d = make_clustered(20, 30, 2, 5, 10);
  auto m = create_model("ials:factors=4,iterations=1");
  Csr bad = d.train;
  bad.values[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(m->fit(bad, {}), Error);
  bad = d.train;
  bad.indices[0] = 30;
  EXPECT_THROW(m->fit(bad, {}), Error);
}

TEST(Ials, EmptyRowsAndColumnsStayFinite) {
  // User 2 and item 3 have no entries.
  std::vector<uint32_t> r{0, 0, 1, 3}, c{0, 1, 2, 4};
  std::vector<float> v{1, 2, 1, 1};
  Csr m = Csr::from_triplets(4, 5, r, c, v);
  auto model = create_model("ials:factors=3,iterations=5,reg=0.1");
  model->fit(m, {});
  std::vector<uint32_t> users{0, 1, 2, 3};
  Matrix s;
  model->score(users, s, 1);
  for (float x : s.data) EXPECT_TRUE(std::isfinite(x));
}

namespace {

// Hit rate at 10 of the held-out items, seen items excluded.
double hit_rate(const Recommender& m, const Data& d, uint32_t n_users) {
  std::vector<uint32_t> users(n_users);
  std::iota(users.begin(), users.end(), 0u);
  Matrix s;
  m.score(users, s, 2);
  size_t hits = 0, n = 0;
  for (uint32_t u = 0; u < n_users; ++u) {
    if (d.held_out[u] < 0) continue;
    const float target = s(u, uint32_t(d.held_out[u]));
    const auto seen = d.train.row_indices(u);
    size_t above = 0;
    for (uint32_t i = 0; i < d.train.n_cols; ++i)
      if (!std::binary_search(seen.begin(), seen.end(), i) && s(u, i) > target) ++above;
    hits += above < 10 ? 1 : 0;
    ++n;
  }
  return double(hits) / double(n);
}

}  // namespace

TEST(Ials, ResumeWithNewUsersItemsAndInteractionsApproachesAFullRefit) {
  // The old data: the first 240 users, the first 160 items; then 60 new users, 40 new items and the old
  // users' interactions with the new items arrive.
  const Data d = make_clustered(300, 200, 5, 16, 21);
  constexpr uint32_t kOldUsers = 240, kOldItems = 160;
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < kOldUsers; ++u)
    for (uint32_t i : d.train.row_indices(u))
      if (i < kOldItems) r.push_back(u), c.push_back(i), v.push_back(1);
  const Csr old = Csr::from_triplets(kOldUsers, kOldItems, r, c, v);
  FitContext ctx;
  ctx.threads = 2;
  ctx.seed = 5;
  const std::string spec = "ials:factors=16,iterations=10";
  auto m = create_model(spec);
  m->fit(old, ctx);
  const Factors2 before = factors_of(*m);
  std::vector<uint32_t> touched;
  for (uint32_t u = 0; u < kOldUsers; ++u)
    if (d.train.row_size(u) != old.row_size(u)) touched.push_back(u);
  ASSERT_GT(touched.size(), 100u);
  // With no sweep, a user without new interactions keeps their factors exactly.
  auto m0 = create_model(spec);
  m0->fit(old, ctx);
  ASSERT_TRUE(m0->resume(d.train, touched, ctx, 0));
  EXPECT_EQ(m0->n_users(), 300u);
  EXPECT_EQ(m0->n_items(), 200u);
  const Factors2 after0 = factors_of(*m0);
  for (uint32_t u = 0; u < kOldUsers; ++u) {
    if (std::binary_search(touched.begin(), touched.end(), u)) continue;
    for (size_t k = 0; k < before.users.cols; ++k) ASSERT_EQ(after0.users(u, k), before.users(u, k)) << u;
  }
  // Two sweeps: within a small margin of a full refit on the new data, far above the stale model (which
  // cannot rank new items or serve new users).
  ASSERT_TRUE(m->resume(d.train, touched, ctx, 2));
  auto full = create_model(spec);
  full->fit(d.train, ctx);
  const double hr_resume = hit_rate(*m, d, 300), hr_full = hit_rate(*full, d, 300);
  EXPECT_GT(hr_full, 0.2);
  EXPECT_GT(hr_resume, hr_full - 0.05) << "resume " << hr_resume << " full " << hr_full;
  // Fewer users or items than the model has is an error.
  EXPECT_THROW(m->resume(old, {}, ctx, 1), Error);
  // A model without an incremental path says so.
  auto pop = create_model("popular");
  pop->fit(old, ctx);
  EXPECT_FALSE(pop->resume(d.train, touched, ctx, 1));
}
