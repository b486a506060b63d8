// Hybrid matrix factorisation over ids, text and categories (the LightFM idea), built for cold start.
//
// Item vector = id embedding (items with training interactions) + W * text features + category vectors;
// user vector = id embedding + P * profile text features + H * mean text features of the user's history.
// Text features come from the shared TextFeatures pipeline (centred, optional autoencoder code, L2
// normalised); see models/hybrid_core.h for the exact model and its gradients.
//
// Losses: WARP (negatives drawn until one comes within the margin of the positive, weighted by the log of the
// rank estimate) and BPR for implicit data, squared error on the matrix values (ratings). Three choices make
// it better than LightFM for cold start:
//  - id dropout: in each training term the user's and each item's id embedding (and an item's categories) is
//    dropped with probability id_dropout, so the text projections must score well on their own instead of
//    leaving the ids to absorb everything; an item or user with no interactions is scored by text alone, as
//    in those dropped terms (rows with nothing to stand in for the id keep it). On MovieLens latest-small
//    cold items (tfidf text) id_dropout=0.5 gave NDCG@10 0.164 against 0.142 without it;
//  - the pooled history leaves out the item being predicted, so H learns to predict an item from the user's
//    other items (a user with history only in domain A is then scored in domain B through the shared text);
//  - negatives are drawn from items with training interactions (in the positive's domain when there are
//    several), so items held out as cold are not pushed down as universal negatives.
//
// Optimiser: Adagrad with per-coordinate step sizes. Rows of the id tables are updated only when they take
// part in a term: Adagrad's state changes only with the row's own gradients, so a rarely seen item keeps a
// large step size, no per-row step counters or moment decay are needed (lazy Adam would keep stale moments
// for rare rows), and the update is the same whatever the order of rows in a batch.
//
// Training runs in mini-batches: terms are sampled in parallel from frozen parameters (each term from its own
// seeded random stream), their gradients are summed per row in term order, and the projections' gradients are
// GEMMs over the batch's rows; the text caches of the batch's users and positive items are recomputed before
// each batch (stale ones made training diverge). Results are bitwise independent of the thread count. The
// cost is dominated by those dense products, O(terms x text dimension x factors) per epoch: about 4 s per
// epoch on one core for Food-Kitchen with 512-d text (ae=64 makes the text 64-d).
//
// Distributed (FitContext::comm): every rank holds every parameter and runs the same batches. Each rank
// samples its contiguous share of a batch's terms (each term from its own stream, so whoever samples it draws
// the same) and the terms are exchanged; the dense projection gradients are split by fixed column blocks over
// the ranks and joined by an Allreduce in which every element has one non-zero contribution (exact); the
// rest is repeated on every rank. Every rank ends with the one-process model, bitwise.
// DP-SGD (dp=true, or dp_noise > 0, or dp_epsilon > 0; models/dp_training.h): user-level differential
// privacy for the released parameters: the item id embeddings with their bias slot and the text (W), history
// (H), profile (P) and category (C) projections. Each step samples every user independently with rate
// q = dp_users / n_users (Poisson sampling); a sampled user's whole contribution — the mean gradient over one
// term per history entry (its sampled negative and id dropout drawn as usual) — is computed alone and clipped
// to L2 norm dp_clip over all the released coordinates it touches together; the clipped sums get Gaussian
// noise of standard deviation dp_noise * dp_clip on every released coordinate (every item row, touched or
// not), are divided by the expected batch q * n_users, and every released coordinate takes an Adagrad step
// (its L2 term reg / text_reg applied every step, not per term). ceil(epochs / q) steps. Not released: each
// user's own id embedding, which steps on that user's own unclipped gradient when sampled and is fitted
// again after training to the user's own history with everything else fixed (the fold-in solve) — a function
// of the user's data and the private parameters only (joint DP); a user's row in the saved model reveals that
// user's own history. Under DP the text pipeline is fitted on item text alone (never on profiles), every item
// is treated as warm (which items had interactions is not released: all are candidate negatives and keep
// their trained id rows), and loss=mse is refused (its global mean and user biases come from the data).
// The released parameters' Adagrad sums start at 0.01 * (dp_clip / (q * n_users))^2, the initial sum scaled
// to the size of a DP step's gradient; lr=0.2 suited the tests' data and MovieLens 100k. ε is stored under
// "privacy" in the manifest.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "models/dp_training.h"
#include "models/factor_model.h"
#include "models/hybrid_core.h"
#include "models/mf_kernels.h"
#include "models/text_features.h"
#include "xdrec/dist.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

using hybrid::Floats;
using hybrid::Loss;

constexpr uint64_t kItemInitStream = uint64_t(1) << 40;
constexpr uint64_t kShuffleStream = uint64_t(1) << 44;
constexpr uint64_t kSampleStream = uint64_t(1) << 52;
constexpr uint64_t kFoldInStream = uint64_t(1) << 60;
constexpr uint64_t kResumeStream = uint64_t(1) << 62;
constexpr uint64_t kDpSampleStream = uint64_t(3) << 56;  // + step: which users a DP step samples
constexpr uint64_t kDpNoiseStream = uint64_t(5) << 56;   // + step: the step's Gaussian noise
constexpr uint64_t kDpUserStream = uint64_t(6) << 56;    // + step * n_users + user: a user's terms
// Initial squared-gradient sum of Adagrad: small enough that the first steps from the small initial
// embeddings are not tiny (with 1, BPR stalled near its initial point), large enough to damp the first noisy
// steps.
constexpr float kAdagradInit = 0.01f;
constexpr int kNegativeTries = 32;  // bpr: draws to find an unseen negative

bool all_finite(const float* x, size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (!std::isfinite(x[k])) return false;
  return true;
}

// One Adagrad step on n coordinates: g += reg * x; acc += g^2; x -= lr * g / sqrt(acc).
inline void adagrad(float* x, float* acc, const float* g, float reg, float lr, size_t n) {
  for (size_t k = 0; k < n; ++k) {
    const float gk = g[k] + reg * x[k];
    acc[k] += gk * gk;
    x[k] -= lr * gk / std::sqrt(acc[k]);
  }
}

}  // namespace

