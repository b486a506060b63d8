// Helpers shared by every model: checking and normalising interaction matrices and fold-in histories (one set
// of input checks); for the neighbourhood and linear item-item models (popular, itemknn, ease) also scoring a
// user's history row against an item x item matrix (dense through OpenBLAS GEMM, or sparse).
#pragma once

#include <cblas.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/recommender.h"
#include "xdrec/tensor_io.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace xdrec::model_util {

// Process CPU time (every thread), seconds.
inline double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// Time a distributed fit spends in collectives (wall, and the process CPU time it took: MPI waits by
// polling), for the per-iteration lines of --verbose.
struct CommTime {
  double wall = 0, cpu = 0;
  template <class F>
  void run(F&& f) {
    const Timer t;
    const double c = process_cpu_seconds();
    f();
    wall += t.seconds();
    cpu += process_cpu_seconds() - c;
  }
};

// ---- Interaction matrices and fold-in histories: the one set of input checks every model uses ------------

// Checks that a users x items matrix is consistent (sizes, offsets, column range), that every row is sorted
// by column without repeats, and that every value is finite. `who` (the model's name) starts every message.
inline void check_interactions(const Csr& m, const std::string& who) {
  check(m.indptr.size() == size_t(m.n_rows) + 1 && m.indptr.front() == 0 &&
            m.indptr.back() == m.indices.size() && m.values.size() == m.indices.size(),
        who + ": the interaction matrix is inconsistent (indptr/indices/values sizes differ)");
  // Messages are built only on failure (this runs over every entry).
  for (uint32_t r = 0; r < m.n_rows; ++r) {
    if (m.indptr[r] > m.indptr[r + 1]) throw Error(who + ": indptr decreases at row " + std::to_string(r));
    for (uint64_t p = m.indptr[r]; p < m.indptr[r + 1]; ++p) {
      if (m.indices[p] >= m.n_cols)
        throw Error(who + ": interaction column " + std::to_string(m.indices[p]) + " in row " +
                    std::to_string(r) + " is out of range (" + std::to_string(m.n_cols) + " items)");
      if (p > m.indptr[r] && m.indices[p - 1] >= m.indices[p])
        throw Error(who + ": row " + std::to_string(r) +
                    " of the interaction matrix is not sorted by column " + "or repeats a column");
      if (!std::isfinite(m.values[p]))
        throw Error(who + ": interaction value " + std::to_string(p) + " (row " + std::to_string(r) +
                    ") is not finite");
    }
  }
}

// check_interactions, then, when `implicit` is true, every entry with a positive value becomes 1 and entries
// with a value <= 0 are dropped; otherwise the values are kept as given.
inline Csr prepare_interactions(const Csr& m, bool implicit, const std::string& who) {
  check_interactions(m, who);
  if (!implicit) return m;
  Csr out;
  out.n_rows = m.n_rows;
  out.n_cols = m.n_cols;
  out.indptr.assign(size_t(m.n_rows) + 1, 0);
  out.indices.reserve(m.nnz());
  out.values.reserve(m.nnz());
  for (uint32_t r = 0; r < m.n_rows; ++r) {
    for (uint64_t p = m.indptr[r]; p < m.indptr[r + 1]; ++p) {
      if (m.values[p] > 0.0f) {
        out.indices.push_back(m.indices[p]);
        out.values.push_back(1.0f);
      }
    }
    out.indptr[r + 1] = out.indices.size();
  }
  return out;
}

// One user's fold-in history as a sorted row without repeated items.
struct History {
  std::vector<uint32_t> items;
  std::vector<float> weights;
};

