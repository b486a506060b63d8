// EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a dense item x item weight
// matrix B minimising ||X - X B||^2 + lambda ||B||^2 subject to diag(B) = 0, in closed form
//   P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P))   (so B_ij = -P_ij / P_jj for i != j).
// Scores are a user's history row times B. The Gram matrix is accumulated row by row in a fixed order, the
// Cholesky factorisation runs on one thread, and P is solved in fixed column blocks, so the model is exactly
// independent of the thread count. Memory grows with n_items^2 (12 bytes per entry while fitting); the
// max_items parameter refuses catalogues where that is unreasonable.

#include <climits>
#include <cmath>
#include <cstdio>

#include "core/eigen.h"
#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

class EaseModel final : public Recommender {
 public:
  explicit EaseModel(const Spec& spec) : params_("ease") {
    params_.add("lambda", &lambda_, 300.0, 1e-6, 1e12, "L2 regularisation added to the diagonal of X^T X")
        .add("implicit", &implicit_, true, "binarise interactions (value > 0 -> 1, others dropped)")
        .add("max_items", &max_items_, 50000, 1, INT_MAX,
             "refuse to fit more items than this (the dense item x item matrices need 12 bytes per entry)");
    params_.apply(spec.values);
  }
  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t n = s.n_items;
    ModelCost c;
    // Gram matrix and its Cholesky factor in place (double, n x n), the weights B (float, n x n), one block
    // of 64 inverse columns (double) per thread, the prepared and transposed interactions, and dense scoring.
    c.bytes = n * n * 8 + n * n * 4 + n * 64 * 8 + 2 * model_util::csr_bytes(std::max(s.n_users, n), s.nnz) +
              2 * 64 * n * 4 + model_util::score_batch_bytes(s);
    // Cholesky n^3/3 and the inverse about n^3 flops at a few GFLOP/s on one core.
    c.seconds = (4.0 / 3.0) * double(n) * double(n) * double(n) / 5e9;
    c.note = "dense item x item Gram (double) and weights (float): 12 bytes x n_items^2";
    return c;
  }
  std::string name() const override { return "ease"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return hist_.n_rows; }
  uint32_t n_items() const override { return uint32_t(b_.rows); }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    const uint32_t n = user_items.n_cols;
    check(n > 0, "ease: the interaction matrix has no items");
    if (n > uint32_t(max_items_)) {
      char gib[32];
      std::snprintf(gib, sizeof gib, "%.1f", double(n) * double(n) * 12.0 / double(1ULL << 30));
      throw Error("ease: " + std::to_string(n) + " items exceed max_items=" + std::to_string(max_items_) +
                  "; the dense item x item matrices would need about " + gib +
                  " GiB. Raise max_items if the memory is there, or use itemknn or ials");
    }
    Csr x = model_util::prepare_interactions(user_items, implicit_, "ease");
    const Csr xt = x.transpose();
    const int threads = resolve_threads(ctx.threads);
    const size_t nn = n;

    // G = X^T X + lambda I (column-major; column j accumulated over the users of item j in index order).
    if (ctx.progress) ctx.progress(0, 3, "ease gram matrix");
    Eigen::MatrixXd g = Eigen::MatrixXd::Zero(Eigen::Index(nn), Eigen::Index(nn));
    parallel_for(nn, threads, 16, [&](size_t lo, size_t hi) {
      for (size_t j = lo; j < hi; ++j) {
        double* col = g.col(Eigen::Index(j)).data();
        auto us = xt.row_indices(uint32_t(j));
        auto uv = xt.row_values(uint32_t(j));
        for (size_t a = 0; a < us.size(); ++a) {
          const double wj = uv[a];
          auto is = x.row_indices(us[a]);
          auto iv = x.row_values(us[a]);
          for (size_t b = 0; b < is.size(); ++b) col[is[b]] += wj * double(iv[b]);
        }
        col[j] += lambda_;
      }
    });

    if (ctx.progress) ctx.progress(1, 3, "ease cholesky");
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(g);  // factorises g in place
    check(llt.info() == Eigen::Success,
          "ease: X^T X + lambda I is not positive definite (non-implicit values with negative weights?); "
          "increase lambda");

    // P in fixed column blocks: P[:, c0:c1] = solve(e_c0 .. e_c1); B[:, c] = -P[:, c] / P[c, c], B[c, c] = 0.
    if (ctx.progress) ctx.progress(2, 3, "ease inverse");
    Matrix b(nn, nn);
    constexpr size_t kBlock = 64;
    parallel_for(nn, threads, kBlock, [&](size_t lo, size_t hi) {
      const Eigen::Index m = Eigen::Index(hi - lo);
      Eigen::MatrixXd p = Eigen::MatrixXd::Zero(Eigen::Index(nn), m);
      for (Eigen::Index k = 0; k < m; ++k) p(Eigen::Index(lo) + k, k) = 1.0;
      // L y = e_c is zero above row c0 = lo, so the forward solve only needs the trailing block of L
      // (a third of the work of a full forward solve, summed over all blocks); then L^T x = y.
      const Eigen::Index tail = Eigen::Index(nn - lo);
      auto y = p.bottomRows(tail);
      g.bottomRightCorner(tail, tail).triangularView<Eigen::Lower>().solveInPlace(y);
      llt.matrixU().solveInPlace(p);
      for (Eigen::Index k = 0; k < m; ++k) {
        const size_t c = lo + size_t(k);
        const double pcc = p(Eigen::Index(c), k);
        const double* pc = p.col(k).data();
        for (size_t i = 0; i < nn; ++i) b(i, c) = i == c ? 0.0f : float(-pc[i] / pcc);
      }
    });
    if (ctx.progress) ctx.progress(3, 3, "ease inverse");
    b_ = std::move(b);
    hist_ = std::move(x);
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(b_.rows > 0, "ease score: the model is not fitted");
    model_util::check_users(users, hist_.n_rows, "ease");
    model_util::score_dense_item_matrix(hist_, users, b_.data.data(), uint32_t(b_.rows), out,
                                        resolve_threads(threads));
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(b_.rows > 0, "ease fold_in: the model is not fitted");
    auto row = model_util::make_history(items, weights, n_items(), implicit_, "ease");
    return model_util::set_row(hist_, user, row, "ease");
  }

  // The item-item weight matrix B: scores are history rows times B.
  std::vector<std::string> compressible_tensors() const override { return {"weights"}; }
  void save(TensorMap& tensors, nlohmann::json&) const override {
    tensors["weights"] = Tensor::from_matrix(b_);
    put_csr(tensors, "history", hist_);
  }

  void load(const TensorMap& tensors, const nlohmann::json&) override {
    Matrix b = get_tensor(tensors, "weights").to_matrix("weights");
    check(b.rows == b.cols && b.rows > 0,
          "ease load: tensor 'weights' must be a non-empty square matrix, got " + std::to_string(b.rows) +
              " x " + std::to_string(b.cols));
    for (float v : b.data) check(std::isfinite(v), "ease load: tensor 'weights' holds a non-finite value");
    Csr h = get_csr(tensors, "history");
    model_util::check_history(h, uint32_t(b.rows), "ease");
    b_ = std::move(b);
    hist_ = std::move(h);
  }

 private:
  ParamSet params_;
  double lambda_ = 300.0;
  bool implicit_ = true;
  int max_items_ = 50000;
  Matrix b_;  // n_items x n_items, row j: weights from history item j to every item
  Csr hist_;  // users x items, the rows scored against b_
};

}  // namespace

XDREC_REGISTER_MODEL(ease, "EASE: closed-form item-item linear autoencoder (dense, for up to ~50k items)",
                     EaseModel,
                     {.uses_text = false,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false});

}  // namespace xdrec
