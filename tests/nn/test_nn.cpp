// The nn toolkit: every gradient against central finite differences (in double), Adam against a step
// computed by hand, dropout masks, GEMM against a naive product, and MLP save/load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "test_util.h"
#include "xdrec/nn.h"
#include "nn/grad_check.h"

using namespace xdrec;
using namespace xdrec::nn;

using namespace xdrec::nn::testing;

TEST(NnGemm, MatchesNaiveProductForEveryTranspose) {
  Rng rng(1);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const size_t m = 5, k = 7, n = 3;
      MatD a = ta ? random_mat(k, m, rng) : random_mat(m, k, rng);
      MatD b = tb ? random_mat(n, k, rng) : random_mat(k, n, rng);
      MatD c = random_mat(m, n, rng), c0 = c;
      gemm(a, ta, b, tb, 2.0, 0.5, c);
      for (size_t i = 0; i < m; ++i) {
        for (size_t j = 0; j < n; ++j) {
          double s = 0;
          for (size_t q = 0; q < k; ++q) s += (ta ? a(q, i) : a(i, q)) * (tb ? b(j, q) : b(q, j));
          EXPECT_NEAR(c(i, j), 2.0 * s + 0.5 * c0(i, j), 1e-12);
        }
      }
      MatD fresh;
      gemm(a, ta, b, tb, 1.0, 0.0, fresh);
      EXPECT_EQ(fresh.rows, m);
      EXPECT_EQ(fresh.cols, n);
    }
  }
  MatD a(2, 3), b(4, 2), c;
  EXPECT_THROW(gemm(a, false, b, false, 1.0, 0.0, c), Error);
}

TEST(NnGrad, LinearLayer) {
  Rng rng(2);
  Linear<double> lin(4, 3);
  lin.init(rng, 1.0);
  for (auto& v : lin.b.data) v = rng.normal();
  MatD x = random_mat(5, 4, rng), r = random_mat(5, 3, rng);
  auto loss = [&] {
    MatD y;
    lin.forward(x, y);
    return dot(y, r);
  };
  MatD gw(4, 3), gb(1, 3), dx;
  lin.backward(x, r, gw, gb, &dx);
  expect_grad(lin.w, gw, loss, "W");
  expect_grad(lin.b, gb, loss, "b");
  expect_grad(x, dx, loss, "x");
  // Only the first columns of dx when asked.
  MatD gw1(4, 3), gb1(1, 3), dx2;
  lin.backward(x, r, gw1, gb1, &dx2, 2);
  ASSERT_EQ(dx2.rows, 5u);
  ASSERT_EQ(dx2.cols, 2u);
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 2; ++j) EXPECT_NEAR(dx2(i, j), dx(i, j), 1e-12);
  // forward_row matches the batch.
  MatD y;
  lin.forward(x, y);
  std::vector<double> row(3);
  lin.forward_row(x.row(2), row.data());
  for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(row[j], y(2, j), 1e-12);
  // Gradients accumulate.
  MatD gw2 = gw, gb2 = gb;
  lin.backward(x, r, gw2, gb2, nullptr);
  for (size_t k = 0; k < gw.size(); ++k) EXPECT_NEAR(gw2.data[k], 2 * gw.data[k], 1e-12);
}

TEST(NnGrad, EveryActivation) {
  for (Act a : {Act::identity, Act::relu, Act::tanh, Act::sigmoid}) {
    Rng rng(3);
    MatD x = random_mat(4, 6, rng, 2.0), r = random_mat(4, 6, rng);
    auto loss = [&] {
      MatD y = x;
      act_forward(a, y);
      return dot(y, r);
    };
    MatD y = x, g = r;
    act_forward(a, y);
    act_backward(a, y, g);
    expect_grad(x, g, loss, act_name(a));
    EXPECT_EQ(parse_act(act_name(a)), a);
  }
  // Values: sigmoid is stable for large |z| and relu clips.
  MatD z(1, 4);
  z.data = {-800.0, 800.0, 0.0, -1.5};
  MatD s = z;
  act_forward(Act::sigmoid, s);
  EXPECT_EQ(s.data[0], 0.0);
  EXPECT_EQ(s.data[1], 1.0);
  EXPECT_DOUBLE_EQ(s.data[2], 0.5);
  MatD rl = z;
  act_forward(Act::relu, rl);
  EXPECT_EQ(rl.data[3], 0.0);
  EXPECT_EQ(rl.data[1], 800.0);
  EXPECT_TRUE(testing_util::throws_error([] { parse_act("gelu"); }, {"gelu"}));
}