// Builds a fold-in history: empty `weights` means weight 1 for every item; repeated items' weights are summed
// (as in a Csr built from triplets); with `implicit` the summed weights are binarised like
// prepare_interactions does. Throws Error naming `who` for a size mismatch, an item out of range or a
// non-finite weight.
inline History make_history(std::span<const uint32_t> items, std::span<const float> weights, size_t n_items,
                            bool implicit, const std::string& who) {
  check(weights.empty() || weights.size() == items.size(), who + " fold_in: " + std::to_string(items.size()) +
                                                               " items but " +
                                                               std::to_string(weights.size()) + " weights");
  std::vector<std::pair<uint32_t, float>> h;
  h.reserve(items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    if (items[k] >= n_items)
      throw Error(who + " fold_in: item index " + std::to_string(items[k]) + " is out of range (model has " +
                  std::to_string(n_items) + " items)");
    const float w = weights.empty() ? 1.0f : weights[k];
    if (!std::isfinite(w)) throw Error(who + " fold_in: weight " + std::to_string(k) + " is not finite");
    h.emplace_back(items[k], w);
  }
  std::stable_sort(h.begin(), h.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  History row;
  for (const auto& [i, w] : h) {
    if (!row.items.empty() && row.items.back() == i) {
      row.weights.back() += w;
    } else {
      row.items.push_back(i);
      row.weights.push_back(w);
    }
  }
  if (implicit) {
    History b;
    for (size_t k = 0; k < row.items.size(); ++k) {
      if (row.weights[k] > 0.0f) {
        b.items.push_back(row.items[k]);
        b.weights.push_back(1.0f);
      }
    }
    return b;
  }
  return row;
}

// ---- Cost estimates (estimate_cost of every model) -----------------------------------------------------

// Bytes of a Csr with `rows` rows and `nnz` entries.
inline uint64_t csr_bytes(uint64_t rows, uint64_t nnz) {
  return nnz * 8 + (rows + 1) * 8;
}
// Bytes of one batch of scores: up to 1024 users x all items (the unit of work of evaluation and recommend).
inline uint64_t score_batch_bytes(const DataShape& s) {
  return std::min<uint64_t>(s.n_users, 1024) * s.n_items * 4;
}
// Floats of a factor row padded as mf::Factors pads it.
inline uint64_t padded_floats(uint64_t f) {
  return (f + 7) / 8 * 8;
}
// Text feature width after the shared pipeline: the autoencoder code, or the text itself; 0 without text.
inline uint64_t text_feature_dim(const DataShape& s, int ae) {
  return s.text_dim == 0 ? 0 : (ae > 0 ? uint64_t(ae) : s.text_dim);
}
// Bytes of fitting the shared text pipeline: a working copy of the item (and user) text, and with an
// autoencoder its training matrix.
inline uint64_t text_pipeline_bytes(const DataShape& s, int ae) {
  if (s.text_dim == 0) return 0;
  const uint64_t rows = s.n_items + s.n_users;
  return rows * s.text_dim * 4 * (ae > 0 ? 2 : 1);
}

// Replaces row `user` of m (user < n_rows) or appends it (user == n_rows). Returns `user`.
inline uint32_t set_row(Csr& m, uint32_t user, const History& row, const std::string& who) {
  check(user <= m.n_rows, who + " fold_in: user index " + std::to_string(user) +
                              " is beyond the next new user (" + std::to_string(m.n_rows) + ")");
  if (user == m.n_rows) {
    m.indices.insert(m.indices.end(), row.items.begin(), row.items.end());
    m.values.insert(m.values.end(), row.weights.begin(), row.weights.end());
    m.indptr.push_back(m.indices.size());
    ++m.n_rows;
    return user;
  }
  const uint64_t b = m.indptr[user], e = m.indptr[user + 1];
  m.indices.erase(m.indices.begin() + int64_t(b), m.indices.begin() + int64_t(e));
  m.values.erase(m.values.begin() + int64_t(b), m.values.begin() + int64_t(e));
  m.indices.insert(m.indices.begin() + int64_t(b), row.items.begin(), row.items.end());
  m.values.insert(m.values.begin() + int64_t(b), row.weights.begin(), row.weights.end());
  const int64_t delta = int64_t(row.items.size()) - int64_t(e - b);
  for (size_t r = size_t(user) + 1; r < m.indptr.size(); ++r)
    m.indptr[r] = uint64_t(int64_t(m.indptr[r]) + delta);
  return user;
}

inline void check_users(std::span<const uint32_t> users, uint32_t n_users, const std::string& who) {
  for (uint32_t u : users)
    check(u < n_users, who + " score: user index " + std::to_string(u) + " is out of range (model has " +
                           std::to_string(n_users) + " users)");
}

// Checks a user-history matrix read from a model file against the model's item count.
inline void check_history(const Csr& h, uint32_t n_items, const std::string& who) {
  check(h.n_cols == n_items, who + " load: the user history has " + std::to_string(h.n_cols) +
                                 " columns but the model has " + std::to_string(n_items) + " items");
  for (uint32_t r = 0; r < h.n_rows; ++r) {
    check(h.indptr[r] <= h.indptr[r + 1], who + " load: the user history's row offsets decrease");
    auto idx = h.row_indices(r);
    for (size_t k = 1; k < idx.size(); ++k)
      check(idx[k - 1] < idx[k],
            who + " load: the user history's row " + std::to_string(r) + " is not sorted");
  }
}

// A user with at least n_items / kDenseDivisor history entries is scored by GEMM; sparser users by summing
// the rows of the item matrix their history selects. Measured on one core (AVX-512, 512 users): GEMM costs
// the same at every density, and the row sums break even with it at about 1/4 density for 1682 items and
// about 1/10 for 4000 items (the larger matrix no longer fits in cache).
inline constexpr size_t kDenseDivisor = 8;
inline constexpr size_t kScoreBlock = 64;

// out[r] = hist.row(users[r]) * W for a dense row-major n x n item matrix W. Users are processed in fixed
// blocks of kScoreBlock, and whether a user goes through GEMM depends only on the user's own history, so the
// result does not depend on the thread count.
inline void score_dense_item_matrix(const Csr& hist, std::span<const uint32_t> users, const float* W,
                                    uint32_t n, Matrix& out, int threads) {
  out.resize(users.size(), n);
  if (users.empty() || n == 0) return;
  openblas_set_num_threads(1);
  parallel_for(users.size(), threads, kScoreBlock, [&](size_t lo, size_t hi) {
    std::vector<size_t> dense;
    for (size_t r = lo; r < hi; ++r) {
      const uint32_t u = users[r];
      const size_t nnz = hist.row_size(u);
      if (nnz * kDenseDivisor >= n) {
        dense.push_back(r);
        continue;
      }
      float* o = out.row(r);
      auto idx = hist.row_indices(u);
      auto val = hist.row_values(u);
      for (size_t k = 0; k < idx.size(); ++k) {
        const float w = val[k];
        const float* b = W + size_t(idx[k]) * n;
        for (uint32_t i = 0; i < n; ++i) o[i] += w * b[i];
      }
    }
    if (dense.empty()) return;
    const size_t m = dense.size();
    std::vector<float> x(m * n, 0.0f), y(m * n);
    for (size_t d = 0; d < m; ++d) {
      const uint32_t u = users[dense[d]];
      auto idx = hist.row_indices(u);
      auto val = hist.row_values(u);
      for (size_t k = 0; k < idx.size(); ++k) x[d * n + idx[k]] = val[k];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(n), 1.0f, x.data(), int(n), W,
                int(n), 0.0f, y.data(), int(n));
    for (size_t d = 0; d < m; ++d) std::copy(y.data() + d * n, y.data() + (d + 1) * n, out.row(dense[d]));
  });
}

// out[r] = hist.row(users[r]) * S for a sparse item x item matrix S (rows: history items). Each row is summed
// in a fixed order, independent of the thread count and of the other users in the batch.
inline void score_sparse_item_matrix(const Csr& hist, std::span<const uint32_t> users, const Csr& S,
                                     Matrix& out, int threads) {
  out.resize(users.size(), S.n_cols);
  if (users.empty() || S.n_cols == 0) return;
  parallel_for(users.size(), threads, kScoreBlock, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) {
      const uint32_t u = users[r];
      float* o = out.row(r);
      auto idx = hist.row_indices(u);
      auto val = hist.row_values(u);
      for (size_t k = 0; k < idx.size(); ++k) {
        const float w = val[k];
        auto nb = S.row_indices(idx[k]);
        auto sv = S.row_values(idx[k]);
        for (size_t e = 0; e < nb.size(); ++e) o[nb[e]] += w * sv[e];
      }
    }
  });
}

// The per-item domain tensor "item_domain" of a saved model with n_domains domains: 1-D, non-empty, every
// entry below n_domains. `who` prefixes the error messages ("emcdr load: ").
inline std::vector<uint16_t> load_item_domains(const TensorMap& tensors, size_t n_domains,
                                               const std::string& who) {
  const Tensor& dt = get_tensor(tensors, "item_domain");
  check(dt.shape.size() == 1, who + "tensor 'item_domain' must have 1 dimension");
  const std::vector<uint32_t> dom = dt.to_u32("item_domain");
  check(!dom.empty(), who + "tensor 'item_domain' is empty");
  std::vector<uint16_t> item_domain(dom.size());
  for (size_t i = 0; i < dom.size(); ++i) {
    check(dom[i] < n_domains, who + "item " + std::to_string(i) + " has domain " + std::to_string(dom[i]) +
                                  " but the model has " + std::to_string(n_domains) + " domains");
    item_domain[i] = uint16_t(dom[i]);
  }
  return item_domain;
}

}  // namespace xdrec::model_util
