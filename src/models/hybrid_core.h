// The numerical core of the hybrid factorisation model (src/models/hybrid.cpp), in a header so that tests can
// check every gradient against finite differences.
//
// Item vector (f factors plus a bias slot f):
//   q_i = a_i e_i + W t_i + sum_c w_ic C_c          (slot f: item bias b_i, text bias, category biases)
// User vector (slot f is the constant 1 that picks up the item's bias):
//   p_u = a_u e_u + P pi_u + H h_u,                 h_u = mean of t_j over the user's history items
// with a_i, a_u = 1 when the id embedding is used (the row has training interactions and was not dropped by
// id dropout), t_i the item's text features, pi_u the user's profile features, w_ic the item's category
// weights. Score s_ui = p_u . q_i (+ b_u + mu for squared error on ratings).
//
// During training the pooled history leaves out the item being scored ("leave one out"):
//   h_u,-i = (n_u h_u - t_i) / (n_u - 1)   (0 when n_u = 1),
// so that the history projection H learns to predict an item from the *other* items of the history instead
// of recognising the item inside its own history.
//
// One training term is a Record: (user, positive or rated item i, sampled negative j or none, flags saying
// which id embeddings and category features are on). pair_term() gives the loss of a term from its scores and
// the derivatives with respect to them; batch_gradient() turns a batch of terms into gradients of every
// parameter block through cached projections (Caches) and GEMMs; record_loss() recomputes one term from the
// parameters alone (double precision, no caches), the reference the tests differentiate numerically.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "models/mf_kernels.h"
#include "models/model_util.h"
#include "xdrec/common.h"
#include "xdrec/dist.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace xdrec::hybrid {

using Floats = mf::AlignedFloats;

enum class Loss { Warp, Bpr, Mse };

inline Loss parse_loss(const std::string& s) {
  if (s == "warp") return Loss::Warp;
  if (s == "bpr") return Loss::Bpr;
  if (s == "mse") return Loss::Mse;
  throw Error("hybrid: unknown loss '" + s + "' (expected warp, bpr or mse)");
}

inline size_t pad8(size_t n) {
  return (n + 7) / 8 * 8;
}

inline float dot(const float* a, const float* b, size_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (size_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// y += a x
inline void axpy(float a, const float* x, float* y, size_t n) {
#pragma omp simd
  for (size_t k = 0; k < n; ++k) y[k] += a * x[k];
}

// ---- Loss of one term -------------------------------------------------------------------------------------

// Loss of one term and its derivatives with respect to the two scores.
struct PairTerm {
  double loss = 0;
  double gi = 0;  // dL/ds_i
  double gj = 0;  // dL/ds_j
};

// warp: weight * max(0, margin - (s_i - s_j)) (the weight comes from the rank estimate, warp_weight());
// bpr:  weight * -log sigmoid(s_i - s_j);
// mse:  weight * (s_i - label)^2 / 2 (s_j unused).
inline PairTerm pair_term(Loss loss, double s_i, double s_j, double label, double weight, double margin) {
  PairTerm t;
  switch (loss) {
    case Loss::Warp: {
      const double z = s_i - s_j;
      if (z < margin) {
        t.loss = weight * (margin - z);
        t.gi = -weight;
        t.gj = weight;
      }
      break;
    }
    case Loss::Bpr: {
      const double z = s_i - s_j;
      // -log sigmoid(z) = log(1 + exp(-z)), computed without overflow.
      t.loss = weight * (z > 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z)));
      const double sig_neg = 1.0 / (1.0 + std::exp(std::clamp(z, -60.0, 60.0)));  // sigmoid(-z)
      t.gi = -weight * sig_neg;
      t.gj = weight * sig_neg;
      break;
    }
    case Loss::Mse: {
      const double e = s_i - label;
      t.loss = 0.5 * weight * e * e;
      t.gi = weight * e;
      break;
    }
  }
  return t;
}

