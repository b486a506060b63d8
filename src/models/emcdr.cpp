// EMCDR-style cross-domain transfer by mapping (Man et al. 2017, "embedding and mapping"). One implicit ALS
// model is fitted per domain on that domain's columns only (through the registered "ials" model), and for
// every ordered pair of domains (s, t) a ridge regression with intercept maps a user's s factors to their t
// factors; it is learned on the users active in both domains, in closed form.
//
// Scoring user u on the items of domain t: u's own t factors when u has interactions in t; otherwise the
// mapped factors from u's source domains (the domain with the most interactions, or the interaction-weighted
// average of the maps from every source domain); with no usable history, the domain's item popularity.
// Scores of different domains are on different scales: rank within one domain.
//
// Fold-in solves the user's factors in each domain of the history exactly (as iALS fold-in does) and maps
// them into the other domains, so a new user with history only in domain A gets domain-B recommendations.
// Every step reads fixed data in a fixed order, so the results do not depend on the thread count.
//
// Defaults (factors=32, alpha=5, map_reg=0.3) were chosen on the validation users of Douban Book/Music
// cold-user splits (both directions, three seeds); the test users were not used.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "core/eigen.h"
#include "models/factor_model.h"
#include "models/mf_kernels.h"
#include "models/model_util.h"
#include "xdrec/nn.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

// A map needs at least this many users active in both domains (one user gives no variation to regress on).
constexpr size_t kMinOverlap = 2;

// A ridge map x -> my + (x - mx) W between two factor spaces of width f.
// With map=mlp, a one-hidden-layer perceptron adds a non-linear correction:
// y = my + (x - mx) W + sy * mlp((x - mx) / sx), sx and sy the root-mean-square of the centred source and
// target factors.
struct LinearMap {
  Matrix w;                   // f x f
  std::vector<float> mx, my;  // f each
  nn::Mlp<float> mlp;         // empty with map=linear
  float sx = 1, sy = 1;
  bool valid() const { return w.rows > 0; }
  void apply(const float* x, float* y) const {
    const size_t f = mx.size();
    std::vector<double> acc(my.begin(), my.end());
    for (size_t i = 0; i < f; ++i) {
      const double d = double(x[i]) - mx[i];
      const float* wi = w.row(i);
      for (size_t j = 0; j < f; ++j) acc[j] += d * wi[j];
    }
    if (!mlp.empty()) {
      std::vector<float> z(f), r(f);
      for (size_t i = 0; i < f; ++i) z[i] = (x[i] - mx[i]) / sx;
      mlp.predict_row(z.data(), r.data());
      for (size_t j = 0; j < f; ++j) acc[j] += double(sy) * r[j];
    }
    for (size_t j = 0; j < f; ++j) y[j] = float(acc[j]);
  }
};

// Trains the map's perceptron on the residuals of its linear part over `users`: full-batch Adam on the mean
// squared error, on one thread in a fixed order. The output layer starts at zero, so training starts from
// the ridge map.
void fit_mlp_correction(LinearMap& m, const mf::Factors& xs, const mf::Factors& yt,
                        const std::vector<uint32_t>& users, int hidden, int epochs, double lr,
                        uint64_t seed) {
  const size_t f = m.mx.size(), n = users.size();
  nn::MatF z(n, f), target(n, f);
  double vx = 0, vy = 0;
  std::vector<float> lin(f);
  for (size_t r = 0; r < n; ++r) {
    const float* x = xs.row(users[r]);
    const float* y = yt.row(users[r]);
    LinearMap linear{m.w, m.mx, m.my, {}, 1, 1};
    linear.apply(x, lin.data());
    for (size_t k = 0; k < f; ++k) {
      z(r, k) = x[k] - m.mx[k];
      target(r, k) = y[k] - lin[k];
      vx += double(z(r, k)) * z(r, k);
      vy += (double(y[k]) - m.my[k]) * (double(y[k]) - m.my[k]);
    }
  }
  m.sx = vx > 0 ? float(std::sqrt(vx / double(n * f))) : 1.0f;
  m.sy = vy > 0 ? float(std::sqrt(vy / double(n * f))) : 1.0f;
  for (float& v : z.data) v /= m.sx;
  for (float& v : target.data) v /= m.sy;
  m.mlp = nn::Mlp<float>({f, size_t(hidden), f}, nn::Act::tanh, nn::Act::identity);
  Rng rng(seed, 0x6d6c70);  // "mlp"
  m.mlp.init(rng);
  std::fill(m.mlp.layer(1).w.data.begin(), m.mlp.layer(1).w.data.end(), 0.0f);
  std::fill(m.mlp.layer(1).b.data.begin(), m.mlp.layer(1).b.data.end(), 0.0f);
  nn::AdamOptions ao;
  ao.lr = lr;
  nn::Adam<float> adam(m.mlp.params(), ao);
  std::vector<nn::MatF> grads = m.mlp.make_grads();
  nn::Mlp<float>::Cache cache;
  nn::MatF dy;
  for (int e = 0; e < epochs; ++e) {
    m.mlp.forward(z, cache);
    nn::squared_error(cache.output(), target, &dy);
    for (auto& g : grads) g.zero();
    m.mlp.backward(z, cache, dy, grads, nullptr);
    adam.step(grads);
  }
}

