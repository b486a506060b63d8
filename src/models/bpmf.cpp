// Rating prediction by Bayesian probabilistic matrix factorisation with biases (BPMF: Salakhutdinov & Mnih,
// ICML 2008; the MCMC of libFM is of the same family), sampled by Gibbs:
//   r(u,i) ~ N(mu + b_u + b_i + u . v, 1 / alpha)
// mu is the training mean. A user's [b_u, u] has the prior N([m_b, mu_U], blockdiag(lambda_b, Lambda_U)^-1),
// an item's [b_i, v] likewise; (mu_U, Lambda_U) and (mu_V, Lambda_V) have Normal–Wishart hyperpriors (mu0 =
// 0, beta0 = 2, nu0 = factors, W0 = I, as in the paper), the bias means and precisions the one-dimensional
// case (Normal–Gamma, nu0 = 1). alpha is drawn each sweep from its conditional Gamma(1 + N/2, rate 1 + SSE/2)
// (`sample_alpha`, the default: 0.01 lower RMSE than a fixed alpha on a validation part of MovieLens 100k) or
// fixed (`alpha`; 2 as in BPMF for 1-5 stars). A sweep draws the hyperparameters, then
// every user's bias and factors jointly from their Gaussian conditional (one (factors+1)^2 Cholesky each),
// then every item's. After `burnin` sweeps, every `thin`-th sweep is kept, `samples` of them; the prediction
// is the posterior average over the kept samples of mu + b_u + b_i + u_s . v_s. It is stored exactly: each
// user's and item's kept factors concatenated into one vector of samples x factors floats scaled by
// 1/sqrt(samples) (one dot product is the average of the samples' dot products), and the average biases.
// Every row draws from its own stream Rng(seed, (sweep, side, row)), so the result is the same for any thread
// count. predict() clips to the training ratings' range (score() does not). Fold-in: for each kept sample,
// the conditional posterior mean of the user's [bias, factors] given that sample's item biases and factors,
// user prior and alpha, concatenated like the fitted users'; the weights are the user's ratings (none given:
// the highest training rating, as for items a user liked).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "core/eigen.h"
#include "models/bayes.h"
#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

using Eigen::Index;
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

constexpr double kBeta0 = 2.0;  // Normal–Wishart: the prior mean counts as beta0 observations

// The Rng stream of one draw: side 0 the hyperparameters of a sweep, 1 a user, 2 an item.
uint64_t stream(int sweep, int side, uint64_t row) {
  return ((uint64_t(sweep) * 3 + uint64_t(side)) << 32) | row;
}

// The Gaussian prior of one side's [bias, factors] rows: its precision P0 and P0 * mean.
struct Prior {
  Vec mean, prec_mean;
  Mat prec;
};

// The conditional posterior of one row's [bias, factors] x given the features F (one row [1, v] per rating)
// and targets t (rating - mu - the other side's bias): precision P = P0 + alpha F^T F and mean P^-1 (P0 m0 +
// alpha F^T t). Returns the mean; llt holds the Cholesky factor of P.
Vec conditional(const Mat& f, const Vec& t, const Mat& prec, const Vec& prec_mean, double alpha,
                Eigen::LLT<Mat>& llt) {
  Mat p = prec;
  if (f.rows() > 0) p.selfadjointView<Eigen::Lower>().rankUpdate(f.transpose(), alpha);
  llt.compute(p);
  check(llt.info() == Eigen::Success, "bpmf: a conditional precision is not positive definite");
  return llt.solve(prec_mean + alpha * (f.transpose() * t));
}

