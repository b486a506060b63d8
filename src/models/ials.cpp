// Implicit-feedback ALS (Hu, Koren & Volinsky 2008): confidence c = 1 + alpha*|r| on observed entries,
// preference 1 for r > 0, solved alternately for users and items. Each row is solved with a few warm-started
// conjugate-gradient steps (or exactly with a Cholesky factorisation). A row's solve reads only the other
// side's factors and their Gram matrix, which is computed once per half-iteration in a fixed order, so the
// result is bitwise independent of the thread count.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "models/mf_kernels.h"
#include "xdrec/recommender.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace xdrec {

namespace mf {

void gram(const Factors& y, AlignedFloats& g, int threads) {
  openblas_set_num_threads(1);
  const size_t ld = y.ld;
  constexpr size_t kBlock = 4096;
  const size_t nb = (y.rows + kBlock - 1) / kBlock;
  g.assign(ld * ld, 0.0f);
  if (nb == 0) return;
  AlignedFloats partial(nb * ld * ld);
  parallel_for(nb, threads, 1, [&](size_t lo, size_t hi) {
    for (size_t b = lo; b < hi; ++b) {
      const size_t r0 = b * kBlock, m = std::min(y.rows, r0 + kBlock) - r0;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(ld), int(ld), int(m), 1.0f, y.row(r0), int(ld),
                  y.row(r0), int(ld), 0.0f, partial.data() + b * ld * ld, int(ld));
    }
  });
  for (size_t b = 0; b < nb; ++b) {
    const float* p = partial.data() + b * ld * ld;
    for (size_t k = 0; k < ld * ld; ++k) g[k] += p[k];
  }
}

void gemm_scores(const Factors& u, std::span<const uint32_t> users, const Factors& y, const float* bias,
                 Matrix& out, int threads) {
  for (uint32_t user : users)
    if (user >= u.rows)
      throw Error("score: user index " + std::to_string(user) + " is out of range (model has " +
                  std::to_string(u.rows) + " users)");
  // Every entry is overwritten below: keep the buffer (no zero fill) when the shape already matches.
  if (out.rows != users.size() || out.cols != y.rows || out.data.size() != users.size() * y.rows)
    out.resize(users.size(), y.rows);
  if (users.empty() || y.rows == 0) return;
  openblas_set_num_threads(1);
  const size_t ld = u.ld;
  constexpr size_t kBlock = 64;
  parallel_for(users.size(), threads, kBlock, [&](size_t lo, size_t hi) {
    AlignedFloats a((hi - lo) * ld);
    for (size_t i = lo; i < hi; ++i)
      std::copy(u.row(users[i]), u.row(users[i]) + ld, a.data() + (i - lo) * ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(hi - lo), int(y.rows), int(u.f), 1.0f, a.data(),
                int(ld), y.data.data(), int(ld), 0.0f, out.row(lo), int(out.cols));
    if (bias) {
      for (size_t i = lo; i < hi; ++i) {
        float* o = out.row(i);
        for (size_t j = 0; j < y.rows; ++j) o[j] += bias[j];
      }
    }
  });
}

}  // namespace mf

