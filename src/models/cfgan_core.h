// The two networks of CFGAN and their losses with gradients (model: cfgan.cpp). Templated on the scalar so
// that the gradient test runs them in double against finite differences.
//   G(c, z) = sigmoid(act(bias + sum_{i in c} Cg[i] + z Wz) Wo + bo)            (n_out scores in (0, 1))
//   D(x, c) = act(x Wx + bx + sum_{i in c} Cd[i]) wd + bd                       (a logit)
// A condition c is a user's purchases (row of a Csr); Cg and Cd hold one row per item.
#pragma once

#include <cmath>
#include <span>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/nn.h"

namespace xdrec::models {

template <class T>
struct CfganNets {
  nn::Act act = nn::Act::sigmoid;
  nn::Mat<T> g_cond, g_bias, g_noise;  // items x h, 1 x h, noise x h
  nn::Linear<T> g_out;                 // h -> n_out
  nn::Mat<T> d_cond;                   // items x h
  nn::Linear<T> d_in, d_out;           // n_out -> h, h -> 1

  // One minibatch: users (rows of hist) with their real vectors, the partial-masking and zero-reconstruction
  // masks (1 on the sampled non-purchased items) and the noise (users x noise width; may be empty).
  struct Batch {
    const Csr* hist = nullptr;
    std::span<const uint32_t> users;
    nn::Mat<T> real, pm, zr, z;
  };
  // Gradients: dense ones in the order of g_dense_params() / d_dense_params(), condition tables sparse.
  struct Grads {
    std::vector<nn::Mat<T>> g, d;
    nn::SparseGrad<T> g_cond, d_cond;
  };

  std::vector<nn::Mat<T>*> g_dense_params() { return {&g_bias, &g_noise, &g_out.w, &g_out.b}; }
  std::vector<nn::Mat<T>*> d_dense_params() { return {&d_in.w, &d_in.b, &d_out.w, &d_out.b}; }
  Grads make_grads() const {
    Grads gr;
    for (const nn::Mat<T>* m : {&g_bias, &g_noise, &g_out.w, &g_out.b}) gr.g.emplace_back(m->rows, m->cols);
    for (const nn::Mat<T>* m : {&d_in.w, &d_in.b, &d_out.w, &d_out.b}) gr.d.emplace_back(m->rows, m->cols);
    return gr;
  }

