// Federated collaborative filtering (fcf): it learns; the masks cancel exactly while a single masked update
// is not the update; the fit does not depend on the thread count and follows the seed; the client's gradient
// matches finite differences of its loss (at a fixed factor and through the closed-form solve); the DP
// guarantee in the manifest is the accountant's; bad options and out-of-range updates are errors.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "models/clustered.h"
#include "models/fcf.h"
#include "test_util.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

using namespace xdrec;
using testing_util::Data;
using testing_util::make_clustered;
using testing_util::throws_error;

namespace {

const Data& data() {
  static const Data d = make_clustered(300, 120, 4, 14, 3);
  return d;
}

std::unique_ptr<Recommender> fit(const std::string& spec, int threads = 1, uint64_t seed = 1) {
  return testing_util::fit_spec(spec, data().train, threads, seed);
}

nlohmann::json extra_of(const Recommender& m) {
  return testing_util::saved_extra(m);
}

Matrix scores(const Recommender& m) {
  std::vector<uint32_t> users(data().train.n_rows);
  std::iota(users.begin(), users.end(), 0u);
  Matrix s;
  m.score(users, s, 1);
  return s;
}

const std::string kBase = "fcf:factors=8,clients=60,lr=0.05,reg=1,reg_exponent=0";

// Item factors with random entries, and a user row of the test data.
mf::Factors random_items(size_t n, size_t f, uint64_t seed) {
  mf::Factors y;
  y.resize(n, f);
  y.init_normal(seed, 0, 0.3f);
  return y;
}

mf::IalsRow row_of(uint32_t u) {
  const Csr& x = data().train;
  return {x.indices.data() + x.indptr[u], x.values.data() + x.indptr[u], x.row_size(u)};
}

}  // namespace

TEST(Fcf, LearnsAndMatchesCentralisedIalsRoughly) {
  auto m = fit(kBase + ",rounds=60");
  const double auc = testing_util::held_out_auc(*m, data());
  EXPECT_GT(auc, 0.8) << auc;
  const double ials = testing_util::held_out_auc(*fit("ials:factors=8,reg=1,iterations=10"), data());
  EXPECT_GT(auc, ials - 0.08) << "fcf " << auc << " ials " << ials;
  // The training curve (mean client loss per round) falls.
  const auto curves = m->training_curves();
  ASSERT_EQ(curves.at("loss").size(), 60u);
  EXPECT_LT(curves.at("loss").back(), curves.at("loss").front());
  const nlohmann::json fed = extra_of(*m)["federated"];
  EXPECT_EQ(fed["sampling"], "poisson");
  EXPECT_DOUBLE_EQ(fed["q"].get<double>(), 0.2);
  EXPECT_NEAR(fed["clients_per_round"].get<double>(), 60, 6);
  EXPECT_DOUBLE_EQ(fed["bytes_up_per_client"].get<double>(), 120 * 8 * 8.0);  // dense, 8 bytes a word
  EXPECT_DOUBLE_EQ(fed["bytes_down_per_client"].get<double>(), 120 * 8 * 4.0);
  EXPECT_LT(fed["bytes_up_sparse_unmasked_per_round"].get<double>(), fed["bytes_up_per_round"].get<double>());
}