class BpmfModel final : public Recommender {
 public:
  explicit BpmfModel(const Spec& spec) : params_("bpmf") {
    params_.add("factors", &factors_, 10, 1, 512, "latent factors")
        .add("burnin", &burnin_, 50, 0, 1000000, "Gibbs sweeps discarded before the first kept sample")
        .add("samples", &samples_, 100, 1, 100000, "kept samples whose predictions are averaged")
        .add("thin", &thin_, 1, 1, 1000, "keep every thin-th sweep after the burn-in")
        .add("alpha", &alpha_, 2.0, 1e-6, 1e6, "precision of the rating noise (when not sampled)")
        .add("sample_alpha", &sample_alpha_, true,
             "draw the noise precision each sweep (Gamma(1, 1) prior); false: fix it to alpha")
        .add("init", &init_, 0.1, 0.0, 10.0, "standard deviation of the normal initial factors")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t k = uint64_t(factors_), d = k + 1, S = uint64_t(samples_), L = S * k;
    ModelCost c;
    // The kept samples (factors concatenated, per-sample item biases, the user priors), the sampler's state
    // in doubles, the transposed ratings, and a batch of scores.
    c.bytes = (s.n_users + s.n_items) * (L + 1) * 4 + s.n_items * S * 4 + S * (d * d + d + 1) * 4 +
              (s.n_users + s.n_items) * d * 8 + s.nnz * 12 + model_util::csr_bytes(s.n_items, s.nnz) +
              model_util::score_batch_bytes(s);
    // A sweep: a rank-1 update of a d x d precision per rating and side, a Cholesky per row.
    const double sweeps = double(burnin_) + double(samples_) * double(thin_);
    c.seconds = sweeps * (2.0 * double(s.nnz) * double(d * d) * 1.5e-9 +
                          double(s.n_users + s.n_items) * double(d * d * d) * 1e-9);
    c.note = "samples x factors floats per user and item";
    return c;
  }

  std::string name() const override { return "bpmf"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return uint32_t(bu_.size()); }
  uint32_t n_items() const override { return uint32_t(bi_.size()); }