TEST(NnGrad, BinaryCrossEntropyWithLogits) {
  Rng rng(4);
  MatD z = random_mat(3, 5, rng, 3.0), t(3, 5), w(3, 5);
  for (size_t k = 0; k < t.size(); ++k) {
    t.data[k] = k % 3 == 0 ? 1.0 : (k % 3 == 1 ? 0.0 : 0.3);
    w.data[k] = 0.5 + double(k % 4);
  }
  for (const MatD* weights : {static_cast<const MatD*>(nullptr), static_cast<const MatD*>(&w)}) {
    MatD g;
    const double l = bce_with_logits(z, t, &g, weights);
    // Direct definition.
    double ref = 0;
    for (size_t k = 0; k < z.size(); ++k) {
      const double p = 1 / (1 + std::exp(-z.data[k]));
      ref += (weights ? w.data[k] : 1.0) * -(t.data[k] * std::log(p) + (1 - t.data[k]) * std::log(1 - p));
    }
    EXPECT_NEAR(l, ref / double(z.size()), 1e-12);
    expect_grad(
        z, g, [&] { return bce_with_logits(z, t, nullptr, weights); }, "bce");
  }
  // Stable for huge logits: log(1 + e^1000) - 0 = 1000.
  MatD big(1, 2), tb(1, 2);
  big.data = {1000.0, -1000.0};
  tb.data = {0.0, 0.0};
  EXPECT_NEAR(bce_with_logits(big, tb, nullptr), 500.0, 1e-9);
}

TEST(NnGrad, SquaredError) {
  Rng rng(5);
  MatD p = random_mat(4, 3, rng), t = random_mat(4, 3, rng), g;
  const double l = squared_error(p, t, &g);
  double ref = 0;
  for (size_t k = 0; k < p.size(); ++k) ref += std::pow(p.data[k] - t.data[k], 2);
  EXPECT_NEAR(l, ref / 4.0, 1e-12);
  expect_grad(
      p, g, [&] { return squared_error(p, t, nullptr); }, "squared error");
  MatD wrong(4, 2);
  EXPECT_THROW(squared_error(p, wrong, nullptr), Error);
}

TEST(NnGrad, EmbeddingSparseRows) {
  Rng rng(6);
  Embedding<double> emb;
  emb.init(7, 3, rng, 0.5);
  const std::vector<uint32_t> ids{4, 1, 4, 6, 1, 4};
  MatD r = random_mat(ids.size(), 3, rng);
  auto loss = [&] {
    MatD y;
    emb.forward(ids, y);
    return dot(y, r);
  };
  const SparseGrad<double> g = emb.backward(ids, r);
  EXPECT_EQ(g.rows, (std::vector<uint32_t>{1, 4, 6}));
  MatD dense(7, 3);
  for (size_t k = 0; k < g.rows.size(); ++k)
    for (size_t j = 0; j < 3; ++j) dense(g.rows[k], j) = g.values(k, j);
  expect_grad(emb.table, dense, loss, "embedding");
  // Adding two sparse gradients merges the rows.
  SparseGrad<double> a = SparseGrad<double>::from(std::vector<uint32_t>{1, 4}, random_mat(2, 3, rng));
  SparseGrad<double> b = SparseGrad<double>::from(std::vector<uint32_t>{0, 4}, random_mat(2, 3, rng));
  SparseGrad<double> s = a;
  s.add(b);
  EXPECT_EQ(s.rows, (std::vector<uint32_t>{0, 1, 4}));
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_DOUBLE_EQ(s.values(0, j), b.values(0, j));
    EXPECT_DOUBLE_EQ(s.values(1, j), a.values(0, j));
    EXPECT_DOUBLE_EQ(s.values(2, j), a.values(1, j) + b.values(1, j));
  }
  MatD out;
  const std::vector<uint32_t> bad{7};
  EXPECT_TRUE(testing_util::throws_error([&] { emb.forward(bad, out); }, {"7", "out of range"}));
}

