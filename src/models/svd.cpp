// Rating prediction by matrix factorisation with biases, trained by SGD on squared error (the "SVD" of the
// Netflix prize, as Surprise implements it) and its SVD++ extension (Koren 2008), which adds to the user
// vector the normalised sum of implicit item factors of every item the user rated:
//   svd     r(u,i) = mu + b_u + b_i + q_i . p_u
//   svdpp   r(u,i) = mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)
// The matrix values are the ratings. Training visits the ratings in a seeded shuffle on one thread, so the
// result is the same for any thread count. predict() clips to the training ratings' range (score() does not:
// clipping would tie the best items of a ranking). Fold-in
// solves the new user's vector exactly (ridge regression against the fixed item side; the user bias stays 0);
// its weights are the user's ratings (none given: the highest training rating, as for items a user liked).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/eigen.h"
#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

class SvdModel : public Recommender {
 public:
  SvdModel(const Spec& spec, bool plus) : plus_(plus), params_(plus ? "svdpp" : "svd") {
    params_.add("factors", &factors_, plus ? 20 : 100, 1, 1024, "latent factors")
        .add("epochs", &epochs_, plus ? 20 : 20, 0, 100000, "SGD passes over the ratings")
        .add("lr", &lr_, plus ? 0.007 : 0.005, 1e-7, 1.0, "learning rate of the factors")
        .add("lr_bias", &lr_bias_, plus ? 0.007 : 0.005, 1e-7, 1.0, "learning rate of the biases")
        .add("reg", &reg_, 0.02, 0.0, 100.0, "L2 regularisation of the factors")
        .add("reg_bias", &reg_bias_, 0.02, 0.0, 100.0, "L2 regularisation of the biases")
        .add("decay", &decay_, 1.0, 0.5, 1.0, "learning rates multiplied by this after each epoch")
        .add("init", &init_, 0.1, 0.0, 10.0, "standard deviation of the normal initial factors")
        .add("biased", &biased_, true, "learn the global mean and the user and item biases")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t f = uint64_t(factors_);
    ModelCost c;
    c.bytes = (s.n_users + s.n_items * (plus_ ? 2 : 1)) * f * 4 + (s.n_users + s.n_items) * 4 + s.nnz * 12 +
              model_util::score_batch_bytes(s);
    // svd: a rating step is ~4f flops; svd++: every rating also touches the user's implicit sum (amortised
    // per user: |N(u)| * f twice).
    c.seconds = double(epochs_) * double(s.nnz) * double(f) * (plus_ ? 12e-9 : 2e-9);
    c.note = plus_ ? "factors x (users + 2 items) floats" : "factors x (users + items) floats";
    return c;
  }

  std::string name() const override { return plus_ ? "svdpp" : "svd"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return uint32_t(bu_.size()); }
  uint32_t n_items() const override { return uint32_t(bi_.size()); }