class HybridModel final : public models::FactorModel {
 public:
  explicit HybridModel(const Spec& spec) : params_("hybrid") {
    params_.add("factors", &factors_, 64, 1, mf::kMaxFactors - 1, "number of latent factors")
        .add("loss", &loss_, "warp", {"warp", "bpr", "mse"},
             "warp or bpr (implicit: ranking of positives over sampled negatives) or mse (squared error on "
             "the matrix values, e.g. ratings)")
        .add("epochs", &epochs_, 10, 0, 100000, "epochs; one epoch visits every training entry once")
        .add("lr", &lr_, 0.05, 1e-9, 10.0, "Adagrad learning rate")
        .add("text_lr", &text_lr_, 0.05, 1e-9, 10.0,
             "Adagrad learning rate of the text, profile, history and category projections (one step per "
             "mini-batch)")
        .add("reg", &reg_, 1e-4, 0.0, 1e3, "L2 regularisation of an id embedding, per term it appears in")
        .add("text_reg", &text_reg_, 1e-3, 0.0, 1e6,
             "L2 regularisation of the text, profile, history and category projections, per batch")
        .add("id_dropout", &id_dropout_, 0.5, 0.0, 1.0,
             "probability of dropping a user's or item's id embedding (and an item's categories) in a "
             "training term, so that text alone learns to score (rows without text keep their ids)")
        .add("margin", &margin_, 1.0, 0.0, 100.0,
             "warp: a negative violates when it scores above s_pos - margin")
        .add("max_sampled", &max_sampled_, 30, 1, 100000, "warp: negatives drawn per positive at most")
        .add("text", &use_text_, true, "use item text vectors when the fit is given them")
        .add("profile", &use_profile_, true, "use user profile text vectors when the fit is given them")
        .add("history", &use_history_, true, "add the projected mean text of the user's history items")
        .add("categories", &use_categories_, true, "use the dataset's item categories when it has them")
        .add("domain_negatives", &domain_negatives_, true,
             "draw negatives from the positive item's domain (when the items have several domains)")
        .add("batch", &batch_, 0, 0, 1 << 20, "training terms per mini-batch (0: from the matrix size)")
        .add("init", &init_, 0.01, 0.0, 10.0, "standard deviation of the initial id embeddings")
        .add("foldin_epochs", &foldin_epochs_, 40, 1, 100000,
             "fold-in: passes over the new user's history fitting the user's id embedding")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    dp_.declare(params_);
    ae_.declare(params_);
    params_.apply(spec.values);
    ae_.validate("hybrid");
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_) + 1), rows = s.n_users + s.n_items;
    const uint64_t dt = use_text_ ? model_util::text_feature_dim(s, ae_.ae) : 0;
    ModelCost c;
    // Id embeddings and their Adagrad sums, the text / category caches, the final vectors; text features of
    // items, profiles and pooled histories; the projections and their sums; the history rows and training
    // entries; the text pipeline.
    c.bytes = rows * ld * 4 * 5 + (s.n_items * 2 + s.n_users * 2) * dt * 4 + 3 * ld * dt * 4 * 2 +
              model_util::csr_bytes(s.n_users, s.nnz) + s.nnz * 8 +
              (use_text_ ? model_util::text_pipeline_bytes(s, ae_.ae) : 0) + model_util::score_batch_bytes(s);
    c.seconds = double(epochs_) * double(s.nnz) * double(ld) * double(std::max<uint64_t>(dt, 1)) * 8 / 4e9;
    c.note = "id embeddings (5 copies) and text features of items and users";
    return c;
  }
  std::string name() const override { return "hybrid"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  bool uses_text() const override { return fitted_ ? dt_ > 0 : use_text_; }
  std::string text_encoder() const override { return dt_ > 0 ? encoder_ : ""; }
  std::map<std::string, std::vector<double>> training_curves() const override {
    if (curve_.empty()) return {};
    return {{"loss", curve_}};
  }

  void fit(const Csr& user_items, const FitContext& ctx) override;

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    FactorModel::score(users, out, threads);
    if (mse_)
      for (size_t r = 0; r < users.size(); ++r) {
        float* o = out.row(r);
        const float off = user_offset_[users[r]];
        for (size_t j = 0; j < out.cols; ++j) o[j] += off;
      }
  }

  uint32_t fold_in_profile(uint32_t user, std::span<const float> profile, std::span<const uint32_t> items,
                           std::span<const float> weights) override;

  uint32_t add_item(std::span<const float> text_vector, uint16_t domain) override;

  bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
              int sweeps) override;

  void save(TensorMap& tensors, nlohmann::json& extra) const override;
  std::vector<std::string> compressible_tensors() const override { return {"user_vectors", "item_vectors"}; }
  // The text projections and the text autoencoder's weights; the factors are left to --store.
  bool prunable_tensor(const std::string& name) const override {
    return name == "text_projection" || name == "history_projection" || name == "profile_projection" ||
           name.starts_with("text_features.ae.");
  }
  void load(const TensorMap& tensors, const nlohmann::json& extra) override;

 protected:
  // Fold-in from a history alone (FactorModel::fold_in); the profile path is fold_in_profile.
  void solve_user(const model_util::History& hist, float* row) override {
    fold_offset_ = solve_profile({}, hist, row);
  }
  void commit_user(uint32_t user, const float* row) override {
    FactorModel::commit_user(user, row);
    if (user_offset_.size() < users_.rows) user_offset_.resize(users_.rows, 0.0f);
    user_offset_[user] = fold_offset_;
  }

 private:
  // The fold-in solve: writes the user's vector (ld_ floats) for profile features `profile_feat` (empty: no
  // profile) and history `h`, and returns the user's score offset. Changes nothing.
  float solve_profile(const std::vector<float>& profile_feat, const model_util::History& h, float* out) const;
  // The negative of a ranking term (warp, bpr) for the positive `i` scored `si` by the user vector `p` (ld
  // floats, slot f = 1) of a user whose positives are `seen` (sorted): candidates of i's domain not in
  // `seen`, the first one (bpr) or the first within the margin of si among max_sampled (warp). Sets the
  // derivatives of the term's loss by si and sj; kNone when no negative was found.
  uint32_t draw_negative(Rng& rng, Loss loss, const float* p, uint32_t i, float si,
                         std::span<const uint32_t> seen, double& gi, double& gj) const;
  // Appends item rows for raw text vector `raw` (null: no text): the projected text (W t, with the bias in
  // slot f) plus, when `id` is true, an id embedding drawn as a fit draws it; records its text features.
  void append_item(const float* raw, uint16_t domain, bool id);
  // The text part of a user vector (lf floats) from profile features and the mean history features.
  void user_text_part(const float* profile_feat, const std::vector<uint32_t>& hist, float* out) const;
  // Candidate negatives (items with training interactions) of each domain, or of all domains in list 0.
  void build_candidates();
  const std::vector<uint32_t>& candidates_for(uint32_t item) const {
    return cand_.size() > 1 ? cand_[item_domain_[item]] : cand_[0];
  }

  std::vector<double> curve_;  // mean loss per epoch of the last fit
  ParamSet params_;
  int factors_ = 64, epochs_ = 10, max_sampled_ = 30, batch_ = 0, foldin_epochs_ = 40, seed_ = 0;
  double lr_ = 0.05, text_lr_ = 0.05, reg_ = 1e-4, text_reg_ = 1e-3, id_dropout_ = 0.5, margin_ = 1.0,
         init_ = 0.01;
  bool use_text_ = true, use_profile_ = true, use_history_ = true, use_categories_ = true,
       domain_negatives_ = true;
  std::string loss_ = "warp";
  models::AutoencoderParams ae_;  // ae, ae_hidden, ae_noise, ae_epochs
  models::DpSgdParams dp_;        // dp, dp_noise, dp_clip, dp_delta, dp_epsilon, dp_users
  nlohmann::json privacy_;        // the DP-SGD guarantee of the last fit (null without DP)

  // Fitted state.
  bool fitted_ = false, mse_ = false, profile_on_ = false, hist_on_ = false;
  size_t f_ = 0, ld_ = 0, lf_ = 0, dt_ = 0;
  uint64_t seed_used_ = 0;
  float mu_ = 0.0f;
  std::string encoder_;
  // users_ / items_ (FactorModel) are the final vectors: users with slot f = 1, items with slot f = bias.
  std::vector<float> user_offset_;  // mse: user bias + global mean
  float fold_offset_ = 0.0f;        // the offset of the user being folded in (solve_profile -> commit_user)
  std::vector<float> item_feat_;    // n_items x dt text features
  Floats W_, H_, P_;                // text, history, profile projections (as in hybrid::Blocks)
  models::TextFeatures tf_;
  std::vector<uint16_t> item_domain_;
  std::vector<uint8_t> item_warm_;
  std::vector<std::vector<uint32_t>> cand_;
};

void HybridModel::build_candidates() {
  uint32_t n_domains = 1;
  for (uint16_t d : item_domain_) n_domains = std::max<uint32_t>(n_domains, uint32_t(d) + 1);
  const bool per_domain = domain_negatives_ && n_domains > 1;
  cand_.assign(per_domain ? n_domains : 1, {});
  for (uint32_t i = 0; i < item_warm_.size(); ++i)
    if (item_warm_[i]) cand_[per_domain ? item_domain_[i] : 0].push_back(i);
}

