// ItemKNN: item-item similarities over the columns of the (optionally re-weighted) user-item matrix, of which
// each item keeps its `neighbours` most similar items (a sparse item x item matrix S). A user's scores are
// their history row times S: score(u, i) = sum over history items j of r_uj * sim(j -> i).
//
// Column weighting (users play the role of terms, items of documents; df_u = number of items of user u,
// N = number of items, v = interaction value):
//   none:  w_ui = v
//   tfidf: w_ui = v * ln(1 + N / df_u)
//   bm25:  w_ui = idf_u * v * (k1 + 1) / (|v| + k1 * (1 - b + b * len_i / mean_len)), with
//          idf_u = ln(1 + (N - df_u + 0.5) / (df_u + 0.5)) and len_i = sum_u |v_ui| (mean over items with
//          at least one interaction)
// Similarity of history item j to candidate item i, with dot = <w_j, w_i> and |x| the Euclidean norm:
//   cosine:  dot / (|w_j|^(2 alpha) * |w_i|^(2 (1 - alpha)) + shrink)   (alpha = 0.5: plain cosine)
//   jaccard: dot / (|w_j|^2 + |w_i|^2 - dot + shrink)                     (Tanimoto on weighted vectors)
//   dot:     dot
// Only positive similarities are kept; ties among neighbours go to the lower item index. Every sum runs in a
// fixed order, so the model is exactly independent of the thread count.
#include <algorithm>
#include <climits>
#include <cmath>

#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