// Ridge regression with an unpenalised intercept from rows `users` of xs to the same rows of yt (padded
// factor rows of width f): W = (Xc^T Xc + lambda I)^-1 Xc^T Yc on the centred rows, with
// lambda = reg * trace(Xc^T Xc) / f (reg is relative to the average variance of the source factors, so it
// does not depend on their scale). Sums run over the users in order, in double precision.
LinearMap fit_ridge_map(const mf::Factors& xs, const mf::Factors& yt, const std::vector<uint32_t>& users,
                        double reg) {
  const size_t f = xs.f, n = users.size();
  Eigen::VectorXd mx = Eigen::VectorXd::Zero(f), my = Eigen::VectorXd::Zero(f);
  for (uint32_t u : users) {
    for (size_t k = 0; k < f; ++k) {
      mx[k] += xs.row(u)[k];
      my[k] += yt.row(u)[k];
    }
  }
  mx /= double(n);
  my /= double(n);
  Eigen::MatrixXd sxx = Eigen::MatrixXd::Zero(f, f), sxy = Eigen::MatrixXd::Zero(f, f);
  Eigen::VectorXd dx(f), dy(f);
  for (uint32_t u : users) {
    for (size_t k = 0; k < f; ++k) {
      dx[k] = xs.row(u)[k] - mx[k];
      dy[k] = yt.row(u)[k] - my[k];
    }
    sxx.noalias() += dx * dx.transpose();
    sxy.noalias() += dx * dy.transpose();
  }
  const double tr = sxx.trace();
  const double lambda = tr > 0 ? reg * tr / double(f) : reg;
  sxx.diagonal().array() += std::max(lambda, 1e-12 * std::max(tr, 1.0));
  const Eigen::MatrixXd w = sxx.ldlt().solve(sxy);
  LinearMap m;
  m.w.resize(f, f);
  m.mx.resize(f);
  m.my.resize(f);
  for (size_t i = 0; i < f; ++i) {
    for (size_t j = 0; j < f; ++j) m.w(i, j) = float(w(i, j));
    m.mx[i] = float(mx[i]);
    m.my[i] = float(my[i]);
  }
  return m;
}