void HybridModel::fit(const Csr& user_items, const FitContext& ctx) {
  curve_.clear();
  model_util::check_interactions(user_items, "hybrid");
  const int threads = resolve_threads(ctx.threads);
  seed_used_ = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
  const Loss loss = hybrid::parse_loss(loss_);
  mse_ = loss == Loss::Mse;
  Communicator* comm = ctx.comm && ctx.comm->size() > 1 ? ctx.comm : nullptr;
  const uint32_t nu = user_items.n_rows, ni = user_items.n_cols;
  const bool dp = dp_.active();
  check(!dp || !mse_,
        "hybrid: DP-SGD does not go with loss=mse (its global mean and user biases come from the data); use "
        "warp or bpr");
  check(!dp || !comm, "hybrid: DP-SGD runs in one process (leave out --distributed)");
  privacy_ = nlohmann::json();

  // History rows: the positive entries (ranking losses) or every entry (squared error).
  Csr hist;
  hist.n_rows = nu;
  hist.n_cols = ni;
  hist.indptr.assign(size_t(nu) + 1, 0);
  for (uint32_t u = 0; u < nu; ++u) {
    for (uint64_t p = user_items.indptr[u]; p < user_items.indptr[u + 1]; ++p) {
      if (!mse_ && !(user_items.values[p] > 0.0f)) continue;
      hist.indices.push_back(user_items.indices[p]);
      hist.values.push_back(user_items.values[p]);
    }
    hist.indptr[u + 1] = hist.indices.size();
  }
  std::vector<uint8_t> user_warm(nu, 0);
  item_warm_.assign(ni, 0);
  std::vector<uint32_t> hist_count(nu, 0);
  double sum = 0;
  for (uint32_t u = 0; u < nu; ++u) {
    hist_count[u] = uint32_t(hist.row_size(u));
    user_warm[u] = hist_count[u] > 0;
    for (uint32_t i : hist.row_indices(u)) item_warm_[i] = 1;
  }
  // Under DP which items had training interactions is not released: every item is treated as warm (it keeps
  // its trained id row, its text takes part in fitting the text pipeline, and it is a candidate negative).
  if (dp) std::fill(item_warm_.begin(), item_warm_.end(), uint8_t(1));
  for (float v : hist.values) sum += v;
  mu_ = mse_ && !hist.values.empty() ? float(sum / double(hist.values.size())) : 0.0f;

  if (!ctx.item_domain.empty())
    check(ctx.item_domain.size() == ni, "hybrid: item_domain has " + std::to_string(ctx.item_domain.size()) +
                                            " entries for " + std::to_string(ni) + " items");
  item_domain_.assign(ni, 0);
  if (!ctx.item_domain.empty())
    std::copy(ctx.item_domain.begin(), ctx.item_domain.end(), item_domain_.begin());

  // ---- Text features ----
  dt_ = 0;
  tf_ = models::TextFeatures();
  item_feat_.clear();
  std::vector<float> profile_feat;
  const bool text = use_text_ && ctx.item_text != nullptr;
  if (text) {
    const Matrix& it = *ctx.item_text;
    check(it.rows == ni && it.cols > 0 && it.data.size() == it.rows * it.cols,
          "hybrid: item_text is " + std::to_string(it.rows) + " x " + std::to_string(it.cols) +
              " but the matrix has " + std::to_string(ni) + " items");
    check(all_finite(it.data.data(), it.data.size()), "hybrid: item_text has a non-finite value");
    const Matrix* ut = use_profile_ ? ctx.user_text : nullptr;
    const Matrix* ut_fit = dp ? nullptr : ut;  // under DP the text space comes from item text alone
    if (ut) {
      check(ut->rows == nu && ut->cols == it.cols && ut->data.size() == ut->rows * ut->cols,
            "hybrid: user_text is " + std::to_string(ut->rows) + " x " + std::to_string(ut->cols) + " but " +
                std::to_string(nu) + " users with " + std::to_string(it.cols) + "-d item text were expected");
      check(all_finite(ut->data.data(), ut->data.size()), "hybrid: user_text has a non-finite value");
    }
    // The pipeline is fitted on the items with training interactions only: an item without interactions is
    // treated exactly as one added later through add_item.
    Matrix warm_text(ni, it.cols);
    for (uint32_t i = 0; i < ni; ++i)
      if (item_warm_[i]) std::copy(it.row(i), it.row(i) + it.cols, warm_text.row(i));
    const models::TextFeatureOptions topt = ae_.options("hybrid", it.cols);
    tf_.fit(warm_text, ut_fit, topt, seed_used_, threads);
    const Matrix feat = tf_.transform(it, threads);
    dt_ = feat.cols;
    item_feat_ = feat.data;
    if (ut) profile_feat = tf_.transform(*ut, threads).data;
    encoder_ = ctx.text_encoder;
  } else {
    encoder_.clear();
  }
  profile_on_ = !profile_feat.empty();
  hist_on_ = dt_ > 0 && use_history_;

  // ---- Categories ----
  Csr cats;
  if (use_categories_ && ctx.item_categories && ctx.item_categories->rows > 0) {
    const Matrix& cv = *ctx.item_categories;
    if (cv.rows == ni && cv.cols > 0) {
      std::vector<uint32_t> r, c;
      std::vector<float> v;
      for (uint32_t i = 0; i < ni; ++i)
        for (size_t k = 0; k < cv.cols; ++k)
          if (cv(i, k) != 0.0f) r.push_back(i), c.push_back(uint32_t(k)), v.push_back(cv(i, k));
      if (!r.empty()) cats = Csr::from_triplets(ni, uint32_t(cv.cols), r, c, v);
    }
  }
  const size_t nc = cats.nnz() ? cats.n_cols : 0;

  // ---- Pooled history features ----
  std::vector<float> user_hist;
  if (hist_on_) {
    user_hist.assign(size_t(nu) * dt_, 0.0f);
    parallel_for(nu, threads, 256, [&](size_t lo, size_t hi) {
      for (size_t u = lo; u < hi; ++u) {
        float* h = user_hist.data() + u * dt_;
        auto idx = hist.row_indices(uint32_t(u));
        for (uint32_t i : idx) hybrid::axpy(1.0f, item_feat_.data() + size_t(i) * dt_, h, dt_);
        if (!idx.empty())
          for (size_t k = 0; k < dt_; ++k) h[k] /= float(idx.size());
      }
    });
  }

  // ---- Parameters ----
  const hybrid::Dims dims = hybrid::Dims::make(size_t(factors_), dt_, profile_on_ ? dt_ : 0, nc, hist_on_);
  f_ = dims.f;
  ld_ = dims.ld;
  lf_ = dims.lf;
  hybrid::Blocks b;
  b.resize(dims, nu, ni);
  parallel_for(std::max(nu, ni), threads, 1024, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) {
      if (r < nu) {
        Rng rng(seed_used_, r);
        for (size_t k = 0; k < f_; ++k) b.user_id[r * ld_ + k] = float(init_) * rng.normal();
      }
      if (r < ni) {
        Rng rng(seed_used_, kItemInitStream + r);
        for (size_t k = 0; k < f_; ++k) b.item_id[r * ld_ + k] = float(init_) * rng.normal();
      }
    }
  });
  hybrid::Blocks acc;  // Adagrad sums of squared gradients
  acc.d = dims;
  acc.user_id.assign(b.user_id.size(), kAdagradInit);
  acc.item_id.assign(b.item_id.size(), kAdagradInit);
  acc.user_bias.assign(b.user_bias.size(), kAdagradInit);
  acc.W.assign(b.W.size(), kAdagradInit);
  acc.H.assign(b.H.size(), kAdagradInit);
  acc.P.assign(b.P.size(), kAdagradInit);
  acc.C.assign(b.C.size(), kAdagradInit);

  hybrid::Side side;
  side.item_text = dt_ ? item_feat_.data() : nullptr;
  side.user_profile = profile_on_ ? profile_feat.data() : nullptr;
  side.user_hist = hist_on_ ? user_hist.data() : nullptr;
  side.hist_count = hist_count.data();
  side.item_cat = nc ? &cats : nullptr;
  side.mu = mu_;
  side.mse = mse_;
  hybrid::Caches caches;
  caches.resize(dims, nu, ni);
  hybrid::refresh(b, side, caches, {}, {}, threads);

  build_candidates();
  std::vector<uint8_t> has_cat(ni, 0);
  if (nc)
    for (uint32_t i = 0; i < ni; ++i) has_cat[i] = cats.row_size(i) > 0;
  // Id dropout applies to the rows that have something to stand in for the id: an item with text or
  // categories, a user with a profile or other history items with text (dropping an id with nothing in its
  // place would only add noise).
  std::vector<uint8_t> item_side(ni, 0), user_side(nu, 0);
  for (uint32_t i = 0; i < ni; ++i) {
    bool any = has_cat[i];
    for (size_t k = 0; k < dt_ && !any; ++k) any = item_feat_[size_t(i) * dt_ + k] != 0.0f;
    item_side[i] = any;
  }
  for (uint32_t u = 0; u < nu; ++u) {
    bool any = hist_on_ && hist_count[u] > 1;
    for (size_t k = 0; profile_on_ && k < dt_ && !any; ++k) any = profile_feat[size_t(u) * dt_ + k] != 0.0f;
    user_side[u] = any;
  }

  // Training entries (user << 32 | position in hist) and the batch size.
  const size_t n_entries = hist.nnz();
  std::vector<uint64_t> entries(n_entries);
  for (uint32_t u = 0; u < nu; ++u)
    for (uint64_t p = hist.indptr[u]; p < hist.indptr[u + 1]; ++p) entries[p] = (uint64_t(u) << 32) | p;
  size_t n_warm_users = 0, n_warm_items = 0;
  for (uint8_t w : user_warm) n_warm_users += w;
  for (uint8_t w : item_warm_) n_warm_items += w;
  // Auto batch: small enough that a row rarely appears twice in a batch of a small matrix, large enough that
  // an epoch has at most about 64 batches (each batch synchronises the threads a few times; from 390 to 2048
  // the batch size did not change the results on MovieLens beyond their noise).
  const size_t batch =
      batch_ > 0
          ? size_t(batch_)
          : std::clamp<size_t>(std::max(std::min(n_warm_users, n_warm_items) / 8, n_entries / 64), 32, 4096);

  const float p_drop = float(id_dropout_), lr = float(lr_), reg = float(reg_), text_reg = float(text_reg_);
  const float text_lr = float(text_lr_);
  const float margin = float(margin_);
  std::vector<hybrid::Record> slots(batch), recs;
  std::vector<uint8_t> slot_ok(batch);
  hybrid::Grad grad;
  std::vector<uint32_t> rows_u, rows_i;

  // The rows of item j prefetched (WARP reads them after drawing j).
  auto prefetch = [&](uint32_t j) {
    auto lines = [&](const Floats& x) {
      if (x.empty()) return;
      const char* q = reinterpret_cast<const char*>(x.data() + size_t(j) * ld_);
      for (size_t o = 0; o < ld_ * sizeof(float); o += 64) _mm_prefetch(q + o, _MM_HINT_T0);
    };
    lines(b.item_id);
    lines(caches.item_text);
    lines(caches.item_cat);
  };
  // One training term of user u's history entry at `pos`, drawn from rng: the id dropout flags and, for the
  // ranking losses, a sampled negative (WARP: the first that comes within the margin). False when there is
  // no term (no candidate negative, or none found). p, q: ld_ floats of scratch.
  auto make_term = [&](uint32_t u, uint64_t pos, Rng& rng, float* p, float* q, hybrid::Record& out) {
    const uint32_t i = hist.indices[pos];
    auto keep = [&]() { return p_drop <= 0.0f || rng.uniform() >= p_drop; };
    hybrid::Record r;
    r.u = u;
    r.i = i;
    r.flags = 0;
    if (!user_side[u] || keep()) r.flags |= hybrid::kIdU;
    if (!item_side[i] || keep()) r.flags |= hybrid::kIdI;
    if (has_cat[i] && keep()) r.flags |= hybrid::kCatI;
    if (loss == Loss::Mse) {
      r.label = hist.values[pos];
      out = r;
      return true;
    }
    const std::vector<uint32_t>& cand = candidates_for(i);
    if (cand.empty()) return false;
    const std::span<const uint32_t> seen = hist.row_indices(u);
    if (loss == Loss::Bpr) {
      for (int t = 0; t < kNegativeTries; ++t) {
        const uint32_t j = cand[rng.below(cand.size())];
        if (std::binary_search(seen.begin(), seen.end(), j)) continue;
        r.j = j;
        if (!item_side[j] || keep()) r.flags |= hybrid::kIdJ;
        if (has_cat[j] && keep()) r.flags |= hybrid::kCatJ;
        out = r;
        return true;
      }
      return false;
    }
    // WARP: draw negatives until one violates the margin.
    hybrid::compose_user(b, side, caches, u, i, r.flags & hybrid::kIdU, p);
    hybrid::compose_item(b, caches, i, r.flags & hybrid::kIdI, r.flags & hybrid::kCatI, q);
    const float si = hybrid::dot(p, q, ld_);
    // The next candidate is drawn one step ahead and its rows prefetched.
    uint32_t next = cand[rng.below(cand.size())];
    prefetch(next);
    for (int t = 1; t <= max_sampled_; ++t) {
      const uint32_t j = next;
      if (t < max_sampled_) {
        next = cand[rng.below(cand.size())];
        prefetch(next);
      }
      if (std::binary_search(seen.begin(), seen.end(), j)) continue;
      uint8_t fj = 0;
      if (!item_side[j] || keep()) fj |= hybrid::kIdJ;
      if (has_cat[j] && keep()) fj |= hybrid::kCatJ;
      float sj = 0.0f;
      if (fj & hybrid::kIdJ) sj += hybrid::dot(p, b.item_id.data() + size_t(j) * ld_, ld_);
      if (dt_) sj += hybrid::dot(p, caches.item_text.data() + size_t(j) * ld_, ld_);
      if (fj & hybrid::kCatJ) sj += hybrid::dot(p, caches.item_cat.data() + size_t(j) * ld_, ld_);
      if (sj > si - margin) {
        r.j = j;
        r.flags |= fj;
        r.weight = float(hybrid::warp_weight(cand.size(), size_t(t)));
        out = r;
        return true;
      }
    }
    return false;
  };

  if (dp) {
    // User-level DP-SGD (see the top of the file). The released parameters laid out flat: the item id table,
    // then W, H, P and C.
    const models::DpSgdPlan plan = models::plan_dp_sgd(dp_, nu, epochs_, "hybrid");
    const size_t off_w = b.item_id.size(), off_h = off_w + b.W.size(), off_p = off_h + b.H.size(),
                 off_c = off_p + b.P.size(), dim = off_c + b.C.size();
    privacy::DpAggregator agg(dim, dp_.clip);
    // Adagrad's initial sum suits gradients of the order of one term's; a DP step's gradient is of the order
    // of dp_clip / (q n_users), so the released parameters' sums start at kAdagradInit times its square
    // (else the first steps are tiny when many users share a step or the clip is small).
    const double scale = dp_.clip / plan.expected_users();
    for (Floats* a : {&acc.item_id, &acc.W, &acc.H, &acc.P, &acc.C})
      std::fill(a->begin(), a->end(), float(double(kAdagradInit) * scale * scale));
    std::vector<hybrid::Grad> ug;
    std::vector<size_t> n_terms;
    std::vector<float> g(dim);
    std::vector<privacy::DpAggregator::Piece> pieces;
    size_t clipped = 0, contributions = 0, loss_n = 0;
    double loss_sum = 0;
    Timer timer;
    if (ctx.progress) ctx.progress(0, size_t(plan.steps), "hybrid DP-SGD steps");
    for (int64_t step = 0; step < plan.steps && n_warm_items > 0; ++step) {
      const std::vector<uint32_t> sampled = plan.sample(seed_used_, kDpSampleStream, step);
      if (dt_ || nc || profile_on_) {  // fresh projections of the sampled users and their items
        rows_i.clear();
        for (uint32_t u : sampled)
          for (uint32_t i : hist.row_indices(u)) rows_i.push_back(i);
        std::sort(rows_i.begin(), rows_i.end());
        rows_i.erase(std::unique(rows_i.begin(), rows_i.end()), rows_i.end());
        hybrid::refresh(b, side, caches, sampled, rows_i, threads);
      }
      // Each sampled user's gradient alone: the mean over one term per history entry.
      ug.assign(sampled.size(), hybrid::Grad());
      n_terms.assign(sampled.size(), 0);
      parallel_for(sampled.size(), threads, 1, [&](size_t lo, size_t hi) {
        Floats p(ld_), q(ld_);
        std::vector<hybrid::Record> terms;
        for (size_t k = lo; k < hi; ++k) {
          const uint32_t u = sampled[k];
          Rng rng(seed_used_, kDpUserStream + uint64_t(step) * nu + u);
          terms.clear();
          hybrid::Record r;
          for (uint64_t pos = hist.indptr[u]; pos < hist.indptr[u + 1]; ++pos)
            if (make_term(u, pos, rng, p.data(), q.data(), r)) terms.push_back(r);
          n_terms[k] = terms.size();
          if (terms.empty()) continue;
          hybrid::Grad& gk = ug[k];
          hybrid::batch_gradient(loss, b, side, caches, terms, margin, 1, gk);
          const float mean = 1.0f / float(terms.size());
          for (Floats* v : {&gk.items.g, &gk.users.g, &gk.W, &gk.H, &gk.P, &gk.C})
            for (float& x : *v) x *= mean;
        }
      });
      // Clip and add in user order; the users' own id rows step on their own gradients (not released).
      agg.reset();
      for (size_t k = 0; k < sampled.size(); ++k) {
        const hybrid::Grad& gk = ug[k];
        pieces.clear();
        for (size_t r = 0; r < gk.items.rows.size(); ++r)
          pieces.push_back({size_t(gk.items.rows[r]) * ld_, {gk.items.g.data() + r * ld_, ld_}});
        const std::pair<size_t, const Floats*> dense[] = {
            {off_w, &gk.W}, {off_h, &gk.H}, {off_p, &gk.P}, {off_c, &gk.C}};
        for (const auto& [o, v] : dense)
          if (!v->empty()) pieces.push_back({o, {v->data(), v->size()}});
        agg.add(pieces);  // a user without terms adds a zero contribution
        for (size_t r = 0; r < gk.users.rows.size(); ++r) {
          const size_t o = size_t(gk.users.rows[r]) * ld_;
          adagrad(b.user_id.data() + o, acc.user_id.data() + o, gk.users.g.data() + r * ld_, reg, lr, f_);
        }
        if (n_terms[k]) {
          loss_sum += gk.loss / double(n_terms[k]);
          ++loss_n;
        }
      }
      clipped += agg.clipped();
      contributions += agg.contributions();
      Rng noise(seed_used_, kDpNoiseStream + uint64_t(step));
      agg.finish(plan.sigma, plan.expected_users(), noise);
      std::copy(agg.sum().begin(), agg.sum().end(), g.begin());
      // Adagrad on every released coordinate (the noise reaches every row); padding is left at zero.
      parallel_for(ni, threads, 1024, [&](size_t lo, size_t hi) {
        for (size_t i = lo; i < hi; ++i)
          adagrad(b.item_id.data() + i * ld_, acc.item_id.data() + i * ld_, g.data() + i * ld_, reg, lr,
                  f_ + 1);
      });
      adagrad(b.W.data(), acc.W.data(), g.data() + off_w, text_reg, text_lr,
              b.W.empty() ? 0 : (f_ + 1) * dt_);
      adagrad(b.H.data(), acc.H.data(), g.data() + off_h, text_reg, text_lr, b.H.empty() ? 0 : f_ * dt_);
      adagrad(b.P.data(), acc.P.data(), g.data() + off_p, text_reg, text_lr, b.P.empty() ? 0 : f_ * dims.dp);
      for (size_t c = 0; c < nc; ++c)
        adagrad(b.C.data() + c * ld_, acc.C.data() + c * ld_, g.data() + off_c + c * ld_, text_reg, text_lr,
                f_ + 1);
      if (plan.epoch_end(step)) {
        hybrid::refresh(b, side, caches, {}, {}, threads);
        curve_.push_back(loss_n ? loss_sum / double(loss_n) : 0.0);
        if (ctx.verbose)
          std::fprintf(stderr, "hybrid DP-SGD step %lld/%lld: mean loss %.4f, %.2f s\n", (long long)step + 1,
                       (long long)plan.steps, curve_.back(), timer.seconds());
        loss_sum = 0;
        loss_n = 0;
      }
      if (ctx.progress) ctx.progress(size_t(step) + 1, size_t(plan.steps), "hybrid DP-SGD steps");
    }
    hybrid::refresh(b, side, caches, {}, {}, threads);
    privacy_ = models::dp_sgd_report(
        dp_, plan, clipped, contributions, "hybrid",
        "the item id embeddings and biases and the text, history, profile and category projections "
        "(user-level); not each user's own id embedding, which is fitted again to that user's own history "
        "after training",
        ctx.verbose);
  }
  if (ctx.progress && !dp) ctx.progress(0, size_t(epochs_), "hybrid epochs");
  for (int e = 0; !dp && e < epochs_ && n_entries > 0 && n_warm_items > 0; ++e) {
    Timer timer;
    {  // Seeded shuffle of the entries.
      Rng rng(seed_used_, kShuffleStream + uint64_t(e));
      for (size_t k = n_entries; k > 1; --k) std::swap(entries[k - 1], entries[rng.below(k)]);
    }
    double epoch_loss = 0;
    size_t epoch_terms = 0;
    // Seconds per phase (verbose output); ct: in collectives (the exchange of the terms, and the Allreduce
    // counted within the gradient); t_dense: the dense products within the gradient.
    double t_refresh = 0, t_sample = 0, t_grad = 0, t_dense = 0, t_step = 0;
    model_util::CommTime ct;
    const double cpu0 = model_util::process_cpu_seconds();
    Timer phase;
    for (size_t start = 0; start < n_entries; start += batch) {
      const size_t m = std::min(batch, n_entries - start);
      // Fresh projections for this batch's users and positive items.
      if (dt_ || nc || profile_on_) {
        rows_u.clear();
        rows_i.clear();
        for (size_t s = 0; s < m; ++s) {
          rows_u.push_back(uint32_t(entries[start + s] >> 32));
          rows_i.push_back(hist.indices[uint32_t(entries[start + s])]);
        }
        for (auto* v : {&rows_u, &rows_i}) {
          std::sort(v->begin(), v->end());
          v->erase(std::unique(v->begin(), v->end()), v->end());
        }
        hybrid::refresh(b, side, caches, rows_u, rows_i, threads);
      }
      t_refresh += phase.seconds();
      phase.reset();
      // Terms, each from its own random stream.
      // Distributed: this rank samples its contiguous share of the slots, and the slots are exchanged.
      const auto [s_lo, s_hi] = block_range(m, comm ? comm->rank() : 0, comm ? comm->size() : 1);
      parallel_for(s_hi - s_lo, threads, 32, [&](size_t lo, size_t hi) {
        Floats p(ld_), q(ld_);
        for (size_t s = s_lo + lo; s < s_lo + hi; ++s) {
          const uint64_t entry = entries[start + s];
          Rng rng(seed_used_, kSampleStream + (uint64_t(e) << 34) + start + s);
          slot_ok[s] = make_term(uint32_t(entry >> 32), uint32_t(entry), rng, p.data(), q.data(), slots[s]);
        }
      });
      t_sample += phase.seconds();
      if (comm) {
        std::vector<size_t> rec_bytes(size_t(comm->size())), ok_bytes(size_t(comm->size()));
        for (int r = 0; r < comm->size(); ++r) {
          const auto [a, z] = block_range(m, r, comm->size());
          rec_bytes[size_t(r)] = (z - a) * sizeof(hybrid::Record);
          ok_bytes[size_t(r)] = z - a;
        }
        ct.run([&] {
          comm->allgather_bytes(slots.data(), rec_bytes);
          comm->allgather_bytes(slot_ok.data(), ok_bytes);
        });
      }
      phase.reset();
      recs.clear();
      for (size_t s = 0; s < m; ++s)
        if (slot_ok[s]) recs.push_back(slots[s]);
      if (recs.empty()) continue;
      t_dense += hybrid::batch_gradient(loss, b, side, caches, recs, margin, threads, grad, comm, &ct);
      epoch_loss += grad.loss;
      t_grad += phase.seconds();
      phase.reset();
      epoch_terms += recs.size();

      // Adagrad steps: the id rows in one parallel pass (items, then users), the projections on this thread.
      const size_t n_irows = grad.items.rows.size(), n_urows = grad.users.rows.size();
      // (on this thread when small: a synchronisation would cost more than the work)
      parallel_for(n_irows + n_urows, n_irows + n_urows < 4096 ? 1 : threads, 128, [&](size_t lo, size_t hi) {
        for (size_t k = lo; k < hi; ++k) {
          const bool item = k < n_irows;
          const hybrid::RowGrad& rg = item ? grad.items : grad.users;
          const size_t r = item ? k : k - n_irows;
          const size_t off = size_t(rg.rows[r]) * ld_;
          Floats& x = item ? b.item_id : b.user_id;
          Floats& a = item ? acc.item_id : acc.user_id;
          adagrad(x.data() + off, a.data() + off, rg.g.data() + r * ld_, reg * float(rg.count[r]), lr,
                  f_ + 1);
          if (!item && mse_) {
            const uint32_t u = rg.rows[r];
            adagrad(&b.user_bias[u], &acc.user_bias[u], &rg.bias[r], reg * float(rg.count[r]), lr, 1);
          }
        }
      });
      adagrad(b.W.data(), acc.W.data(), grad.W.data(), text_reg, text_lr, b.W.size());
      adagrad(b.H.data(), acc.H.data(), grad.H.data(), text_reg, text_lr, b.H.size());
      adagrad(b.P.data(), acc.P.data(), grad.P.data(), text_reg, text_lr, b.P.size());
      adagrad(b.C.data(), acc.C.data(), grad.C.data(), text_reg, text_lr, b.C.size());
      t_step += phase.seconds();
      phase.reset();
    }
    hybrid::refresh(b, side, caches, {}, {}, threads);
    curve_.push_back(epoch_terms ? epoch_loss / double(epoch_terms) : 0.0);
    if (ctx.verbose)
      std::fprintf(
          stderr,
          "hybrid epoch %d: %zu terms, mean loss %.4f, %.3f s (refresh %.3f, sampling %.3f, gradient "
          "%.3f of which dense %.3f, steps %.3f; rank %d of %d: compute %.3f s cpu, communication %.3f s)\n",
          e + 1, epoch_terms, epoch_terms ? epoch_loss / double(epoch_terms) : 0.0, timer.seconds(),
          t_refresh, t_sample, t_grad, t_dense, t_step, comm ? comm->rank() : 0, comm ? comm->size() : 1,
          model_util::process_cpu_seconds() - cpu0 - ct.cpu, ct.wall);
    if (ctx.progress) ctx.progress(size_t(e) + 1, size_t(epochs_), "hybrid epochs");
  }

  // ---- Final vectors ----
  users_.resize(nu, f_ + 1);
  items_.resize(ni, f_ + 1);
  user_offset_.assign(nu, 0.0f);
  parallel_for(std::max(nu, ni), threads, 1024, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) {
      if (r < nu) {
        hybrid::compose_user(b, side, caches, uint32_t(r), hybrid::kNone, user_warm[r], users_.row(r));
        user_offset_[r] = hybrid::score_offset(b, side, uint32_t(r), user_warm[r]);
      }
      if (r < ni) hybrid::compose_item(b, caches, uint32_t(r), item_warm_[r], true, items_.row(r));
    }
  });
  W_ = std::move(b.W);
  H_ = std::move(b.H);
  P_ = std::move(b.P);
  fitted_ = true;
  // After DP-SGD each user's vector is fitted again to that user's own history with the released parameters
  // fixed (the fold-in solve): a function of the user's own data and the private parameters only.
  if (dp)
    parallel_for(nu, threads, 16, [&](size_t lo, size_t hi) {
      model_util::History h;
      std::vector<float> pf;
      for (size_t u = lo; u < hi; ++u) {
        if (!user_warm[u]) continue;
        const auto idx = hist.row_indices(uint32_t(u));
        const auto val = hist.row_values(uint32_t(u));
        h.items.assign(idx.begin(), idx.end());
        h.weights.assign(val.begin(), val.end());
        if (profile_on_)
          pf.assign(profile_feat.begin() + ptrdiff_t(u * dt_),
                    profile_feat.begin() + ptrdiff_t((u + 1) * dt_));
        user_offset_[u] = solve_profile(pf, h, users_.row(u));
      }
    });
}