class ItemKnnModel final : public Recommender {
 public:
  explicit ItemKnnModel(const Spec& spec) : params_("itemknn") {
    params_.add("neighbours", &neighbours_, 100, 1, INT_MAX, "most similar items kept per item")
        .add("similarity", &similarity_, "cosine", {"cosine", "jaccard", "dot"}, "item-item similarity")
        .add("shrink", &shrink_, 10.0, 0.0, 1e9, "added to the similarity's denominator (cosine, jaccard)")
        .add("alpha", &alpha_, 0.5, 0.0, 1.0,
             "asymmetric cosine: exponent of the history item's norm (0.5 = cosine)")
        .add("weighting", &weighting_, "bm25", {"none", "tfidf", "bm25"},
             "re-weighting of the user-item matrix before similarities are computed")
        .add("bm25_k1", &bm25_k1_, 1.2, 0.0, 1e6, "BM25 saturation k1")
        .add("bm25_b", &bm25_b_, 0.75, 0.0, 1.0, "BM25 length normalisation b")
        .add("implicit", &implicit_, true, "binarise interactions (value > 0 -> 1, others dropped)");
    params_.apply(spec.values);
  }
  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t n = s.n_items, k = std::min<uint64_t>(uint64_t(neighbours_), n);
    ModelCost c;
    // The prepared, weighted and transposed interactions; per item its candidate and kept neighbours; the
    // sparse similarity matrix; a dense accumulator per thread.
    c.bytes = 3 * model_util::csr_bytes(std::max(s.n_users, n), s.nnz) + 2 * n * k * 8 +
              model_util::csr_bytes(n, n * k) + n * 17 + model_util::score_batch_bytes(s);
    c.seconds = 0;
    c.note = "neighbours x items similarity entries";
    return c;
  }
  std::string name() const override { return "itemknn"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return hist_.n_rows; }
  uint32_t n_items() const override { return sim_.n_rows; }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    Csr x = model_util::prepare_interactions(user_items, implicit_, "itemknn");
    check(x.n_cols > 0, "itemknn: the interaction matrix has no items");
    const Csr w = weighted(x);
    const Csr wt = w.transpose();
    const uint32_t n = x.n_cols;
    std::vector<double> sq(n, 0.0);
    for (uint32_t i = 0; i < n; ++i)
      for (float v : wt.row_values(i)) sq[i] += double(v) * double(v);
    const Norms sim = norms(std::move(sq));

    if (ctx.progress) ctx.progress(0, n, "itemknn similarities");
    std::vector<std::vector<std::pair<uint32_t, float>>> rows(n);
    const size_t k_keep = size_t(neighbours_);
    // Each row is computed on its own, so the chunk size only trades allocation against load balance.
    parallel_for(n, ctx.threads, std::max<size_t>(32, n / 256), [&](size_t lo, size_t hi) {
      std::vector<double> acc(n, 0.0);
      std::vector<uint8_t> seen(n, 0);
      std::vector<uint32_t> touched;
      std::vector<std::pair<uint32_t, float>> cand;
      for (size_t j = lo; j < hi; ++j) {
        touched.clear();
        auto us = wt.row_indices(uint32_t(j));
        auto uv = wt.row_values(uint32_t(j));
        for (size_t a = 0; a < us.size(); ++a) {
          const double wj = uv[a];
          auto is = w.row_indices(us[a]);
          auto iv = w.row_values(us[a]);
          for (size_t b = 0; b < is.size(); ++b) {
            const uint32_t i = is[b];
            if (!seen[i]) {
              seen[i] = 1;
              touched.push_back(i);
            }
            acc[i] += wj * double(iv[b]);
          }
        }
        cand.clear();
        for (uint32_t i : touched) {
          const double dot = acc[i];
          acc[i] = 0.0;
          seen[i] = 0;
          if (i == j) continue;
          const double s = sim(dot, uint32_t(j), i);
          if (s > 0.0 && std::isfinite(s)) cand.emplace_back(i, float(s));
        }
        auto better = [](const auto& a, const auto& b) {
          return a.second > b.second || (a.second == b.second && a.first < b.first);
        };
        if (cand.size() > k_keep) {
          std::nth_element(cand.begin(), cand.begin() + int64_t(k_keep), cand.end(), better);
          cand.resize(k_keep);
        }
        std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        rows[j] = cand;
      }
    });

    Csr s;
    s.n_rows = s.n_cols = n;
    s.indptr.assign(size_t(n) + 1, 0);
    size_t total = 0;
    for (auto& r : rows) total += r.size();
    s.indices.reserve(total);
    s.values.reserve(total);
    for (uint32_t j = 0; j < n; ++j) {
      for (auto& [i, v] : rows[j]) {
        s.indices.push_back(i);
        s.values.push_back(v);
      }
      s.indptr[j + 1] = s.indices.size();
      std::vector<std::pair<uint32_t, float>>().swap(rows[j]);
    }
    sim_ = std::move(s);
    hist_ = std::move(x);
    if (ctx.progress) ctx.progress(n, n, "itemknn similarities");
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(sim_.n_rows > 0, "itemknn score: the model is not fitted");
    model_util::check_users(users, hist_.n_rows, "itemknn");
    model_util::score_sparse_item_matrix(hist_, users, sim_, out, threads);
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(sim_.n_rows > 0, "itemknn fold_in: the model is not fitted");
    auto row = model_util::make_history(items, weights, n_items(), implicit_, "itemknn");
    return model_util::set_row(hist_, user, row, "itemknn");
  }

  void save(TensorMap& tensors, nlohmann::json&) const override {
    put_csr(tensors, "similarity", sim_);
    put_csr(tensors, "history", hist_);
  }

  void load(const TensorMap& tensors, const nlohmann::json&) override {
    Csr s = get_csr(tensors, "similarity");
    Csr h = get_csr(tensors, "history");
    check(s.n_rows == s.n_cols && s.n_rows > 0,
          "itemknn load: the similarity matrix must be square and non-empty, got " +
              std::to_string(s.n_rows) + " x " + std::to_string(s.n_cols));
    for (float v : s.values)
      check(std::isfinite(v), "itemknn load: the similarity matrix holds a non-finite value");
    model_util::check_history(h, s.n_rows, "itemknn");
    sim_ = std::move(s);
    hist_ = std::move(h);
  }

 private:
  enum class Sim { Cosine, Jaccard, Dot };

  // Per-item terms of the similarity's denominator, so that the pair loop does no pow() or string tests.
  struct Norms {
    Sim kind = Sim::Cosine;
    std::vector<double> sq, head, tail;  // |w_i|^2, |w_i|^(2 alpha), |w_i|^(2 (1 - alpha))
    double shrink = 0;
    double operator()(double dot, uint32_t j, uint32_t i) const {
      double d;
      switch (kind) {
        case Sim::Dot:
          return dot;
        case Sim::Jaccard:
          d = sq[j] + sq[i] - dot + shrink;
          break;
        default:
          d = head[j] * tail[i] + shrink;
      }
      return d > 0.0 ? dot / d : 0.0;
    }
  };

  Norms norms(std::vector<double> sq) const {
    Norms n;
    n.kind = similarity_ == "dot" ? Sim::Dot : similarity_ == "jaccard" ? Sim::Jaccard : Sim::Cosine;
    n.shrink = shrink_;
    n.head.resize(sq.size());
    n.tail.resize(sq.size());
    for (size_t i = 0; i < sq.size(); ++i) {
      n.head[i] = alpha_ == 0.5 ? std::sqrt(sq[i]) : std::pow(sq[i], alpha_);
      n.tail[i] = alpha_ == 0.5 ? std::sqrt(sq[i]) : std::pow(sq[i], 1.0 - alpha_);
    }
    n.sq = std::move(sq);
    return n;
  }

  // The user-item matrix with the configured column weighting applied.
  Csr weighted(const Csr& x) const {
    if (weighting_ == "none") return x;
    Csr w = x;
    const double n_items = x.n_cols;
    if (weighting_ == "tfidf") {
      for (uint32_t u = 0; u < x.n_rows; ++u) {
        const double df = double(x.row_size(u));
        const double idf = std::log(1.0 + n_items / df);
        for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p) w.values[p] = float(x.values[p] * idf);
      }
      return w;
    }
    std::vector<double> len(x.n_cols, 0.0);
    for (size_t p = 0; p < x.nnz(); ++p) len[x.indices[p]] += std::fabs(double(x.values[p]));
    double total = 0.0;
    size_t active = 0;
    for (double l : len) {
      if (l > 0.0) {
        total += l;
        ++active;
      }
    }
    const double mean_len = active ? total / double(active) : 1.0;
    for (uint32_t u = 0; u < x.n_rows; ++u) {
      const double df = double(x.row_size(u));
      const double idf = std::log(1.0 + (n_items - df + 0.5) / (df + 0.5));
      for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p) {
        const double v = x.values[p];
        const double norm = 1.0 - bm25_b_ + bm25_b_ * len[x.indices[p]] / mean_len;
        const double den = std::fabs(v) + bm25_k1_ * norm;
        w.values[p] = den > 0.0 ? float(idf * v * (bm25_k1_ + 1.0) / den) : 0.0f;
      }
    }
    return w;
  }

  ParamSet params_;
  int neighbours_ = 100;
  std::string similarity_ = "cosine", weighting_ = "bm25";
  double shrink_ = 10.0, alpha_ = 0.5, bm25_k1_ = 1.2, bm25_b_ = 0.75;
  bool implicit_ = true;
  Csr sim_;   // item x item, row j: neighbours of history item j
  Csr hist_;  // users x items, the rows scored against sim_
};

}  // namespace

XDREC_REGISTER_MODEL(itemknn, "item-item neighbourhood model (cosine/jaccard/dot, tfidf or bm25 weighting)",
                     ItemKnnModel,
                     {.uses_text = false,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false});

}  // namespace xdrec