TEST(Fcf, MasksCancelExactlyAndHideASingleUpdate) {
  const size_t dim = 500, n = 7;
  const std::vector<uint32_t> ids{3, 10, 11, 40, 41, 97, 200};
  Rng rng(5);
  std::vector<std::vector<uint64_t>> plain(n), masked(n);
  fcf::MaskedSum plain_sum(dim), masked_sum(dim);
  for (size_t p = 0; p < n; ++p) {
    for (size_t k = 0; k < dim; ++k) plain[p].push_back(fcf::encode(rng.normal(), fcf::kSumBound / n));
    masked[p] = plain[p];
    for (size_t o : fcf::mask_partners(p, n, 2))
      fcf::apply_mask(fcf::pair_seed(9, 4, ids[p], ids[o]), ids[p] < ids[o], masked[p]);
    plain_sum.add(plain[p]);
    masked_sum.add(masked[p]);
  }
  EXPECT_EQ(masked_sum.words(), plain_sum.words());  // bit for bit
  // A single masked update tells nothing obvious: no word equals the plain one, and its decoded values are
  // spread over the whole range instead of about N(0, 1).
  size_t same = 0;
  double big = 0;
  for (size_t k = 0; k < dim; ++k) {
    same += masked[0][k] == plain[0][k];
    big += std::fabs(fcf::decode(masked[0][k])) > 1e6;
  }
  EXPECT_EQ(same, 0u);
  EXPECT_GT(big / double(dim), 0.99);
  // Partners are symmetric, and a small ring is complete.
  for (size_t p = 0; p < n; ++p)
    for (size_t o : fcf::mask_partners(p, n, 2)) {
      const auto back = fcf::mask_partners(o, n, 2);
      EXPECT_NE(std::find(back.begin(), back.end(), p), back.end());
    }
  EXPECT_EQ(fcf::mask_partners(0, 5, 2).size(), 4u);
  EXPECT_EQ(fcf::mask_partners(0, 50, 2), (std::vector<size_t>{1, 2, 48, 49}));
  // Fixed point round trip and range.
  EXPECT_EQ(fcf::decode(fcf::encode(-1.25, 10)), -1.25);
  EXPECT_NEAR(fcf::decode(fcf::encode(0.1, 10)), 0.1, 1e-9);
  EXPECT_TRUE(throws_error([] { fcf::encode(11, 10); }, {"fixed-point range"}));
  EXPECT_TRUE(throws_error([] { fcf::encode(std::nan(""), 10); }, {"non-finite"}));
}

TEST(Fcf, ClientsMaskedUpdatesSumToTheirPlainOnes) {
  const size_t n = 120, f = 4, dim = n * f;
  const mf::Factors y = random_items(n, f, 2);
  mf::AlignedFloats g;
  mf::gram(y, g, 1);
  const std::vector<uint32_t> part{4, 9, 30, 31, 77, 150};
  const fcf::Broadcast b{3, &y, &g, part};
  fcf::ClientOptions secure, plain;
  secure.mask_seed = plain.mask_seed = 123;
  secure.peers = 1;  // a ring: two partners each
  plain.secure = false;
  fcf::MaskedSum s_secure(dim), s_plain(dim);
  std::vector<uint64_t> out_s(dim), out_p(dim);
  std::vector<float> grad(dim);
  mf::CholScratch chol(f);
  for (size_t k = 0; k < part.size(); ++k) {
    fcf::Client c(part[k], row_of(part[k]), y.ld);
    const auto rs = c.update(b, k, secure, out_s, grad, chol);
    const auto rp = c.update(b, k, plain, out_p, grad, chol);
    EXPECT_EQ(rs.loss, rp.loss);
    size_t same = 0;
    for (size_t e = 0; e < dim; ++e) same += out_s[e] == out_p[e];
    EXPECT_EQ(same, 0u) << "client " << part[k];
    // The plain update is the gradient in fixed point.
    for (size_t e = 0; e < dim; ++e) ASSERT_NEAR(fcf::decode(out_p[e]), grad[e], 1e-9);
    s_secure.add(out_s);
    s_plain.add(out_p);
  }
  EXPECT_EQ(s_secure.words(), s_plain.words());
  // A client that is not where the list says is refused.
  fcf::Client c(5, row_of(5), y.ld);
  EXPECT_TRUE(throws_error([&] { c.update(b, 0, secure, out_s, grad, chol); }, {"position"}));
}

TEST(Fcf, SecureAggregationDoesNotChangeTheModel) {
  const Matrix a = scores(*fit(kBase + ",rounds=10")),
               b = scores(*fit(kBase + ",rounds=10,secure_agg=false"));
  EXPECT_EQ(a.data, b.data);
}