void HybridModel::user_text_part(const float* profile_feat, const std::vector<uint32_t>& hist,
                                 float* out) const {
  std::fill(out, out + lf_, 0.0f);
  if (!dt_) return;
  if (profile_feat) {
    // A model fitted without profiles reads a profile as if it were the pooled text of a history.
    const Floats& proj = profile_on_ ? P_ : H_;
    for (size_t k = 0; k < f_; ++k) out[k] += hybrid::dot(proj.data() + k * dt_, profile_feat, dt_);
  }
  if (hist_on_ && !hist.empty()) {
    std::vector<float> h(dt_, 0.0f);
    for (uint32_t i : hist) hybrid::axpy(1.0f, item_feat_.data() + size_t(i) * dt_, h.data(), dt_);
    for (float& v : h) v /= float(hist.size());
    for (size_t k = 0; k < f_; ++k) out[k] += hybrid::dot(H_.data() + k * dt_, h.data(), dt_);
  }
}

uint32_t HybridModel::fold_in_profile(uint32_t user, std::span<const float> profile,
                                      std::span<const uint32_t> items, std::span<const float> weights) {
  if (profile.empty()) return fold_in(user, items, weights);
  const model_util::History h = fold_in_history(user, items, weights);
  check(dt_ > 0, "hybrid fold_in_profile: the model was fitted without text, so it cannot use a profile");
  check(profile.size() == tf_.input_dim(),
        "hybrid fold_in_profile: the profile vector has " + std::to_string(profile.size()) +
            " values but the model's text has " + std::to_string(tf_.input_dim()));
  check(all_finite(profile.data(), profile.size()),
        "hybrid fold_in_profile: the profile vector has a non-finite value");
  check(profile_on_ || hist_on_,
        "hybrid fold_in_profile: the model uses neither profiles nor history text (profile=false, "
        "history=false)");
  std::vector<float> profile_feat(tf_.dim());
  tf_.transform_row(profile.data(), profile_feat.data());
  Floats row(ld_, 0.0f);
  fold_offset_ = solve_profile(profile_feat, h, row.data());
  commit_user(user, row.data());
  return user;
}

