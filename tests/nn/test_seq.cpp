// The sequence-model training kit: every backward pass against central finite differences (in double), with
// dropout masks held fixed by reseeding; causality and independence of a sequence from its batch; the
// sampled softmax against a direct computation; clipping and the warm-up schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "xdrec/nn_seq.h"
#include "nn/grad_check.h"

using namespace xdrec;
using namespace xdrec::nn;

using namespace xdrec::nn::testing;

TEST(NnSeq, LayerNormGradients) {
  Rng rng(3);
  LayerNorm<double> ln;
  ln.init(6);
  ln.gamma = random_mat(1, 6, rng);
  ln.beta = random_mat(1, 6, rng);
  MatD x = random_mat(4, 6, rng, 2.0), r = random_mat(4, 6, rng);
  auto loss = [&] {
    MatD y;
    ln.forward(x, y, nullptr);
    return dot(y, r);
  };
  LayerNorm<double>::Cache c;
  MatD y, dx, gg(1, 6), gb(1, 6);
  ln.forward(x, y, &c);
  ln.backward(r, c, gg, gb, dx);
  expect_grad(x, dx, loss, "layer norm dx");
  expect_grad(ln.gamma, gg, loss, "layer norm gamma");
  expect_grad(ln.beta, gb, loss, "layer norm beta");
  // Normalised rows: mean beta, and gamma = 1, beta = 0 gives unit variance.
  LayerNorm<double> plain;
  plain.init(6);
  plain.forward(x, y, nullptr);
  for (size_t i = 0; i < y.rows; ++i) {
    double m = 0, v = 0;
    for (size_t j = 0; j < 6; ++j) m += y(i, j);
    for (size_t j = 0; j < 6; ++j) v += (y(i, j) - m / 6) * (y(i, j) - m / 6);
    EXPECT_NEAR(m / 6, 0.0, 1e-12);
    EXPECT_NEAR(v / 6, 1.0, 1e-4);
  }
}

TEST(NnSeq, GeluValuesAndGradient) {
  const double z[4] = {-2.0, -0.5, 0.0, 1.5};
  double y[4];
  gelu_forward(z, y, 4);
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(y[k], 0.5 * z[k] * (1 + std::erf(z[k] / std::sqrt(2.0))), 1e-15);
  EXPECT_NEAR(y[3], 1.3997892, 1e-6);  // 1.5 * Phi(1.5) = 1.5 * 0.9331928
  for (int k = 0; k < 4; ++k) {
    double d = 1.0, h = 1e-6, a = z[k] + h, b = z[k] - h, ya, yb;
    gelu_backward(&z[k], &d, 1);
    gelu_forward(&a, &ya, 1);
    gelu_forward(&b, &yb, 1);
    EXPECT_NEAR(d, (ya - yb) / (2 * h), 1e-8);
  }
}

TEST(NnSeq, AttentionGradientsWithHeadsSequencesAndDropout) {
  for (double drop : {0.0, 0.3}) {
    Rng rng(5);
    CausalSelfAttention<double> at;
    at.init(6, 2, rng);
    at.dropout = drop;
    at.qkv.b = random_mat(1, 18, rng, 0.1);
    at.out.b = random_mat(1, 6, rng, 0.1);
    const std::vector<uint32_t> off{0, 3, 4, 8};  // sequences of 3, 1 and 4 tokens
    MatD x = random_mat(8, 6, rng), r = random_mat(8, 6, rng);
    auto loss = [&] {
      Rng d(77);  // the same dropout masks in every pass
      CausalSelfAttention<double>::Cache c;
      MatD y;
      at.forward(x, off, y, c, drop > 0 ? &d : nullptr);
      return dot(y, r);
    };
    Rng d(77);
    CausalSelfAttention<double>::Cache c;
    MatD y, dx;
    at.forward(x, off, y, c, drop > 0 ? &d : nullptr);
    std::vector<MatD> g{MatD(6, 18), MatD(1, 18), MatD(6, 6), MatD(1, 6)};
    at.backward(x, off, c, r, g, dx);
    const std::string w = drop > 0 ? " (dropout)" : "";
    expect_grad(x, dx, loss, "attention dx" + w);
    expect_grad(at.qkv.w, g[0], loss, "attention qkv.w" + w);
    expect_grad(at.qkv.b, g[1], loss, "attention qkv.b" + w);
    expect_grad(at.out.w, g[2], loss, "attention out.w" + w);
    expect_grad(at.out.b, g[3], loss, "attention out.b" + w);
  }
}

