// The sequence-model training kit (see include/xdrec/nn_seq.h). Attention runs per sequence and head with
// plain loops in a fixed order; the projections go through the nn gemm.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "xdrec/nn_seq.h"

namespace xdrec::nn {

namespace {

template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, size_t n) {
  T s = T(0);
  for (size_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

template <class T>
inline void axpy(T alpha, const T* __restrict x, T* __restrict y, size_t n) {
  for (size_t k = 0; k < n; ++k) y[k] += alpha * x[k];
}

void check_offsets(std::span<const uint32_t> offsets, size_t rows, const char* who) {
  check(!offsets.empty() && offsets.front() == 0 && offsets.back() == rows,
        std::string(who) + ": sequence offsets do not cover the " + std::to_string(rows) + " rows");
  for (size_t s = 1; s < offsets.size(); ++s)
    check(offsets[s - 1] <= offsets[s], std::string(who) + ": sequence offsets decrease");
}

}  // namespace

// ---- Layer norm -------------------------------------------------------------------------------------------

template <class T>
void LayerNorm<T>::init(size_t d) {
  gamma.resize(1, d, T(1));
  beta.resize(1, d, T(0));
}

template <class T>
void LayerNorm<T>::forward(const Mat<T>& x, Mat<T>& y, Cache* c) const {
  const size_t d = dim();
  check(x.cols == d, "layer norm: input has " + std::to_string(x.cols) + " columns, expected " +
                         std::to_string(d));
  y.reshape(x.rows, d);
  if (c) {
    c->xhat.reshape(x.rows, d);
    c->rstd.resize(x.rows);
  }
  for (size_t i = 0; i < x.rows; ++i) {
    const T* xr = x.row(i);
    T mean = T(0);
    for (size_t j = 0; j < d; ++j) mean += xr[j];
    mean /= T(d);
    T var = T(0);
    for (size_t j = 0; j < d; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= T(d);
    const T rstd = T(1) / std::sqrt(var + T(eps));
    T* yr = y.row(i);
    T* hr = c ? c->xhat.row(i) : nullptr;
    for (size_t j = 0; j < d; ++j) {
      const T h = (xr[j] - mean) * rstd;
      if (hr) hr[j] = h;
      yr[j] = gamma.data[j] * h + beta.data[j];
    }
    if (c) c->rstd[i] = rstd;
  }
}

template <class T>
void LayerNorm<T>::backward(const Mat<T>& dy, const Cache& c, Mat<T>& ggamma, Mat<T>& gbeta, Mat<T>& dx) const {
  const size_t d = dim();
  check(dy.rows == c.xhat.rows && dy.cols == d, "layer norm backward: gradient shape differs from the input");
  dx.reshape(dy.rows, d);
  std::vector<T> g(d);
  for (size_t i = 0; i < dy.rows; ++i) {
    const T* dr = dy.row(i);
    const T* hr = c.xhat.row(i);
    T m1 = T(0), m2 = T(0);
    for (size_t j = 0; j < d; ++j) {
      ggamma.data[j] += dr[j] * hr[j];
      gbeta.data[j] += dr[j];
      g[j] = dr[j] * gamma.data[j];
      m1 += g[j];
      m2 += g[j] * hr[j];
    }
    m1 /= T(d);
    m2 /= T(d);
    T* xr = dx.row(i);
    const T r = c.rstd[i];
    for (size_t j = 0; j < d; ++j) xr[j] = r * (g[j] - m1 - hr[j] * m2);
  }
}

// ---- GELU -------------------------------------------------------------------------------------------------

template <class T>
void gelu_forward(const T* z, T* y, size_t n) {
  const T s = T(0.70710678118654752440);
  for (size_t k = 0; k < n; ++k) y[k] = T(0.5) * z[k] * (T(1) + std::erf(z[k] * s));
}

template <class T>
void gelu_backward(const T* z, T* d, size_t n) {
  const T s = T(0.70710678118654752440), c = T(0.39894228040143267794);  // 1/sqrt(2), 1/sqrt(2 pi)
  for (size_t k = 0; k < n; ++k) {
    const T cdf = T(0.5) * (T(1) + std::erf(z[k] * s));
    const T pdf = c * std::exp(T(-0.5) * z[k] * z[k]);
    d[k] *= cdf + z[k] * pdf;
  }
}

FfAct parse_ff_act(const std::string& name) {
  if (name == "relu") return FfAct::relu;
  if (name == "gelu") return FfAct::gelu;
  throw Error("unknown feed-forward activation '" + name + "' (expected relu or gelu)");
}

// ---- Causal multi-head self-attention ---------------------------------------------------------------------

template <class T>
void CausalSelfAttention<T>::init(size_t d, size_t h, Rng& rng) {
  check(h > 0 && d % h == 0, "attention: width " + std::to_string(d) + " is not a multiple of " +
                                 std::to_string(h) + " heads");
  heads = h;
  qkv = Linear<T>(d, 3 * d);
  out = Linear<T>(d, d);
  qkv.init(rng, 1.0);
  out.init(rng, 1.0);
}

template <class T>
void CausalSelfAttention<T>::forward(const Mat<T>& x, std::span<const uint32_t> offsets, Mat<T>& y, Cache& c,
                                     Rng* rng) const {
  check_offsets(offsets, x.rows, "attention");
  const size_t d = dim(), dh = d / heads, ns = offsets.size() - 1;
  const T scale = T(1) / std::sqrt(T(dh));
  qkv.forward(x, c.qkv);
  c.ctx.resize(x.rows, d);
  c.offset.resize(ns + 1);
  size_t total = 0;
  for (size_t s = 0; s < ns; ++s) {
    c.offset[s] = total;
    const size_t n = offsets[s + 1] - offsets[s];
    total += heads * n * n;
  }
  c.offset[ns] = total;
  c.probs.assign(total, T(0));
  const bool drop = rng && dropout > 0;
  if (drop) c.mask.assign(total, T(0));
  else c.mask.clear();
  const T keep = T(1.0 / (1.0 - dropout));
  for (size_t s = 0; s < ns; ++s) {
    const size_t b = offsets[s], n = offsets[s + 1] - b;
    for (size_t hh = 0; hh < heads; ++hh) {
      T* P = c.probs.data() + c.offset[s] + hh * n * n;
      T* M = drop ? c.mask.data() + c.offset[s] + hh * n * n : nullptr;
      for (size_t i = 0; i < n; ++i) {
        const T* q = c.qkv.row(b + i) + hh * dh;
        T* p = P + i * n;
        T mx = -std::numeric_limits<T>::infinity();
        for (size_t j = 0; j <= i; ++j) {
          p[j] = dot(q, c.qkv.row(b + j) + d + hh * dh, dh) * scale;
          mx = std::max(mx, p[j]);
        }
        T sum = T(0);
        for (size_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        const T inv = T(1) / sum;
        for (size_t j = 0; j <= i; ++j) p[j] *= inv;
        T* o = c.ctx.row(b + i) + hh * dh;
        for (size_t j = 0; j <= i; ++j) {
          T w = p[j];
          if (M) {
            M[i * n + j] = rng->uniform() < dropout ? T(0) : keep;
            w *= M[i * n + j];
          }
          if (w != T(0)) axpy(w, c.qkv.row(b + j) + 2 * d + hh * dh, o, dh);
        }
      }
    }
  }
  out.forward(c.ctx, y);
}

template <class T>
void CausalSelfAttention<T>::backward(const Mat<T>& x, std::span<const uint32_t> offsets, const Cache& c,
                                      const Mat<T>& dy, std::span<Mat<T>> g, Mat<T>& dx) const {
  check(g.size() >= 4, "attention backward: 4 gradient buffers expected");
  const size_t d = dim(), dh = d / heads, ns = offsets.size() - 1;
  const T scale = T(1) / std::sqrt(T(dh));
  Mat<T> dctx;
  out.backward(c.ctx, dy, g[2], g[3], &dctx);
  Mat<T> dqkv(x.rows, 3 * d);
  std::vector<T> dp;
  for (size_t s = 0; s < ns; ++s) {
    const size_t b = offsets[s], n = offsets[s + 1] - b;
    dp.resize(n);
    for (size_t hh = 0; hh < heads; ++hh) {
      const T* P = c.probs.data() + c.offset[s] + hh * n * n;
      const T* M = c.mask.empty() ? nullptr : c.mask.data() + c.offset[s] + hh * n * n;
      for (size_t i = 0; i < n; ++i) {
        const T* go = dctx.row(b + i) + hh * dh;
        const T* p = P + i * n;
        // d(prob_ij) through the (dropped-out) weights; dv_j += w_ij * go.
        T sum = T(0);
        for (size_t j = 0; j <= i; ++j) {
          const T m = M ? M[i * n + j] : T(1);
          T dpj = T(0);
          if (m != T(0)) {
            dpj = dot(go, c.qkv.row(b + j) + 2 * d + hh * dh, dh) * m;
            axpy(p[j] * m, go, dqkv.row(b + j) + 2 * d + hh * dh, dh);
          }
          dp[j] = dpj;
          sum += p[j] * dpj;
        }
        // Softmax backward, then the scores q_i . k_j * scale.
        const T* q = c.qkv.row(b + i) + hh * dh;
        T* dq = dqkv.row(b + i) + hh * dh;
        for (size_t j = 0; j <= i; ++j) {
          const T ds = p[j] * (dp[j] - sum) * scale;
          if (ds == T(0)) continue;
          axpy(ds, c.qkv.row(b + j) + d + hh * dh, dq, dh);
          axpy(ds, q, dqkv.row(b + j) + d + hh * dh, dh);
        }
      }
    }
  }
  qkv.backward(x, dqkv, g[0], g[1], &dx);
}

// ---- Transformer block ------------------------------------------------------------------------------------

template <class T>
void TransformerBlock<T>::init(size_t d, size_t ff, size_t h, double attn_dropout, Rng& rng) {
  ln1.init(d);
  ln2.init(d);
  attn.init(d, h, rng);
  attn.dropout = attn_dropout;
  ff1 = Linear<T>(d, ff);
  ff2 = Linear<T>(ff, d);
  ff1.init(rng, act == FfAct::relu ? std::sqrt(2.0) : 1.0);
  ff2.init(rng, 1.0);
}

template <class T>
void TransformerBlock<T>::forward(const Mat<T>& x, std::span<const uint32_t> offsets, Mat<T>& y, Cache& c,
                                  Rng* rng) const {
  const bool drop = rng && dropout > 0;
  ln1.forward(x, c.a, &c.ln1);
  attn.forward(c.a, offsets, c.att, c.attn, rng);
  if (drop) {
    c.d_att.rate = dropout;
    c.d_att.forward(c.att, *rng);
  }
  c.h = x;
  add_into(c.h, c.att);
  ln2.forward(c.h, c.b, &c.ln2);
  ff1.forward(c.b, c.f1);
  c.g.reshape(c.f1.rows, c.f1.cols);
  if (act == FfAct::gelu) {
    gelu_forward(c.f1.data.data(), c.g.data.data(), c.f1.size());
  } else {
    for (size_t k = 0; k < c.f1.size(); ++k) c.g.data[k] = std::max(c.f1.data[k], T(0));
  }
  if (drop) {
    c.d_g.rate = dropout;
    c.d_g.forward(c.g, *rng);
  }
  ff2.forward(c.g, c.f2);
  if (drop) {
    c.d_f2.rate = dropout;
    c.d_f2.forward(c.f2, *rng);
  }
  y = c.h;
  add_into(y, c.f2);
  // Without dropout the masks of an earlier training pass must not be applied in backward.
  if (!drop) c.d_att.mask.resize(0, 0), c.d_g.mask.resize(0, 0), c.d_f2.mask.resize(0, 0);
}

template <class T>
void TransformerBlock<T>::backward(const Mat<T>& /*x*/, std::span<const uint32_t> offsets, const Cache& c,
                                   const Mat<T>& dy, std::span<Mat<T>> g, Mat<T>& dx) const {
  check(g.size() >= kParams, "transformer block backward: 12 gradient buffers expected");
  const bool drop = c.d_att.mask.rows > 0;
  // y = h + f2
  Mat<T> df2 = dy;
  if (drop) c.d_f2.backward(df2);
  Mat<T> dg;
  ff2.backward(c.g, df2, g[10], g[11], &dg);
  if (drop) c.d_g.backward(dg);
  if (act == FfAct::gelu) {
    gelu_backward(c.f1.data.data(), dg.data.data(), dg.size());
  } else {
    for (size_t k = 0; k < dg.size(); ++k)
      if (c.f1.data[k] <= T(0)) dg.data[k] = T(0);
  }
  Mat<T> db;
  ff1.backward(c.b, dg, g[8], g[9], &db);
  Mat<T> dh;
  ln2.backward(db, c.ln2, g[6], g[7], dh);
  add_into(dh, dy);
  // h = x + att
  Mat<T> datt = dh;
  if (drop) c.d_att.backward(datt);
  Mat<T> da;
  attn.backward(c.a, offsets, c.attn, datt, g.subspan(2, 4), da);
  ln1.backward(da, c.ln1, g[0], g[1], dx);
  add_into(dx, dh);
}

template <class T>
std::vector<Mat<T>*> TransformerBlock<T>::params() {
  return {&ln1.gamma, &ln1.beta, &attn.qkv.w, &attn.qkv.b, &attn.out.w, &attn.out.b,
          &ln2.gamma, &ln2.beta, &ff1.w,      &ff1.b,      &ff2.w,      &ff2.b};
}

template <class T>
std::vector<const Mat<T>*> TransformerBlock<T>::params() const {
  return {&ln1.gamma, &ln1.beta, &attn.qkv.w, &attn.qkv.b, &attn.out.w, &attn.out.b,
          &ln2.gamma, &ln2.beta, &ff1.w,      &ff1.b,      &ff2.w,      &ff2.b};
}

// ---- Losses -----------------------------------------------------------------------------------------------

template <class T>
T sampled_softmax(const Mat<T>& h, const Mat<T>& pos, const Mat<T>& cand, std::span<const uint32_t> pos_ids,
                  std::span<const uint32_t> cand_ids, T scale, Mat<T>* dh, Mat<T>* dpos, Mat<T>* dcand) {
  const size_t rows = h.rows, d = h.cols, nc = cand.rows;
  check(pos.rows == rows && pos.cols == d && (nc == 0 || cand.cols == d) && pos_ids.size() == rows &&
            cand_ids.size() == nc,
        "sampled softmax: shapes differ");
  Mat<T> logits;
  gemm(h, false, cand, true, T(1), T(0), logits);  // rows x nc
  if (nc == 0) logits.reshape(rows, 0);
  double total = 0;
  for (size_t q = 0; q < rows; ++q) {
    T* l = logits.row(q);
    const T lp = dot(h.row(q), pos.row(q), d);
    T mx = lp;
    for (size_t c = 0; c < nc; ++c)
      if (cand_ids[c] != pos_ids[q]) mx = std::max(mx, l[c]);
    T sum = std::exp(lp - mx);
    for (size_t c = 0; c < nc; ++c) {
      if (cand_ids[c] == pos_ids[q]) {
        l[c] = T(0);  // left out: probability 0
        continue;
      }
      sum += (l[c] = std::exp(l[c] - mx));
    }
    const T lse = mx + std::log(sum);
    total += double(lse - lp);
    // d loss / d logit: softmax - one-hot (the positive), scaled; l becomes the candidates' part.
    const T inv = scale / sum;
    for (size_t c = 0; c < nc; ++c) l[c] *= inv;
    const T gp = std::exp(lp - mx) * inv - scale;
    if (dpos) {
      if (q == 0) dpos->reshape(rows, d);
      T* o = dpos->row(q);
      const T* hr = h.row(q);
      for (size_t k = 0; k < d; ++k) o[k] = gp * hr[k];
    }
    if (dh) {
      if (q == 0) dh->reshape(rows, d);
      T* o = dh->row(q);
      const T* pr = pos.row(q);
      for (size_t k = 0; k < d; ++k) o[k] = gp * pr[k];
    }
  }
  if (dh) {
    if (rows == 0) dh->reshape(0, d);
    if (nc > 0 && rows > 0) gemm(logits, false, cand, false, T(1), T(1), *dh);
  }
  if (dpos && rows == 0) dpos->reshape(0, d);
  if (dcand) {
    if (rows > 0 && nc > 0) {
      gemm(logits, true, h, false, T(1), T(0), *dcand);
    } else {
      dcand->resize(nc, d);
    }
  }
  return T(total) * scale;
}

template <class T>
T pairwise_bce(const Mat<T>& h, const Mat<T>& pos, const Mat<T>& neg, T scale, Mat<T>* dh, Mat<T>* dpos,
               Mat<T>* dneg) {
  const size_t rows = h.rows, d = h.cols;
  check(pos.rows == rows && neg.rows == rows && pos.cols == d && neg.cols == d, "pairwise bce: shapes differ");
  if (dh) dh->reshape(rows, d);
  if (dpos) dpos->reshape(rows, d);
  if (dneg) dneg->reshape(rows, d);
  auto softplus = [](T z) { return z > T(0) ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); };
  auto sigmoid = [](T z) { return T(1) / (T(1) + std::exp(-z)); };
  double total = 0;
  for (size_t q = 0; q < rows; ++q) {
    const T* hr = h.row(q);
    const T sp = dot(hr, pos.row(q), d), sn = dot(hr, neg.row(q), d);
    total += double(softplus(-sp) + softplus(sn));
    const T gp = (sigmoid(sp) - T(1)) * scale, gn = sigmoid(sn) * scale;
    for (size_t k = 0; k < d; ++k) {
      if (dh) dh->row(q)[k] = gp * pos.row(q)[k] + gn * neg.row(q)[k];
      if (dpos) dpos->row(q)[k] = gp * hr[k];
      if (dneg) dneg->row(q)[k] = gn * hr[k];
    }
  }
  return T(total) * scale;
}

// ---- Optimisation helpers ---------------------------------------------------------------------------------

template <class T>
double clip_grad_norm(std::span<Mat<T>> grads, double max_norm) {
  double s = 0;
  for (const auto& g : grads)
    for (T v : g.data) s += double(v) * double(v);
  const double norm = std::sqrt(s);
  if (max_norm > 0 && norm > max_norm) {
    const T f = T(max_norm / (norm + 1e-12));
    for (auto& g : grads)
      for (T& v : g.data) v *= f;
  }
  return norm;
}

double scheduled_lr(double base, int64_t step, int64_t warmup, int64_t total_steps, bool decay) {
  if (warmup > 0 && step < warmup) return base * double(step + 1) / double(warmup);
  if (!decay || total_steps <= warmup) return base;
  const double left = double(total_steps - step) / double(total_steps - warmup);
  return base * std::clamp(left, 0.0, 1.0);
}

#define XDREC_NN_SEQ_INSTANTIATE(T)                                                                        \
  template struct LayerNorm<T>;                                                                            \
  template struct CausalSelfAttention<T>;                                                                  \
  template struct TransformerBlock<T>;                                                                     \
  template void gelu_forward<T>(const T*, T*, size_t);                                                     \
  template void gelu_backward<T>(const T*, T*, size_t);                                                    \
  template T sampled_softmax<T>(const Mat<T>&, const Mat<T>&, const Mat<T>&, std::span<const uint32_t>,    \
                                std::span<const uint32_t>, T, Mat<T>*, Mat<T>*, Mat<T>*);                  \
  template T pairwise_bce<T>(const Mat<T>&, const Mat<T>&, const Mat<T>&, T, Mat<T>*, Mat<T>*, Mat<T>*);  \
  template double clip_grad_norm<T>(std::span<Mat<T>>, double);

XDREC_NN_SEQ_INSTANTIATE(float)
XDREC_NN_SEQ_INSTANTIATE(double)

}  // namespace xdrec::nn