uint32_t HybridModel::draw_negative(Rng& rng, Loss loss, const float* p, uint32_t i, float si,
                                    std::span<const uint32_t> seen, double& gi, double& gj) const {
  const std::vector<uint32_t>& cand = candidates_for(i);
  if (cand.empty()) return hybrid::kNone;
  const float margin = float(margin_);
  const int tries = loss == Loss::Warp ? max_sampled_ : kNegativeTries;
  for (int t = 1; t <= tries; ++t) {
    const uint32_t c = cand[rng.below(cand.size())];
    if (std::binary_search(seen.begin(), seen.end(), c)) continue;
    const float sj = hybrid::dot(p, items_.row(c), ld_);
    if (loss == Loss::Bpr || sj > si - margin) {
      const double w = loss == Loss::Warp ? hybrid::warp_weight(cand.size(), size_t(t)) : 1.0;
      const hybrid::PairTerm pt = hybrid::pair_term(loss, si, sj, 0, w, margin);
      gi = pt.gi;
      gj = pt.gj;
      return c;
    }
  }
  return hybrid::kNone;
}

float HybridModel::solve_profile(const std::vector<float>& profile_feat, const model_util::History& h,
                                 float* out) const {
  // History: positive entries (ranking losses) or every entry (squared error).
  std::vector<uint32_t> hist;
  std::vector<float> hw;
  for (size_t k = 0; k < h.items.size(); ++k)
    if (mse_ || h.weights[k] > 0.0f) hist.push_back(h.items[k]), hw.push_back(h.weights[k]);

  Floats text(ld_, 0.0f), x(ld_, 0.0f), p(ld_), acc(ld_, kAdagradInit);
  user_text_part(profile_feat.empty() ? nullptr : profile_feat.data(), hist, text.data());
  float bias = 0.0f, bias_acc = kAdagradInit;
  // The id part: a few passes of the training loss over the history, items fixed.
  if (!hist.empty()) {
    const uint64_t hh =
        fnv1a64(hist.data(), hist.size() * sizeof(uint32_t), fnv1a64(hw.data(), hw.size() * sizeof(float)));
    Rng rng(seed_used_, kFoldInStream ^ hh);
    const Loss loss = hybrid::parse_loss(loss_);
    const float lr = float(lr_), reg = float(reg_), margin = float(margin_);
    Floats g(ld_);
    for (size_t k = 0; k < f_; ++k) x[k] = float(init_) * rng.normal();
    for (int e = 0; e < foldin_epochs_; ++e) {
      for (size_t s = 0; s < hist.size(); ++s) {
        const size_t k = rng.below(hist.size());
        const uint32_t i = hist[k];
        for (size_t c = 0; c < ld_; ++c) p[c] = x[c] + text[c];
        p[f_] = 1.0f;
        const float si = hybrid::dot(p.data(), items_.row(i), ld_);
        double gi = 0, gj = 0;
        uint32_t j = hybrid::kNone;
        if (loss == Loss::Mse) {
          const hybrid::PairTerm t = hybrid::pair_term(loss, si + bias + mu_, 0, hw[k], 1.0, margin);
          gi = t.gi;
        } else {
          j = draw_negative(rng, loss, p.data(), i, si, hist, gi, gj);
          if (j == hybrid::kNone) continue;
        }
        for (size_t c = 0; c < f_; ++c)
          g[c] = float(gi) * items_.row(i)[c] + (j != hybrid::kNone ? float(gj) * items_.row(j)[c] : 0.0f);
        adagrad(x.data(), acc.data(), g.data(), reg, lr, f_);
        if (mse_) {
          const float gb = float(gi);
          adagrad(&bias, &bias_acc, &gb, reg, lr, 1);
        }
      }
    }
  }
  for (size_t c = 0; c < ld_; ++c) out[c] = x[c] + text[c];
  out[f_] = 1.0f;
  return mse_ ? bias + mu_ : 0.0f;
}