TEST(NnGrad, FullMlpForEveryHiddenActivationWithDropout) {
  for (Act hidden : {Act::relu, Act::tanh, Act::sigmoid, Act::identity}) {
    for (double dropout : {0.0, 0.3}) {
      Rng init(7);
      Mlp<double> mlp({5, 6, 4, 2}, hidden, Act::sigmoid, dropout);
      mlp.init(init);
      for (size_t l = 0; l < mlp.n_layers(); ++l)
        for (auto& v : mlp.layer(l).b.data) v = 0.1 * init.normal();
      MatD x = random_mat(3, 5, init), t(3, 2, 0.25);
      // The same dropout masks on every evaluation: a fresh generator with the same seed each time.
      auto loss = [&] {
        Mlp<double>::Cache c;
        Rng rng(11);
        mlp.forward(x, c, &rng);
        return squared_error(c.output(), t, nullptr);
      };
      Mlp<double>::Cache c;
      Rng rng(11);
      mlp.forward(x, c, &rng);
      MatD dy, dx;
      squared_error(c.output(), t, &dy);
      auto grads = mlp.make_grads();
      mlp.backward(x, c, dy, grads, &dx);
      auto params = mlp.params();
      ASSERT_EQ(params.size(), 6u);
      const std::string what = act_name(hidden) + " dropout " + std::to_string(dropout);
      for (size_t k = 0; k < params.size(); ++k)
        expect_grad(*params[k], grads[k], loss, what + " param " + std::to_string(k));
      expect_grad(x, dx, loss, what + " input");
      // The gradient of the first input columns alone.
      auto grads2 = mlp.make_grads();
      MatD dx3;
      mlp.backward(x, c, dy, grads2, &dx3, 3);
      ASSERT_EQ(dx3.cols, 3u);
      for (size_t i = 0; i < x.rows; ++i)
        for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(dx3(i, j), dx(i, j), 1e-12);
      if (dropout == 0.0) {
        // Inference matches the training forward pass without dropout.
        MatD y;
        mlp.predict(x, y);
        for (size_t k = 0; k < y.size(); ++k) EXPECT_NEAR(y.data[k], c.output().data[k], 1e-12);
      }
    }
  }
}

TEST(NnGrad, AutoencoderLoss) {
  // The denoising autoencoder's objective: ||dec(enc(corrupt(x))) - x||^2 averaged over rows, with the
  // gradient flowing through both networks.
  Rng init(8);
  Mlp<double> enc({6, 5, 3}, Act::relu, Act::identity), dec({3, 5, 6}, Act::relu, Act::identity);
  enc.init(init);
  dec.init(init);
  MatD clean = random_mat(4, 6, init), noisy = clean;
  Dropout<double> drop;
  drop.rate = 0.25;
  Rng nrng(3);
  drop.forward(noisy, nrng);
  auto loss = [&] {
    MatD code, out;
    enc.predict(noisy, code);
    dec.predict(code, out);
    return squared_error(out, clean, nullptr);
  };
  Mlp<double>::Cache ce, cd;
  enc.forward(noisy, ce);
  dec.forward(ce.output(), cd);
  MatD dout, dcode;
  squared_error(cd.output(), clean, &dout);
  auto ge = enc.make_grads(), gd = dec.make_grads();
  dec.backward(ce.output(), cd, dout, gd, &dcode);
  enc.backward(noisy, ce, dcode, ge, nullptr);
  auto pe = enc.params(), pd = dec.params();
  for (size_t k = 0; k < pe.size(); ++k) expect_grad(*pe[k], ge[k], loss, "encoder " + std::to_string(k));
  for (size_t k = 0; k < pd.size(); ++k) expect_grad(*pd[k], gd[k], loss, "decoder " + std::to_string(k));
}

