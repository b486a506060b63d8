// EASE: against a dense reference inverse, the optimality conditions of its constrained least-squares
// problem, both scoring paths (GEMM and sparse), thread independence, the item limit, and MovieLens 100k.
#include <gtest/gtest.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstring>
#include <fstream>

#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

// Users x items with a few heavy users (scored through GEMM) and many light ones (sparse path), values in
// {1, 2, 3} so that implicit=false differs from implicit=true.
Csr random_matrix(uint32_t users, uint32_t items, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < users; ++u) {
    const double density = u % 10 == 0 ? 0.4 : 0.05;
    for (uint32_t i = 0; i < items; ++i)
      if (rng.uniform() < density * (0.5 + double(i % 4) / 2)) {
        r.push_back(u);
        c.push_back(i);
        v.push_back(float(1 + rng.below(3)));
      }
  }
  return Csr::from_triplets(users, items, r, c, v);
}

Eigen::MatrixXd dense(const Csr& x, bool binary) {
  Eigen::MatrixXd d = Eigen::MatrixXd::Zero(x.n_rows, x.n_cols);
  for (uint32_t u = 0; u < x.n_rows; ++u)
    for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p) d(u, x.indices[p]) = binary ? 1.0 : x.values[p];
  return d;
}

// B = I - P diag(1/diag(P)), P = (X^T X + lambda I)^-1, computed with a pivoted LU on doubles.
Eigen::MatrixXd reference_b(const Eigen::MatrixXd& x, double lambda) {
  const Eigen::Index n = x.cols();
  Eigen::MatrixXd g = x.transpose() * x + lambda * Eigen::MatrixXd::Identity(n, n);
  Eigen::MatrixXd p = g.fullPivLu().inverse();
  Eigen::MatrixXd b = -p * p.diagonal().cwiseInverse().asDiagonal();
  b.diagonal().setZero();
  return b;
}

std::unique_ptr<Recommender> fit(const std::string& spec, const Csr& x, int threads = 1) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  m->fit(x, ctx);
  return m;
}

// The model's B, read through the interface: a folded-in user with item j alone scores row j of B.
Eigen::MatrixXd model_b(Recommender& m) {
  const uint32_t n = m.n_items();
  Eigen::MatrixXd b(n, n);
  for (uint32_t j = 0; j < n; ++j) {
    std::vector<uint32_t> h{j};
    const uint32_t u = m.fold_in(m.n_users(), h, {});
    Matrix out;
    std::vector<uint32_t> q{u};
    m.score(q, out, 1);
    for (uint32_t i = 0; i < n; ++i) b(j, i) = out(0, i);
  }
  return b;
}

Matrix score_all(const Recommender& m, uint32_t users, int threads) {
  std::vector<uint32_t> q(users);
  for (uint32_t u = 0; u < users; ++u) q[u] = u;
  Matrix out;
  m.score(q, out, threads);
  return out;
}

}  // namespace

TEST(Ease, MatchesTheClosedFormOnADenseReference) {
  const Csr x = random_matrix(80, 30, 1);
  for (bool implicit : {true, false}) {
    const double lambda = 7.5;
    auto m = fit("ease:lambda=7.5,implicit=" + std::string(implicit ? "true" : "false"), x);
    const Eigen::MatrixXd xd = dense(x, implicit);
    const Eigen::MatrixXd want = reference_b(xd, lambda);
    const Eigen::MatrixXd scores = xd * want;
    const Matrix got_scores = score_all(*m, x.n_rows, 1);
    for (uint32_t u = 0; u < x.n_rows; ++u)
      for (uint32_t i = 0; i < x.n_cols; ++i)
        ASSERT_NEAR(got_scores(u, i), scores(u, i), 1e-4 * (1 + std::fabs(scores(u, i)))) << u << "," << i;
    const Eigen::MatrixXd got = model_b(*m);
    EXPECT_LT((got - want).cwiseAbs().maxCoeff(), 1e-5 * (1 + want.cwiseAbs().maxCoeff()));
    for (uint32_t j = 0; j < x.n_cols; ++j) EXPECT_EQ(got(j, j), 0.0) << "diag(B) is exactly zero";
  }
}

// Stationarity of ||X - XB||^2 + lambda ||B||^2 under diag(B) = 0: (X^T X + lambda I) B - X^T X is diagonal.
TEST(Ease, SatisfiesTheOptimalityConditions) {
  const Csr x = random_matrix(120, 40, 2);
  const double lambda = 20;
  auto m = fit("ease:lambda=20", x);
  const Eigen::MatrixXd xd = dense(x, true);
  const Eigen::MatrixXd g = xd.transpose() * xd;
  const Eigen::MatrixXd b = model_b(*m);
  Eigen::MatrixXd k = (g + lambda * Eigen::MatrixXd::Identity(40, 40)) * b - g;
  const double scale = g.cwiseAbs().maxCoeff();
  double worst = 0;
  for (int i = 0; i < 40; ++i)
    for (int j = 0; j < 40; ++j)
      if (i != j) worst = std::max(worst, std::fabs(k(i, j)));
  EXPECT_LT(worst, 1e-4 * scale);
  // Larger lambda shrinks B.
  auto stiff = fit("ease:lambda=2000", x);
  EXPECT_LT(model_b(*stiff).norm(), 0.5 * b.norm());
}

TEST(Ease, ExactlyIndependentOfTheThreadCount) {
  // 200 items: several 64-column blocks of P; heavy users go through GEMM, light users through row sums.
  const Csr x = random_matrix(500, 200, 3);
  auto a = fit("ease", x, 1), b = fit("ease", x, 2);
  const Matrix sa = score_all(*a, 500, 1), sb = score_all(*b, 500, 2), sc = score_all(*a, 500, 2);
  EXPECT_EQ(std::memcmp(sa.data.data(), sb.data.data(), sa.data.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(sa.data.data(), sc.data.data(), sa.data.size() * sizeof(float)), 0);
}

TEST(Ease, RefusesTooManyItems) {
  const Csr x = random_matrix(20, 30, 4);
  auto m = create_model("ease:max_items=29");
  try {
    m->fit(x, FitContext{});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("30 items"), std::string::npos) << w;
    EXPECT_NE(w.find("max_items=29"), std::string::npos) << w;
  }
  EXPECT_NO_THROW(fit("ease:max_items=30", x));
  EXPECT_THROW(create_model("ease:lambda=0"), Error);
  EXPECT_THROW(create_model("ease:lambda=-1"), Error);
}

TEST(Ease, FoldInReplacesTheHistoryRow) {
  const Csr x = random_matrix(50, 25, 5);
  auto m = fit("ease:lambda=5", x);
  const Eigen::MatrixXd b = model_b(*m);
  std::vector<uint32_t> h{3, 7, 7};  // repeated item: summed, then binarised
  EXPECT_EQ(m->fold_in(10, h, {}), 10u);
  const Matrix s = score_all(*m, 11, 1);
  for (uint32_t i = 0; i < 25; ++i) EXPECT_NEAR(s(10, i), b(3, i) + b(7, i), 1e-6);
}