uint32_t HybridModel::add_item(std::span<const float> text_vector, uint16_t domain) {
  check(fitted_, "hybrid add_item: the model is not fitted (call fit or load first)");
  if (dt_ == 0)
    throw Error(
        "hybrid cannot add items without retraining: it was fitted without item text (give the fit "
        "item text vectors and text=true)");
  check(text_vector.size() == tf_.input_dim(),
        "hybrid add_item: the text vector has " + std::to_string(text_vector.size()) +
            " values but the model's text has " + std::to_string(tf_.input_dim()));
  check(all_finite(text_vector.data(), text_vector.size()),
        "hybrid add_item: the text vector has a non-finite value");
  bool any = false;
  for (float v : text_vector) any = any || v != 0.0f;
  check(any, "hybrid add_item: the text vector is all zeros (an item known only by text needs its text)");
  append_item(text_vector.data(), domain, false);
  return uint32_t(items_.rows - 1);
}

void HybridModel::append_item(const float* raw, uint16_t domain, bool id) {
  const uint32_t i = uint32_t(items_.rows);
  items_.append_row();
  float* q = items_.row(i);
  if (id) {
    Rng rng(seed_used_, kItemInitStream + i);
    for (size_t k = 0; k < f_; ++k) q[k] = float(init_) * rng.normal();
  }
  if (dt_) {
    std::vector<float> t(dt_, 0.0f);
    if (raw) tf_.transform_row(raw, t.data());
    for (size_t k = 0; k <= f_; ++k) q[k] += hybrid::dot(W_.data() + k * dt_, t.data(), dt_);
    item_feat_.insert(item_feat_.end(), t.begin(), t.end());
  }
  item_domain_.push_back(domain);
  item_warm_.push_back(0);
}