// WARP's weight for a violating negative found at the trials-th draw among `candidates` items: the log of the
// estimated rank of the positive, floor((candidates - 1) / trials), plus one.
inline double warp_weight(size_t candidates, size_t trials) {
  const double rank =
      std::floor(double(candidates > 0 ? candidates - 1 : 0) / double(std::max<size_t>(1, trials)));
  return std::log1p(rank);
}

// ---- Parameters, side information, caches -----------------------------------------------------------------

struct Dims {
  size_t f = 0;       // factors
  size_t ld = 0;      // row width of id embeddings and item / user vectors: f + 1 (bias slot) padded to 8
  size_t lf = 0;      // f padded to 8 (rows of H and P, their cached products)
  size_t dt = 0;      // text feature dimension (0: no text)
  size_t dp = 0;      // profile feature dimension (0: no profiles)
  size_t nc = 0;      // number of categories (0: none)
  bool hist = false;  // pooled history text (needs dt > 0)

  static Dims make(size_t f, size_t dt, size_t dp, size_t nc, bool hist) {
    Dims d;
    d.f = f;
    d.ld = pad8(f + 1);
    d.lf = pad8(f);
    d.dt = dt;
    d.dp = dp;
    d.nc = nc;
    d.hist = hist && dt > 0;
    return d;
  }
};

// Trainable parameters. Padding entries are kept at zero.
struct Blocks {
  Dims d;
  size_t n_users = 0, n_items = 0;
  Floats user_id;                // n_users x ld (slot f unused)
  Floats item_id;                // n_items x ld (slot f: item bias)
  std::vector<float> user_bias;  // n_users (squared error only)
  Floats W;                      // ld x dt: text -> item vector (row f: text bias weights)
  Floats H;                      // lf x dt: pooled history text -> user vector
  Floats P;                      // lf x dp: profile -> user vector
  Floats C;                      // nc x ld: category c's item vector (slot f: its bias)

  void resize(const Dims& dims, size_t users, size_t items) {
    d = dims;
    n_users = users;
    n_items = items;
    user_id.assign(users * d.ld, 0.0f);
    item_id.assign(items * d.ld, 0.0f);
    user_bias.assign(users, 0.0f);
    W.assign(d.ld * d.dt, 0.0f);
    H.assign(d.hist ? d.lf * d.dt : 0, 0.0f);
    P.assign(d.lf * d.dp, 0.0f);
    C.assign(d.nc * d.ld, 0.0f);
  }
};

// Fixed side information of the training rows.
struct Side {
  const float* item_text = nullptr;      // n_items x dt text features (rows of zeros: no text)
  const float* user_profile = nullptr;   // n_users x dp profile features
  const float* user_hist = nullptr;      // n_users x dt: mean text features of the user's history
  const uint32_t* hist_count = nullptr;  // n_users: history length n_u
  const Csr* item_cat = nullptr;         // n_items x nc category weights (null when nc == 0)
  float mu = 0.0f;                       // squared error: global mean added to every score
  bool mse = false;
};

// Projections of the side information by the current parameters (refreshed during training).
struct Caches {
  Floats item_text;  // n_items x ld: W t_i
  Floats item_cat;   // n_items x ld: sum_c w_ic C_c
  Floats item_hist;  // n_items x lf: H t_i
  Floats user_prof;  // n_users x lf: P pi_u
  Floats user_hist;  // n_users x lf: H h_u

  void resize(const Dims& d, size_t users, size_t items) {
    item_text.assign(d.dt ? items * d.ld : 0, 0.0f);
    item_cat.assign(d.nc ? items * d.ld : 0, 0.0f);
    item_hist.assign(d.hist ? items * d.lf : 0, 0.0f);
    user_prof.assign(d.dp ? users * d.lf : 0, 0.0f);
    user_hist.assign(d.hist ? users * d.lf : 0, 0.0f);
  }
};