class IalsModel final : public Recommender {
 public:
  explicit IalsModel(const Spec& spec) : params_("ials") {
    params_.add("factors", &factors_, 64, 1, mf::kMaxFactors, "number of latent factors")
        .add("reg", &reg_, 3.0, 0.0, 1e6, "L2 regularisation of a factor row (scaled by reg_exponent)")
        .add("reg_exponent", &reg_exponent_, 0.5, 0.0, 2.0,
             "frequency scaling: a row with n entries uses reg*(1+n)^reg_exponent (0: the same reg for all "
             "rows)")
        .add("alpha", &alpha_, 2.0, 0.0, 1e6, "confidence of an observed entry: c = 1 + alpha*|value|")
        .add("iterations", &iterations_, 15, 0, 100000, "alternating iterations (users then items)")
        .add("cg_steps", &cg_steps_, 3, 1, 1024, "conjugate-gradient steps per row and half-iteration")
        .add("solver", &solver_, "cg", {"cg", "cholesky"},
             "per-row solver: warm-started conjugate gradient, or exact Cholesky (slow, f^2 per entry)")
        .add("init", &init_, 0.01, 0.0, 10.0, "standard deviation of the normal initial factors")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed of the initial factors (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  std::string name() const override { return "ials"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return uint32_t(users_.rows); }
  uint32_t n_items() const override { return uint32_t(items_.rows); }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    mf::check_interactions(user_items, "ials");
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const Csr item_users = user_items.transpose();
    users_.resize(user_items.n_rows, size_t(factors_));
    items_.resize(user_items.n_cols, size_t(factors_));
    users_.init_normal(seed, 0, float(init_), threads);
    items_.init_normal(seed, uint64_t(1) << 40, float(init_), threads);
    item_gram_valid_ = false;
    const std::vector<float> user_regs = row_regs(user_items), item_regs = row_regs(item_users);
    mf::AlignedFloats g;
    if (ctx.progress) ctx.progress(0, size_t(iterations_), "ials iterations");
    for (int it = 0; it < iterations_; ++it) {
      Timer timer;
      mf::gram(items_, g, threads);
      solve_side(user_items, user_regs, items_, g, users_, threads);
      mf::gram(users_, g, threads);
      solve_side(item_users, item_regs, users_, g, items_, threads);
      if (ctx.verbose) std::fprintf(stderr, "ials iteration %d: %.3f s\n", it + 1, timer.seconds());
      if (ctx.progress) ctx.progress(size_t(it) + 1, size_t(iterations_), "ials iterations");
    }
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    mf::gemm_scores(users_, users, items_, nullptr, out, resolve_threads(threads));
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(users_.ld > 0, "ials fold_in: the model is not fitted (call fit or load first)");
    check(user <= users_.rows, "ials fold_in: user index " + std::to_string(user) +
                                   " is beyond the next new user (" + std::to_string(users_.rows) + ")");
    const mf::History hist = mf::merge_history(items, weights, items_.rows, "ials");
    if (!item_gram_valid_) {
      mf::gram(items_, item_gram_, 1);
      item_gram_valid_ = true;
    }
    const mf::IalsRow row{hist.items.data(), hist.weights.data(), hist.items.size()};
    mf::CholScratch chol(users_.f);
    mf::AlignedFloats x(users_.ld, 0.0f);
    // Solve first, so that an error leaves the model unchanged.
    mf::ials_exact_solve(item_gram_.data(), row_reg(row), items_.data.data(), items_.ld, items_.f, row,
                         float(alpha_), x.data(), chol);
    if (user == users_.rows) users_.append_row();
    std::copy(x.begin(), x.end(), users_.row(user));
    return user;
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    tensors["user_factors"] = Tensor::from_matrix(users_.to_matrix());
    tensors["item_factors"] = Tensor::from_matrix(items_.to_matrix());
    extra["factors"] = factors_;
  }

  void load(const TensorMap& tensors, const nlohmann::json&) override {
    Matrix u = get_tensor(tensors, "user_factors").to_matrix("user_factors");
    Matrix v = get_tensor(tensors, "item_factors").to_matrix("item_factors");
    check(u.cols == size_t(factors_) && v.cols == size_t(factors_),
          "ials load: factor matrices have " + std::to_string(u.cols) + " and " + std::to_string(v.cols) +
              " columns but the spec says factors=" + std::to_string(factors_));
    users_.from_matrix(u);
    items_.from_matrix(v);
    item_gram_valid_ = false;
  }

 private:
  float row_reg(const mf::IalsRow& row) const {
    if (reg_exponent_ == 0.0) return float(reg_);
    size_t n = 0;
    for (size_t e = 0; e < row.n; ++e) n += row.val[e] != 0.0f;
    return float(reg_ * std::pow(1.0 + double(n), reg_exponent_));
  }

  std::vector<float> row_regs(const Csr& m) const {
    std::vector<float> regs(m.n_rows);
    for (uint32_t r = 0; r < m.n_rows; ++r)
      regs[r] = row_reg({m.indices.data() + m.indptr[r], m.values.data() + m.indptr[r], m.row_size(r)});
    return regs;
  }

  // Solves every row of `m` (rows of `target`) against the fixed factors `other` with Gram matrix g.
  void solve_side(const Csr& m, const std::vector<float>& regs, const mf::Factors& other,
                  const mf::AlignedFloats& g, mf::Factors& target, int threads) const {
    const bool exact = solver_ == "cholesky";
    parallel_for(m.n_rows, threads, 64, [&](size_t lo, size_t hi) {
      mf::CgScratch cg(target.ld);
      mf::CholScratch chol(exact ? target.f : 0);
      for (size_t r = lo; r < hi; ++r) {
        const mf::IalsRow row{m.indices.data() + m.indptr[r], m.values.data() + m.indptr[r],
                              m.row_size(uint32_t(r)), m.indices.data() + m.indptr[hi]};
        if (exact) {
          mf::ials_exact_solve(g.data(), regs[r], other.data.data(), other.ld, other.f, row, float(alpha_),
                               target.row(r), chol);
        } else {
          mf::ials_cg_solve(g.data(), regs[r], other.data.data(), other.ld, row, float(alpha_), cg_steps_,
                            target.row(r), cg);
        }
      }
    });
  }

  ParamSet params_;
  int factors_ = 64, iterations_ = 15, cg_steps_ = 3, seed_ = 0;
  double reg_ = 3.0, reg_exponent_ = 0.5, alpha_ = 2.0, init_ = 0.01;
  std::string solver_ = "cg";
  mf::Factors users_, items_;
  mf::AlignedFloats item_gram_;
  bool item_gram_valid_ = false;
};

XDREC_REGISTER_MODEL(ials,
                     "implicit-feedback ALS (confidence 1 + alpha*r), conjugate-gradient or exact row solves",
                     IalsModel);

}  // namespace xdrec