TEST(Fcf, ThreadCountAndSeed) {
  const std::string spec = kBase + ",rounds=8,dp_noise=0.5,dp_clip=2";
  const Matrix one = scores(*fit(spec, 1)), two = scores(*fit(spec, 2)), three = scores(*fit(spec, 3));
  EXPECT_EQ(one.data, two.data);
  EXPECT_EQ(one.data, three.data);
  // Rounds large enough to be spread over the threads (participants x items x factors >= 4e6).
  {
    const Data big = make_clustered(2000, 500, 5, 12, 4);
    auto fit_big = [&](int threads) {
      auto m = create_model("fcf:factors=16,rounds=3,clients=700,dp_noise=0.5");
      FitContext ctx;
      ctx.seed = 1;
      ctx.threads = threads;
      m->fit(big.train, ctx);
      Matrix s;
      m->score(std::vector<uint32_t>{0, 1, 999, 1999}, s, 1);
      return s;
    };
    const Matrix b1 = fit_big(1);
    EXPECT_EQ(b1.data, fit_big(2).data);
    EXPECT_EQ(b1.data, fit_big(3).data);
  }
  EXPECT_EQ(scores(*fit(spec, 2, 1)).data, one.data);
  EXPECT_NE(scores(*fit(spec, 1, 2)).data, one.data);
  EXPECT_NE(scores(*fit(spec + ",seed=7", 1)).data, one.data);
}

TEST(Fcf, ClientGradientMatchesFiniteDifferences) {
  const size_t n = 120, f = 5;
  mf::Factors y = random_items(n, f, 11);
  const uint32_t u = 17;
  const mf::IalsRow row = row_of(u);
  ASSERT_GT(row.n, 3u);
  const float alpha = 3.0f, reg = 0.5f;
  // The client's solved factor.
  mf::AlignedFloats g;
  mf::gram(y, g, 1);
  fcf::ClientOptions o;
  o.alpha = alpha;
  o.reg = reg;
  fcf::Client c(u, row, y.ld);
  mf::CholScratch chol(f);
  c.solve(y, g, o, chol);
  std::vector<float> x = c.factor();
  std::vector<float> grad(n * f);
  const fcf::ClientStats st = fcf::client_gradient(y, row, alpha, reg, x.data(), grad);
  double sq_check = 0;
  for (float v : grad) sq_check += double(v) * v;
  EXPECT_NEAR(st.sq_norm, sq_check, 1e-4 * sq_check);
  const double loss = fcf::client_loss(y, row, alpha, reg, x.data());
  EXPECT_NEAR(st.loss, loss, 1e-5 * loss);
  // Entries of a history item, of an item outside it and of the padding-free layout.
  const std::vector<uint32_t> check_items{row.idx[0], row.idx[2], 1, 77, 119};
  for (uint32_t i : check_items) {
    for (size_t k = 0; k < f; ++k) {
      const float h = 1e-2f, saved = y.row(i)[k];
      // (1) at the fixed factor x.
      y.row(i)[k] = saved + h;
      const double lp = fcf::client_loss(y, row, alpha, reg, x.data());
      y.row(i)[k] = saved - h;
      const double lm = fcf::client_loss(y, row, alpha, reg, x.data());
      // (2) through the solve: min_x J(x, Y) (the envelope theorem gives the same gradient).
      auto solved_loss = [&](float v) {
        y.row(i)[k] = v;
        mf::AlignedFloats gg;
        mf::gram(y, gg, 1);
        fcf::Client cc(u, row, y.ld);
        cc.solve(y, gg, o, chol);
        return fcf::client_loss(y, row, alpha, reg, cc.factor().data());
      };
      const double sp = solved_loss(saved + h), sm = solved_loss(saved - h);
      y.row(i)[k] = saved;
      const double fd = (lp - lm) / (2 * h), fd_solved = (sp - sm) / (2 * h), an = grad[i * f + k];
      EXPECT_NEAR(an, fd, 1e-3 * std::max(1.0, std::fabs(fd))) << "item " << i << " k " << k;
      EXPECT_NEAR(an, fd_solved, 2e-3 * std::max(1.0, std::fabs(fd))) << "item " << i << " k " << k;
    }
  }
}