// out (rows x n, row stride ldo) = A (rows x k, row stride lda) * B^T (B: n x k, row stride ldb), one
// single-threaded GEMM.
inline void gemm_nt(const float* a, size_t lda, size_t rows, const float* b, size_t n, size_t ldb, size_t k,
                    float* out, size_t ldo) {
  if (rows == 0 || n == 0) return;
  if (k == 0) {
    for (size_t r = 0; r < rows; ++r) std::fill(out + r * ldo, out + r * ldo + n, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(k), 1.0f, a, int(lda), b,
              int(ldb), 0.0f, out, int(ldo));
}

// Rows per block of the cache refreshes (fixed, so that the result does not depend on the thread count).
constexpr size_t kRefreshBlock = 256;

// Recomputes the item caches of rows [lo, hi) of `rows` (of all items when rows is empty): the block is
// gathered once and projected by single-threaded GEMMs.
inline void refresh_item_block(const Blocks& b, const Side& side, Caches& c, std::span<const uint32_t> rows,
                               size_t lo, size_t hi) {
  const Dims& d = b.d;
  const size_t n = hi - lo;
  if (d.dt) {
    if (rows.empty()) {
      const float* t = side.item_text + lo * d.dt;
      gemm_nt(t, d.dt, n, b.W.data(), d.ld, d.dt, d.dt, c.item_text.data() + lo * d.ld, d.ld);
      if (d.hist) gemm_nt(t, d.dt, n, b.H.data(), d.lf, d.dt, d.dt, c.item_hist.data() + lo * d.lf, d.lf);
    } else {
      std::vector<float> t(n * d.dt), o(n * d.ld), oh(d.hist ? n * d.lf : 0);
      for (size_t r = lo; r < hi; ++r)
        std::copy(side.item_text + size_t(rows[r]) * d.dt, side.item_text + size_t(rows[r] + 1) * d.dt,
                  t.data() + (r - lo) * d.dt);
      gemm_nt(t.data(), d.dt, n, b.W.data(), d.ld, d.dt, d.dt, o.data(), d.ld);
      if (d.hist) gemm_nt(t.data(), d.dt, n, b.H.data(), d.lf, d.dt, d.dt, oh.data(), d.lf);
      for (size_t r = lo; r < hi; ++r) {
        std::copy(o.data() + (r - lo) * d.ld, o.data() + (r - lo + 1) * d.ld,
                  c.item_text.data() + size_t(rows[r]) * d.ld);
        if (d.hist)
          std::copy(oh.data() + (r - lo) * d.lf, oh.data() + (r - lo + 1) * d.lf,
                    c.item_hist.data() + size_t(rows[r]) * d.lf);
      }
    }
  }
  if (d.nc) {
    for (size_t r = lo; r < hi; ++r) {
      const uint32_t i = rows.empty() ? uint32_t(r) : rows[r];
      float* q = c.item_cat.data() + size_t(i) * d.ld;
      std::fill(q, q + d.ld, 0.0f);
      auto idx = side.item_cat->row_indices(i);
      auto val = side.item_cat->row_values(i);
      for (size_t e = 0; e < idx.size(); ++e) axpy(val[e], b.C.data() + size_t(idx[e]) * d.ld, q, d.ld);
    }
  }
}

// Recomputes the user caches of rows [lo, hi) of `rows` (of all users when rows is empty).
inline void refresh_user_block(const Blocks& b, const Side& side, Caches& c, std::span<const uint32_t> rows,
                               size_t lo, size_t hi) {
  const Dims& d = b.d;
  // One source matrix (profiles or pooled history) through one projection.
  auto project = [&](const float* src, size_t k, const Floats& proj, Floats& dst) {
    const size_t n = hi - lo;
    if (rows.empty()) {
      gemm_nt(src + lo * k, k, n, proj.data(), d.lf, k, k, dst.data() + lo * d.lf, d.lf);
      return;
    }
    std::vector<float> t(n * k), o(n * d.lf);
    for (size_t r = lo; r < hi; ++r)
      std::copy(src + size_t(rows[r]) * k, src + size_t(rows[r] + 1) * k, t.data() + (r - lo) * k);
    gemm_nt(t.data(), k, n, proj.data(), d.lf, k, k, o.data(), d.lf);
    for (size_t r = lo; r < hi; ++r)
      std::copy(o.data() + (r - lo) * d.lf, o.data() + (r - lo + 1) * d.lf,
                dst.data() + size_t(rows[r]) * d.lf);
  };
  if (d.dp) project(side.user_profile, d.dp, b.P, c.user_prof);
  if (d.hist) project(side.user_hist, d.dt, b.H, c.user_hist);
}

// Recomputes the caches of the users `users` and the items `items` (an empty span: every user / item) in one
// parallel pass over fixed blocks of rows, so that the result does not depend on the thread count.
inline void refresh(const Blocks& b, const Side& side, Caches& c, std::span<const uint32_t> users,
                    std::span<const uint32_t> items, int threads) {
  const Dims& d = b.d;
  const size_t mu = (d.dp || d.hist) ? (users.empty() ? b.n_users : users.size()) : 0;
  const size_t mi = (d.dt || d.nc) ? (items.empty() ? b.n_items : items.size()) : 0;
  const size_t bu = (mu + kRefreshBlock - 1) / kRefreshBlock, bi = (mi + kRefreshBlock - 1) / kRefreshBlock;
  if (bu + bi == 0) return;
  openblas_set_num_threads(1);
  parallel_for(bu + bi, threads, 1, [&](size_t lo, size_t hi) {
    for (size_t k = lo; k < hi; ++k) {
      if (k < bu) {
        refresh_user_block(b, side, c, users, k * kRefreshBlock, std::min(mu, (k + 1) * kRefreshBlock));
      } else {
        const size_t j = k - bu;
        refresh_item_block(b, side, c, items, j * kRefreshBlock, std::min(mi, (j + 1) * kRefreshBlock));
      }
    }
  });
}

// ---- Terms ------------------------------------------------------------------------------------------------

constexpr uint32_t kNone = UINT32_MAX;
enum : uint8_t { kIdU = 1, kIdI = 2, kIdJ = 4, kCatI = 8, kCatJ = 16 };

struct Record {
  uint32_t u = 0, i = 0, j = kNone;  // j: sampled negative (warp, bpr) or kNone (mse)
  float label = 0.0f;                // mse: the observed value
  float weight = 1.0f;               // warp: rank weight; otherwise 1
  uint8_t flags = 0;
};

// q (ld) = item i's vector with the id part and the category part switched on or off.
inline void compose_item(const Blocks& b, const Caches& c, uint32_t i, bool id, bool cat, float* q) {
  const size_t ld = b.d.ld;
  if (id) {
    std::copy(b.item_id.data() + size_t(i) * ld, b.item_id.data() + size_t(i + 1) * ld, q);
  } else {
    std::fill(q, q + ld, 0.0f);
  }
  if (b.d.dt) axpy(1.0f, c.item_text.data() + size_t(i) * ld, q, ld);
  if (cat && b.d.nc) axpy(1.0f, c.item_cat.data() + size_t(i) * ld, q, ld);
}

// p (ld) = user u's vector (slot f = 1); the pooled history leaves out item `loo` (kNone: full history).
inline void compose_user(const Blocks& b, const Side& side, const Caches& c, uint32_t u, uint32_t loo,
                         bool id, float* p) {
  const Dims& d = b.d;
  if (id) {
    std::copy(b.user_id.data() + size_t(u) * d.ld, b.user_id.data() + size_t(u + 1) * d.ld, p);
  } else {
    std::fill(p, p + d.ld, 0.0f);
  }
  if (d.dp) axpy(1.0f, c.user_prof.data() + size_t(u) * d.lf, p, d.f);
  if (d.hist) {
    const float* hu = c.user_hist.data() + size_t(u) * d.lf;
    const uint32_t n = side.hist_count[u];
    if (loo == kNone) {
      axpy(1.0f, hu, p, d.f);
    } else if (n > 1) {
      const float* hi = c.item_hist.data() + size_t(loo) * d.lf;
      const float a = float(n) / float(n - 1), bb = -1.0f / float(n - 1);
      for (size_t k = 0; k < d.f; ++k) p[k] += a * hu[k] + bb * hi[k];
    }
  }
  p[d.f] = 1.0f;
}

// Score offset of squared error (user bias when the id is on, plus the global mean); 0 for ranking losses.
inline float score_offset(const Blocks& b, const Side& side, uint32_t u, bool id) {
  return side.mse ? (id ? b.user_bias[u] : 0.0f) + side.mu : 0.0f;
}

// Reference: the loss of one term computed from the parameters alone, in double precision.
inline double record_loss(Loss loss, const Blocks& b, const Side& side, const Record& r, double margin) {
  const Dims& d = b.d;
  auto item_vec = [&](uint32_t i, bool id, bool cat) {
    std::vector<double> q(d.f + 1, 0.0);
    for (size_t k = 0; k <= d.f; ++k) {
      double v = id ? b.item_id[size_t(i) * d.ld + k] : 0.0;
      for (size_t t = 0; t < d.dt; ++t) v += double(b.W[k * d.dt + t]) * side.item_text[size_t(i) * d.dt + t];
      if (cat && d.nc) {
        auto idx = side.item_cat->row_indices(i);
        auto val = side.item_cat->row_values(i);
        for (size_t e = 0; e < idx.size(); ++e) v += double(val[e]) * b.C[size_t(idx[e]) * d.ld + k];
      }
      q[k] = v;
    }
    return q;
  };
  std::vector<double> p(d.f + 1, 0.0);
  const bool idu = r.flags & kIdU;
  std::vector<double> h(d.dt, 0.0);
  if (d.hist) {
    const uint32_t n = side.hist_count[r.u];
    if (n > 1)
      for (size_t t = 0; t < d.dt; ++t)
        h[t] = (double(n) * side.user_hist[size_t(r.u) * d.dt + t] - side.item_text[size_t(r.i) * d.dt + t]) /
               double(n - 1);
  }
  for (size_t k = 0; k < d.f; ++k) {
    double v = idu ? b.user_id[size_t(r.u) * d.ld + k] : 0.0;
    for (size_t t = 0; t < d.dp; ++t)
      v += double(b.P[k * d.dp + t]) * side.user_profile[size_t(r.u) * d.dp + t];
    if (d.hist)
      for (size_t t = 0; t < d.dt; ++t) v += double(b.H[k * d.dt + t]) * h[t];
    p[k] = v;
  }
  p[d.f] = 1.0;
  const double off = side.mse ? (idu ? double(b.user_bias[r.u]) : 0.0) + side.mu : 0.0;
  auto score = [&](const std::vector<double>& q) {
    double s = off;
    for (size_t k = 0; k <= d.f; ++k) s += p[k] * q[k];
    return s;
  };
  const double si = score(item_vec(r.i, r.flags & kIdI, r.flags & kCatI));
  const double sj = r.j == kNone ? 0.0 : score(item_vec(r.j, r.flags & kIdJ, r.flags & kCatJ));
  return pair_term(loss, si, sj, r.label, r.weight, margin).loss;
}

// ---- Batch gradient ---------------------------------------------------------------------------------------

// Gradient rows of an id table: the distinct rows whose id part was on in at least one term, ascending.
struct RowGrad {
  std::vector<uint32_t> rows;
  Floats g;                     // rows.size() x ld
  std::vector<uint32_t> count;  // terms in which the row's id part was on (for L2 regularisation)
  std::vector<float> bias;      // users, squared error: d/d user_bias
};

struct Grad {
  RowGrad users, items;
  Floats W, H, P, C;  // same shapes as in Blocks
  double loss = 0;
};

// Gradient of the sum of the terms' losses with respect to every parameter block, from the caches (which must
// hold the current projections of the users and positive items of the terms; a stale cache of a negative
// item changes only its score, not the form of the gradient). Deterministic: every sum runs in term order
// within fixed groups, whatever the thread count. With `comm` (several ranks, each with the same terms and
// parameters) each rank computes its share of the fixed column blocks of the dense gradients and an Allreduce
// joins them: each element has one non-zero contribution, so the sum is exact and equals the one-process
// gradient bitwise (its time goes to `ct`). Returns the seconds spent in the dense products.
inline double batch_gradient(Loss loss, const Blocks& b, const Side& side, const Caches& c,
                             std::span<const Record> recs, double margin, int threads, Grad& out,
                             Communicator* comm = nullptr, model_util::CommTime* ct = nullptr) {
  const Dims& d = b.d;
  const size_t R = recs.size(), ld = d.ld, lf = d.lf;
  Floats P_(R * ld), QI(R * ld), QJ(R * ld), DP(R * lf);
  std::vector<float> GI(R), GJ(R);
  std::vector<double> L(R);
  parallel_for(R, threads, 64, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) {
      const Record& x = recs[r];
      float* p = P_.data() + r * ld;
      float* qi = QI.data() + r * ld;
      float* qj = QJ.data() + r * ld;
      compose_user(b, side, c, x.u, x.i, x.flags & kIdU, p);
      compose_item(b, c, x.i, x.flags & kIdI, x.flags & kCatI, qi);
      const float off = score_offset(b, side, x.u, x.flags & kIdU);
      const float si = dot(p, qi, ld) + off;
      float sj = 0.0f;
      if (x.j != kNone) {
        compose_item(b, c, x.j, x.flags & kIdJ, x.flags & kCatJ, qj);
        sj = dot(p, qj, ld) + off;
      } else {
        std::fill(qj, qj + ld, 0.0f);
      }
      const PairTerm t = pair_term(loss, si, sj, x.label, x.weight, margin);
      GI[r] = float(t.gi);
      GJ[r] = float(t.gj);
      L[r] = t.loss;
      float* dp = DP.data() + r * lf;
      for (size_t k = 0; k < lf; ++k) dp[k] = 0.0f;
      for (size_t k = 0; k < d.f; ++k) dp[k] = GI[r] * qi[k] + GJ[r] * qj[k];
    }
  });
  out.loss = 0;
  for (double v : L) out.loss += v;

  // Groups of terms by item (as positive: role 0, as negative: role 1) and by user, in term order.
  auto groups_of = [](std::vector<uint64_t>& keys) {
    std::sort(keys.begin(), keys.end());
    std::vector<size_t> start;
    for (size_t k = 0; k < keys.size(); ++k)
      if (k == 0 || (keys[k] >> 32) != (keys[k - 1] >> 32)) start.push_back(k);
    start.push_back(keys.size());
    return start;
  };
  std::vector<uint64_t> ikeys, ukeys;
  ikeys.reserve(2 * R);
  ukeys.reserve(R);
  for (size_t r = 0; r < R; ++r) {
    ikeys.push_back((uint64_t(recs[r].i) << 32) | (uint64_t(r) << 1));
    if (recs[r].j != kNone) ikeys.push_back((uint64_t(recs[r].j) << 32) | (uint64_t(r) << 1) | 1);
    ukeys.push_back((uint64_t(recs[r].u) << 32) | uint64_t(r));
  }
  const std::vector<size_t> ig = groups_of(ikeys), ug = groups_of(ukeys);
  const size_t mi = ig.size() - 1, mu = ug.size() - 1;

  // Items: id gradient, text gradient (with W), category gradient (with C), history gradient (with H: the
  // left-out item's -t_i / (n_u - 1) part of h_u,-i). Users: id gradient, profile gradient (with P), history
  // gradient (with H: the n_u h_u / (n_u - 1) part). Both in one parallel pass over the groups.
  Floats gid(mi * ld, 0.0f), gtx(d.dt ? mi * ld : 0, 0.0f), gca(d.nc ? mi * ld : 0, 0.0f),
      ghi(d.hist ? mi * lf : 0, 0.0f);
  std::vector<uint32_t> icount(mi, 0), irow(mi);
  Floats uid(mu * ld, 0.0f), gpr(d.dp ? mu * lf : 0, 0.0f), ghu(d.hist ? mu * lf : 0, 0.0f);
  std::vector<uint32_t> ucount(mu, 0), urow(mu);
  std::vector<float> ubias(mu, 0.0f);
  auto item_group = [&](size_t g) {
    irow[g] = uint32_t(ikeys[ig[g]] >> 32);
    for (size_t k = ig[g]; k < ig[g + 1]; ++k) {
      const size_t r = size_t(uint32_t(ikeys[k]) >> 1);
      const bool neg = ikeys[k] & 1;
      const Record& x = recs[r];
      const float gs = neg ? GJ[r] : GI[r];
      const float* p = P_.data() + r * ld;
      if (x.flags & (neg ? kIdJ : kIdI)) {
        axpy(gs, p, gid.data() + g * ld, ld);
        ++icount[g];
      }
      if (d.dt) axpy(gs, p, gtx.data() + g * ld, ld);
      if (d.nc && (x.flags & (neg ? kCatJ : kCatI))) axpy(gs, p, gca.data() + g * ld, ld);
      if (d.hist && !neg && side.hist_count[x.u] > 1)
        axpy(-1.0f / float(side.hist_count[x.u] - 1), DP.data() + r * lf, ghi.data() + g * lf, lf);
    }
  };
  auto user_group = [&](size_t g) {
    urow[g] = uint32_t(ukeys[ug[g]] >> 32);
    for (size_t k = ug[g]; k < ug[g + 1]; ++k) {
      const size_t r = size_t(uint32_t(ukeys[k]));
      const Record& x = recs[r];
      const float* dp = DP.data() + r * lf;
      if (x.flags & kIdU) {
        axpy(1.0f, dp, uid.data() + g * ld, lf);
        ubias[g] += GI[r];
        ++ucount[g];
      }
      if (d.dp) axpy(1.0f, dp, gpr.data() + g * lf, lf);
      const uint32_t n = d.hist ? side.hist_count[x.u] : 0;
      if (n > 1) axpy(float(n) / float(n - 1), dp, ghu.data() + g * lf, lf);
    }
  };
  // (on this thread when small: a synchronisation would cost more than the work)
  parallel_for(mi + mu, mi + mu < 4096 ? 1 : threads, 64, [&](size_t lo, size_t hi) {
    for (size_t g = lo; g < hi; ++g) {
      if (g < mi) {
        item_group(g);
      } else {
        user_group(g - mi);
      }
    }
  });

  auto compact = [&](RowGrad& rg, const std::vector<uint32_t>& rows, const Floats& g,
                     const std::vector<uint32_t>& count, const std::vector<float>* bias) {
    rg.rows.clear();
    rg.count.clear();
    rg.bias.clear();
    rg.g.clear();
    for (size_t k = 0; k < rows.size(); ++k) {
      if (count[k] == 0) continue;
      rg.rows.push_back(rows[k]);
      rg.count.push_back(count[k]);
      if (bias) rg.bias.push_back((*bias)[k]);
      rg.g.insert(rg.g.end(), g.begin() + ptrdiff_t(k * ld), g.begin() + ptrdiff_t((k + 1) * ld));
    }
  };
  compact(out.items, irow, gid, icount, nullptr);
  compact(out.users, urow, uid, ucount, side.mse ? &ubias : nullptr);

  // Dense blocks: dst (rows x n) += G^T X, X the rows of a side matrix selected by the group rows; all of
  // them in one parallel pass over fixed column blocks (H takes its item part, then its user part).
  auto gather = [](const float* x, size_t n, const std::vector<uint32_t>& idx) {
    std::vector<float> xs(idx.size() * n);
    for (size_t k = 0; k < idx.size(); ++k)
      std::copy(x + size_t(idx[k]) * n, x + size_t(idx[k] + 1) * n, xs.data() + k * n);
    return xs;
  };
  const std::vector<float> it = d.dt ? gather(side.item_text, d.dt, irow) : std::vector<float>{};
  const std::vector<float> uh = d.hist ? gather(side.user_hist, d.dt, urow) : std::vector<float>{};
  const std::vector<float> up = d.dp ? gather(side.user_profile, d.dp, urow) : std::vector<float>{};
  out.W.assign(ld * d.dt, 0.0f);
  out.H.assign(d.hist ? lf * d.dt : 0, 0.0f);
  out.P.assign(lf * d.dp, 0.0f);
  // One task: a column block [c0, c0 + n) of dst (rows_out x width) += g^T x (+ g2^T x2).
  struct Task {
    const Floats* g;
    size_t ldg, rows_out, m;
    const float* x;
    const Floats* g2;
    size_t m2;
    const float* x2;
    float* dst;
    size_t width, c0, n;
  };
  std::vector<Task> tasks;
  auto add = [&](const Floats& g, size_t ldg, size_t rows_out, size_t m, const float* x, const Floats* g2,
                 size_t m2, const float* x2, Floats& dst, size_t width) {
    constexpr size_t kCols = 128;
    for (size_t c0 = 0; c0 < width; c0 += kCols)
      tasks.push_back(
          {&g, ldg, rows_out, m, x, g2, m2, x2, dst.data(), width, c0, std::min(kCols, width - c0)});
  };
  if (d.dt) add(gtx, ld, ld, mi, it.data(), nullptr, 0, nullptr, out.W, d.dt);
  if (d.hist) add(ghi, lf, lf, mi, it.data(), &ghu, mu, uh.data(), out.H, d.dt);
  if (d.dp) add(gpr, lf, lf, mu, up.data(), nullptr, 0, nullptr, out.P, d.dp);
  openblas_set_num_threads(1);
  Timer dense;
  const auto [t_lo, t_hi] = block_range(tasks.size(), comm ? comm->rank() : 0, comm ? comm->size() : 1);
  parallel_for(t_hi - t_lo, threads, 1, [&](size_t lo, size_t hi) {
    for (size_t k = t_lo + lo; k < t_lo + hi; ++k) {
      const Task& t = tasks[k];
      const int w = int(t.width);
      if (t.m)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(t.rows_out), int(t.n), int(t.m), 1.0f,
                    t.g->data(), int(t.ldg), t.x + t.c0, w, 1.0f, t.dst + t.c0, w);
      if (t.g2 && t.m2)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(t.rows_out), int(t.n), int(t.m2), 1.0f,
                    t.g2->data(), int(t.ldg), t.x2 + t.c0, w, 1.0f, t.dst + t.c0, w);
    }
  });
  const double dense_seconds = dense.seconds();
  if (comm && !tasks.empty()) {
    model_util::CommTime none;
    (ct ? *ct : none).run([&] {
      for (Floats* x : {&out.W, &out.H, &out.P})
        if (!x->empty()) comm->allreduce_sum(x->data(), x->size());
    });
  }
  out.C.assign(d.nc * ld, 0.0f);
  if (d.nc) {
    for (size_t g = 0; g < mi; ++g) {
      auto idx = side.item_cat->row_indices(irow[g]);
      auto val = side.item_cat->row_values(irow[g]);
      for (size_t e = 0; e < idx.size(); ++e)
        axpy(val[e], gca.data() + g * ld, out.C.data() + size_t(idx[e]) * ld, ld);
    }
  }
  return dense_seconds;
}

}  // namespace xdrec::hybrid