class EmcdrModel final : public Recommender {
 public:
  explicit EmcdrModel(const Spec& spec) : params_("emcdr") {
    params_.add("factors", &factors_, 32, 1, mf::kMaxFactors, "latent factors of each domain's iALS model")
        .add("iterations", &iterations_, 15, 0, 100000, "iALS iterations per domain")
        .add("reg", &reg_, 3.0, 0.0, 1e6, "iALS L2 regularisation of a factor row (scaled by reg_exponent)")
        .add("reg_exponent", &reg_exponent_, 0.5, 0.0, 2.0,
             "iALS frequency scaling: a row with n entries uses reg*(1+n)^reg_exponent")
        .add("alpha", &alpha_, 5.0, 0.0, 1e6, "iALS confidence of an observed entry: c = 1 + alpha*|value|")
        .add("cg_steps", &cg_steps_, 3, 1, 1024, "iALS conjugate-gradient steps per row and half-iteration")
        .add("map", &map_, "linear", {"linear", "mlp"},
             "mapping between the domains' user factors: ridge regression, or ridge plus a one-hidden-layer "
             "perceptron fitted to its residuals")
        .add("map_hidden", &map_hidden_, 64, 1, 4096, "map=mlp: hidden units (tanh)")
        .add("map_epochs", &map_epochs_, 200, 1, 1000000, "map=mlp: full-batch Adam steps")
        .add("map_lr", &map_lr_, 0.01, 1e-6, 10.0, "map=mlp: Adam learning rate")
        .add("map_reg", &map_reg_, 0.3, 0.0, 1e6,
             "ridge penalty of the maps, relative to the mean variance of the source factors")
        .add("source", &source_, "weighted", {"most", "weighted"},
             "user cold in a domain: map from the source domain with the most interactions, or average the "
             "maps of all source domains weighted by interaction count")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed of the initial factors (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_)),
                   nd = std::max<uint32_t>(s.n_domains, 1);
    const uint64_t f = uint64_t(factors_);
    ModelCost c;
    // Per domain: user factors and the factors each user is scored with; item factors; while one domain's
    // iALS runs, its own factors, their saved copies and its sub-matrix; counts and modes per user and
    // domain; the maps.
    c.bytes = s.n_users * nd * ld * 4 * 2 + s.n_items * ld * 4 + (s.n_users + s.n_items) * ld * 4 * 3 +
              2 * model_util::csr_bytes(s.n_users, s.nnz) + s.n_users * nd * 5 + nd * nd * (f + 2) * f * 4 +
              2 * model_util::score_batch_bytes(s);
    const double per_iter = double(s.n_users * nd + s.n_items) * 4 * double(ld) * double(ld) * 2 +
                            double(s.nnz) * 4 * double(ld) * 4;
    c.seconds = double(iterations_) * per_iter / 4e9;
    c.note = "per-domain user factors (users x domains x factors floats, twice)";
    return c;
  }
  std::string name() const override { return "emcdr"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return n_users_; }
  uint32_t n_items() const override { return uint32_t(item_domain_.size()); }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    model_util::check_interactions(user_items, "emcdr");
    check(user_items.n_cols > 0, "emcdr: the interaction matrix has no items");
    check(ctx.item_domain.empty() || ctx.item_domain.size() == user_items.n_cols,
          "emcdr: item_domain has " + std::to_string(ctx.item_domain.size()) +
              " entries but the matrix has " + std::to_string(user_items.n_cols) + " items");
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    std::vector<uint16_t> item_domain(user_items.n_cols, 0);
    if (!ctx.item_domain.empty())
      std::copy(ctx.item_domain.begin(), ctx.item_domain.end(), item_domain.begin());
    const size_t n_domains = size_t(*std::max_element(item_domain.begin(), item_domain.end())) + 1;
    set_domains(std::move(item_domain), n_domains);
    n_users_ = user_items.n_rows;

    // Interaction counts per user and domain, and item popularity (number of users with a positive value).
    counts_.resize(n_users_, n_domains);
    popularity_.assign(n_items(), 0.0f);
    for (uint32_t u = 0; u < n_users_; ++u) {
      auto idx = user_items.row_indices(u);
      auto val = user_items.row_values(u);
      for (size_t k = 0; k < idx.size(); ++k) {
        if (val[k] != 0.0f) counts_(u, item_domain_[idx[k]]) += 1.0f;
        if (val[k] > 0.0f) popularity_[idx[k]] += 1.0f;
      }
    }

    // One iALS model per domain on that domain's columns (renumbered in order, so rows stay sorted).
    users_.assign(n_domains, {});
    items_.assign(n_domains, {});
    for (size_t d = 0; d < n_domains; ++d) {
      Csr m;
      m.n_rows = user_items.n_rows;
      m.n_cols = uint32_t(domain_items_[d].size());
      m.indptr.assign(size_t(m.n_rows) + 1, 0);
      for (uint32_t u = 0; u < m.n_rows; ++u) {
        auto idx = user_items.row_indices(u);
        auto val = user_items.row_values(u);
        for (size_t k = 0; k < idx.size(); ++k) {
          if (item_domain_[idx[k]] != d) continue;
          m.indices.push_back(local_index_[idx[k]]);
          m.values.push_back(val[k]);
        }
        m.indptr[u + 1] = m.indices.size();
      }
      if (m.n_cols == 0) {
        users_[d].resize(n_users_, size_t(factors_));
        items_[d].resize(0, size_t(factors_));
        continue;
      }
      auto ials = create_model(ials_spec());
      FitContext sub;
      sub.threads = threads;
      sub.seed = seed;
      sub.verbose = ctx.verbose;
      if (ctx.verbose) std::fprintf(stderr, "emcdr: domain %zu (%u items)\n", d, m.n_cols);
      ials->fit(m, sub);
      // The fitted factors come out through the model's own save().
      TensorMap t;
      nlohmann::json extra;
      ials->save(t, extra);
      users_[d].from_matrix(get_tensor(t, "user_factors").to_matrix("user_factors"));
      items_[d].from_matrix(get_tensor(t, "item_factors").to_matrix("item_factors"));
      if (ctx.progress) ctx.progress(d + 1, n_domains, "emcdr domains");
    }

    // Maps for every ordered pair of domains, learned on the users active in both.
    maps_.assign(n_domains * n_domains, {});
    overlap_.assign(n_domains * n_domains, 0);
    for (size_t s = 0; s < n_domains; ++s) {
      for (size_t t = 0; t < n_domains; ++t) {
        if (s == t) continue;
        std::vector<uint32_t> both;
        for (uint32_t u = 0; u < n_users_; ++u)
          if (counts_(u, s) > 0 && counts_(u, t) > 0) both.push_back(u);
        overlap_[s * n_domains + t] = uint32_t(both.size());
        if (both.size() >= kMinOverlap && !domain_items_[t].empty()) {
          maps_[s * n_domains + t] = fit_ridge_map(users_[s], users_[t], both, map_reg_);
          if (map_ == "mlp")
            fit_mlp_correction(maps_[s * n_domains + t], users_[s], users_[t], both, map_hidden_, map_epochs_,
                               map_lr_, splitmix64(seed + s * n_domains + t));
        }
      }
    }
    gram_.assign(n_domains, {});
    refresh_all_users();
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(!item_domain_.empty(), "emcdr score: the model is not fitted (call fit or load first)");
    for (uint32_t u : users)
      check(u < n_users_, "emcdr score: user index " + std::to_string(u) + " is out of range (model has " +
                              std::to_string(n_users_) + " users)");
    threads = resolve_threads(threads);
    out.resize(users.size(), n_items());
    if (users.empty()) return;
    const size_t nd = n_domains();
    Matrix part;
    for (size_t t = 0; t < nd; ++t) {
      const auto& cols = domain_items_[t];
      if (cols.empty()) continue;
      mf::gemm_scores(effective_[t], users, items_[t], nullptr, part, threads);
      parallel_for(users.size(), threads, 64, [&](size_t lo, size_t hi) {
        for (size_t r = lo; r < hi; ++r) {
          float* o = out.row(r);
          if (mode_[size_t(users[r]) * nd + t] == kPopular) {
            for (uint32_t i : cols) o[i] = popularity_[i];
          } else {
            const float* p = part.row(r);
            for (size_t j = 0; j < cols.size(); ++j) o[cols[j]] = p[j];
          }
        }
      });
    }
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(!item_domain_.empty(), "emcdr fold_in: the model is not fitted (call fit or load first)");
    check(user <= n_users_, "emcdr fold_in: user index " + std::to_string(user) +
                                " is beyond the next new user (" + std::to_string(n_users_) + ")");
    const model_util::History hist = model_util::make_history(items, weights, n_items(), false, "emcdr");
    const size_t nd = n_domains();
    // The history of each domain, in local item indices (the merged history is sorted, so these are too).
    std::vector<std::vector<uint32_t>> idx(nd);
    std::vector<std::vector<float>> val(nd);
    std::vector<float> counts(nd, 0.0f);
    for (size_t k = 0; k < hist.items.size(); ++k) {
      const uint16_t d = item_domain_[hist.items[k]];
      idx[d].push_back(local_index_[hist.items[k]]);
      val[d].push_back(hist.weights[k]);
      if (hist.weights[k] != 0.0f) counts[d] += 1.0f;
    }
    // Solve every domain first, so that an error leaves the model unchanged.
    std::vector<mf::AlignedFloats> x(nd);
    for (size_t d = 0; d < nd; ++d) {
      x[d].assign(users_[d].ld, 0.0f);
      if (counts[d] == 0.0f) continue;
      if (gram_[d].empty()) mf::gram(items_[d], gram_[d], 1);
      const mf::IalsRow row{idx[d].data(), val[d].data(), idx[d].size()};
      mf::CholScratch chol(users_[d].f);
      mf::ials_exact_solve(gram_[d].data(), row_reg(counts[d]), items_[d].data.data(), items_[d].ld,
                           items_[d].f, row, float(alpha_), x[d].data(), chol);
    }
    if (user == n_users_) {
      for (size_t d = 0; d < nd; ++d) {
        users_[d].append_row();
        effective_[d].append_row();
      }
      Matrix c(n_users_ + 1, nd);
      std::copy(counts_.data.begin(), counts_.data.end(), c.data.begin());
      counts_ = std::move(c);
      mode_.resize(size_t(n_users_ + 1) * nd, kPopular);
      ++n_users_;
    }
    for (size_t d = 0; d < nd; ++d) {
      std::copy(x[d].begin(), x[d].end(), users_[d].row(user));
      counts_(user, d) = counts[d];
    }
    refresh_user(user);
    return user;
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    const size_t nd = n_domains();
    std::vector<uint32_t> dom(item_domain_.begin(), item_domain_.end());
    tensors["item_domain"] = Tensor::from_u32({int64_t(dom.size())}, dom.data());
    tensors["item_popularity"] = Tensor::from_f32({int64_t(popularity_.size())}, popularity_.data());
    tensors["user_domain_counts"] = Tensor::from_matrix(counts_);
    tensors["map_overlap"] = Tensor::from_u32({int64_t(overlap_.size())}, overlap_.data());
    for (size_t d = 0; d < nd; ++d) {
      tensors[domain_key(d) + ".user_factors"] = Tensor::from_matrix(users_[d].to_matrix());
      tensors[domain_key(d) + ".item_factors"] = Tensor::from_matrix(items_[d].to_matrix());
    }
    for (size_t s = 0; s < nd; ++s) {
      for (size_t t = 0; t < nd; ++t) {
        const LinearMap& m = maps_[s * nd + t];
        if (!m.valid()) continue;
        // Rows 0..f-1: W; row f: source mean; row f+1: target mean.
        const size_t f = m.mx.size();
        Matrix packed(f + 2, f);
        std::copy(m.w.data.begin(), m.w.data.end(), packed.data.begin());
        std::copy(m.mx.begin(), m.mx.end(), packed.row(f));
        std::copy(m.my.begin(), m.my.end(), packed.row(f + 1));
        tensors[map_key(s, t)] = Tensor::from_matrix(packed);
        if (!m.mlp.empty()) {
          m.mlp.save(tensors, map_key(s, t) + ".mlp.");
          const float scale[2] = {m.sx, m.sy};
          tensors[map_key(s, t) + ".scale"] = Tensor::from_f32({2}, scale);
        }
      }
    }
    extra["factors"] = factors_;
    extra["domains"] = nd;
  }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    const std::string who = "emcdr load: ";
    check(extra.contains("domains") && extra["domains"].is_number_unsigned(),
          who + "the manifest's extra section lacks 'domains'");
    const size_t nd = extra["domains"].get<size_t>();
    check(nd >= 1 && nd <= 65536, who + "invalid domain count " + std::to_string(nd));
    std::vector<uint16_t> item_domain = model_util::load_item_domains(tensors, nd, who);
    const std::vector<uint16_t>& dom = item_domain;
    std::vector<float> pop = get_tensor(tensors, "item_popularity").to_f32("item_popularity");
    check(pop.size() == dom.size(), who + "tensor 'item_popularity' has " + std::to_string(pop.size()) +
                                        " entries for " + std::to_string(dom.size()) + " items");
    Matrix counts = get_tensor(tensors, "user_domain_counts").to_matrix("user_domain_counts");
    check(counts.cols == nd, who + "tensor 'user_domain_counts' has " + std::to_string(counts.cols) +
                                 " columns for " + std::to_string(nd) + " domains");
    std::vector<uint32_t> overlap = get_tensor(tensors, "map_overlap").to_u32("map_overlap");
    check(overlap.size() == nd * nd, who + "tensor 'map_overlap' has " + std::to_string(overlap.size()) +
                                         " entries for " + std::to_string(nd) + " domains");
    for (float v : pop) check(std::isfinite(v), who + "tensor 'item_popularity' holds a non-finite value");
    for (float v : counts.data)
      check(std::isfinite(v) && v >= 0, who + "tensor 'user_domain_counts' holds an invalid count");

    std::vector<size_t> per_domain(nd, 0);
    for (uint16_t d : item_domain) ++per_domain[d];
    std::vector<mf::Factors> users(nd), items(nd);
    for (size_t d = 0; d < nd; ++d) {
      const std::string uk = domain_key(d) + ".user_factors", ik = domain_key(d) + ".item_factors";
      Matrix u = models::load_factor_tensor(tensors, uk, counts.rows, size_t(factors_), who);
      // A domain without items stores an empty item matrix, which reads back with no columns.
      const Tensor& it = get_tensor(tensors, ik);
      if (per_domain[d] == 0) {
        check(it.numel() == 0, who + "tensor '" + ik + "' should be empty (the domain has no items)");
        items[d].resize(0, size_t(factors_));
      } else {
        items[d].from_matrix(models::load_factor_tensor(tensors, ik, per_domain[d], size_t(factors_), who));
      }
      users[d].from_matrix(u);
    }
    std::vector<LinearMap> maps(nd * nd);
    for (size_t s = 0; s < nd; ++s) {
      for (size_t t = 0; t < nd; ++t) {
        if (s == t || overlap[s * nd + t] < kMinOverlap || per_domain[t] == 0) continue;
        const std::string key = map_key(s, t);
        Matrix packed = get_tensor(tensors, key).to_matrix(key);
        const size_t f = size_t(factors_);
        check(packed.rows == f + 2 && packed.cols == f,
              who + "tensor '" + key + "' is " + std::to_string(packed.rows) + " x " +
                  std::to_string(packed.cols) + ", expected " + std::to_string(f + 2) + " x " +
                  std::to_string(f));
        LinearMap& m = maps[s * nd + t];
        m.w.resize(f, f);
        std::copy(packed.data.begin(), packed.data.begin() + int64_t(f * f), m.w.data.begin());
        m.mx.assign(packed.row(f), packed.row(f) + f);
        m.my.assign(packed.row(f + 1), packed.row(f + 1) + f);
        if (map_ == "mlp") {
          m.mlp = nn::Mlp<float>({f, size_t(map_hidden_), f}, nn::Act::tanh, nn::Act::identity);
          m.mlp.load(tensors, key + ".mlp.");
          const std::vector<float> scale = get_tensor(tensors, key + ".scale").to_f32(key + ".scale");
          check(scale.size() == 2 && scale[0] > 0 && scale[1] > 0 && std::isfinite(scale[0]) &&
                    std::isfinite(scale[1]),
                who + "tensor '" + key + ".scale' must hold two positive numbers");
          m.sx = scale[0];
          m.sy = scale[1];
        }
      }
    }
    set_domains(std::move(item_domain), nd);
    n_users_ = uint32_t(counts.rows);
    popularity_ = std::move(pop);
    counts_ = std::move(counts);
    overlap_ = std::move(overlap);
    users_ = std::move(users);
    items_ = std::move(items);
    maps_ = std::move(maps);
    gram_.assign(nd, {});
    refresh_all_users();
  }

 private:
  // How a user is scored in a domain.
  enum Mode : uint8_t { kOwn = 0, kMapped = 1, kPopular = 2 };

  size_t n_domains() const { return domain_items_.size(); }
  static std::string domain_key(size_t d) { return "domain" + std::to_string(d); }
  static std::string map_key(size_t s, size_t t) {
    return "map" + std::to_string(s) + "_" + std::to_string(t);
  }

  std::string ials_spec() const {
    Spec s{"ials", {}};
    auto num = [](double v) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      return std::string(buf);
    };
    s.values["factors"] = std::to_string(factors_);
    s.values["iterations"] = std::to_string(iterations_);
    s.values["reg"] = num(reg_);
    s.values["reg_exponent"] = num(reg_exponent_);
    s.values["alpha"] = num(alpha_);
    s.values["cg_steps"] = std::to_string(cg_steps_);
    return s.str();
  }

  // The same frequency-scaled regularisation as the iALS model uses for a row with n entries.
  float row_reg(float n) const {
    if (reg_exponent_ == 0.0) return float(reg_);
    return float(reg_ * std::pow(1.0 + double(n), reg_exponent_));
  }

  void set_domains(std::vector<uint16_t> item_domain, size_t n_domains) {
    item_domain_ = std::move(item_domain);
    domain_items_.assign(n_domains, {});
    local_index_.resize(item_domain_.size());
    for (uint32_t i = 0; i < item_domain_.size(); ++i) {
      auto& list = domain_items_[item_domain_[i]];
      local_index_[i] = uint32_t(list.size());
      list.push_back(i);
    }
  }

  void refresh_all_users() {
    const size_t nd = n_domains();
    effective_.assign(nd, {});
    for (size_t d = 0; d < nd; ++d) effective_[d].resize(n_users_, size_t(factors_));
    mode_.assign(size_t(n_users_) * nd, kPopular);
    for (uint32_t u = 0; u < n_users_; ++u) refresh_user(u);
  }

  // Recomputes the factors a user is scored with in every domain (own, mapped, or none: popularity).
  void refresh_user(uint32_t u) {
    const size_t nd = n_domains(), f = size_t(factors_);
    std::vector<float> y(f);
    std::vector<double> acc(f);
    for (size_t t = 0; t < nd; ++t) {
      float* e = effective_[t].row(u);
      std::fill(e, e + effective_[t].ld, 0.0f);
      if (counts_(u, t) > 0) {
        std::copy(users_[t].row(u), users_[t].row(u) + f, e);
        mode_[size_t(u) * nd + t] = kOwn;
        continue;
      }
      // Source domains with history and a map into t.
      double total = 0;
      size_t best = nd;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t s = 0; s < nd; ++s) {
        const float c = counts_(u, s);
        if (c <= 0 || !maps_[s * nd + t].valid()) continue;
        if (best == nd || c > counts_(u, best)) best = s;
        if (source_ == "weighted") {
          maps_[s * nd + t].apply(users_[s].row(u), y.data());
          for (size_t k = 0; k < f; ++k) acc[k] += double(c) * y[k];
          total += c;
        }
      }
      if (best == nd) {
        mode_[size_t(u) * nd + t] = kPopular;
        continue;
      }
      mode_[size_t(u) * nd + t] = kMapped;
      if (source_ == "weighted") {
        for (size_t k = 0; k < f; ++k) e[k] = float(acc[k] / total);
      } else {
        maps_[best * nd + t].apply(users_[best].row(u), e);
      }
    }
  }

  ParamSet params_;
  int factors_ = 32, iterations_ = 15, cg_steps_ = 3, seed_ = 0, map_hidden_ = 64, map_epochs_ = 200;
  double reg_ = 3.0, reg_exponent_ = 0.5, alpha_ = 5.0, map_reg_ = 0.3, map_lr_ = 0.01;
  std::string map_ = "linear", source_ = "weighted";

  uint32_t n_users_ = 0;
  std::vector<uint16_t> item_domain_;                // per item
  std::vector<std::vector<uint32_t>> domain_items_;  // per domain: its items in index order
  std::vector<uint32_t> local_index_;                // per item: position within its domain
  std::vector<float> popularity_;                    // per item: users with a positive value
  Matrix counts_;                                    // users x domains: interactions per domain
  std::vector<mf::Factors> users_, items_;           // per domain
  std::vector<LinearMap> maps_;                      // [s * n_domains + t]
  std::vector<uint32_t> overlap_;                    // [s * n_domains + t]: users active in both
  std::vector<mf::Factors> effective_;               // per domain: the factors each user is scored with
  std::vector<uint8_t> mode_;                        // [u * n_domains + t]: Mode
  std::vector<mf::AlignedFloats> gram_;              // per domain: item Gram matrix for fold-in (lazy)
};

}  // namespace

XDREC_REGISTER_MODEL(
    emcdr,
    "EMCDR mapping: per-domain iALS, ridge maps between domains' user factors for users cold "
    "in a domain, popularity without history",
    EmcdrModel,
    {.uses_text = false,
     .thread_independent = true,
     .personalised = true,
     .fold_in = true,
     .add_item = false,
     .profile = false});

}  // namespace xdrec