TEST(NnSeq, AttentionIsCausalAndPerSequence) {
  Rng rng(9);
  CausalSelfAttention<double> at;
  at.init(8, 2, rng);
  const std::vector<uint32_t> off{0, 5, 9};
  MatD x = random_mat(9, 8, rng);
  CausalSelfAttention<double>::Cache c;
  MatD y;
  at.forward(x, off, y, c, nullptr);
  // Changing token 3 of the first sequence changes nothing before it, nor the second sequence.
  MatD x2 = x;
  for (size_t j = 0; j < 8; ++j) x2(3, j) += 1.0;
  MatD y2;
  at.forward(x2, off, y2, c, nullptr);
  for (size_t i = 0; i < 9; ++i) {
    if (i >= 3 && i < 5) continue;
    for (size_t j = 0; j < 8; ++j) EXPECT_EQ(y(i, j), y2(i, j)) << i;
  }
  bool changed = false;
  for (size_t j = 0; j < 8; ++j) changed |= y(3, j) != y2(3, j);
  EXPECT_TRUE(changed);
  // The second sequence alone gives the same rows (float too: the kit's scoring path).
  MatD x3(4, 8), y3;
  std::copy(x.row(5), x.row(9), x3.data.begin());
  const std::vector<uint32_t> off3{0, 4};
  at.forward(x3, off3, y3, c, nullptr);
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < 8; ++j) EXPECT_NEAR(y3(i, j), y(5 + i, j), 1e-12);
  // The first token attends only to itself: its context is its own value vector.
  EXPECT_NEAR(c.probs[0], 1.0, 1e-15);
}

TEST(NnSeq, TransformerBlockGradients) {
  for (FfAct act : {FfAct::gelu, FfAct::relu}) {
    for (double drop : {0.0, 0.2}) {
      Rng rng(11);
      TransformerBlock<double> blk;
      blk.act = act;
      blk.dropout = drop;
      blk.init(4, 6, 2, drop, rng);
      for (MatD* p : blk.params())
        if (p->rows == 1) *p = random_mat(1, p->cols, rng, 0.2);
      const std::vector<uint32_t> off{0, 2, 5};
      MatD x = random_mat(5, 4, rng), r = random_mat(5, 4, rng);
      auto loss = [&] {
        Rng d(99);
        TransformerBlock<double>::Cache c;
        MatD y;
        blk.forward(x, off, y, c, drop > 0 ? &d : nullptr);
        return dot(y, r);
      };
      Rng d(99);
      TransformerBlock<double>::Cache c;
      MatD y, dx;
      blk.forward(x, off, y, c, drop > 0 ? &d : nullptr);
      std::vector<MatD> g;
      for (MatD* p : blk.params()) g.emplace_back(p->rows, p->cols);
      blk.backward(x, off, c, r, g, dx);
      const std::string w = std::string(act == FfAct::gelu ? "gelu" : "relu") + (drop > 0 ? " dropout" : "");
      expect_grad(x, dx, loss, "block dx " + w);
      auto ps = blk.params();
      for (size_t k = 0; k < ps.size(); ++k)
        expect_grad(*ps[k], g[k], loss, "block param " + std::to_string(k) + " " + w);
    }
  }
}