  void fit(const Csr& m, const FitContext& ctx) override {
    model_util::check_interactions(m, name());
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const int threads = resolve_threads(ctx.threads);
    const Index k = factors_, d = k + 1;
    const size_t nu = m.n_rows, ni = m.n_cols, S = size_t(samples_), L = S * size_t(k);
    const Csr mt = m.transpose();
    double sum = 0;
    lo_ = INFINITY, hi_ = -INFINITY;
    for (float v : m.values) sum += v, lo_ = std::min(lo_, v), hi_ = std::max(hi_, v);
    if (m.nnz() == 0) lo_ = hi_ = 0;
    mu_ = m.nnz() ? float(sum / double(m.nnz())) : 0.0f;

    // State: one column [bias, factors] per user and per item.
    Mat u = Mat::Zero(d, Index(nu)), v = Mat::Zero(d, Index(ni));
    Rng rng(seed, ~uint64_t{0});
    for (Mat* x : {&u, &v})
      for (Index c = 0; c < x->cols(); ++c)
        for (Index f = 1; f < d; ++f) (*x)(f, c) = init_ * double(rng.normal());

    x_.assign(nu * L, 0.0f);
    y_.assign(ni * L, 0.0f);
    item_bias_samples_.assign(ni * S, 0.0f);
    prior_mean_.assign(S * size_t(d), 0.0f);
    prior_prec_.assign(S * size_t(d * d), 0.0f);
    alphas_.assign(S, 0.0f);
    std::vector<double> bu_sum(nu, 0.0), bi_sum(ni, 0.0);
    const double scale = 1.0 / std::sqrt(double(S));

    const int sweeps = burnin_ + samples_ * thin_;
    Prior pu, pi;
    if (ctx.progress) ctx.progress(0, size_t(sweeps), "bpmf sweeps");
    for (int s = 0, kept = 0; s < sweeps; ++s) {
      Rng hr(seed, stream(s, 0, 0));
      double alpha = alpha_;
      if (sample_alpha_)
        alpha = bayes::gamma(hr, 1.0 + 0.5 * double(m.nnz())) / (1.0 + 0.5 * squared_error(m, u, v, threads));
      draw_prior(u, hr, pu);
      draw_prior(v, hr, pi);
      draw_side(m, v, pu, alpha, seed, s, 1, threads, u);
      draw_side(mt, u, pi, alpha, seed, s, 2, threads, v);
      if (ctx.verbose)
        std::fprintf(stderr, "bpmf sweep %d: alpha %.3f, training RMSE of the sample %.4f\n", s + 1, alpha,
                     m.nnz() ? std::sqrt(squared_error(m, u, v, threads) / double(m.nnz())) : 0.0);
      if (ctx.progress) ctx.progress(size_t(s) + 1, size_t(sweeps), "bpmf sweeps");
      if (s < burnin_ || (s - burnin_ + 1) % thin_ != 0) continue;
      // Keep the sample: its factors (scaled) in block `kept` of every row, its biases into the averages,
      // and what fold-in needs: its item biases, its user prior and alpha.
      const size_t off = size_t(kept) * size_t(k);
      for (size_t r = 0; r < nu; ++r) {
        for (Index f = 0; f < k; ++f) x_[r * L + off + size_t(f)] = float(u(f + 1, Index(r)) * scale);
        bu_sum[r] += u(0, Index(r));
      }
      for (size_t r = 0; r < ni; ++r) {
        for (Index f = 0; f < k; ++f) y_[r * L + off + size_t(f)] = float(v(f + 1, Index(r)) * scale);
        bi_sum[r] += v(0, Index(r));
        item_bias_samples_[r * S + size_t(kept)] = float(v(0, Index(r)));
      }
      for (Index a = 0; a < d; ++a) {
        prior_mean_[size_t(kept) * size_t(d) + size_t(a)] = float(pu.mean[a]);
        for (Index b = 0; b < d; ++b)
          prior_prec_[(size_t(kept) * size_t(d) + size_t(a)) * size_t(d) + size_t(b)] = float(pu.prec(a, b));
      }
      alphas_[size_t(kept)] = float(alpha);
      ++kept;
    }
    bu_.resize(nu);
    bi_.resize(ni);
    for (size_t r = 0; r < nu; ++r) bu_[r] = float(bu_sum[r] / double(S));
    for (size_t r = 0; r < ni; ++r) bi_[r] = float(bi_sum[r] / double(S));
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(!bi_.empty() || n_users() == 0, name() + " score: the model is not fitted");
    const size_t L = vector_size(), ni = bi_.size();
    out.resize(users.size(), ni);
    parallel_for(users.size(), resolve_threads(threads), 16, [&](size_t lo, size_t hi) {
      for (size_t r = lo; r < hi; ++r) {
        const uint32_t u = users[r];
        check(u < n_users(), name() + " score: user index " + std::to_string(u) + " is out of range");
        float* o = out.row(r);
        for (size_t i = 0; i < ni; ++i)
          o[i] = mu_ + bu_[u] + bi_[i] + dot(&x_[size_t(u) * L], &y_[i * L], L);  // not clipped
      }
    });
  }

