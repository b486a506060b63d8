// Text bridge: the items of every domain live in one text space, so history in domain A scores the items of
// domain B with no user overlap at all. An item's feature is its raw text vector centred on the mean of its
// own domain's items (center=domain: each domain's common direction, e.g. its vocabulary, is removed, so
// that what remains is comparable across domains) or on the mean of all items (center=global), then passed
// through the shared TextFeatures pipeline (optional autoencoder, L2 normalisation).
//
// A user's vector is the weighted mean of their history items' features (weights: the matrix values) plus
// profile_weight times their profile feature (profile text centred on the mean training profile, or on the
// mean item when fewer than kMinProfiles users have one). An item's score is the dot product with the
// user's vector plus pop_weight times its popularity, log(1 + n) / log(1 + the largest n of its domain).
//
// With align=ridge, for every ordered pair of domains (s, t) a linear map A_st of the text space, shrunk
// towards the identity, is learned on the users active in both: it maps the mean feature of a user's s
// history to the mean feature of their t history. A user's vector for domain t then averages their domains'
// history means mapped into t (A_tt = I), weighted by each domain's share of the history weight.
//
// Every step is a fixed-order computation per user or item, and scoring multiplies fixed blocks of users, so
// the results do not depend on the thread count.
//
// Defaults (center=domain, pop_weight=0.5, align=ridge, align_reg=0.1) were chosen on the validation users
// of Amazon Food-Kitchen (TF-IDF title vectors, target against 999 sampled negatives): per-domain centring
// beat global centring in both domains, and the alignment added a little (NDCG@10 about +0.005).
#include <algorithm>
#include <climits>
#include <cmath>

#include "core/eigen.h"
#include "models/mf_kernels.h"
#include "models/model_util.h"
#include "models/text_features.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

// Profiles are centred on their own mean only when at least this many training users have one.
constexpr size_t kMinProfiles = 20;
// An alignment map needs at least this many users active in both domains.
constexpr size_t kMinOverlap = 2;

bool zero_row(const float* x, size_t d) {
  for (size_t j = 0; j < d; ++j)
    if (x[j] != 0.0f) return false;
  return true;
}

// Mean of the non-zero rows among `rows` of m (zeros when there are none); returns how many were averaged.
size_t mean_of_rows(const Matrix& m, const std::vector<uint32_t>& rows, std::vector<float>& mean) {
  std::vector<double> acc(m.cols, 0.0);
  size_t n = 0;
  for (uint32_t r : rows) {
    if (zero_row(m.row(r), m.cols)) continue;
    for (size_t j = 0; j < m.cols; ++j) acc[j] += m(r, j);
    ++n;
  }
  mean.assign(m.cols, 0.0f);
  if (n > 0)
    for (size_t j = 0; j < m.cols; ++j) mean[j] = float(acc[j] / double(n));
  return n;
}

