// CFGAN: the gradients of both losses against finite differences (double precision), the domain restriction,
// fold-in as a forward pass, save/load and the adversarial training's effect on a clustered matrix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "../nn/grad_check.h"
#include "models/cfgan_core.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

using Nets = models::CfganNets<double>;

Nets random_nets(size_t items, size_t h, size_t no, size_t noise, nn::Act act, uint64_t seed) {
  Rng rng(seed);
  auto fill = [&](nn::Mat<double>& m, size_t r, size_t c) {
    m.resize(r, c);
    for (double& v : m.data) v = rng.normal() * 0.7;
  };
  Nets n;
  n.act = act;
  fill(n.g_cond, items, h);
  fill(n.g_bias, 1, h);
  fill(n.g_noise, noise, h);
  n.g_out = nn::Linear<double>(h, no);
  fill(n.g_out.w, h, no);
  fill(n.g_out.b, 1, no);
  fill(n.d_cond, items, h);
  n.d_in = nn::Linear<double>(no, h);
  fill(n.d_in.w, no, h);
  fill(n.d_in.b, 1, h);
  n.d_out = nn::Linear<double>(h, 1);
  fill(n.d_out.w, h, 1);
  fill(n.d_out.b, 1, 1);
  return n;
}

}  // namespace

TEST(Cfgan, GradientsOfBothLossesMatchFiniteDifferences) {
  constexpr size_t kItems = 7, kH = 5, kOut = 4, kNoise = 2;
  // Four users; the generated items are items 3..6 (columns 0..3).
  const Csr hist =
      Csr::from_triplets(4, kItems, std::vector<uint32_t>{0, 0, 1, 2, 2, 2, 3},
                         std::vector<uint32_t>{0, 4, 3, 1, 5, 6, 2}, std::vector<float>{1, 1, 1, 1, 1, 1, 1});
  const std::vector<uint32_t> users{0, 2, 3};
  for (nn::Act act : {nn::Act::sigmoid, nn::Act::tanh}) {
    Nets n = random_nets(kItems, kH, kOut, kNoise, act, 3);
    Nets::Batch b;
    b.hist = &hist;
    b.users = users;
    b.real.resize(3, kOut);
    b.real(0, 1) = 1;  // user 0 bought item 4
    b.real(1, 2) = 1;  // user 2 bought items 5, 6
    b.real(1, 3) = 1;
    b.pm.resize(3, kOut);
    b.pm(0, 0) = b.pm(1, 1) = b.pm(2, 3) = 1;
    b.zr.resize(3, kOut);
    b.zr(0, 2) = b.zr(2, 0) = b.zr(2, 1) = 1;
    Rng rng(5);
    b.z.resize(3, kNoise);
    for (double& v : b.z.data) v = rng.normal();
    const double alpha = 0.3;
    auto gr = n.make_grads();
    n.d_loss(b, &gr);
    auto gg = n.make_grads();
    n.g_loss(b, alpha, &gg);
    // Sparse gradients of the condition tables as dense matrices, for the finite-difference check.
    auto dense = [&](const nn::SparseGrad<double>& g, size_t rows) {
      nn::Mat<double> m(rows, kH);
      for (size_t k = 0; k < g.rows.size(); ++k)
        for (size_t j = 0; j < kH; ++j) m(g.rows[k], j) = g.values(k, j);
      return m;
    };
    auto dl = [&] { return n.d_loss(b, nullptr); };
    auto gl = [&] { return n.g_loss(b, alpha, nullptr); };
    using nn::testing::expect_grad;
    const auto dps = n.d_dense_params();
    for (size_t q = 0; q < dps.size(); ++q) expect_grad(*dps[q], gr.d[q], dl, "D dense " + std::to_string(q));
    expect_grad(n.d_cond, dense(gr.d_cond, kItems), dl, "D condition table");
    const auto gps = n.g_dense_params();
    for (size_t q = 0; q < gps.size(); ++q) expect_grad(*gps[q], gg.g[q], gl, "G dense " + std::to_string(q));
    expect_grad(n.g_cond, dense(gg.g_cond, kItems), gl, "G condition table");
  }
}

namespace {

// Two user groups with their own items in each of two domains (even items: domain 0, odd: domain 1).
struct Clustered {
  Csr train;
  std::vector<uint16_t> domain;
};
Clustered clustered() {
  constexpr uint32_t kUsers = 120, kItems = 40;
  Rng rng(8);
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < kUsers; ++u) {
    const uint32_t g = u % 2;
    for (uint32_t i = 0; i < kItems; ++i) {
      const bool mine = (i / 20) == g;
      if (rng.uniform() < (mine ? 0.4 : 0.03)) {
        r.push_back(u);
        c.push_back(i);
        v.push_back(1);
      }
    }
  }
  Clustered out;
  out.train = Csr::from_triplets(kUsers, kItems, r, c, v);
  for (uint32_t i = 0; i < kItems; ++i) out.domain.push_back(uint16_t(i % 2));
  return out;
}

}  // namespace

TEST(Cfgan, LearnsEachGroupsItemsAndRestrictsToItsDomain) {
  const Clustered d = clustered();
  FitContext ctx;
  ctx.item_domain = d.domain;
  ctx.seed = 4;
  auto m = create_model("cfgan:hidden=32,epochs=100,batch=8,lr_g=0.002,lr_d=0.002,alpha=1,domain=1");
  m->fit(d.train, ctx);
  Matrix s;
  std::vector<uint32_t> users(d.train.n_rows);
  for (uint32_t u = 0; u < users.size(); ++u) users[u] = u;
  m->score(users, s, 2);
  size_t own = 0, total = 0;
  for (uint32_t u = 0; u < users.size(); ++u) {
    for (uint32_t i = 0; i < d.train.n_cols; i += 2) EXPECT_LT(s(u, i), -1e29f) << "domain 0 item scored";
    const auto top = top_k(s.row(u), d.train.n_cols, 5, d.train.row_indices(u), {}, -1);
    for (const auto& it : top) {
      EXPECT_EQ(it.item % 2, 1u);
      own += (it.item / 20) == u % 2 ? 1 : 0;
      ++total;
    }
  }
  EXPECT_GT(double(own) / double(total), 0.9);
  // Thread count does not change the scores.
  Matrix s1;
  m->score(users, s1, 1);
  EXPECT_EQ(s.data, s1.data);
  // Fold-in of a user's own history is the same forward pass.
  const auto row = d.train.row_indices(5);
  const uint32_t nu = m->fold_in(m->n_users(), row, {});
  Matrix f;
  m->score(std::vector<uint32_t>{nu}, f, 1);
  for (uint32_t i = 0; i < d.train.n_cols; ++i) EXPECT_EQ(f(0, i), s(5, i));
  // Save and load give the same scores.
  const fs::path dir = fs::temp_directory_path() / ("xdrec_cfgan_" + std::to_string(::getpid()));
  save_model(*m, dir.string());
  auto back = load_model(dir.string());
  Matrix l;
  back->score(std::vector<uint32_t>{5}, l, 1);
  for (uint32_t i = 0; i < d.train.n_cols; ++i) EXPECT_EQ(l(0, i), s(5, i));
  fs::remove_all(dir);
}