TEST(NnDropout, MasksAreSeededScaledAndOffAtInference) {
  MatF x(200, 50, 1.0f), y = x;
  Dropout<float> d;
  d.rate = 0.4;
  Rng a(1), b(1);
  d.forward(x, a);
  Dropout<float> d2;
  d2.rate = 0.4;
  d2.forward(y, b);
  EXPECT_EQ(x.data, y.data);
  size_t zeros = 0;
  for (float v : x.data) {
    if (v == 0.0f) {
      ++zeros;
    } else {
      EXPECT_FLOAT_EQ(v, 1.0f / 0.6f);
    }
  }
  const double frac = double(zeros) / double(x.size());
  EXPECT_NEAR(frac, 0.4, 0.03);
  // Backward applies the same mask.
  MatF g(200, 50, 2.0f);
  d.backward(g);
  for (size_t k = 0; k < g.size(); ++k) EXPECT_FLOAT_EQ(g.data[k], 2.0f * d.mask.data[k]);
  // An Mlp with dropout predicts deterministically (no mask at inference).
  Rng init(2);
  Mlp<float> mlp({4, 8, 2}, Act::relu, Act::identity, 0.5);
  mlp.init(init);
  MatF in(3, 4, 0.5f), p1, p2;
  mlp.predict(in, p1);
  mlp.predict(in, p2);
  EXPECT_EQ(p1.data, p2.data);
  Mlp<float>::Cache c;
  mlp.forward(in, c);  // no generator: no dropout
  for (size_t k = 0; k < p1.size(); ++k) EXPECT_NEAR(c.output().data[k], p1.data[k], 1e-5);
  d.rate = 1.0;
  EXPECT_THROW(d.forward(x, a), Error);
}

TEST(NnAdam, MatchesAHandComputedStep) {
  MatD p(1, 2);
  p.data = {1.0, -2.0};
  AdamOptions o;
  o.lr = 0.1;
  Adam<double> adam({&p}, o);
  std::vector<MatD> g{MatD(1, 2)};
  g[0].data = {0.5, -0.1};
  adam.step(g);
  // First step: m_hat = g, v_hat = g^2, so every entry moves by lr * sign(g) (up to eps).
  EXPECT_NEAR(p.data[0], 0.9, 1e-7);
  EXPECT_NEAR(p.data[1], -1.9, 1e-6);
  // Second step by the formulas: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, bias-corrected.
  g[0].data = {0.2, 0.3};
  const double g1[2] = {0.5, -0.1}, g2[2] = {0.2, 0.3};
  double expect[2];
  for (int j = 0; j < 2; ++j) {
    const double m = 0.9 * (0.1 * g1[j]) + 0.1 * g2[j];
    const double v = 0.999 * (0.001 * g1[j] * g1[j]) + 0.001 * g2[j] * g2[j];
    const double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
    expect[j] = p.data[j] - 0.1 * mh / (std::sqrt(vh) + 1e-8);
  }
  adam.step(g);
  EXPECT_NEAR(p.data[0], expect[0], 1e-12);
  EXPECT_NEAR(p.data[1], expect[1], 1e-12);
  EXPECT_EQ(adam.steps(0), 2);
}