class TextBridgeModel final : public Recommender {
 public:
  explicit TextBridgeModel(const Spec& spec) : params_("textbridge") {
    params_
        .add("center", &center_, "domain", {"domain", "global"},
             "centre item text on the mean of its own domain's items, or of all items")
        .add("profile_weight", &profile_weight_, 1.0, 0.0, 1e3,
             "weight of the profile text feature in a user's vector (the history mean has weight 1)")
        .add("pop_weight", &pop_weight_, 0.5, 0.0, 1e3,
             "weight of the popularity prior log(1+n)/log(1+max n in the domain) added to every score")
        .add("align", &align_mode_, "ridge", {"none", "ridge"},
             "ridge maps between the domains' history features, learned on users active in both")
        .add("align_reg", &align_reg_, 0.1, 0.0, 1e6,
             "penalty of the alignment maps towards the identity, relative to the mean feature variance")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed of the autoencoder (0: the fit context's seed)");
    ae_.declare(params_);
    params_.apply(legacy_keys(spec.values));
    ae_.validate("textbridge");
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t d = s.text_dim, dt = model_util::text_feature_dim(s, ae_.ae);
    const uint64_t nd = std::max<uint32_t>(s.n_domains, 1);
    ModelCost c;
    // Centred item and profile text, their features (stored and transformed), users' history features, the
    // alignment maps (double), the text pipeline, the interactions.
    c.bytes = (s.n_items + s.n_users) * d * 4 + (s.n_items + s.n_users) * dt * 4 * 2 +
              s.n_users * nd * dt * 4 + nd * nd * dt * dt * 8 + model_util::text_pipeline_bytes(s, ae_.ae) +
              model_util::csr_bytes(s.n_users, s.nnz) + model_util::score_batch_bytes(s);
    c.seconds = 0;
    c.note = d == 0 ? "needs item text vectors (text_dim = 0)" : "text features of items and users";
    return c;
  }
  std::string name() const override { return "textbridge"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return n_users_; }
  uint32_t n_items() const override { return uint32_t(item_domain_.size()); }
  bool uses_text() const override { return true; }
  std::string text_encoder() const override { return encoder_; }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    const Csr m = model_util::prepare_interactions(user_items, false, "textbridge");
    check(m.n_cols > 0, "textbridge: the interaction matrix has no items");
    check(ctx.item_text != nullptr,
          "textbridge needs item text vectors (FitContext::item_text): it scores items by their text");
    const Matrix& text = *ctx.item_text;
    check(text.rows == m.n_cols && text.cols > 0,
          "textbridge: the item text matrix is " + std::to_string(text.rows) + " x " +
              std::to_string(text.cols) + " but the interaction matrix has " + std::to_string(m.n_cols) +
              " items");
    check(ctx.item_domain.empty() || ctx.item_domain.size() == m.n_cols,
          "textbridge: item_domain has " + std::to_string(ctx.item_domain.size()) +
              " entries but the matrix has " + std::to_string(m.n_cols) + " items");
    const Matrix* profiles = ctx.user_text;
    if (profiles) {
      check(profiles->rows == m.n_rows && profiles->cols == text.cols,
            "textbridge: the user text matrix is " + std::to_string(profiles->rows) + " x " +
                std::to_string(profiles->cols) + ", expected " + std::to_string(m.n_rows) + " x " +
                std::to_string(text.cols) + " (one row per user, the item text dimension)");
    }
    for (float v : text.data)
      check(std::isfinite(v), "textbridge: the item text vectors hold a non-finite value");
    if (profiles)
      for (float v : profiles->data)
        check(std::isfinite(v), "textbridge: the user text vectors hold a non-finite value");
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const size_t d_in = text.cols;

    std::vector<uint16_t> item_domain(m.n_cols, 0);
    if (!ctx.item_domain.empty())
      std::copy(ctx.item_domain.begin(), ctx.item_domain.end(), item_domain.begin());
    const size_t nd = size_t(*std::max_element(item_domain.begin(), item_domain.end())) + 1;

    // Centring means: per domain (a domain without text falls back on the global mean), and of profiles.
    std::vector<uint32_t> all(m.n_cols);
    for (uint32_t i = 0; i < m.n_cols; ++i) all[i] = i;
    std::vector<float> global;
    mean_of_rows(text, all, global);
    Matrix means(nd, d_in);
    for (size_t d = 0; d < nd; ++d) {
      std::vector<float> mean = global;
      if (center_ == "domain") {
        std::vector<uint32_t> rows;
        for (uint32_t i = 0; i < m.n_cols; ++i)
          if (item_domain[i] == d) rows.push_back(i);
        if (mean_of_rows(text, rows, mean) == 0) mean = global;
      }
      std::copy(mean.begin(), mean.end(), means.row(d));
    }
    std::vector<float> profile_mean = global;
    Matrix centred_profiles;
    if (profiles) {
      std::vector<uint32_t> rows(m.n_rows);
      for (uint32_t u = 0; u < m.n_rows; ++u) rows[u] = u;
      std::vector<float> pm;
      if (mean_of_rows(*profiles, rows, pm) >= kMinProfiles) profile_mean = pm;
      centred_profiles = centre_rows(*profiles, [&](size_t) { return profile_mean.data(); });
    }
    const Matrix centred_items = centre_rows(text, [&](size_t i) { return means.row(item_domain[i]); });

    models::TextFeatures tf;
    models::TextFeatureOptions opt = ae_.options("textbridge", d_in);
    opt.center = false;  // centred above
    opt.normalize = true;
    tf.fit(centred_items, profiles ? &centred_profiles : nullptr, opt, seed, threads);
    const Matrix features = tf.transform(centred_items, threads);
    const Matrix profile_features = profiles ? tf.transform(centred_profiles, threads) : Matrix();

    // Commit the item side.
    tf_ = std::move(tf);
    encoder_ = ctx.text_encoder;
    domain_means_ = std::move(means);
    profile_mean_ = std::move(profile_mean);
    set_items(std::move(item_domain), nd, features);
    popularity_.assign(m.n_cols, 0.0f);
    {
      std::vector<float> count(m.n_cols, 0.0f), top(nd, 0.0f);
      for (size_t k = 0; k < m.nnz(); ++k)
        if (m.values[k] > 0) count[m.indices[k]] += 1.0f;
      for (uint32_t i = 0; i < m.n_cols; ++i) top[item_domain_[i]] = std::max(top[item_domain_[i]], count[i]);
      for (uint32_t i = 0; i < m.n_cols; ++i)
        popularity_[i] = top[item_domain_[i]] > 0
                             ? float(std::log1p(double(count[i])) / std::log1p(double(top[item_domain_[i]])))
                             : 0.0f;
    }
    refresh_bias();

    // History means per user and domain, then the alignment maps, then the user vectors.
    n_users_ = m.n_rows;
    std::vector<Pooled> pooled(m.n_rows);
    parallel_for(m.n_rows, threads, 64, [&](size_t lo, size_t hi) {
      for (size_t u = lo; u < hi; ++u)
        pooled[u] = pool(m.row_indices(uint32_t(u)), m.row_values(uint32_t(u)));
    });
    align_.assign(nd * nd, {});
    overlap_.assign(nd * nd, 0);
    if (align_mode_ == "ridge") fit_alignment(pooled);
    for (size_t t = 0; t < nd; ++t) users_[t].resize(n_users_, dim());
    parallel_for(m.n_rows, threads, 64, [&](size_t lo, size_t hi) {
      for (size_t u = lo; u < hi; ++u)
        set_user(uint32_t(u), pooled[u], profiles ? profile_features.row(u) : nullptr);
    });
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(!item_domain_.empty(), "textbridge score: the model is not fitted (call fit or load first)");
    model_util::check_users(users, n_users_, "textbridge");
    threads = resolve_threads(threads);
    out.resize(users.size(), n_items());
    if (users.empty()) return;
    Matrix part;
    for (size_t t = 0; t < n_domains(); ++t) {
      const auto& cols = domain_items_[t];
      if (cols.empty()) continue;
      mf::gemm_scores(users_[t], users, items_[t], bias_[t].data(), part, threads);
      parallel_for(users.size(), threads, 64, [&](size_t lo, size_t hi) {
        for (size_t r = lo; r < hi; ++r) {
          const float* p = part.row(r);
          float* o = out.row(r);
          for (size_t j = 0; j < cols.size(); ++j) o[cols[j]] = p[j];
        }
      });
    }
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    return fold_in_profile(user, {}, items, weights);
  }