  void fit(const Csr& m, const FitContext& ctx) override {
    model_util::check_interactions(m, name());
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const size_t f = size_t(factors_), nu = m.n_rows, ni = m.n_cols;
    Rng rng(seed, 0);
    auto init = [&](std::vector<float>& v, size_t n) {
      v.resize(n * f);
      for (auto& x : v) x = float(init_ * rng.normal());
    };
    init(p_, nu);
    init(q_, ni);
    if (plus_) init(y_, ni);
    bu_.assign(nu, 0.0f);
    bi_.assign(ni, 0.0f);
    double sum = 0;
    lo_ = INFINITY, hi_ = -INFINITY;
    for (float v : m.values) sum += v, lo_ = std::min(lo_, v), hi_ = std::max(hi_, v);
    if (m.nnz() == 0) lo_ = hi_ = 0;
    mu_ = biased_ && m.nnz() ? float(sum / double(m.nnz())) : 0.0f;
    // Ratings in a seeded shuffle each epoch; svd++ goes user by user (users in a shuffled order, each user's
    // ratings shuffled) so that the implicit sum is computed once per user and its gradient applied after.
    std::vector<uint32_t> row_of(m.nnz());
    for (uint32_t u = 0; u < nu; ++u)
      for (uint64_t p = m.indptr[u]; p < m.indptr[u + 1]; ++p) row_of[p] = u;
    std::vector<uint64_t> order(m.nnz());
    std::iota(order.begin(), order.end(), 0);
    std::vector<uint32_t> users(nu);
    std::iota(users.begin(), users.end(), 0);
    std::vector<float> z(f), gz(f);
    double lr = lr_, lrb = lr_bias_;
    if (ctx.progress) ctx.progress(0, size_t(epochs_), name() + " epochs");
    for (int e = 0; e < epochs_; ++e) {
      double sse = 0;
      if (!plus_) {
        std::shuffle(order.begin(), order.end(), rng);
        for (uint64_t p : order) {
          const float err =
              sgd_step(row_of[p], m.indices[p], m.values[p], nullptr, nullptr, float(lr), float(lrb));
          sse += double(err) * err;
        }
      } else {
        std::shuffle(users.begin(), users.end(), rng);
        for (uint32_t u : users) {
          const uint64_t b0 = m.indptr[u], b1 = m.indptr[u + 1];
          if (b0 == b1) continue;
          const float norm = 1.0f / std::sqrt(float(b1 - b0));
          std::fill(z.begin(), z.end(), 0.0f);
          for (uint64_t p = b0; p < b1; ++p) {
            const float* yj = &y_[size_t(m.indices[p]) * f];
            for (size_t k = 0; k < f; ++k) z[k] += yj[k];
          }
          for (auto& x : z) x *= norm;
          std::fill(gz.begin(), gz.end(), 0.0f);
          std::vector<uint64_t> mine(b1 - b0);
          std::iota(mine.begin(), mine.end(), b0);
          std::shuffle(mine.begin(), mine.end(), rng);
          for (uint64_t p : mine) {
            const float err =
                sgd_step(u, m.indices[p], m.values[p], z.data(), gz.data(), float(lr), float(lrb));
            sse += double(err) * err;
          }
          // The implicit factors of the user's items: the gradient and the regularisation of all the user's
          // ratings at once (per-rating updates, as Surprise makes them, cost |N(u)| f per rating).
          for (uint64_t p = b0; p < b1; ++p) {
            float* yj = &y_[size_t(m.indices[p]) * f];
            for (size_t k = 0; k < f; ++k)
              yj[k] += float(lr) * (norm * gz[k] - float(reg_) * float(b1 - b0) * yj[k]);
          }
        }
      }
      last_rmse_ = m.nnz() ? std::sqrt(sse / double(m.nnz())) : 0.0;
      if (ctx.verbose)
        std::fprintf(stderr, "%s epoch %d: training RMSE %.4f\n", name().c_str(), e + 1, last_rmse_);
      if (ctx.progress) ctx.progress(size_t(e) + 1, size_t(epochs_), name() + " epochs");
      lr *= decay_, lrb *= decay_;
    }
    build_user_vectors(m);
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(!bi_.empty() || n_users() == 0, name() + " score: the model is not fitted");
    const size_t f = size_t(factors_), ni = bi_.size();
    out.resize(users.size(), ni);
    parallel_for(users.size(), resolve_threads(threads), 16, [&](size_t lo, size_t hi) {
      for (size_t r = lo; r < hi; ++r) {
        const uint32_t u = users[r];
        check(u < n_users(), name() + " score: user index " + std::to_string(u) + " is out of range");
        const float* x = &x_[size_t(u) * f];
        float* o = out.row(r);
        for (size_t i = 0; i < ni; ++i) {
          const float* qi = &q_[i * f];
          float dot = 0;
          for (size_t k = 0; k < f; ++k) dot += x[k] * qi[k];
          o[i] = mu_ + bu_[u] + bi_[i] + dot;  // not clipped: clipping ties the best items (predict clips)
        }
      }
    });
  }

