// BPR-MF: the SGD step (Hogwild's and the synchronous batch step) against finite differences of the
// objective, ranking quality on a matrix with structure, determinism, fold-in, save/load and parameter
// errors.
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

std::vector<uint32_t> all_users(const Csr& m) {
  std::vector<uint32_t> u(m.n_rows);
  std::iota(u.begin(), u.end(), 0u);
  return u;
}

struct Tensors {
  Matrix users, items;
  std::vector<float> bias;
};

Tensors tensors_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return {get_tensor(t, "user_factors").to_matrix("user_factors"),
          get_tensor(t, "item_factors").to_matrix("item_factors"),
          get_tensor(t, "item_bias").to_f32("item_bias")};
}

bool same_bits(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// Per-triple objective maximised by BPR:
//   log sigmoid(x.(yi - yj) + bi - bj) - reg/2 (|x|^2 + |yi|^2 + |yj|^2 + bi^2 + bj^2)
double triple_objective(const std::vector<double>& v, size_t f, double reg) {
  const double* x = v.data();
  const double* yi = x + f;
  const double* yj = yi + f;
  const double bi = v[3 * f], bj = v[3 * f + 1];
  double z = bi - bj, norm = bi * bi + bj * bj;
  for (size_t k = 0; k < f; ++k) {
    z += x[k] * (yi[k] - yj[k]);
    norm += x[k] * x[k] + yi[k] * yi[k] + yj[k] * yj[k];
  }
  return -std::log1p(std::exp(-z)) - 0.5 * reg * norm;
}

std::string temp_dir(const std::string& tag) {
  auto d =
      std::filesystem::temp_directory_path() / ("xdrec_test_bpr_" + tag + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST(BprKernels, StepIsLearningRateTimesFiniteDifferenceGradient) {
  for (size_t f : {3, 8, 12, 64, 200}) {
    const size_t ld = mf::padded_width(f);
    Rng rng(f);
    mf::AlignedFloats x(ld, 0.0f), yi(ld, 0.0f), yj(ld, 0.0f);
    for (size_t k = 0; k < f; ++k)
      x[k] = 0.5f * rng.normal(), yi[k] = 0.5f * rng.normal(), yj[k] = 0.5f * rng.normal();
    float bi = 0.3f, bj = -0.2f;
    const double reg = 0.05, lr = 0.01;
    std::vector<double> v(3 * f + 2);
    for (size_t k = 0; k < f; ++k) v[k] = x[k], v[f + k] = yi[k], v[2 * f + k] = yj[k];
    v[3 * f] = bi;
    v[3 * f + 1] = bj;
    // Central differences of the objective in double precision.
    std::vector<double> grad(v.size());
    for (size_t k = 0; k < v.size(); ++k) {
      std::vector<double> a = v, b = v;
      a[k] += 1e-5;
      b[k] -= 1e-5;
      grad[k] = (triple_objective(a, f, reg) - triple_objective(b, f, reg)) / 2e-5;
    }
    const int nv = int(ld / 8);
    mf::dispatch_width(nv, [&]<int NV>() {
      return mf::detail::bpr_step<NV>(x.data(), yi.data(), yj.data(), &bi, &bj, float(lr), float(reg), true,
                                      nv);
    });
    for (size_t k = 0; k < f; ++k) {
      EXPECT_NEAR(x[k] - v[k], lr * grad[k], 1e-6) << "f=" << f << " x" << k;
      EXPECT_NEAR(yi[k] - v[f + k], lr * grad[f + k], 1e-6) << "f=" << f << " yi" << k;
      EXPECT_NEAR(yj[k] - v[2 * f + k], lr * grad[2 * f + k], 1e-6) << "f=" << f << " yj" << k;
    }
    EXPECT_NEAR(bi - v[3 * f], lr * grad[3 * f], 1e-6);
    EXPECT_NEAR(bj - v[3 * f + 1], lr * grad[3 * f + 1], 1e-6);
    for (size_t k = f; k < ld; ++k) EXPECT_EQ(x[k], 0.0f) << "padding must stay zero";
  }
}

// The synchronous mode's step on one batch is lr times the gradient of the batch's objective (finite
// differences): two users who both hold item 0 of two items, so every triple is (u, 0, 1); the two triples of
// the batch draw their users with replacement, and a user drawn c times counts c times (its log sigmoid and
// its L2 term, as do the items, which appear in both triples).
TEST(Bpr, SynchronousBatchStepIsLearningRateTimesFiniteDifferenceGradient) {
  const size_t f = 5;
  const double reg = 0.05, lr = 0.01;
  const std::vector<uint32_t> rows{0, 1}, cols{0, 0};
  const std::vector<float> vals{1.0f, 1.0f};
  const Csr m = Csr::from_triplets(2, 2, rows, cols, vals);
  const std::string base = "bpr:factors=5,init=0.5,reg=0.05,lr=0.01,batch=2,seed=3,epochs=";
  FitContext ctx;
  ctx.threads = 1;
  auto m0 = create_model(base + "0"), m1 = create_model(base + "1");
  m0->fit(m, ctx);
  m1->fit(m, ctx);
  const Tensors a = tensors_of(*m0), b = tensors_of(*m1);
  // Users drawn: a user whose row moved was drawn; one user alone was drawn twice.
  std::vector<double> count(2, 0.0);
  for (size_t u = 0; u < 2; ++u)
    for (size_t k = 0; k < f; ++k) count[u] = std::max(count[u], double(a.users(u, k) != b.users(u, k)));
  ASSERT_GT(count[0] + count[1], 0.0);
  if (count[0] + count[1] == 1) count[0] *= 2, count[1] *= 2;
  // Variables: x_0, x_1, y_0, y_1 (f each), b_0, b_1.
  std::vector<double> v(4 * f + 2);
  for (size_t k = 0; k < f; ++k)
    v[k] = a.users(0, k), v[f + k] = a.users(1, k), v[2 * f + k] = a.items(0, k),
    v[3 * f + k] = a.items(1, k);
  v[4 * f] = a.bias[0];
  v[4 * f + 1] = a.bias[1];
  auto objective = [&](const std::vector<double>& w) {
    double total = 0;
    for (size_t u = 0; u < 2; ++u) {
      double z = w[4 * f] - w[4 * f + 1], norm = 0;
      for (size_t k = 0; k < f; ++k) {
        z += w[u * f + k] * (w[2 * f + k] - w[3 * f + k]);
        norm += w[u * f + k] * w[u * f + k];
      }
      total += count[u] * (-std::log1p(std::exp(-z)) - 0.5 * reg * norm);
    }
    double items = w[4 * f] * w[4 * f] + w[4 * f + 1] * w[4 * f + 1];
    for (size_t k = 0; k < f; ++k) items += w[2 * f + k] * w[2 * f + k] + w[3 * f + k] * w[3 * f + k];
    return total - 0.5 * reg * 2 * items;  // each item row is in both triples
  };
  std::vector<double> moved(v.size());
  for (size_t k = 0; k < f; ++k)
    moved[k] = b.users(0, k), moved[f + k] = b.users(1, k), moved[2 * f + k] = b.items(0, k),
    moved[3 * f + k] = b.items(1, k);
  moved[4 * f] = b.bias[0];
  moved[4 * f + 1] = b.bias[1];
  for (size_t k = 0; k < v.size(); ++k) {
    std::vector<double> p = v, q = v;
    p[k] += 1e-5;
    q[k] -= 1e-5;
    const double grad = (objective(p) - objective(q)) / 2e-5;
    EXPECT_NEAR(moved[k] - v[k], lr * grad, 1e-6) << "variable " << k;
  }
}

TEST(Bpr, RanksHeldOutItemsAboveRandom) {
  Data d = make_clustered(400, 200, 8, 15, 2);
  auto untrained = create_model("bpr:factors=16,epochs=0,seed=1");
  untrained->fit(d.train, {});
  auto m = create_model("bpr:factors=16,epochs=40,lr=0.05,reg=0.01,seed=1");
  m->fit(d.train, {});
  const auto users = all_users(d.train);
  const double before = held_out_auc(*untrained, d, users), after = held_out_auc(*m, d, users);
  // Random scores give 0.5; a perfect model of the clusters about 0.87.
  EXPECT_NEAR(before, 0.5, 0.05);
  EXPECT_GT(after, 0.75);
}

TEST(Bpr, HogwildWithTwoThreadsLearnsToo) {
  Data d = make_clustered(400, 200, 8, 15, 3);
  auto m = create_model("bpr:factors=16,epochs=40,seed=1");
  FitContext ctx;
  ctx.threads = 2;
  m->fit(d.train, ctx);
  EXPECT_GT(held_out_auc(*m, d, all_users(d.train)), 0.75);
}

TEST(Bpr, DeterministicWithOneThread) {
  Data d = make_clustered(200, 100, 4, 10, 4);
  auto a = create_model("bpr:factors=8,epochs=5,seed=7");
  auto b = create_model("bpr:factors=8,epochs=5,seed=7");
  auto c = create_model("bpr:factors=8,epochs=5,seed=8");
  a->fit(d.train, {});
  b->fit(d.train, {});
  c->fit(d.train, {});
  auto ta = tensors_of(*a), tb = tensors_of(*b), tc = tensors_of(*c);
  EXPECT_TRUE(same_bits(ta.users, tb.users));
  EXPECT_TRUE(same_bits(ta.items, tb.items));
  EXPECT_EQ(ta.bias, tb.bias);
  EXPECT_FALSE(same_bits(ta.items, tc.items));
  // seed=0 takes the fit context's seed.
  auto e = create_model("bpr:factors=8,epochs=5");
  FitContext ctx;
  ctx.seed = 7;
  e->fit(d.train, ctx);
  EXPECT_TRUE(same_bits(ta.items, tensors_of(*e).items));
}

TEST(Bpr, ScoresAreDotProductsPlusBias) {
  Data d = make_clustered(50, 40, 3, 6, 6);
  auto m = create_model("bpr:factors=5,epochs=3");
  m->fit(d.train, {});
  auto t = tensors_of(*m);
  double bias_norm = 0;
  for (float b : t.bias) bias_norm += std::fabs(b);
  EXPECT_GT(bias_norm, 0.0) << "training moves the item biases";
  std::vector<uint32_t> users{3, 49, 0, 3};
  Matrix s;
  m->score(users, s, 2);
  for (size_t r = 0; r < users.size(); ++r)
    for (uint32_t i = 0; i < 40; ++i) {
      double e = t.bias[i];
      for (size_t k = 0; k < 5; ++k) e += double(t.users(users[r], k)) * t.items(i, k);
      EXPECT_NEAR(s(r, i), e, 1e-5);
    }
  EXPECT_THROW(m->score(std::vector<uint32_t>{50}, s, 1), Error);
  auto nobias = create_model("bpr:factors=5,epochs=3,bias=false");
  nobias->fit(d.train, {});
  for (float b : tensors_of(*nobias).bias) EXPECT_EQ(b, 0.0f);
}

TEST(Bpr, NegativesAreNeverSeenItems) {
  // Every user has seen every item but one: with verification, the only negative ever drawn is that item,
  // so its score must fall below every seen item's for each user.
  const uint32_t n_users = 30, n_items = 12;
  std::vector<uint32_t> r, c;
  for (uint32_t u = 0; u < n_users; ++u)
    for (uint32_t i = 0; i < n_items; ++i)
      if (i != u % n_items) r.push_back(u), c.push_back(i);
  std::vector<float> v(r.size(), 1.0f);
  Csr m = Csr::from_triplets(n_users, n_items, r, c, v);
  auto model = create_model("bpr:factors=4,epochs=60,lr=0.05,bias=false,seed=3");
  model->fit(m, {});
  Matrix s;
  model->score(all_users(m), s, 1);
  size_t lowest = 0;
  for (uint32_t u = 0; u < n_users; ++u) {
    const uint32_t neg = u % n_items;
    bool is_lowest = true;
    for (uint32_t i = 0; i < n_items; ++i)
      if (i != neg && s(u, i) <= s(u, neg)) is_lowest = false;
    lowest += is_lowest;
  }
  EXPECT_GE(lowest, n_users * 9 / 10);
}

TEST(Bpr, FoldInRecoversHeldOutRanking) {
  Data d = make_clustered(400, 200, 8, 15, 5);
  auto m = create_model("bpr:factors=16,epochs=40,seed=1");
  m->fit(d.train, {});
  const uint32_t n = m->n_users();
  const auto users = all_users(d.train);
  const double trained = held_out_auc(*m, d, users);
  // Re-derive 100 users from their history alone, in place and as new users.
  std::vector<uint32_t> refolded;
  for (uint32_t u = 0; u < 100; ++u) {
    auto idx = d.train.row_indices(u);
    EXPECT_EQ(m->fold_in(u, idx, {}), u);
    EXPECT_EQ(m->fold_in(m->n_users(), idx, d.train.row_values(u)), n + u);
    refolded.push_back(u);
  }
  EXPECT_EQ(m->n_users(), n + 100);
  Matrix a, b;
  std::vector<uint32_t> new_users(100);
  std::iota(new_users.begin(), new_users.end(), n);
  m->score(refolded, a, 1);
  m->score(new_users, b, 1);
  EXPECT_TRUE(same_bits(a, b)) << "fold-in depends only on the history and the seed";
  const double folded = held_out_auc(*m, d, refolded);
  EXPECT_GT(folded, 0.75);
  EXPECT_GT(folded, trained - 0.1);
}

TEST(Bpr, FoldInValidatesInput) {
  Data d = make_clustered(20, 30, 2, 5, 8);
  auto m = create_model("bpr:factors=4,epochs=1");
  m->fit(d.train, {});
  std::vector<uint32_t> items{1, 2};
  std::vector<float> w{1.0f};
  EXPECT_THROW(m->fold_in(0, items, w), Error);
  EXPECT_THROW(m->fold_in(21, items, {}), Error);
  std::vector<uint32_t> bad{1, 30};
  EXPECT_THROW(m->fold_in(0, bad, {}), Error);
  EXPECT_EQ(m->n_users(), 20u);
  EXPECT_THROW(create_model("bpr")->fold_in(0, items, {}), Error);  // not fitted
  // An empty history gives a valid (bias-only) user.
  EXPECT_EQ(m->fold_in(20, {}, {}), 20u);
  Matrix s;
  m->score(std::vector<uint32_t>{20}, s, 1);
  for (float x : s.data) EXPECT_TRUE(std::isfinite(x));
}

TEST(Bpr, SaveLoadRoundTrip) {
  Data d = make_clustered(60, 45, 3, 8, 9);
  auto m = create_model("bpr:factors=5,epochs=3,seed=4");
  m->fit(d.train, {});
  const std::string dir = temp_dir("roundtrip");
  save_model(*m, dir);
  auto l = load_model(dir);
  EXPECT_EQ(l->spec(), m->spec());
  EXPECT_EQ(l->n_users(), 60u);
  EXPECT_EQ(l->n_items(), 45u);
  const auto users = all_users(d.train);
  Matrix a, b;
  m->score(users, a, 1);
  l->score(users, b, 1);
  EXPECT_TRUE(same_bits(a, b));
  // Fold-in after loading gives the same row as before saving.
  auto idx = d.train.row_indices(7);
  m->fold_in(60, idx, {});
  l->fold_in(60, idx, {});
  std::vector<uint32_t> last{60};
  m->score(last, a, 1);
  l->score(last, b, 1);
  EXPECT_TRUE(same_bits(a, b));
  TensorMap t;
  nlohmann::json extra;
  m->save(t, extra);
  auto other = create_model("bpr:factors=6");
  EXPECT_THROW(other->load(t, extra), Error);
  t["item_bias"] = Tensor::from_f32({3}, tensors_of(*m).bias.data());
  EXPECT_THROW(m->load(t, extra), Error);
  std::filesystem::remove_all(dir);
}

TEST(Bpr, BadParametersThrow) {
  for (const char* spec :
       {"bpr:factors=0", "bpr:lr=0", "bpr:lr=-0.1", "bpr:reg=-1", "bpr:epochs=-1", "bpr:bias=maybe",
        "bpr:learning_rate=0.1", "bpr:foldin_epochs=0", "bpr:factors=1.5"}) {
    EXPECT_THROW(create_model(spec), Error) << spec;
  }
  Data d = make_clustered(20, 30, 2, 5, 10);
  Csr bad = d.train;
  bad.values[0] = std::nanf("");
  EXPECT_THROW(create_model("bpr")->fit(bad, {}), Error);
}

TEST(Bpr, NoPositivesLeavesInitialFactors) {
  std::vector<uint32_t> r{0, 1}, c{0, 1};
  std::vector<float> v{-1.0f, 0.0f};  // no positive entries
  Csr m = Csr::from_triplets(2, 3, r, c, v);
  auto model = create_model("bpr:factors=3,epochs=5");
  model->fit(m, {});
  Matrix s;
  model->score(all_users(m), s, 1);
  for (float x : s.data) EXPECT_TRUE(std::isfinite(x));
}