TEST(NnSeq, SampledSoftmaxMatchesDirectComputationAndGradients) {
  Rng rng(13);
  MatD h = random_mat(3, 4, rng), pos = random_mat(3, 4, rng), cand = random_mat(5, 4, rng);
  const std::vector<uint32_t> pid{7, 2, 9}, cid{1, 2, 3, 7, 8};  // candidate 2 is row 1's positive, 7 row 0's
  MatD dh, dp, dc;
  const double l = sampled_softmax(h, pos, cand, pid, cid, 0.5, &dh, &dp, &dc);
  double want = 0;
  for (size_t q = 0; q < 3; ++q) {
    double lp = 0;
    for (size_t k = 0; k < 4; ++k) lp += h(q, k) * pos(q, k);
    double s = std::exp(lp);
    for (size_t c = 0; c < 5; ++c) {
      if (cid[c] == pid[q]) continue;
      double lc = 0;
      for (size_t k = 0; k < 4; ++k) lc += h(q, k) * cand(c, k);
      s += std::exp(lc);
    }
    want += std::log(s) - lp;
  }
  EXPECT_NEAR(l, 0.5 * want, 1e-12);
  auto loss = [&] { return sampled_softmax<double>(h, pos, cand, pid, cid, 0.5, nullptr, nullptr, nullptr); };
  expect_grad(h, dh, loss, "softmax dh");
  expect_grad(pos, dp, loss, "softmax dpos");
  expect_grad(cand, dc, loss, "softmax dcand");
  // A left-out candidate gets no gradient from the row whose positive it is: row 0 only touches it via
  // other rows, so with h rows 1 and 2 zeroed its gradient is zero.
  MatD h0 = h;
  for (size_t k = 0; k < 4; ++k) h0(1, k) = h0(2, k) = 0;
  sampled_softmax<double>(h0, pos, cand, pid, cid, 1.0, nullptr, nullptr, &dc);
  for (size_t k = 0; k < 4; ++k) EXPECT_EQ(dc(3, k), 0.0);
}

TEST(NnSeq, PairwiseBceGradients) {
  Rng rng(17);
  MatD h = random_mat(4, 3, rng), pos = random_mat(4, 3, rng), neg = random_mat(4, 3, rng);
  MatD dh, dp, dn;
  const double l = pairwise_bce(h, pos, neg, 0.25, &dh, &dp, &dn);
  double want = 0;
  for (size_t q = 0; q < 4; ++q) {
    double sp = 0, sn = 0;
    for (size_t k = 0; k < 3; ++k) sp += h(q, k) * pos(q, k), sn += h(q, k) * neg(q, k);
    want += -std::log(1 / (1 + std::exp(-sp))) - std::log(1 - 1 / (1 + std::exp(-sn)));
  }
  EXPECT_NEAR(l, 0.25 * want, 1e-12);
  auto loss = [&] { return pairwise_bce<double>(h, pos, neg, 0.25, nullptr, nullptr, nullptr); };
  expect_grad(h, dh, loss, "bce dh");
  expect_grad(pos, dp, loss, "bce dpos");
  expect_grad(neg, dn, loss, "bce dneg");
}

TEST(NnSeq, ClipAndSchedule) {
  std::vector<MatD> g{MatD(1, 2), MatD(1, 1)};
  g[0].data = {3, 0};
  g[1].data = {4};
  EXPECT_DOUBLE_EQ(clip_grad_norm<double>(g, 10.0), 5.0);
  EXPECT_DOUBLE_EQ(g[0].data[0], 3.0);  // under the limit: unchanged
  EXPECT_DOUBLE_EQ(clip_grad_norm<double>(g, 1.0), 5.0);
  EXPECT_NEAR(g[0].data[0], 0.6, 1e-12);
  EXPECT_NEAR(g[1].data[0], 0.8, 1e-12);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 0, 10, 100, false), 1e-4);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 9, 10, 100, false), 1e-3);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 50, 10, 100, false), 1e-3);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 55, 10, 100, true), 1e-3 * 45.0 / 90.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 0, 0, 100, false), 1e-3);
  EXPECT_THROW(parse_ff_act("swish"), Error);
}