TEST(Fcf, DpEpsilonIsTheAccountants) {
  auto m = fit("fcf:factors=8,rounds=30,clients=30,dp_noise=1.1,dp_clip=0.5,dp_delta=1e-5");
  const nlohmann::json p = extra_of(*m)["privacy"];
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["unit"], "user");
  EXPECT_DOUBLE_EQ(p["q"].get<double>(), 0.1);
  EXPECT_EQ(p["steps"].get<int64_t>(), 30);
  const privacy::Epsilon e = privacy::compute_epsilon(0.1, 1.1, 30, 1e-5);
  EXPECT_EQ(p["epsilon"].get<double>(), e.epsilon);
  EXPECT_EQ(p["order"].get<double>(), e.order);
  EXPECT_GT(p["clipped_fraction"].get<double>(), 0.0);
  // A target epsilon is met with the least noise; saved and loaded, the guarantee stays.
  auto t = fit("fcf:factors=8,rounds=30,clients=30,dp_epsilon=2");
  const nlohmann::json pt = extra_of(*t)["privacy"];
  EXPECT_LE(pt["epsilon"].get<double>(), 2.0 + 1e-6);
  EXPECT_GT(pt["epsilon"].get<double>(), 2.0 - 1e-3);
  EXPECT_EQ(pt["epsilon"].get<double>(),
            privacy::compute_epsilon(0.1, pt["noise"].get<double>(), 30, 1e-5).epsilon);
  TensorMap tm;
  nlohmann::json extra;
  t->save(tm, extra);
  auto loaded = create_model(t->spec());
  loaded->load(tm, extra);
  EXPECT_EQ(extra_of(*loaded)["privacy"], pt);
  EXPECT_EQ(scores(*loaded).data, scores(*t).data);
  // Without DP there is no privacy record; clipping without noise is "inf".
  EXPECT_FALSE(extra_of(*fit(kBase + ",rounds=2")).contains("privacy"));
  EXPECT_EQ(extra_of(*fit(kBase + ",rounds=2,dp=true"))["privacy"]["epsilon"], "inf");
}

TEST(Fcf, FoldInIsTheClientSolve) {
  auto m = fit(kBase + ",rounds=20");
  const uint32_t u = 5;
  const auto items = data().train.row_indices(u);
  const std::vector<uint32_t> hist(items.begin(), items.end());
  Matrix before;
  m->user_vectors(std::vector<uint32_t>{u}, before);
  const uint32_t nu = m->fold_in(m->n_users(), hist, {});
  Matrix after;
  m->user_vectors(std::vector<uint32_t>{nu}, after);
  EXPECT_EQ(before.data, after.data);  // the same closed form as the client's final solve
}

TEST(Fcf, BadOptionsAreErrors) {
  EXPECT_TRUE(throws_error([] { create_model("fcf:clients=0"); }, {"fcf", "clients"}));
  EXPECT_TRUE(throws_error([] { create_model("fcf:optimiser=rmsprop"); }, {"fcf", "optimiser"}));
  EXPECT_TRUE(throws_error([] { create_model("fcf:dp_clip=0"); }, {"fcf", "dp_clip"}));
  EXPECT_TRUE(throws_error([] { create_model("fcf:mask_peers=0"); }, {"fcf", "mask_peers"}));
  EXPECT_TRUE(throws_error([] { create_model("fcf:no_such=1"); }, {"fcf", "no_such"}));
  // A diverging server (a huge SGD step) ends in an error, never in a wrapped sum or a crash.
  auto m = create_model("fcf:factors=4,rounds=200,clients=300,optimiser=sgd,lr=1e6");
  FitContext ctx;
  EXPECT_TRUE(throws_error([&] { m->fit(data().train, ctx); }, {"fcf"}));
  // A target epsilon out of reach is an error from the accountant.
  auto d = create_model("fcf:factors=4,rounds=3,clients=30,dp_epsilon=1e-9");
  EXPECT_THROW(d->fit(data().train, ctx), Error);
}
