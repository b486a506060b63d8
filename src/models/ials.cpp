// Implicit-feedback ALS (Hu, Koren & Volinsky 2008): confidence c = 1 + alpha*|r| on observed entries,
// preference 1 for r > 0, solved alternately for users and items. Each row is solved with a few warm-started
// conjugate-gradient steps (or exactly with a Cholesky factorisation). A row's solve reads only the other
// side's factors and their Gram matrix, which is computed once per half-iteration in a fixed order, so the
// result is bitwise independent of the thread count.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <numeric>

#include "models/factor_model.h"
#include "models/mf_kernels.h"
#include "xdrec/dist.h"
#include "xdrec/recommender.h"

namespace xdrec {

class IalsModel final : public models::FactorModel {
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
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_)), rows = s.n_users + s.n_items;
    const uint64_t blocks = (std::max(s.n_users, s.n_items) + 4095) / 4096;
    ModelCost c;
    // Factors of users and items, the transposed interactions, per-row regularisation, the Gram matrix and
    // its per-block partial sums.
    c.bytes = rows * ld * 4 + model_util::csr_bytes(s.n_items, s.nnz) + rows * 4 +
              (blocks + 1) * ld * ld * 4 + model_util::score_batch_bytes(s);
    const double f = double(ld), steps = solver_ == "cholesky" ? 0 : double(cg_steps_);
    const double per_iter =
        solver_ == "cholesky"
            ? double(s.nnz) * f * f * 2 + double(rows) * f * f * f / 3 + double(rows) * f * f * 2
            : double(rows) * (steps + 1) * f * f * 2 + double(s.nnz) * (steps + 1) * f * 4 +
                  double(rows) * f * f * 2;
    c.seconds = double(iterations_) * per_iter / 4e9;
    c.note = "factors x (users + items) floats";
    return c;
  }
  std::string name() const override { return "ials"; }
  std::string spec() const override { return name() + ":" + params_.current(); }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    model_util::check_interactions(user_items, "ials");
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const Csr item_users = user_items.transpose();
    users_.resize(user_items.n_rows, size_t(factors_));
    items_.resize(user_items.n_cols, size_t(factors_));
    users_.init_normal(seed, 0, float(init_), threads);
    items_.init_normal(seed, uint64_t(1) << 40, float(init_), threads);
    item_gram_valid_ = false;
    const std::vector<float> user_regs = row_regs(user_items), item_regs = row_regs(item_users);
    // Distributed (ctx.comm with several ranks): every rank holds both full factor matrices; it solves its
    // own contiguous block of rows, and the updated rows are gathered so that every rank has the whole side
    // before the other side is solved. Each rank computes the partial Grams of its share of the fixed
    // row blocks and the Allreduce joins them, so every row's solve reads bitwise the same inputs as in a
    // single process.
    Communicator* comm = ctx.comm && ctx.comm->size() > 1 ? ctx.comm : nullptr;
    mf::AlignedFloats g;
    if (ctx.progress) ctx.progress(0, size_t(iterations_), "ials iterations");
    for (int it = 0; it < iterations_; ++it) {
      Timer timer;
      model_util::CommTime ct;
      const double cpu0 = model_util::process_cpu_seconds();
      side_gram(items_, g, threads, comm, ct);
      solve_side(user_items, user_regs, items_, g, users_, threads, comm, ct);
      side_gram(users_, g, threads, comm, ct);
      solve_side(item_users, item_regs, users_, g, items_, threads, comm, ct);
      if (ctx.verbose && comm)
        std::fprintf(stderr,
                     "ials iteration %d: %.3f s (rank %d of %d: compute %.3f s cpu, communication %.3f s)\n",
                     it + 1, timer.seconds(), comm->rank(), comm->size(),
                     model_util::process_cpu_seconds() - cpu0 - ct.cpu, ct.wall);
      else if (ctx.verbose)
        std::fprintf(stderr, "ials iteration %d: %.3f s (compute %.3f s cpu)\n", it + 1, timer.seconds(),
                     model_util::process_cpu_seconds() - cpu0);
      if (ctx.progress) ctx.progress(size_t(it) + 1, size_t(iterations_), "ials iterations");
    }
  }

  // Incremental update: new users and items get initial rows from the same streams a fit would use; the
  // touched users are solved against the current items, then the items they touched (and the new ones)
  // against the users, then `sweeps` full alternating iterations, all warm-started.
  bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
              int sweeps) override {
    check_resume(user_items, touched_users);
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const size_t old_users = users_.rows, old_items = items_.rows;
    grow_rows(users_, user_items.n_rows, seed, 0, float(init_));
    grow_rows(items_, user_items.n_cols, seed, uint64_t(1) << 40, float(init_));
    item_gram_valid_ = false;
    const Csr item_users = user_items.transpose();
    const std::vector<float> user_regs = row_regs(user_items), item_regs = row_regs(item_users);
    const std::vector<uint32_t> urows = resume_users(touched_users, uint32_t(old_users), user_items.n_rows);
    std::vector<uint8_t> mark(user_items.n_cols, 0);
    for (uint32_t u : urows)
      for (uint32_t i : user_items.row_indices(u)) mark[i] = 1;
    for (size_t i = old_items; i < user_items.n_cols; ++i) mark[i] = 1;
    std::vector<uint32_t> irows;
    for (uint32_t i = 0; i < user_items.n_cols; ++i)
      if (mark[i]) irows.push_back(i);
    mf::AlignedFloats g;
    model_util::CommTime ct;
    if (!urows.empty()) {  // (an empty list would mean every row)
      mf::gram(items_, g, threads);
      solve_side(user_items, user_regs, items_, g, users_, threads, nullptr, ct, urows);
    }
    if (!irows.empty()) {
      mf::gram(users_, g, threads);
      solve_side(item_users, item_regs, users_, g, items_, threads, nullptr, ct, irows);
    }
    for (int it = 0; it < sweeps; ++it) {
      mf::gram(items_, g, threads);
      solve_side(user_items, user_regs, items_, g, users_, threads, nullptr, ct);
      mf::gram(users_, g, threads);
      solve_side(item_users, item_regs, users_, g, items_, threads, nullptr, ct);
    }
    return true;
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    save_factors(tensors, "user_factors", "item_factors");
    extra["factors"] = factors_;
  }
  std::vector<std::string> compressible_tensors() const override { return {"user_factors", "item_factors"}; }

  void load(const TensorMap& tensors, const nlohmann::json&) override {
    load_factors(tensors, "user_factors", "item_factors", size_t(factors_),
                 "factors=" + std::to_string(factors_));
    item_gram_valid_ = false;
  }

 protected:
  // Fold-in: the exact (Cholesky) solve of the user's normal equations against the fixed item factors.
  // Hu, Koren & Volinsky's explanation: with W = (Y^T C Y + reg I)^-1 the fold-in score of item i is
  // sum_j c_j p_j (y_i^T W y_j): one exact term per history item.
  bool explain(std::span<const uint32_t> items, std::span<const float> weights, uint32_t item,
               std::vector<float>& contributions) const override {
    check(factors_fitted(), "ials explain: the model is not fitted");
    check(item < items_.rows, "ials explain: item index " + std::to_string(item) + " is out of range");
    const model_util::History hist = model_util::make_history(items, weights, items_.rows, false, name());
    const mf::AlignedFloats g = item_gram();  // a copy: a later fit may replace the cached one
    const size_t f = items_.f;
    const mf::IalsRow row{hist.items.data(), hist.weights.data(), hist.items.size()};
    mf::CholScratch chol(f);
    std::vector<float> x(items_.ld, 0.0f);
    mf::ials_exact_solve(g.data(), row_reg(row), items_.data.data(), items_.ld, f, row, float(alpha_),
                         x.data(), chol);
    // chol.a holds L (A = L L^T): z = A^-1 y_item.
    const double* a = chol.a.data();
    std::vector<double> z(f);
    const float* yi = items_.row(item);
    for (size_t i = 0; i < f; ++i) {
      double v = yi[i];
      for (size_t k = 0; k < i; ++k) v -= a[i * f + k] * z[k];
      z[i] = v / a[i * f + i];
    }
    for (size_t i = f; i-- > 0;) {
      double v = z[i];
      for (size_t k = i + 1; k < f; ++k) v -= a[k * f + i] * z[k];
      z[i] = v / a[i * f + i];
    }
    contributions.assign(items.size(), 0.0f);
    for (size_t k = 0; k < items.size(); ++k) {
      // The merged history sums repeats: each listed entry gets its item's term in proportion to its weight.
      const auto it = std::lower_bound(hist.items.begin(), hist.items.end(), items[k]);
      const size_t e = size_t(it - hist.items.begin());
      const float r = hist.weights[e];
      if (r <= 0.0f) continue;
      float w, c;
      mf::ials_entry(r, float(alpha_), w, c);
      const float* yj = items_.row(items[k]);
      double s = 0;
      for (size_t i = 0; i < f; ++i) s += z[i] * yj[i];
      const double wk = weights.empty() ? 1.0 : double(weights[k]);
      contributions[k] = float(double(c) * s * wk / double(r));
    }
    return true;
  }

  void solve_user(const model_util::History& hist, float* x) override {
    const mf::IalsRow row{hist.items.data(), hist.weights.data(), hist.items.size()};
    mf::CholScratch chol(users_.f);
    mf::ials_exact_solve(item_gram().data(), row_reg(row), items_.data.data(), items_.ld, items_.f, row,
                         float(alpha_), x, chol);
  }

 private:
  // Y^T Y of the item factors, computed on first use after a fit or load (fold-in and explanations need it).
  const mf::AlignedFloats& item_gram() const {
    std::lock_guard lock(gram_mu_);
    if (!item_gram_valid_) {
      mf::gram(items_, item_gram_, 1);
      item_gram_valid_ = true;
    }
    return item_gram_;
  }

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

  // Y^T Y of one side into g: in one process mf::gram; over several ranks each rank computes the partial
  // sums of its contiguous share of the fixed row blocks (the others stay zero), the Allreduce adds one
  // non-zero contribution per entry (exact), and every rank adds the blocks in block order as mf::gram does.
  static void side_gram(const mf::Factors& y, mf::AlignedFloats& g, int threads, Communicator* comm,
                        model_util::CommTime& ct) {
    if (!comm) return mf::gram(y, g, threads);
    const size_t nb = mf::gram_blocks(y.rows), ld2 = y.ld * y.ld;
    const auto [b_lo, b_hi] = block_range(nb, comm->rank(), comm->size());
    mf::AlignedFloats partial(nb * ld2, 0.0f);
    mf::gram_partials(y, b_lo, b_hi, partial.data(), threads);
    ct.run([&] { comm->allreduce_sum(partial.data(), partial.size()); });
    mf::gram_sum(partial.data(), nb, y.ld, g);
  }

  // Solves the rows of `m` (rows of `target`) against the fixed factors `other` with Gram matrix g: every row
  // in one process, or only the rows listed in `only` (incremental updates, one process); over several ranks,
  // this rank's contiguous block of rows, after which every rank's rows are gathered into `target` on every
  // rank.
  void solve_side(const Csr& m, const std::vector<float>& regs, const mf::Factors& other,
                  const mf::AlignedFloats& g, mf::Factors& target, int threads, Communicator* comm,
                  model_util::CommTime& ct, std::span<const uint32_t> only = {}) const {
    const bool exact = solver_ == "cholesky";
    const bool all = only.empty();
    check(all || !comm, "ials: a partial solve runs in one process");
    const auto [r0, r1] = !all   ? std::pair<size_t, size_t>{0, only.size()}
                          : comm ? block_range(m.n_rows, comm->rank(), comm->size())
                                 : std::pair<size_t, size_t>{0, m.n_rows};
    parallel_for(r1 - r0, threads, 64, [&](size_t lo, size_t hi) {
      lo += r0, hi += r0;
      mf::CgScratch cg(target.ld);
      mf::CholScratch chol(exact ? target.f : 0);
      for (size_t k = lo; k < hi; ++k) {
        const size_t r = all ? k : only[k];
        const mf::IalsRow row{m.indices.data() + m.indptr[r], m.values.data() + m.indptr[r],
                              m.row_size(uint32_t(r)),
                              m.indices.data() + m.indptr[all ? hi : std::min<size_t>(r + 1, m.n_rows)]};
        if (exact) {
          mf::ials_exact_solve(g.data(), regs[r], other.data.data(), other.ld, other.f, row, float(alpha_),
                               target.row(r), chol);
        } else {
          mf::ials_cg_solve(g.data(), regs[r], other.data.data(), other.ld, row, float(alpha_), cg_steps_,
                            target.row(r), cg);
        }
      }
    });
    if (!comm || !all) return;
    std::vector<size_t> rows(size_t(comm->size()));
    for (int k = 0; k < comm->size(); ++k) {
      const auto [lo, hi] = block_range(m.n_rows, k, comm->size());
      rows[size_t(k)] = hi - lo;
    }
    ct.run([&] { comm->allgather_rows(target.data.data(), target.ld, rows); });
  }

  ParamSet params_;
  int factors_ = 64, iterations_ = 15, cg_steps_ = 3, seed_ = 0;
  double reg_ = 3.0, reg_exponent_ = 0.5, alpha_ = 2.0, init_ = 0.01;
  std::string solver_ = "cg";
  mutable mf::AlignedFloats item_gram_;
  mutable bool item_gram_valid_ = false;
  mutable std::mutex gram_mu_;
};

XDREC_REGISTER_MODEL(ials,
                     "implicit-feedback ALS (confidence 1 + alpha*r), conjugate-gradient or exact row solves",
                     IalsModel,
                     {.uses_text = false,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false,
                      .rating = false,
                      .distributed = true});

}  // namespace xdrec