  // For each kept sample, the posterior mean of the user's [bias, factors] given the sample's item side, user
  // prior and alpha; the factors concatenated (scaled) like the fitted users', the biases averaged.
  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(!bi_.empty(), name() + " fold_in: the model is not fitted");
    check(user <= n_users(),
          name() + " fold_in: user index " + std::to_string(user) + " is beyond the next new user");
    // Weights are ratings (empty: every item rated like the best training rating, "liked"); an item given
    // twice keeps its last rating (ratings do not add up).
    model_util::History h = model_util::make_history(items, weights, bi_.size(), false, name());
    for (size_t e = 0; e < h.items.size(); ++e) {
      float r = hi_;
      if (!weights.empty())
        for (size_t k = 0; k < items.size(); ++k)
          if (items[k] == h.items[e]) r = weights[k];
      h.weights[e] = r;
    }
    const size_t k = size_t(factors_), d = k + 1, S = size_t(samples_), L = vector_size(), n = h.items.size();
    const double scale = 1.0 / std::sqrt(double(S)), unscale = std::sqrt(double(S));
    std::vector<float> vec(L);
    double bias = 0;
    const Index rows = Index(n), dim = Index(d);
    Mat f(rows, dim), prec(dim, dim);
    Vec t(rows), mean(dim);
    Eigen::LLT<Mat> llt(dim);
    for (size_t s = 0; s < S; ++s) {
      for (size_t a = 0; a < d; ++a) {
        mean[Index(a)] = prior_mean_[s * d + a];
        for (size_t b = 0; b < d; ++b) prec(Index(a), Index(b)) = prior_prec_[(s * d + a) * d + b];
      }
      for (size_t e = 0; e < n; ++e) {
        const uint32_t i = h.items[e];
        f(Index(e), 0) = 1.0;
        for (size_t c = 0; c < k; ++c) f(Index(e), Index(c + 1)) = double(y_[i * L + s * k + c]) * unscale;
        t[Index(e)] = double(h.weights[e]) - mu_ - item_bias_samples_[i * S + s];
      }
      const Vec x = conditional(f, t, prec, prec * mean, alphas_[s], llt);
      bias += x[0];
      for (size_t c = 0; c < k; ++c) vec[s * k + c] = float(x[Index(c + 1)] * scale);
    }
    if (user == n_users()) {
      x_.resize(x_.size() + L);
      bu_.push_back(0.0f);
    }
    std::copy(vec.begin(), vec.end(), x_.begin() + long(size_t(user) * L));
    bu_[user] = float(bias / double(S));
    return user;
  }

  void save(TensorMap& t, nlohmann::json& extra) const override {
    const int64_t L = int64_t(vector_size()), S = samples_, d = factors_ + 1;
    t["user_vectors"] = Tensor::from_f32({int64_t(n_users()), L}, x_.data());
    t["item_vectors"] = Tensor::from_f32({int64_t(n_items()), L}, y_.data());
    t["user_bias"] = Tensor::from_f32({int64_t(n_users())}, bu_.data());
    t["item_bias"] = Tensor::from_f32({int64_t(n_items())}, bi_.data());
    t["item_bias_samples"] = Tensor::from_f32({int64_t(n_items()), S}, item_bias_samples_.data());
    t["user_prior_mean"] = Tensor::from_f32({S, d}, prior_mean_.data());
    t["user_prior_precision"] = Tensor::from_f32({S, d, d}, prior_prec_.data());
    t["alpha"] = Tensor::from_f32({S}, alphas_.data());
    extra["mu"] = mu_;
    extra["lo"] = lo_;
    extra["hi"] = hi_;
  }

  void load(const TensorMap& t, const nlohmann::json& extra) override {
    const std::string who = name() + " load";
    auto get = [&](const char* key) { return get_tensor(t, key).to_f32(who + ": " + key); };
    const size_t L = vector_size(), S = size_t(samples_), d = size_t(factors_) + 1;
    auto x = get("user_vectors"), y = get("item_vectors"), bu = get("user_bias"), bi = get("item_bias"),
         ibs = get("item_bias_samples"), pm = get("user_prior_mean"), pp = get("user_prior_precision"),
         al = get("alpha");
    check(x.size() == bu.size() * L && y.size() == bi.size() * L && ibs.size() == bi.size() * S &&
              pm.size() == S * d && pp.size() == S * d * d && al.size() == S,
          who + ": tensor shapes disagree (factors=" + std::to_string(factors_) +
              ", samples=" + std::to_string(samples_) + ")");
    x_ = std::move(x), y_ = std::move(y), bu_ = std::move(bu), bi_ = std::move(bi),
    item_bias_samples_ = std::move(ibs), prior_mean_ = std::move(pm), prior_prec_ = std::move(pp),
    alphas_ = std::move(al);
    mu_ = extra.value("mu", 0.0f), lo_ = extra.value("lo", 0.0f), hi_ = extra.value("hi", 0.0f);
  }

  bool predicts_ratings() const override { return true; }
  float predict(uint32_t user, uint32_t item) const override {
    check(user < n_users() && item < n_items(), name() + " predict: index out of range");
    const size_t L = vector_size();
    return std::clamp(mu_ + bu_[user] + bi_[item] + dot(&x_[size_t(user) * L], &y_[size_t(item) * L], L), lo_,
                      hi_);
  }

 private:
  size_t vector_size() const { return size_t(samples_) * size_t(factors_); }

  static float dot(const float* a, const float* b, size_t n) {
    float s = 0;
    for (size_t k = 0; k < n; ++k) s += a[k] * b[k];
    return s;
  }

  // The hyperparameters of one side from its rows x (d x n): Normal–Wishart for the factors, Normal–Gamma
  // (the one-dimensional case) for the biases.
  void draw_prior(const Mat& x, Rng& rng, Prior& p) const {
    const Index k = factors_, d = k + 1;
    Vec mb, mf;
    Mat lb, lf;
    bayes::normal_wishart_posterior(x.topRows(1), kBeta0, 1.0, rng, mb, lb);
    bayes::normal_wishart_posterior(x.bottomRows(k), kBeta0, double(k), rng, mf, lf);
    p.mean.resize(d);
    p.mean[0] = mb[0];
    p.mean.tail(k) = mf;
    p.prec = Mat::Zero(d, d);
    p.prec(0, 0) = lb(0, 0);
    p.prec.bottomRightCorner(k, k) = lf;
    p.prec_mean = p.prec * p.mean;
  }

  // Draws every row of x (one column per row of r) from its conditional given the other side's columns.
  void draw_side(const Csr& r, const Mat& other, const Prior& p, double alpha, uint64_t seed, int sweep,
                 int side, int threads, Mat& x) const {
    const Index d = factors_ + 1;
    parallel_for(r.n_rows, threads, 16, [&](size_t lo, size_t hi) {
      Mat f;
      Vec t;
      Eigen::LLT<Mat> llt(d);
      for (size_t j = lo; j < hi; ++j) {
        const auto idx = r.row_indices(uint32_t(j));
        const auto val = r.row_values(uint32_t(j));
        f.resize(Index(idx.size()), d);
        t.resize(Index(idx.size()));
        for (size_t e = 0; e < idx.size(); ++e) {
          const Index i = Index(idx[e]);
          f(Index(e), 0) = 1.0;
          f.row(Index(e)).tail(d - 1) = other.col(i).tail(d - 1).transpose();
          t[Index(e)] = double(val[e]) - double(mu_) - other(0, i);
        }
        const Vec mean = conditional(f, t, p.prec, p.prec_mean, alpha, llt);
        Rng rng(seed, stream(sweep, side, j));
        x.col(Index(j)) = bayes::normal_from_precision(mean, llt, rng);
      }
    });
  }

  // Sum of squared errors of the current sample on the training ratings (per user, summed in order).
  double squared_error(const Csr& m, const Mat& u, const Mat& v, int threads) const {
    std::vector<double> part(m.n_rows, 0.0);
    parallel_for(m.n_rows, threads, 64, [&](size_t lo, size_t hi) {
      for (size_t r = lo; r < hi; ++r)
        for (uint64_t p = m.indptr[r]; p < m.indptr[r + 1]; ++p) {
          const Index i = Index(m.indices[p]);
          const Index k = u.rows() - 1;
          const double e = double(m.values[p]) - mu_ - u(0, Index(r)) - v(0, i) -
                           u.col(Index(r)).tail(k).dot(v.col(i).tail(k));
          part[r] += e * e;
        }
    });
    double s = 0;
    for (double x : part) s += x;
    return s;
  }

  ParamSet params_;
  int factors_ = 10, burnin_ = 50, samples_ = 100, thin_ = 1, seed_ = 0;
  double alpha_ = 2.0, init_ = 0.1;
  bool sample_alpha_ = true;
  // Per user / item: the kept samples' factors concatenated, scaled by 1/sqrt(samples); the average biases.
  std::vector<float> x_, y_, bu_, bi_;
  // For fold-in: per item the kept samples' biases (n_items x samples); per kept sample the user prior's mean
  // (samples x d), precision (samples x d x d) and alpha.
  std::vector<float> item_bias_samples_, prior_mean_, prior_prec_, alphas_;
  float mu_ = 0, lo_ = 0, hi_ = 0;
};

}  // namespace

XDREC_REGISTER_MODEL(
    bpmf,
    "rating prediction: Bayesian probabilistic matrix factorisation with biases, sampled by Gibbs "
    "(predictions averaged over the posterior samples)",
    BpmfModel, {.thread_independent = true, .rating = true});

}  // namespace xdrec