  uint32_t fold_in_profile(uint32_t user, std::span<const float> profile_vector,
                           std::span<const uint32_t> items, std::span<const float> weights) override {
    check(!item_domain_.empty(), "textbridge fold_in: the model is not fitted (call fit or load first)");
    check(user <= n_users_, "textbridge fold_in: user index " + std::to_string(user) +
                                " is beyond the next new user (" + std::to_string(n_users_) + ")");
    const model_util::History hist = model_util::make_history(items, weights, n_items(), false, "textbridge");
    std::vector<float> profile;
    if (!profile_vector.empty()) {
      check_text(profile_vector, "fold_in_profile: the profile vector");
      std::vector<float> centred(profile_vector.begin(), profile_vector.end());
      for (size_t j = 0; j < centred.size(); ++j) centred[j] -= profile_mean_[j];
      profile.resize(dim());
      if (zero_row(profile_vector.data(), profile_vector.size()))
        std::fill(profile.begin(), profile.end(), 0.0f);
      else
        tf_.transform_row(centred.data(), profile.data());
    }
    const Pooled p = pool(hist.items, hist.weights);
    if (user == n_users_) {
      for (auto& u : users_) u.append_row();
      ++n_users_;
    }
    set_user(user, p, profile.empty() ? nullptr : profile.data());
    return user;
  }