  static T sigmoid(T x) { return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x)); }
  static T softplus(T x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

  // Generator logits for one condition without noise; a (hidden width) and o (n_out) receive the result.
  void generate_row(std::span<const uint32_t> cond, T* a, T* o) const {
    const size_t h = g_bias.cols, no = g_out.out_dim();
    std::copy(g_bias.data.begin(), g_bias.data.end(), a);
    for (uint32_t i : cond) {
      const T* r = g_cond.row(i);
      for (size_t j = 0; j < h; ++j) a[j] += r[j];
    }
    nn::act_forward(act, a, h);
    for (size_t j = 0; j < no; ++j) o[j] = g_out.b.data[j];
    for (size_t k = 0; k < h; ++k) {
      const T ak = a[k];
      const T* w = g_out.w.row(k);
      for (size_t j = 0; j < no; ++j) o[j] += ak * w[j];
    }
  }

  // Discriminator loss (generator fixed): -1/B sum [log D(real) + log(1 - D(fake))], fake = G * (real + pm).
  T d_loss(const Batch& b, Grads* gr) const {
    Pass gp;
    gen_forward(b, gp);
    nn::Mat<T> fake = masked(b, gp.y);
    const size_t n = b.users.size();
    const T inv = T(1) / T(n);
    T loss = 0;
    for (int side = 0; side < 2; ++side) {
      const nn::Mat<T>& x = side == 0 ? b.real : fake;
      DPass dp;
      disc_forward(b, x, dp);
      nn::Mat<T> dl(n, 1);
      for (size_t k = 0; k < n; ++k) {
        const T l = dp.logit.data[k];
        loss += side == 0 ? softplus(-l) : softplus(l);
        dl.data[k] = (side == 0 ? sigmoid(l) - T(1) : sigmoid(l)) * inv;
      }
      if (gr) disc_backward(b, x, dp, dl, gr, nullptr);
    }
    return loss * inv;
  }

  // Generator loss: 1/B sum [-log D(fake) + alpha * sum_{zr} G^2] (the non-saturating form of CFGAN's
  // log(1 - D(fake))).
  T g_loss(const Batch& b, T alpha, Grads* gr) const {
    Pass gp;
    gen_forward(b, gp);
    nn::Mat<T> fake = masked(b, gp.y);
    const size_t n = b.users.size(), no = gp.y.cols, h = g_bias.cols;
    const T inv = T(1) / T(n);
    DPass dp;
    disc_forward(b, fake, dp);
    T loss = 0;
    nn::Mat<T> dl(n, 1);
    for (size_t k = 0; k < n; ++k) {
      loss += softplus(-dp.logit.data[k]);
      dl.data[k] = (sigmoid(dp.logit.data[k]) - T(1)) * inv;
    }
    for (size_t k = 0; k < gp.y.data.size(); ++k) loss += alpha * b.zr.data[k] * gp.y.data[k] * gp.y.data[k];
    if (!gr) return loss * inv;
    nn::Mat<T> dx;
    disc_backward(b, fake, dp, dl, nullptr, &dx);
    nn::Mat<T> dout(n, no);
    for (size_t k = 0; k < dout.data.size(); ++k) {
      const T y = gp.y.data[k];
      const T dy = dx.data[k] * (b.real.data[k] + b.pm.data[k]) + T(2) * alpha * inv * b.zr.data[k] * y;
      dout.data[k] = dy * y * (T(1) - y);
    }
    nn::Mat<T> da;
    g_out.backward(gp.a, dout, gr->g[2], gr->g[3], &da);
    nn::act_backward(act, gp.a, da);
    for (size_t k = 0; k < n; ++k)
      for (size_t j = 0; j < h; ++j) gr->g[0].data[j] += da.row(k)[j];
    if (b.z.rows > 0) nn::gemm(b.z, true, da, false, T(1), T(1), gr->g[1]);
    add_sparse(gr->g_cond, condition_grad(b, da));
    return loss * inv;
  }

 private:
  struct Pass {
    nn::Mat<T> a, y;  // hidden activations, generated scores
  };
  struct DPass {
    nn::Mat<T> a, logit;
  };

  void add_condition(const nn::Mat<T>& table, const Batch& b, nn::Mat<T>& a) const {
    for (size_t k = 0; k < b.users.size(); ++k) {
      T* r = a.row(k);
      for (uint32_t i : b.hist->row_indices(b.users[k])) {
        const T* t = table.row(i);
        for (size_t j = 0; j < a.cols; ++j) r[j] += t[j];
      }
    }
  }
  nn::SparseGrad<T> condition_grad(const Batch& b, const nn::Mat<T>& da) const {
    std::vector<uint32_t> ids;
    std::vector<size_t> src;
    for (size_t k = 0; k < b.users.size(); ++k)
      for (uint32_t i : b.hist->row_indices(b.users[k])) {
        ids.push_back(i);
        src.push_back(k);
      }
    nn::Mat<T> dy(ids.size(), da.cols);
    for (size_t k = 0; k < ids.size(); ++k) std::copy(da.row(src[k]), da.row(src[k]) + da.cols, dy.row(k));
    return nn::SparseGrad<T>::from(ids, dy);
  }
  static void add_sparse(nn::SparseGrad<T>& into, const nn::SparseGrad<T>& g) {
    if (into.rows.empty() && into.values.rows == 0)
      into = g;
    else
      into.add(g);
  }
  nn::Mat<T> masked(const Batch& b, const nn::Mat<T>& y) const {
    nn::Mat<T> f = y;
    for (size_t k = 0; k < f.data.size(); ++k) f.data[k] *= b.real.data[k] + b.pm.data[k];
    return f;
  }
  void gen_forward(const Batch& b, Pass& p) const {
    const size_t n = b.users.size(), h = g_bias.cols;
    p.a.resize(n, h);
    if (b.z.rows > 0) nn::gemm(b.z, false, g_noise, false, T(1), T(0), p.a);
    for (size_t k = 0; k < n; ++k)
      for (size_t j = 0; j < h; ++j) p.a.row(k)[j] += g_bias.data[j];
    add_condition(g_cond, b, p.a);
    nn::act_forward(act, p.a);
    g_out.forward(p.a, p.y);
    for (T& v : p.y.data) v = sigmoid(v);
  }
  void disc_forward(const Batch& b, const nn::Mat<T>& x, DPass& p) const {
    d_in.forward(x, p.a);
    add_condition(d_cond, b, p.a);
    nn::act_forward(act, p.a);
    d_out.forward(p.a, p.logit);
  }
  // From d(loss)/d(logit): parameter gradients into gr (when not null), d(loss)/dx into dx (when not null).
  void disc_backward(const Batch& b, const nn::Mat<T>& x, const DPass& p, const nn::Mat<T>& dl, Grads* gr,
                     nn::Mat<T>* dx) const {
    nn::Mat<T> da;
    if (gr) {
      d_out.backward(p.a, dl, gr->d[2], gr->d[3], &da);
    } else {
      nn::gemm(dl, false, d_out.w, true, T(1), T(0), da);
    }
    nn::act_backward(act, p.a, da);
    if (gr) {
      add_sparse(gr->d_cond, condition_grad(b, da));
      d_in.backward(x, da, gr->d[0], gr->d[1], dx);
    } else if (dx) {
      nn::gemm(da, false, d_in.w, true, T(1), T(0), *dx);
    }
  }
};

}  // namespace xdrec::models