TEST(NnAdam, DecoupledWeightDecayAndSparseRows) {
  MatD p(3, 2, 1.0);
  AdamOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.5;
  Adam<double> adam({&p}, o);
  // Zero gradient: only the decay acts, p <- p (1 - lr wd).
  adam.step({MatD(3, 2)});
  for (double v : p.data) EXPECT_NEAR(v, 1.0 - 0.005, 1e-12);
  // Sparse step touches only row 1.
  SparseGrad<double> g;
  g.rows = {1};
  g.values = MatD(1, 2, 0.7);
  adam.step_sparse(0, g);
  EXPECT_NEAR(p(0, 0), 0.995, 1e-12);
  EXPECT_NEAR(p(2, 1), 0.995, 1e-12);
  // Row 1: decayed, then moved by lr * m_hat / sqrt(v_hat) with this parameter's second step (t = 2).
  const double m = 0.1 * 0.7, v = 0.001 * 0.49;
  const double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
  EXPECT_NEAR(p(1, 0), 0.995 * (1 - 0.005) - 0.01 * mh / (std::sqrt(vh) + 1e-8), 1e-12);
  EXPECT_THROW(adam.step({MatD(2, 2)}), Error);
  AdamOptions bad;
  bad.lr = 0;
  EXPECT_THROW(Adam<double>({&p}, bad), Error);
}

TEST(NnAdam, MinimisesAQuadratic) {
  // Sanity: Adam drives an MLP regression loss down.
  Rng rng(9);
  Mlp<float> mlp({3, 16, 1}, Act::tanh, Act::identity);
  mlp.init(rng);
  MatF x(64, 3), t(64, 1);
  for (size_t i = 0; i < 64; ++i) {
    for (size_t j = 0; j < 3; ++j) x(i, j) = rng.normal();
    t(i, 0) = x(i, 0) * x(i, 1) - 0.5f * x(i, 2);
  }
  AdamOptions o;
  o.lr = 0.01;
  Adam<float> adam(mlp.params(), o);
  float first = 0, last = 0;
  for (int it = 0; it < 400; ++it) {
    Mlp<float>::Cache c;
    mlp.forward(x, c);
    MatF dy;
    const float l = squared_error(c.output(), t, &dy);
    if (it == 0) first = l;
    last = l;
    auto g = mlp.make_grads();
    mlp.backward(x, c, dy, g, nullptr);
    adam.step(g);
  }
  EXPECT_LT(last, 0.1f * first);
}

TEST(NnMlp, SaveLoadRoundTrip) {
  Rng rng(10);
  Mlp<float> mlp({4, 5, 3}, Act::tanh, Act::identity);
  mlp.init(rng);
  TensorMap t;
  mlp.save(t, "tower.");
  EXPECT_EQ(t.size(), 4u);
  Mlp<float> same_shape({4, 5, 3}, Act::tanh, Act::identity);
  same_shape.load(t, "tower.");
  MatF x(2, 4, 0.3f), a, b;
  mlp.predict(x, a);
  same_shape.predict(x, b);
  EXPECT_EQ(a.data, b.data);
  Mlp<float> other({4, 6, 3}, Act::tanh, Act::identity);
  EXPECT_TRUE(testing_util::throws_error([&] { other.load(t, "tower."); }, {"tower.w0"}));
  TensorMap missing = t;
  missing.erase("tower.b1");
  EXPECT_TRUE(testing_util::throws_error([&] { same_shape.load(missing, "tower."); }, {"tower.b1"}));
}

TEST(NnTaskPool, RunsEveryTaskOnceAndRethrows) {
  for (int threads : {1, 2, 4}) {
    TaskPool pool(threads);
    EXPECT_EQ(pool.threads(), size_t(threads));
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1000)}) {
      std::vector<std::atomic<int>> hits(n);
      for (int rep = 0; rep < 3; ++rep) pool.run(n, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 3) << "task " << i;
    }
    EXPECT_TRUE(testing_util::throws_error(
        [&] {
          pool.run(50, [](size_t i) {
            if (i == 17) throw Error("task 17 failed");
          });
        },
        {"task 17"}));
    // Still usable after an exception.
    std::atomic<int> count{0};
    pool.run(10, [&](size_t) { count.fetch_add(1); });
    EXPECT_EQ(count.load(), 10);
  }
}