  uint32_t add_item(std::span<const float> text_vector, uint16_t domain) override {
    check(!item_domain_.empty(), "textbridge add_item: the model is not fitted (call fit or load first)");
    check_text(text_vector, "add_item: the text vector");
    check(domain < n_domains(), "textbridge add_item: domain " + std::to_string(domain) +
                                    " is unknown (the model has " + std::to_string(n_domains()) +
                                    " domains)");
    std::vector<float> feature(dim(), 0.0f);
    if (!zero_row(text_vector.data(), text_vector.size())) {
      std::vector<float> centred(text_vector.begin(), text_vector.end());
      for (size_t j = 0; j < centred.size(); ++j) centred[j] -= domain_means_(domain, j);
      tf_.transform_row(centred.data(), feature.data());
    }
    const uint32_t i = n_items();
    item_domain_.push_back(domain);
    local_index_.push_back(uint32_t(domain_items_[domain].size()));
    domain_items_[domain].push_back(i);
    items_[domain].append_row();
    std::copy(feature.begin(), feature.end(), items_[domain].row(items_[domain].rows - 1));
    popularity_.push_back(0.0f);
    bias_[domain].push_back(0.0f);
    return i;
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    check(!item_domain_.empty(), "textbridge save: the model is not fitted");
    const size_t nd = n_domains(), f = dim();
    std::vector<uint32_t> dom(item_domain_.begin(), item_domain_.end());
    tensors["item_domain"] = Tensor::from_u32({int64_t(dom.size())}, dom.data());
    tensors["item_popularity"] = Tensor::from_f32({int64_t(popularity_.size())}, popularity_.data());
    Matrix features(n_items(), f), users(n_users_, nd * f);
    for (uint32_t i = 0; i < n_items(); ++i) {
      const float* src = items_[item_domain_[i]].row(local_index_[i]);
      std::copy(src, src + f, features.row(i));
    }
    for (uint32_t u = 0; u < n_users_; ++u)
      for (size_t t = 0; t < nd; ++t) std::copy(users_[t].row(u), users_[t].row(u) + f, users.row(u) + t * f);
    tensors["item_features"] = Tensor::from_matrix(features);
    tensors["user_vectors"] = Tensor::from_matrix(users);
    tensors["domain_means"] = Tensor::from_matrix(domain_means_);
    tensors["profile_mean"] = Tensor::from_f32({int64_t(profile_mean_.size())}, profile_mean_.data());
    tf_.save(tensors, "text.");
    if (align_mode_ == "ridge") {
      tensors["align_overlap"] = Tensor::from_u32({int64_t(overlap_.size())}, overlap_.data());
      for (size_t s = 0; s < nd; ++s)
        for (size_t t = 0; t < nd; ++t)
          if (align_[s * nd + t].rows > 0) tensors[align_key(s, t)] = Tensor::from_matrix(align_[s * nd + t]);
    }
    extra["domains"] = nd;
    extra["n_users"] = n_users_;
    extra["text_encoder"] = encoder_;
  }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    const std::string who = "textbridge load: ";
    for (const char* key : {"domains", "n_users"})
      check(extra.contains(key) && extra[key].is_number_unsigned(),
            who + "the manifest's extra section lacks '" + key + "'");
    check(extra.contains("text_encoder") && extra["text_encoder"].is_string(),
          who + "the manifest's extra section lacks 'text_encoder'");
    const size_t nd = extra["domains"].get<size_t>();
    const uint32_t n_users = extra["n_users"].get<uint32_t>();
    check(nd >= 1 && nd <= 65536, who + "invalid domain count " + std::to_string(nd));
    models::TextFeatures tf;
    tf.load(tensors, "text.");
    const size_t f = tf.dim(), d_in = tf.input_dim();
    std::vector<uint16_t> item_domain = model_util::load_item_domains(tensors, nd, who);
    const std::vector<uint16_t>& dom = item_domain;
    std::vector<float> pop = get_tensor(tensors, "item_popularity").to_f32("item_popularity");
    check(pop.size() == dom.size(), who + "tensor 'item_popularity' has " + std::to_string(pop.size()) +
                                        " entries for " + std::to_string(dom.size()) + " items");
    const Matrix features = get_tensor(tensors, "item_features").to_matrix("item_features");
    check_shape(features, dom.size(), f, "item_features");
    const Matrix users = get_tensor(tensors, "user_vectors").to_matrix("user_vectors");
    check_shape(users, n_users, nd * f, "user_vectors");
    Matrix means = get_tensor(tensors, "domain_means").to_matrix("domain_means");
    check_shape(means, nd, d_in, "domain_means");
    std::vector<float> pmean = get_tensor(tensors, "profile_mean").to_f32("profile_mean");
    check(pmean.size() == d_in, who + "tensor 'profile_mean' has " + std::to_string(pmean.size()) +
                                    " entries, expected " + std::to_string(d_in));
    for (const std::vector<float>* v : std::initializer_list<const std::vector<float>*>{
             &pop, &features.data, &users.data, &means.data, &pmean})
      for (float x : *v) check(std::isfinite(x), who + "a tensor holds a non-finite value");
    std::vector<uint32_t> overlap(nd * nd, 0);
    std::vector<Matrix> align(nd * nd);
    if (align_mode_ == "ridge") {
      overlap = get_tensor(tensors, "align_overlap").to_u32("align_overlap");
      check(overlap.size() == nd * nd, who + "tensor 'align_overlap' has " + std::to_string(overlap.size()) +
                                           " entries for " + std::to_string(nd) + " domains");
      for (size_t s = 0; s < nd; ++s) {
        for (size_t t = 0; t < nd; ++t) {
          if (s == t || overlap[s * nd + t] < kMinOverlap) continue;
          align[s * nd + t] = get_tensor(tensors, align_key(s, t)).to_matrix(align_key(s, t));
          check_shape(align[s * nd + t], f, f, align_key(s, t));
        }
      }
    }
    // Commit.
    tf_ = std::move(tf);
    encoder_ = extra["text_encoder"].get<std::string>();
    domain_means_ = std::move(means);
    profile_mean_ = std::move(pmean);
    set_items(std::move(item_domain), nd, features);
    popularity_ = std::move(pop);
    refresh_bias();
    overlap_ = std::move(overlap);
    align_ = std::move(align);
    n_users_ = n_users;
    for (size_t t = 0; t < nd; ++t) {
      users_[t].resize(n_users_, f);
      for (uint32_t u = 0; u < n_users_; ++u)
        std::copy(users.row(u) + t * f, users.row(u) + (t + 1) * f, users_[t].row(u));
    }
  }

 private:
  // `ae_dim`, the name of `ae` before every text model shared it, is still read (model files saved then carry
  // it in their spec) and becomes `ae`; giving both with different values is an Error. spec() writes `ae`.
  static std::map<std::string, std::string> legacy_keys(std::map<std::string, std::string> values) {
    auto it = values.find("ae_dim");
    if (it == values.end()) return values;
    auto ae = values.find("ae");
    if (ae != values.end() && ae->second != it->second)
      throw Error("textbridge: ae_dim=" + it->second + " and ae=" + ae->second +
                  " disagree (ae_dim is the old name of ae; give ae only)");
    values["ae"] = it->second;
    values.erase("ae_dim");
    return values;
  }

  // A user's history, pooled per domain: the weighted sum of the items' features and the total weight.
  struct Pooled {
    std::vector<std::vector<double>> sum;  // per domain: dim() entries, or empty when the domain has none
    std::vector<double> weight;            // per domain
  };

  size_t n_domains() const { return domain_items_.size(); }
  size_t dim() const { return tf_.dim(); }
  static std::string align_key(size_t s, size_t t) {
    return "align" + std::to_string(s) + "_" + std::to_string(t);
  }

  static void check_shape(const Matrix& m, size_t rows, size_t cols, const std::string& name) {
    check(m.rows == rows && m.cols == cols,
          "textbridge load: tensor '" + name + "' is " + std::to_string(m.rows) + " x " +
              std::to_string(m.cols) + ", expected " + std::to_string(rows) + " x " + std::to_string(cols));
  }

  void check_text(std::span<const float> v, const std::string& what) const {
    check(v.size() == tf_.input_dim(), "textbridge " + what + " has " + std::to_string(v.size()) +
                                           " dimensions but the model was fitted on " +
                                           std::to_string(tf_.input_dim()) + " (a different encoder?)");
    for (float x : v) check(std::isfinite(x), "textbridge " + what + " holds a non-finite value");
  }

  // Rows of `raw` minus the row's centre; rows of zeros (no text) stay zero.
  template <class CentreOf>
  static Matrix centre_rows(const Matrix& raw, CentreOf centre_of) {
    Matrix out(raw.rows, raw.cols);
    for (size_t i = 0; i < raw.rows; ++i) {
      if (zero_row(raw.row(i), raw.cols)) continue;
      const float* c = centre_of(i);
      for (size_t j = 0; j < raw.cols; ++j) out(i, j) = raw(i, j) - c[j];
    }
    return out;
  }

  // Item storage per domain from the features of every item (rows in item order).
  void set_items(std::vector<uint16_t> item_domain, size_t nd, const Matrix& features) {
    item_domain_ = std::move(item_domain);
    domain_items_.assign(nd, {});
    local_index_.resize(item_domain_.size());
    for (uint32_t i = 0; i < item_domain_.size(); ++i) {
      local_index_[i] = uint32_t(domain_items_[item_domain_[i]].size());
      domain_items_[item_domain_[i]].push_back(i);
    }
    items_.assign(nd, {});
    users_.assign(nd, {});
    for (size_t d = 0; d < nd; ++d) {
      items_[d].resize(domain_items_[d].size(), features.cols);
      for (size_t k = 0; k < domain_items_[d].size(); ++k)
        std::copy(features.row(domain_items_[d][k]), features.row(domain_items_[d][k]) + features.cols,
                  items_[d].row(k));
    }
  }

  void refresh_bias() {
    bias_.assign(n_domains(), {});
    for (size_t d = 0; d < n_domains(); ++d)
      for (uint32_t i : domain_items_[d]) bias_[d].push_back(float(pop_weight_) * popularity_[i]);
  }

  Pooled pool(std::span<const uint32_t> items, std::span<const float> weights) const {
    Pooled p;
    const size_t nd = n_domains(), f = dim();
    p.sum.assign(nd, {});
    p.weight.assign(nd, 0.0);
    for (size_t k = 0; k < items.size(); ++k) {
      const float w = weights[k];
      const uint32_t i = items[k];
      const uint16_t d = item_domain_[i];
      const float* x = items_[d].row(local_index_[i]);
      if (w <= 0 || zero_row(x, f)) continue;  // negative feedback and items without text are skipped
      if (p.sum[d].empty()) p.sum[d].assign(f, 0.0);
      for (size_t j = 0; j < f; ++j) p.sum[d][j] += double(w) * x[j];
      p.weight[d] += w;
    }
    return p;
  }

  // The user's vector for every domain from their pooled history and profile feature (may be null).
  void set_user(uint32_t u, const Pooled& p, const float* profile) {
    const size_t nd = n_domains(), f = dim();
    double total = 0;
    for (double w : p.weight) total += w;
    std::vector<double> acc(f);
    for (size_t t = 0; t < nd; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      // sum[s] / total = (weight[s] / total) * (the mean feature of the user's history in s).
      for (size_t s = 0; s < nd; ++s) {
        if (p.weight[s] <= 0) continue;
        const Matrix& a = align_[s * nd + t];
        if (s == t || a.rows == 0) {
          for (size_t j = 0; j < f; ++j) acc[j] += p.sum[s][j] / total;
        } else {
          for (size_t k = 0; k < f; ++k) {
            const double x = p.sum[s][k] / total;
            const float* ak = a.row(k);
            for (size_t j = 0; j < f; ++j) acc[j] += x * ak[j];
          }
        }
      }
      float* out = users_[t].row(u);
      for (size_t j = 0; j < f; ++j)
        out[j] = float(acc[j] + (profile ? profile_weight_ * double(profile[j]) : 0.0));
    }
  }

  // Ridge maps towards the identity between the history means of every ordered pair of domains:
  // A = (X^T X + lambda I)^-1 (X^T Y + lambda I), lambda = align_reg * trace(X^T X) / dim.
  void fit_alignment(const std::vector<Pooled>& pooled) {
    const size_t nd = n_domains(), f = dim();
    for (size_t s = 0; s < nd; ++s) {
      for (size_t t = 0; t < nd; ++t) {
        if (s == t) continue;
        Eigen::MatrixXd xx = Eigen::MatrixXd::Zero(f, f), xy = Eigen::MatrixXd::Zero(f, f);
        Eigen::VectorXd x(f), y(f);
        uint32_t n = 0;
        for (const Pooled& p : pooled) {
          if (p.weight[s] <= 0 || p.weight[t] <= 0) continue;
          for (size_t j = 0; j < f; ++j) {
            x[j] = p.sum[s][j] / p.weight[s];
            y[j] = p.sum[t][j] / p.weight[t];
          }
          xx.noalias() += x * x.transpose();
          xy.noalias() += x * y.transpose();
          ++n;
        }
        overlap_[s * nd + t] = n;
        if (n < kMinOverlap) continue;
        const double tr = xx.trace();
        const double lambda = std::max(tr > 0 ? align_reg_ * tr / double(f) : align_reg_, 1e-12);
        xx.diagonal().array() += lambda;
        xy.diagonal().array() += lambda;
        const Eigen::MatrixXd a = xx.ldlt().solve(xy);
        Matrix& m = align_[s * nd + t];
        m.resize(f, f);
        for (size_t i = 0; i < f; ++i)
          for (size_t j = 0; j < f; ++j) m(i, j) = float(a(i, j));
      }
    }
  }

  ParamSet params_;
  std::string center_ = "domain", align_mode_ = "ridge";
  double profile_weight_ = 1.0, pop_weight_ = 0.5, align_reg_ = 0.1;
  int seed_ = 0;
  models::AutoencoderParams ae_;  // ae, ae_hidden, ae_noise, ae_epochs

  std::string encoder_;
  models::TextFeatures tf_;
  Matrix domain_means_;              // domains x input dim
  std::vector<float> profile_mean_;  // input dim
  uint32_t n_users_ = 0;
  std::vector<uint16_t> item_domain_;                // per item
  std::vector<std::vector<uint32_t>> domain_items_;  // per domain: its items in index order
  std::vector<uint32_t> local_index_;                // per item: position within its domain
  std::vector<float> popularity_;                    // per item, in [0, 1]
  std::vector<mf::Factors> items_;                   // per domain: item features
  std::vector<std::vector<float>> bias_;             // per domain: pop_weight * popularity
  std::vector<mf::Factors> users_;                   // per domain: user vectors
  std::vector<Matrix> align_;                        // [s * n_domains + t]: f x f, or empty (identity)
  std::vector<uint32_t> overlap_;                    // [s * n_domains + t]: users active in both
};

}  // namespace

XDREC_REGISTER_MODEL(textbridge,
                     "text bridge: items of every domain in one text space (centred per domain); users are "
                     "their history's and profile's text; cold items and users from text alone",
                     TextBridgeModel,
                     {.uses_text = true,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = true,
                      .profile = true});

}  // namespace xdrec