// Incremental update. The saved model keeps the composed vectors (id + projected text), not the id tables
// and the optimiser's state, so the update trains the composed vectors with the projections fixed:
//  - new items enter through their text (W t, as add_item does) plus, when they have interactions, an id
//    embedding drawn as a fit draws it; items with interactions become negatives' candidates;
//  - the touched and new users are folded in (their profile when the fit used profiles and the context gives
//    user text, their history's text, and the id part fitted against the items);
//  - `sweeps` epochs of the model's loss (warp or bpr: same lr, reg, margin, negatives) over the touched and
//    new users' entries plus as many replayed entries of the others (FactorModel::resume_entries), updating
//    users and items by Adagrad from fresh sums, on one thread in a seeded order (any thread count gives the
//    same model). loss=mse has no incremental path (false).
bool HybridModel::resume(const Csr& user_items, std::span<const uint32_t> touched_users,
                         const FitContext& ctx, int sweeps) {
  check_resume(user_items, touched_users);
  check(sweeps >= 0, "hybrid resume: sweeps must be >= 0");
  if (mse_) return false;
  const uint32_t nu = user_items.n_rows, ni = user_items.n_cols, old_users = n_users(), old_items = n_items();
  const Matrix* it = ctx.item_text;
  if (dt_ && ni > old_items) {
    check(it && it->rows == ni && it->cols == tf_.input_dim(),
          "hybrid resume: the model reads new items through their text: give the text vectors of all " +
              std::to_string(ni) + " items (" + std::to_string(tf_.input_dim()) + "-d, from " + encoder_ +
              ")");
    check(all_finite(it->row(old_items), size_t(ni - old_items) * it->cols),
          "hybrid resume: item_text has a non-finite value");
  }
  check(ctx.item_domain.empty() || ctx.item_domain.size() == ni,
        "hybrid resume: item_domain has " + std::to_string(ctx.item_domain.size()) + " entries for " +
            std::to_string(ni) + " items");
  const Matrix* ut =
      profile_on_ && ctx.user_text && ctx.user_text->rows == nu && ctx.user_text->cols == tf_.input_dim()
          ? ctx.user_text
          : nullptr;
  std::vector<uint8_t> has_pos(ni, 0);
  for (size_t p = 0; p < user_items.nnz(); ++p)
    if (user_items.values[p] > 0.0f) has_pos[user_items.indices[p]] = 1;
  for (uint32_t i = old_items; i < ni; ++i)
    append_item(dt_ ? it->row(i) : nullptr, ctx.item_domain.empty() ? 0 : ctx.item_domain[i], has_pos[i]);
  for (uint32_t i = 0; i < ni; ++i) item_warm_[i] = item_warm_[i] || has_pos[i];
  build_candidates();
  while (users_.rows < nu) users_.append_row();
  user_offset_.resize(nu, 0.0f);

  const std::vector<uint32_t> users = resume_users(touched_users, old_users, nu);
  std::vector<float> profile_feat;
  Floats row(ld_);
  for (uint32_t u : users) {
    const model_util::History h = model_util::make_history(
        user_items.row_indices(u), {user_items.values.data() + user_items.indptr[u], user_items.row_size(u)},
        ni, false, name());
    profile_feat.clear();
    if (ut) {
      profile_feat.resize(dt_);
      tf_.transform_row(ut->row(u), profile_feat.data());
    }
    std::fill(row.begin(), row.end(), 0.0f);
    fold_offset_ = solve_profile(profile_feat, h, row.data());
    commit_user(u, row.data());
  }

  // Epochs over the new and replayed entries (user << 32 | position).
  std::vector<uint64_t> entries;
  for (uint64_t p : resume_entries(user_items, users, seed_used_, kResumeStream)) {
    const uint32_t u = uint32_t(std::upper_bound(user_items.indptr.begin(), user_items.indptr.end(), p) -
                                user_items.indptr.begin() - 1);
    entries.push_back((uint64_t(u) << 32) | p);
  }
  const Loss loss = hybrid::parse_loss(loss_);
  const float lr = float(lr_), reg = float(reg_);
  Floats acc_u(users_.data.size(), kAdagradInit), acc_i(items_.data.size(), kAdagradInit);
  Floats gx(ld_, 0.0f), gi_row(ld_, 0.0f), gj_row(ld_, 0.0f);
  curve_.clear();
  for (int e = 0; e < sweeps && !entries.empty(); ++e) {
    Rng rng(seed_used_, kResumeStream + 1 + uint64_t(e));
    for (size_t k = entries.size(); k > 1; --k) std::swap(entries[k - 1], entries[rng.below(k)]);
    double epoch_loss = 0;
    for (uint64_t en : entries) {
      const uint32_t u = uint32_t(en >> 32), i = user_items.indices[uint32_t(en)];
      float* x = users_.row(u);
      float* yi = items_.row(i);
      const float si = hybrid::dot(x, yi, ld_);
      double gi = 0, gj = 0;
      const uint32_t j = draw_negative(rng, loss, x, i, si, user_items.row_indices(u), gi, gj);
      if (j == hybrid::kNone) continue;
      float* yj = items_.row(j);
      epoch_loss += hybrid::pair_term(loss, si, hybrid::dot(x, yj, ld_), 0, 1.0, margin_).loss;
      for (size_t c = 0; c < f_; ++c) {
        gx[c] = float(gi) * yi[c] + float(gj) * yj[c];
        gi_row[c] = float(gi) * x[c];
        gj_row[c] = float(gj) * x[c];
      }
      gi_row[f_] = float(gi);  // the item bias (the user's slot f is the constant 1)
      gj_row[f_] = float(gj);
      adagrad(x, acc_u.data() + size_t(u) * ld_, gx.data(), reg, lr, f_);
      adagrad(yi, acc_i.data() + size_t(i) * ld_, gi_row.data(), reg, lr, f_ + 1);
      adagrad(yj, acc_i.data() + size_t(j) * ld_, gj_row.data(), reg, lr, f_ + 1);
    }
    curve_.push_back(epoch_loss / double(entries.size()));
    if (ctx.progress) ctx.progress(size_t(e) + 1, size_t(sweeps), "hybrid resume epochs");
  }
  return true;
}