  // A new user's bias and vector from their ratings (weights), the item side fixed: ridge regression,
  // solved exactly. svd++ adds the implicit sum of the rated items first.
  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(!bi_.empty(), name() + " fold_in: the model is not fitted");
    check(user <= n_users(),
          name() + " fold_in: user index " + std::to_string(user) + " is beyond the next new user");
    // Weights are ratings (empty: every item rated like the best training rating, "liked"); an item given
    // twice keeps its last rating (ratings do not add up).
    model_util::History h = model_util::make_history(items, weights, bi_.size(), false,
                                                     name());  // the checks; weights redone below
    for (size_t e = 0; e < h.items.size(); ++e) {
      float r = hi_;
      if (!weights.empty())
        for (size_t k = 0; k < items.size(); ++k)
          if (items[k] == h.items[e]) r = weights[k];
      h.weights[e] = r;
    }
    // The user's bias is left at 0: it cannot change the user's ranking, and a history of only liked items
    // (all one rating) would put everything into it and nothing into the vector that tells items apart.
    const size_t f = size_t(factors_), n = f;
    std::vector<float> z(f, 0.0f);
    if (plus_ && !h.items.empty()) {
      const float norm = 1.0f / std::sqrt(float(h.items.size()));
      for (uint32_t j : h.items)
        for (size_t k = 0; k < f; ++k) z[k] += norm * y_[size_t(j) * f + k];
    }
    Eigen::MatrixXd a = Eigen::MatrixXd::Zero(long(n), long(n));
    Eigen::VectorXd b = Eigen::VectorXd::Zero(long(n));
    for (size_t e = 0; e < h.items.size(); ++e) {
      const uint32_t i = h.items[e];
      Eigen::VectorXd v = Eigen::VectorXd::Zero(Eigen::Index(n));
      double base = mu_ + bi_[i];
      for (size_t k = 0; k < f; ++k)
        v[long(k)] = q_[size_t(i) * f + k], base += double(z[k]) * q_[size_t(i) * f + k];
      a += v * v.transpose();
      b += v * (double(h.weights[e]) - base);
    }
    for (size_t k = 0; k < f; ++k) a(long(k), long(k)) += reg_ * double(std::max<size_t>(h.items.size(), 1));
    const Eigen::VectorXd sol = a.ldlt().solve(b);
    if (user == n_users()) {
      p_.resize(p_.size() + f);
      x_.resize(x_.size() + f);
      bu_.push_back(0.0f);
    }
    for (size_t k = 0; k < f; ++k) {
      p_[size_t(user) * f + k] = float(sol[long(k)]);
      x_[size_t(user) * f + k] = float(sol[long(k)]) + z[k];
    }
    bu_[user] = 0.0f;
    return user;
  }

  std::vector<std::string> compressible_tensors() const override {
    if (plus_) return {"user_factors", "user_vectors", "item_factors", "item_implicit"};
    return {"user_factors", "user_vectors", "item_factors"};
  }
  void save(TensorMap& t, nlohmann::json& extra) const override {
    const size_t f = size_t(factors_);
    t["user_factors"] = Tensor::from_f32({int64_t(n_users()), int64_t(f)}, p_.data());
    t["user_vectors"] = Tensor::from_f32({int64_t(n_users()), int64_t(f)}, x_.data());
    t["item_factors"] = Tensor::from_f32({int64_t(n_items()), int64_t(f)}, q_.data());
    t["user_bias"] = Tensor::from_f32({int64_t(n_users())}, bu_.data());
    t["item_bias"] = Tensor::from_f32({int64_t(n_items())}, bi_.data());
    if (plus_) t["item_implicit"] = Tensor::from_f32({int64_t(n_items()), int64_t(f)}, y_.data());
    extra["mu"] = mu_;
    extra["lo"] = lo_;
    extra["hi"] = hi_;
  }

  void load(const TensorMap& t, const nlohmann::json& extra) override {
    const std::string who = name() + " load";
    auto get = [&](const char* key, size_t cols) {
      std::vector<float> v = get_tensor(t, key).to_f32(who + ": " + key);
      check(cols == 0 || v.size() % cols == 0,
            who + ": " + key + " does not have " + std::to_string(cols) + " columns");
      return v;
    };
    const size_t f = size_t(factors_);
    auto p = get("user_factors", f), x = get("user_vectors", f), q = get("item_factors", f),
         bu = get("user_bias", 0), bi = get("item_bias", 0);
    check(p.size() == bu.size() * f && x.size() == p.size() && q.size() == bi.size() * f,
          who + ": tensor shapes disagree (factors=" + std::to_string(f) + ")");
    std::vector<float> y;
    if (plus_) {
      y = get("item_implicit", f);
      check(y.size() == q.size(), who + ": item_implicit has the wrong shape");
    }
    p_ = std::move(p), x_ = std::move(x), q_ = std::move(q), bu_ = std::move(bu), bi_ = std::move(bi),
    y_ = std::move(y);
    mu_ = extra.value("mu", 0.0f), lo_ = extra.value("lo", 0.0f), hi_ = extra.value("hi", 0.0f);
  }

  bool predicts_ratings() const override { return true; }
  float predict(uint32_t user, uint32_t item) const override {
    check(user < n_users() && item < n_items(), name() + " predict: index out of range");
    const size_t f = size_t(factors_);
    float dot = 0;
    for (size_t k = 0; k < f; ++k) dot += x_[size_t(user) * f + k] * q_[size_t(item) * f + k];
    return std::clamp(mu_ + bu_[user] + bi_[item] + dot, lo_, hi_);
  }

  double last_rmse() const { return last_rmse_; }

 private:
  // One SGD step on rating r of (u, i) against the squared error; z: the user's implicit sum (svd++) or null;
  // gz (with z) accumulates err * q_i, the gradient that z's items get at the end of the user's ratings.
  // Returns the error before the step.
  float sgd_step(uint32_t u, uint32_t i, float r, const float* z, float* gz, float lr, float lrb) {
    const size_t f = size_t(factors_);
    float* pu = &p_[size_t(u) * f];
    float* qi = &q_[size_t(i) * f];
    float dot = 0;
    for (size_t k = 0; k < f; ++k) dot += (pu[k] + (z ? z[k] : 0.0f)) * qi[k];
    const float err = r - (mu_ + bu_[u] + bi_[i] + dot);
    if (biased_) {
      bu_[u] += lrb * (err - float(reg_bias_) * bu_[u]);
      bi_[i] += lrb * (err - float(reg_bias_) * bi_[i]);
    }
    for (size_t k = 0; k < f; ++k) {
      const float a = pu[k], b = qi[k];
      pu[k] += lr * (err * b - float(reg_) * a);
      qi[k] += lr * (err * (a + (z ? z[k] : 0.0f)) - float(reg_) * b);
      if (gz) gz[k] += err * b;
    }
    return err;
  }

  // x_u = p_u (+ the implicit sum of the user's rated items in `m` for svd++).
  void build_user_vectors(const Csr& m) {
    const size_t f = size_t(factors_), nu = bu_.size();
    x_ = p_;
    if (!plus_) return;
    for (uint32_t u = 0; u < nu; ++u) {
      const auto row = m.row_indices(u);
      if (row.empty()) continue;
      const float norm = 1.0f / std::sqrt(float(row.size()));
      for (uint32_t j : row)
        for (size_t k = 0; k < f; ++k) x_[size_t(u) * f + k] += norm * y_[size_t(j) * f + k];
    }
  }

  bool plus_;
  ParamSet params_;
  int factors_ = 100, epochs_ = 20, seed_ = 0;
  double lr_ = 0.005, lr_bias_ = 0.005, reg_ = 0.02, reg_bias_ = 0.02, decay_ = 1.0, init_ = 0.1;
  bool biased_ = true;
  std::vector<float> p_, q_, y_, x_, bu_, bi_;
  float mu_ = 0, lo_ = 0, hi_ = 0;
  double last_rmse_ = 0;
};

class SvdPlain final : public SvdModel {
 public:
  explicit SvdPlain(const Spec& s) : SvdModel(s, false) {}
};
class SvdPlusPlus final : public SvdModel {
 public:
  explicit SvdPlusPlus(const Spec& s) : SvdModel(s, true) {}
};

}  // namespace

XDREC_REGISTER_MODEL(
    svd, "rating prediction: biased matrix factorisation trained by SGD on squared error (Funk SVD)",
    SvdPlain, {.thread_independent = true, .rating = true});
XDREC_REGISTER_MODEL(
    svdpp, "rating prediction: SVD++ (biased factorisation plus the implicit factors of every rated item)",
    SvdPlusPlus, {.thread_independent = true, .rating = true});

}  // namespace xdrec