void HybridModel::save(TensorMap& tensors, nlohmann::json& extra) const {
  check(fitted_, "hybrid save: the model is not fitted");
  save_factors(tensors, "user_vectors", "item_vectors");
  tensors["user_offset"] = Tensor::from_f32({int64_t(user_offset_.size())}, user_offset_.data());
  std::vector<uint32_t> dom(item_domain_.begin(), item_domain_.end()),
      warm(item_warm_.begin(), item_warm_.end());
  tensors["item_domain"] = Tensor::from_u32({int64_t(dom.size())}, dom.data());
  tensors["item_warm"] = Tensor::from_u32({int64_t(warm.size())}, warm.data());
  if (dt_) {
    tensors["item_text_features"] = Tensor::from_f32({int64_t(items_.rows), int64_t(dt_)}, item_feat_.data());
    tensors["text_projection"] = Tensor::from_f32({int64_t(f_ + 1), int64_t(dt_)}, W_.data());
    if (hist_on_) tensors["history_projection"] = Tensor::from_f32({int64_t(f_), int64_t(dt_)}, H_.data());
    if (profile_on_) tensors["profile_projection"] = Tensor::from_f32({int64_t(f_), int64_t(dt_)}, P_.data());
    tf_.save(tensors, "text_features.");
  }
  extra["factors"] = factors_;
  extra["seed"] = seed_used_;
  extra["text_dim"] = dt_;
  extra["text_input_dim"] = dt_ ? tf_.input_dim() : 0;
  extra["history"] = hist_on_;
  extra["profile"] = profile_on_;
  extra["mu"] = mu_;
  extra["text_encoder"] = encoder_;
  if (!privacy_.is_null()) extra["privacy"] = privacy_;
}

void HybridModel::load(const TensorMap& tensors, const nlohmann::json& extra) {
  auto get = [&](const char* key) {
    check(extra.contains(key), std::string("hybrid load: the model file lacks '") + key + "'");
    return extra[key];
  };
  const size_t f = size_t(factors_);
  FactorTensors factors = read_factors(tensors, "user_vectors", "item_vectors", f + 1,
                                       "factors=" + std::to_string(f) + " plus the bias column");
  const Matrix& u = factors.users;
  const Matrix& v = factors.items;
  std::vector<float> off = get_tensor(tensors, "user_offset").to_f32("user_offset");
  std::vector<uint32_t> dom = get_tensor(tensors, "item_domain").to_u32("item_domain");
  std::vector<uint32_t> warm = get_tensor(tensors, "item_warm").to_u32("item_warm");
  check(off.size() == u.rows, "hybrid load: user_offset has " + std::to_string(off.size()) + " entries for " +
                                  std::to_string(u.rows) + " users");
  check(dom.size() == v.rows && warm.size() == v.rows,
        "hybrid load: item_domain / item_warm have " + std::to_string(dom.size()) + " / " +
            std::to_string(warm.size()) + " entries for " + std::to_string(v.rows) + " items");
  for (uint32_t d : dom) check(d <= UINT16_MAX, "hybrid load: item_domain has an out-of-range value");
  const size_t dt = get("text_dim").get<size_t>();
  const bool hist = get("history").get<bool>(), profile = get("profile").get<bool>();
  std::vector<float> feat;
  Floats W, H, P;
  models::TextFeatures tf;
  if (dt) {
    const Tensor& ft = get_tensor(tensors, "item_text_features");
    check(ft.shape.size() == 2 && size_t(ft.shape[0]) == v.rows && size_t(ft.shape[1]) == dt,
          "hybrid load: item_text_features is not " + std::to_string(v.rows) + " x " + std::to_string(dt));
    feat = ft.to_f32("item_text_features");
    auto proj = [&](const char* name, size_t rows, Floats& dst, size_t ld_rows) {
      const Tensor& t = get_tensor(tensors, name);
      check(t.shape.size() == 2 && size_t(t.shape[0]) == rows && size_t(t.shape[1]) == dt,
            std::string("hybrid load: ") + name + " is not " + std::to_string(rows) + " x " +
                std::to_string(dt));
      std::vector<float> x = t.to_f32(name);
      dst.assign(ld_rows * dt, 0.0f);
      std::copy(x.begin(), x.end(), dst.begin());
    };
    proj("text_projection", f + 1, W, hybrid::pad8(f + 1));
    if (hist) proj("history_projection", f, H, hybrid::pad8(f));
    if (profile) proj("profile_projection", f, P, hybrid::pad8(f));
    tf.load(tensors, "text_features.");
    check(tf.dim() == dt && tf.input_dim() == get("text_input_dim").get<size_t>(),
          "hybrid load: the text features give " + std::to_string(tf.dim()) + "-d output from " +
              std::to_string(tf.input_dim()) + "-d input, which does not match the model");
  }
  set_factors(std::move(factors));
  user_offset_ = std::move(off);
  item_domain_.assign(dom.begin(), dom.end());
  item_warm_.assign(warm.begin(), warm.end());
  item_feat_ = std::move(feat);
  W_ = std::move(W);
  H_ = std::move(H);
  P_ = std::move(P);
  tf_ = std::move(tf);
  f_ = f;
  ld_ = hybrid::pad8(f + 1);
  lf_ = hybrid::pad8(f);
  dt_ = dt;
  hist_on_ = hist && dt;
  profile_on_ = profile && dt;
  mse_ = loss_ == "mse";
  mu_ = get("mu").get<float>();
  seed_used_ = get("seed").get<uint64_t>();
  encoder_ = get("text_encoder").get<std::string>();
  privacy_ = extra.contains("privacy") ? extra.at("privacy") : nlohmann::json();
  build_candidates();
  fitted_ = true;
}

XDREC_REGISTER_MODEL(hybrid,
                     "hybrid factorisation: id embeddings + projected text (item text, profile, history) and "
                     "categories; WARP/BPR/squared error; id dropout for cold start",
                     HybridModel,
                     {.uses_text = true,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = true,
                      .profile = true,
                      .distributed = true});

}  // namespace xdrec
