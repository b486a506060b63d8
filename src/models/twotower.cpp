// Two-tower neural recommender. The user tower is an MLP over [user id embedding, profile text code, pooled
// text code of the user's history]; the item tower an MLP over [item id embedding, item text code]. The text
// codes come from the shared TextFeatures pipeline (centred, optionally autoencoded, unit length) and stay
// fixed while the towers train. Two ways to merge the towers:
//   merge=dot  score = <u, i>                      (fast retrieval: the towers are computed once)
//   merge=mlp  score = MLP([u, i]) (+ <u, i> with dot_skip) ending in a sigmoid in the loss
// Training: binary cross-entropy on each observed pair against `negatives` sampled items (loss=bce), or
// squared error on the observed values (loss=mse), Adam on minibatches. Id dropout zeroes the id embedding
// of a user or item in a training pass with the given probability, so the text path learns to stand alone:
// an item added later from its text only (add_item) or a user known only by a profile (fold_in_profile) has
// a zero id part, as have users and items without training interactions. With both profile and history
// inputs, text dropout zeroes each of them at random in training, so either alone serves. fold_in and
// fold_in_profile with a history (in any domain) fit the user's id embedding to that history with the
// towers fixed (a few Adam steps on the training loss against a seeded sample of other items), and pool the
// history's text codes; a profile given without a profile input is pooled with the history. With text_skip,
// a learned multiple of <user text codes, item text code> is added to the score.
//
// Defaults (epochs=10, text_skip off) come from MovieLens latest-small cold items with use-lite vectors,
// NDCG@10 among the cold items: centred text cosine 0.182, twotower without autoencoder 0.159-0.164, with
// ae=64 0.24-0.27 (CI +-0.017). The autoencoder is off by default (ae=0, as in every text model); ae=64 is
// the setting to try with 512-d sentence-encoder text. ae must be below the text dimension (Error otherwise).
//
// DP-SGD (dp=true, or dp_noise > 0, or dp_epsilon > 0): user-level differential privacy for the shared
// parameters (both towers, the merge MLP, the text weight) and the item id embeddings. Each step samples
// every user independently with rate q = dp_users / n_users (Poisson sampling); a sampled user's whole
// gradient (the mean loss over all their positives and sampled negatives) is computed alone, clipped to L2
// norm dp_clip over every released parameter it touches, and the clipped gradients are summed; Gaussian noise
// of standard deviation dp_noise * dp_clip is added to every released coordinate (every item embedding row
// too, touched or not), the sum is divided by the expected batch size q * n_users, and Adam steps. Training
// runs ceil(epochs / q) steps. The user's own id embedding is not released: it gets that user's own unclipped
// gradient, as in federated training where it stays with the user, and after training it is fitted again to
// the user's own history with everything else fixed (as fold_in does); it is a function of the user's own
// data and the private parameters only (joint DP), and a user's row in the saved model (like their history
// text code) reveals that user's own data. With dp_epsilon > 0 the noise is the smallest that reaches that
// ε at dp_delta (the accountant's inverse) for this q and step count.
// The ε reached (RDP accountant, classic conversion, orders 2..256) is stored under "privacy" in the
// model's manifest. Under DP the text space is fitted on item text only (never on user profiles), item
// embeddings of items without training interactions are kept (zeroing them would tell which items had
// none), and loss=rating is refused (its range comes from the data).
//
// Every minibatch is computed in fixed chunks of rows whose gradients are added in a fixed order, and every
// random draw comes from a stream named by the batch or chunk, so training is bitwise independent of the
// thread count. Scores of a user are computed one user at a time in a fixed order.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <utility>

#include "models/dp_training.h"
#include "models/factor_model.h"
#include "models/model_util.h"
#include "models/text_features.h"
#include "xdrec/nn.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

using nn::MatF;

constexpr size_t kChunkRows = 64;
constexpr size_t kParallelWork = size_t(1) << 22;  // multiply-adds below which a pass runs on one thread
constexpr uint64_t kInitStream = 0;
constexpr uint64_t kShuffleStream = uint64_t(1) << 20;
constexpr uint64_t kBatchStream = uint64_t(1) << 32;
constexpr uint64_t kChunkStream = uint64_t(1) << 48;
constexpr uint64_t kFoldStream = uint64_t(3) << 56;
constexpr uint64_t kDpSampleStream = uint64_t(4) << 56;    // + step: which users a DP step samples
constexpr uint64_t kDpNoiseStream = uint64_t(5) << 56;     // + step: the step's Gaussian noise
constexpr uint64_t kDpUserStream = uint64_t(6) << 56;      // + step * n_users + user: a user's negatives
constexpr uint64_t kDpBatchBase = uint64_t(1) << 36;       // batch ids of DP users (dropout streams)
constexpr uint64_t kResumeStream = uint64_t(7) << 56;      // the replayed entries; + 1 + epoch: the shuffles
constexpr uint64_t kResumeInitStream = uint64_t(8) << 56;  // + row (users), + 2^40 + row (items): new rows
constexpr uint64_t kResumeBatchBase = uint64_t(1) << 34;   // batch ids of a resume's epochs
constexpr int kFoldSteps = 60;
constexpr double kFoldLr = 0.05;
constexpr float kFoldReg = 1e-3f;

void normalize(float* x, size_t d) {
  double s = 0;
  for (size_t j = 0; j < d; ++j) s += double(x[j]) * double(x[j]);
  if (s <= 0) return;
  const float inv = float(1.0 / std::sqrt(s));
  for (size_t j = 0; j < d; ++j) x[j] *= inv;
}

// An Mlp run over a batch in fixed chunks of rows. The chunks of several passes run in one parallel loop
// (run_chunks), and the chunks' parameter gradients are added in chunk order, so the result does not depend
// on the thread count.
class ChunkedMlp {
 public:
  // Copies x into chunks for a training pass; dropout masks come from stream (base + chunk) of `seed`.
  void setup(const nn::Mlp<float>& mlp, const MatF& x, uint64_t seed, uint64_t base, bool dropout) {
    mlp_ = &mlp;
    n_ = x.rows;
    nc_ = (n_ + kChunkRows - 1) / kChunkRows;
    seed_ = seed;
    base_ = base;
    dropout_ = dropout;
    if (xs_.size() < nc_) {
      xs_.resize(nc_);
      caches_.resize(nc_);
      grads_.resize(nc_);
      dxs_.resize(nc_);
      dys_.resize(nc_);
    }
    for (size_t c = 0; c < nc_; ++c) {
      const size_t r0 = c * kChunkRows, r1 = std::min(n_, r0 + kChunkRows);
      xs_[c].reshape(r1 - r0, x.cols);
      std::copy(x.row(r0), x.row(r0) + (r1 - r0) * x.cols, xs_[c].data.begin());
    }
  }
  size_t chunks() const { return nc_; }
  // Multiply-adds of a forward pass (the backward pass costs about twice as much).
  size_t work() const { return n_ * mlp_->n_weights(); }
  void forward_chunk(size_t c) {
    Rng rng(seed_, base_ + c);
    mlp_->forward(xs_[c], caches_[c], dropout_ ? &rng : nullptr);
  }
  void output(MatF& y) const {
    y.reshape(n_, mlp_->out_dim());
    for (size_t c = 0; c < nc_; ++c) {
      const MatF& out = caches_[c].output();
      std::copy(out.data.begin(), out.data.end(), y.row(c * kChunkRows));
    }
  }
  // dy: gradient of the loss with respect to the output. dx_cols: how many leading input columns need a
  // gradient (0: none).
  void setup_backward(const MatF& dy, size_t dx_cols) {
    dx_cols_ = dx_cols;
    for (size_t c = 0; c < nc_; ++c) {
      const size_t r0 = c * kChunkRows, r1 = std::min(n_, r0 + kChunkRows);
      dys_[c].reshape(r1 - r0, dy.cols);
      std::copy(dy.row(r0), dy.row(r0) + (r1 - r0) * dy.cols, dys_[c].data.begin());
      if (grads_[c].size() != 2 * mlp_->n_layers()) grads_[c] = mlp_->make_grads();
    }
  }
  void backward_chunk(size_t c) {
    for (auto& g : grads_[c]) g.zero();
    mlp_->backward(xs_[c], caches_[c], dys_[c], grads_[c], dx_cols_ > 0 ? &dxs_[c] : nullptr, dx_cols_);
  }
  // Adds the parameter gradients to `total` in chunk order and gathers dL/dx (rows x dx_cols).
  void reduce(std::vector<MatF>& total, MatF* dx) const {
    for (size_t c = 0; c < nc_; ++c)
      for (size_t k = 0; k < total.size(); ++k) nn::add_into(total[k], grads_[c][k]);
    if (dx && dx_cols_ > 0) {
      dx->reshape(n_, dx_cols_);
      for (size_t c = 0; c < nc_; ++c)
        std::copy(dxs_[c].data.begin(), dxs_[c].data.end(), dx->row(c * kChunkRows));
    }
  }

 private:
  const nn::Mlp<float>* mlp_ = nullptr;
  size_t n_ = 0, nc_ = 0, dx_cols_ = 0;
  uint64_t seed_ = 0, base_ = 0;
  bool dropout_ = false;
  std::vector<MatF> xs_, dxs_, dys_;
  std::vector<nn::Mlp<float>::Cache> caches_;
  std::vector<std::vector<MatF>> grads_;
};

// Runs the forward (or backward) chunks of several passes as one parallel step. Small batches run on the
// calling thread: waking the workers would cost more than the work (the result is the same either way).
void run_chunks(std::initializer_list<ChunkedMlp*> passes, bool backward, nn::TaskPool* pool) {
  std::vector<std::pair<ChunkedMlp*, size_t>> tasks;
  size_t work = 0;
  for (auto* p : passes) {
    for (size_t c = 0; c < p->chunks(); ++c) tasks.emplace_back(p, c);
    work += p->work();
  }
  const std::function<void(size_t)> one = [&](size_t t) {
    if (backward) {
      tasks[t].first->backward_chunk(tasks[t].second);
    } else {
      tasks[t].first->forward_chunk(tasks[t].second);
    }
  };
  if (pool && work >= kParallelWork) {
    pool->run(tasks.size(), one);
  } else {
    for (size_t t = 0; t < tasks.size(); ++t) one(t);
  }
}

// Sorted distinct values and, for each input, the index of its value among them.
void distinct(const std::vector<uint32_t>& v, std::vector<uint32_t>& uniq, std::vector<uint32_t>& slot) {
  uniq = v;
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  slot.resize(v.size());
  for (size_t k = 0; k < v.size(); ++k)
    slot[k] = uint32_t(std::lower_bound(uniq.begin(), uniq.end(), v[k]) - uniq.begin());
}

}  // namespace

class TwoTowerModel final : public Recommender {
 public:
  explicit TwoTowerModel(const Spec& spec) : params_("twotower") {
    params_.add("factors", &factors_, 32, 1, 1024, "width of the id embeddings and of both towers' outputs")
        .add("hidden", &hidden_, 64, 1, 8192, "width of the towers' hidden layers")
        .add("layers", &layers_, 1, 0, 8, "hidden layers per tower (0: one linear map)")
        .add("merge_hidden", &merge_hidden_, 32, 1, 4096, "hidden width of the merge MLP (merge=mlp)")
        .add("merge", &merge_, "dot", {"dot", "mlp"},
             "how the towers meet: dot product (fast retrieval) or an MLP over their concatenation")
        .add("dot_skip", &dot_skip_, true, "merge=mlp: add the towers' dot product to the MLP's logit")
        .add(
            "loss", &loss_, "bce", {"bce", "mse", "rating"},
            "binary cross-entropy against sampled negatives, squared error on the observed values, or rating "
            "prediction: squared error of lo + (hi - lo) * sigmoid(score), [lo, hi] the training ratings' "
            "range")
        .add("epochs", &epochs_, 10, 0, 100000, "passes over the observed interactions")
        .add("batch", &batch_, 128, 1, 1 << 20, "observed interactions per minibatch")
        .add("lr", &lr_, 5e-3, 1e-7, 10.0, "Adam learning rate")
        .add("weight_decay", &weight_decay_, 0.0, 0.0, 1.0, "decoupled weight decay of every parameter")
        .add("negatives", &negatives_, 4, 0, 1000, "sampled negative items per observed interaction (bce)")
        .add("dropout", &dropout_, 0.1, 0.0, 0.95, "dropout on the towers' hidden layers while training")
        .add("id_dropout", &id_dropout_, 0.25, 0.0, 1.0,
             "probability of zeroing a user's or item's id embedding in a training pass (text stands alone)")
        .add("text_dropout", &text_dropout_, 0.25, 0.0, 1.0,
             "probability of zeroing a user's profile code, and independently their history code, in a "
             "training "
             "pass (so a user with only one of them is served)")
        .add("init", &init_, 0.1, 0.0, 10.0, "standard deviation of the initial id embeddings")
        .add("text_skip", &text_skip_, false,
             "add a learned multiple of the dot product of the user's text codes (profile + history) and the "
             "item's text code to the score")
        .add("use_history_text", &use_history_text_, true,
             "feed the pooled text code of a user's history items to the user tower")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    dp_.declare(params_);
    ae_.declare(params_);
    params_.apply(spec.values);
    ae_.validate("twotower");
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t f = uint64_t(factors_), rows = s.n_users + s.n_items;
    const uint64_t dt = model_util::text_feature_dim(s, ae_.ae);
    ModelCost c;
    // Id embeddings with their Adam moments, text codes of items, profiles and histories, the towers' item
    // outputs for scoring, the prepared interactions and the training order, the text pipeline.
    c.bytes = rows * f * 4 * 3 + (s.n_items + 2 * s.n_users) * dt * 4 + s.n_items * f * 4 +
              model_util::csr_bytes(s.n_users, s.nnz) + s.nnz * 16 +
              model_util::text_pipeline_bytes(s, ae_.ae) + model_util::score_batch_bytes(s);
    c.seconds = 0;
    c.note = "id embeddings with Adam moments and text codes";
    return c;
  }
  std::string name() const override { return "twotower"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return fitted_ ? uint32_t(user_emb_.size()) : 0; }
  uint32_t n_items() const override { return fitted_ ? uint32_t(item_emb_.size()) : 0; }
  bool uses_text() const override { return fitted_ && text_dim_ > 0; }
  std::string text_encoder() const override { return uses_text() ? encoder_ : ""; }
  std::map<std::string, std::vector<double>> training_curves() const override {
    if (curve_.empty()) return {};
    return {{"loss", curve_}};
  }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    curve_.clear();
    const bool implicit = loss_ == "bce";
    const Csr x = model_util::prepare_interactions(user_items, implicit, "twotower");
    check(!dp_active() || loss_ != "rating",
          "twotower: DP-SGD does not go with loss=rating (its rating range comes from the data); use bce or "
          "mse");
    privacy_ = nlohmann::json();
    if (loss_ == "rating") {
      rating_lo_ = x.nnz() ? *std::min_element(x.values.begin(), x.values.end()) : 0.0f;
      rating_hi_ = x.nnz() ? *std::max_element(x.values.begin(), x.values.end()) : 1.0f;
      if (rating_hi_ <= rating_lo_) rating_hi_ = rating_lo_ + 1.0f;
    }
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const uint32_t nu = x.n_rows, ni = x.n_cols;
    check(ni > 0, "twotower: the interaction matrix has no items");
    if (ctx.item_text)
      check(ctx.item_text->rows == ni, "twotower: " + std::to_string(ctx.item_text->rows) +
                                           " item text vectors for " + std::to_string(ni) + " items");
    if (ctx.user_text) {
      check(
          ctx.item_text != nullptr,
          "twotower: user profile text needs item text vectors too (the text space is fitted on the items)");
      check(ctx.user_text->rows == nu, "twotower: " + std::to_string(ctx.user_text->rows) +
                                           " user text vectors for " + std::to_string(nu) + " users");
    }
    fitted_ = false;
    seed_used_ = seed;
    encoder_ = ctx.text_encoder;

    // ---- Text codes ----
    text_ = models::TextFeatures();
    text_dim_ = 0;
    has_profile_ = use_hist_ = false;
    item_code_ = MatF(ni, 0);
    user_prof_ = MatF(nu, 0);
    user_hist_ = MatF(nu, 0);
    if (ctx.item_text && !all_zero(*ctx.item_text)) {
      const models::TextFeatureOptions to = ae_.options("twotower", ctx.item_text->cols);
      // Under DP the text space comes from the item text alone (user profiles are private).
      text_.fit(*ctx.item_text, dp_active() ? nullptr : ctx.user_text, to, seed, threads);
      text_dim_ = text_.dim();
      item_code_ = nn::from_matrix<float>(text_.transform(*ctx.item_text, threads));
      has_profile_ = ctx.user_text != nullptr && !all_zero(*ctx.user_text);
      use_hist_ = use_history_text_;
      if (has_profile_) user_prof_ = nn::from_matrix<float>(text_.transform(*ctx.user_text, threads));
      if (use_hist_) {
        user_hist_.resize(nu, text_dim_);
        parallel_for(nu, threads, 256, [&](size_t lo, size_t hi) {
          for (size_t u = lo; u < hi; ++u)
            pool_history(x.row_indices(uint32_t(u)), nullptr, user_hist_.row(u));
        });
      }
    }

    // ---- Parameters ----
    build_networks();
    Rng init(seed, kInitStream);
    user_emb_.init(nu, size_t(factors_), init, init_);
    item_emb_.init(ni, size_t(factors_), init, init_);
    user_tower_.init(init);
    item_tower_.init(init);
    if (merge_ == "mlp") merge_net_.init(init);

    text_w_ = MatF(1, 1, 1.0f);
    const std::vector<MatF*> dense = dense_params();

    // ---- Training ----
    std::vector<uint32_t> order(x.nnz());
    std::iota(order.begin(), order.end(), 0u);
    if (dp_active())
      train_dp(x, seed, threads, ctx, dense);
    else
      train_epochs(x, order, epochs_, kShuffleStream, 0, threads, ctx, "twotower epochs");
    zero_untrained(x);
    fitted_ = true;
    refresh_item_cache(threads);
    if (dp_active()) refit_user_rows(x, threads);
  }

  // After DP-SGD: each user's id embedding is fitted again to that user's own training history with the
  // (private) towers and item table fixed, as fold_in does, so a user's row is a function of that user's own
  // data and the released parameters only, and is as well fitted as a served user's would be.
  void refit_user_rows(const Csr& x, int threads) {
    const size_t f = size_t(factors_);
    parallel_for(x.n_rows, resolve_threads(threads), 16, [&](size_t lo, size_t hi) {
      std::vector<float> emb;
      for (size_t u = lo; u < hi; ++u) {
        if (x.row_size(uint32_t(u)) == 0) continue;
        const model_util::History hist = model_util::make_history(
            x.row_indices(uint32_t(u)), x.row_values(uint32_t(u)), x.n_cols, loss_ == "bce", "twotower");
        const std::vector<float> prof(user_prof_.row(u), user_prof_.row(u) + user_prof_.cols),
            hcode(user_hist_.row(u), user_hist_.row(u) + user_hist_.cols);
        fit_user_embedding(hist, prof, hcode, emb);
        std::copy(emb.begin(), emb.begin() + long(f), user_emb_.table.row(u));
      }
    });
  }

  // Incremental update. New items get their text code (as add_item) and, when they have interactions, an id
  // embedding drawn as a fit draws it (N(0, init^2), by the stream of the row); new users likewise, with
  // their profile code when the fit used profiles and the context gives user text. The touched and new users'
  // history codes are pooled again and their id embeddings fitted to their histories with the towers fixed
  // (as fold_in does). Then `sweeps` epochs of the fit's minibatch training (same loss, negatives, dropouts,
  // batch, lr, weight_decay) over the touched and new users' entries plus as many replayed entries of the
  // other users (FactorModel::resume_entries), updating the towers and the id embeddings. The saved model
  // keeps no optimiser state: Adam starts from fresh moments. Thread-count independent, as the fit is. A
  // DP-SGD model is refused: an incremental update is not DP-SGD training.
  bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
              int sweeps) override {
    check(fitted_, "twotower resume: the model is not fitted (call fit or load first)");
    check(!dp_active(),
          "twotower resume: the model was trained with DP-SGD and an incremental update is not DP-SGD "
          "training; train it again");
    check(sweeps >= 0, "twotower resume: sweeps must be >= 0");
    const bool implicit = loss_ == "bce";
    const Csr x = model_util::prepare_interactions(user_items, implicit, "twotower resume");
    const uint32_t nu = x.n_rows, ni = x.n_cols, old_users = n_users(), old_items = n_items();
    check(nu >= old_users && ni >= old_items,
          "twotower resume: the data has " + std::to_string(nu) + " users and " + std::to_string(ni) +
              " items, fewer than the model's " + std::to_string(old_users) + " and " +
              std::to_string(old_items));
    models::FactorModel::check_touched(touched_users, nu, "twotower resume");
    const Matrix* it = ctx.item_text;
    if (text_dim_ > 0 && ni > old_items) {
      check(it && it->rows == ni && it->cols == text_.input_dim(),
            "twotower resume: the model reads new items through their text: give the text vectors of all " +
                std::to_string(ni) + " items (" + std::to_string(text_.input_dim()) + "-d, from " + encoder_ +
                ")");
      for (size_t k = size_t(old_items) * it->cols; k < it->data.size(); ++k)
        check(std::isfinite(it->data[k]), "twotower resume: item_text has a non-finite value");
    }
    const Matrix* ut =
        has_profile_ && ctx.user_text && ctx.user_text->rows == nu && ctx.user_text->cols == text_.input_dim()
            ? ctx.user_text
            : nullptr;
    const int threads = resolve_threads(ctx.threads);
    const size_t f = size_t(factors_);

    // ---- Grow the tables ----
    auto grow = [&](MatF& m, size_t rows) {
      m.data.resize(rows * m.cols, 0.0f);
      m.rows = rows;
    };
    auto draw = [&](float* row, uint64_t stream) {
      Rng rng(seed_used_, stream);
      for (size_t k = 0; k < f; ++k) row[k] = float(init_) * rng.normal();
    };
    const Csr xt = x.transpose();
    grow(item_emb_.table, ni);
    grow(item_code_, ni);
    for (uint32_t i = old_items; i < ni; ++i) {
      if (xt.row_size(i) > 0) draw(item_emb_.table.row(i), kResumeInitStream + (uint64_t(1) << 40) + i);
      if (text_dim_ > 0) text_.transform_row(it->row(i), item_code_.row(i));
    }
    grow(user_emb_.table, nu);
    grow(user_prof_, nu);
    grow(user_hist_, nu);
    for (uint32_t u = old_users; u < nu; ++u) {
      if (x.row_size(u) > 0) draw(user_emb_.table.row(u), kResumeInitStream + u);
      if (ut) text_.transform_row(ut->row(u), user_prof_.row(u));
    }
    refresh_item_cache(threads);

    // ---- The touched and new users: history codes, then id embeddings fitted to their histories ----
    const std::vector<uint32_t> users = models::FactorModel::resume_users(touched_users, old_users, nu);
    parallel_for(users.size(), threads, 16, [&](size_t lo, size_t hi) {
      std::vector<float> emb;
      for (size_t k = lo; k < hi; ++k) {
        const uint32_t u = users[k];
        if (use_hist_) pool_history(x.row_indices(u), nullptr, user_hist_.row(u));
        if (x.row_size(u) == 0) continue;
        const model_util::History hist =
            model_util::make_history(x.row_indices(u), x.row_values(u), ni, implicit, "twotower");
        const std::vector<float> prof(user_prof_.row(u), user_prof_.row(u) + user_prof_.cols),
            hcode(user_hist_.row(u), user_hist_.row(u) + user_hist_.cols);
        fit_user_embedding(hist, prof, hcode, emb);
        std::copy(emb.begin(), emb.begin() + long(f), user_emb_.table.row(u));
      }
    });

    // ---- Epochs over the new and replayed entries ----
    std::vector<uint32_t> order;
    for (uint64_t p : models::FactorModel::resume_entries(x, users, seed_used_, kResumeStream))
      order.push_back(uint32_t(p));
    curve_.clear();
    train_epochs(x, std::move(order), sweeps, kResumeStream + 1, kResumeBatchBase, threads, ctx,
                 "twotower resume epochs");
    zero_untrained(x);
    refresh_item_cache(threads);
    return true;
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(fitted_, "twotower: the model is not fitted (call fit or load first)");
    model_util::check_users(users, n_users(), "twotower");
    const size_t ni = item_emb_.size(), f = size_t(factors_);
    if (out.rows != users.size() || out.cols != ni || out.data.size() != users.size() * ni)
      out.resize(users.size(), ni);
    if (users.empty() || ni == 0) return;
    const bool mlp = merge_ == "mlp";
    const size_t h = mlp ? size_t(merge_hidden_) : 0;
    parallel_for(users.size(), resolve_threads(threads), 16, [&](size_t lo, size_t hi) {
      std::vector<float> in(user_in_dim()), uo(f), a(h), q(text_dim_);
      for (size_t r = lo; r < hi; ++r) {
        user_input(users[r], in.data());
        user_tower_.predict_row(in.data(), uo.data());
        float* o = out.row(r);
        std::fill(o, o + ni, 0.0f);
        if (text_skip_active()) {
          text_query(in.data(), q.data());
          const float w = text_w_.data[0];
          for (size_t j = 0; j < text_dim_; ++j) {
            const float qj = w * q[j];
            if (qj == 0.0f) continue;
            const float* __restrict col = item_code_t_.row(j);
            for (size_t i = 0; i < ni; ++i) o[i] += qj * col[i];
          }
        }
        if (!mlp || dot_skip_) {
          for (size_t k = 0; k < f; ++k) {
            const float w = uo[k];
            const float* __restrict col = item_out_t_.row(k);
            for (size_t i = 0; i < ni; ++i) o[i] += w * col[i];
          }
        }
        if (mlp) {
          // First merge layer split into its user and item halves: h = relu(u Wu + b1 + i Wi).
          const auto& l1 = merge_net_.layer(0);
          const auto& l2 = merge_net_.layer(1);
          std::copy(l1.b.data.begin(), l1.b.data.end(), a.begin());
          for (size_t k = 0; k < f; ++k)
            for (size_t j = 0; j < h; ++j) a[j] += uo[k] * l1.w(k, j);
          const float b2 = l2.b.data[0];
          for (size_t i = 0; i < ni; ++i) o[i] += b2;
          for (size_t j = 0; j < h; ++j) {
            const float aj = a[j], wj = l2.w(j, 0);
            const float* __restrict col = item_proj_t_.row(j);
            for (size_t i = 0; i < ni; ++i) o[i] += wj * std::max(0.0f, aj + col[i]);
          }
        }
        if (loss_ == "rating")
          for (size_t i = 0; i < ni; ++i)
            o[i] = rating_lo_ + (rating_hi_ - rating_lo_) / (1.0f + std::exp(-o[i]));
      }
    });
  }

  bool predicts_ratings() const override { return loss_ == "rating"; }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    return fold_in_profile(user, {}, items, weights);
  }

  uint32_t fold_in_profile(uint32_t user, std::span<const float> profile, std::span<const uint32_t> items,
                           std::span<const float> weights) override {
    check(fitted_, "twotower fold_in: the model is not fitted (call fit or load first)");
    check(user <= n_users(), "twotower fold_in: user index " + std::to_string(user) +
                                 " is beyond the next new user (" + std::to_string(n_users()) + ")");
    const model_util::History hist =
        model_util::make_history(items, weights, n_items(), loss_ == "bce", "twotower");
    std::vector<float> prof_code(has_profile_ ? text_dim_ : 0, 0.0f),
        hist_code(use_hist_ ? text_dim_ : 0, 0.0f);
    std::vector<float> pcode;
    if (!profile.empty()) {
      check(text_dim_ > 0, "twotower does not use profile text (it was fitted without text)");
      check(profile.size() == text_.input_dim(),
            "twotower fold_in: the profile vector has " + std::to_string(profile.size()) +
                " dimensions but the model's text vectors have " + std::to_string(text_.input_dim()));
      for (size_t j = 0; j < profile.size(); ++j)
        check(std::isfinite(profile[j]), "twotower fold_in: the profile vector has a non-finite value");
      check(has_profile_ || use_hist_,
            "twotower does not use profile text (fitted without profiles and with use_history_text=false)");
      pcode.resize(text_dim_);
      text_.transform_row(profile.data(), pcode.data());
      if (has_profile_) prof_code = pcode;
    }
    if (use_hist_) {
      // Without a profile input, the profile counts as one more history text in the pooled code.
      pool_history(hist.items, has_profile_ || pcode.empty() ? nullptr : pcode.data(), hist_code.data());
    }
    std::vector<float> emb(size_t(factors_), 0.0f);
    if (!hist.items.empty()) fit_user_embedding(hist, prof_code, hist_code, emb);
    // Commit (nothing above changed the model).
    auto put = [&](MatF& m, const std::vector<float>& row) {
      if (user == m.rows) {
        m.data.insert(m.data.end(), row.begin(), row.end());
        ++m.rows;
      } else {
        std::copy(row.begin(), row.end(), m.row(user));
      }
    };
    put(user_emb_.table, emb);
    if (has_profile_) put(user_prof_, prof_code);
    if (use_hist_) put(user_hist_, hist_code);
    if (!has_profile_ && user == user_prof_.rows) ++user_prof_.rows;  // zero-width rows keep the count
    if (!use_hist_ && user == user_hist_.rows) ++user_hist_.rows;
    return user;
  }

  uint32_t add_item(std::span<const float> text_vector, uint16_t) override {
    check(fitted_, "twotower add_item: the model is not fitted (call fit or load first)");
    check(text_dim_ > 0, "twotower cannot add items without retraining: it was fitted without text");
    check(text_vector.size() == text_.input_dim(),
          "twotower add_item: the text vector has " + std::to_string(text_vector.size()) +
              " dimensions but the model's text vectors have " + std::to_string(text_.input_dim()));
    for (float v : text_vector)
      check(std::isfinite(v), "twotower add_item: the text vector has a non-finite value");
    std::vector<float> code(text_dim_);
    text_.transform_row(text_vector.data(), code.data());
    const uint32_t idx = n_items();
    item_emb_.table.data.resize(item_emb_.table.data.size() + size_t(factors_), 0.0f);
    ++item_emb_.table.rows;
    item_code_.data.insert(item_code_.data.end(), code.begin(), code.end());
    ++item_code_.rows;
    refresh_item_cache(1);
    return idx;
  }

  std::vector<std::string> compressible_tensors() const override {
    return {"user_embedding", "item_embedding"};
  }
  // Embedding tables, tower / merge weights and the text autoencoder's weights (not the stored text codes).
  bool prunable_tensor(const std::string& name) const override {
    return name == "user_embedding" || name == "item_embedding" || name.starts_with("user_tower.w") ||
           name.starts_with("item_tower.w") || name.starts_with("merge.w") || name.starts_with("text.ae.");
  }
  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    check(fitted_, "twotower: cannot save an unfitted model");
    tensors["user_embedding"] = Tensor::from_matrix(nn::to_matrix(user_emb_.table));
    tensors["item_embedding"] = Tensor::from_matrix(nn::to_matrix(item_emb_.table));
    user_tower_.save(tensors, "user_tower.");
    item_tower_.save(tensors, "item_tower.");
    if (merge_ == "mlp") merge_net_.save(tensors, "merge.");
    if (text_dim_ > 0) {
      text_.save(tensors, "text.");
      tensors["item_text_code"] = Tensor::from_matrix(nn::to_matrix(item_code_));
      if (has_profile_) tensors["user_profile_code"] = Tensor::from_matrix(nn::to_matrix(user_prof_));
      if (use_hist_) tensors["user_history_code"] = Tensor::from_matrix(nn::to_matrix(user_hist_));
      if (text_skip_active()) tensors["text_skip_weight"] = Tensor::from_f32({1}, text_w_.data.data());
    }
    extra["n_users"] = n_users();
    extra["n_items"] = n_items();
    extra["text_dim"] = text_dim_;
    extra["profile_text"] = has_profile_;
    extra["history_text"] = use_hist_;
    extra["seed"] = seed_used_;
    extra["text_encoder"] = encoder_;
    if (loss_ == "rating") extra["rating_range"] = {rating_lo_, rating_hi_};
    if (!privacy_.is_null()) extra["privacy"] = privacy_;
  }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    auto need = [&](const char* key) -> const nlohmann::json& {
      check(extra.is_object() && extra.contains(key),
            std::string("twotower load: the manifest lacks '") + key + "'");
      return extra.at(key);
    };
    TwoTowerModel m(Spec::parse(spec()));
    size_t nu = 0, ni = 0;
    try {
      nu = need("n_users").get<size_t>();
      ni = need("n_items").get<size_t>();
      m.text_dim_ = need("text_dim").get<size_t>();
      m.has_profile_ = need("profile_text").get<bool>();
      m.use_hist_ = need("history_text").get<bool>();
      m.seed_used_ = need("seed").get<uint64_t>();
      m.encoder_ = need("text_encoder").get<std::string>();
      if (extra.contains("privacy")) m.privacy_ = extra.at("privacy");
      if (loss_ == "rating") {
        const auto r = need("rating_range").get<std::vector<float>>();
        check(r.size() == 2, "twotower load: rating_range needs two numbers");
        m.rating_lo_ = r[0], m.rating_hi_ = r[1];
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("twotower load: malformed manifest entry: ") + e.what());
    }
    const size_t f = size_t(factors_);
    auto matrix = [&](const std::string& name, size_t rows, size_t cols) {
      Matrix a = get_tensor(tensors, name).to_matrix(name);
      check(a.rows == rows && a.cols == cols, "twotower load: " + name + " is " + std::to_string(a.rows) +
                                                  "x" + std::to_string(a.cols) + ", expected " +
                                                  std::to_string(rows) + "x" + std::to_string(cols));
      return nn::from_matrix<float>(a);
    };
    m.user_emb_.table = matrix("user_embedding", nu, f);
    m.item_emb_.table = matrix("item_embedding", ni, f);
    m.item_code_ = MatF(ni, 0);
    m.user_prof_ = MatF(nu, 0);
    m.user_hist_ = MatF(nu, 0);
    if (m.text_dim_ > 0) {
      m.text_.load(tensors, "text.");
      check(m.text_.dim() == m.text_dim_,
            "twotower load: the text features give " + std::to_string(m.text_.dim()) +
                " dimensions but the manifest says " + std::to_string(m.text_dim_));
      m.item_code_ = matrix("item_text_code", ni, m.text_dim_);
      if (m.has_profile_) m.user_prof_ = matrix("user_profile_code", nu, m.text_dim_);
      if (m.use_hist_) m.user_hist_ = matrix("user_history_code", nu, m.text_dim_);
      if (m.text_skip_active()) {
        const std::vector<float> w = get_tensor(tensors, "text_skip_weight").to_f32("text_skip_weight");
        check(w.size() == 1 && std::isfinite(w[0]),
              "twotower load: text_skip_weight must hold one finite number");
        m.text_w_.data[0] = w[0];
      }
    } else {
      check(!m.has_profile_ && !m.use_hist_, "twotower load: user text inputs without text features");
    }
    m.build_networks();
    m.user_tower_.load(tensors, "user_tower.");
    m.item_tower_.load(tensors, "item_tower.");
    if (merge_ == "mlp") m.merge_net_.load(tensors, "merge.");
    m.fitted_ = true;
    m.refresh_item_cache(1);
    adopt_state(std::move(m));
  }

 private:
  // Per-batch buffers, reused across batches.
  struct Workspace {
    std::vector<uint32_t> users, items, uniq_users, uniq_items, user_slot, item_slot;
    std::vector<float> targets;
    std::vector<float> text_dot;  // per pair: <user text codes, item text code> (text_skip)
    std::vector<uint8_t> user_kept, item_kept;
    MatF xu, xi, uo, io, dxu, dxi, duo, dio, mx, logits, dlogits, dmx, tgt;
    ChunkedMlp user_pass, item_pass, merge_pass;
    std::vector<MatF> grads;
  };

  // Takes the fitted state of `m` (a model with the same spec); the parameters stay bound to this object.
  void adopt_state(TwoTowerModel&& m) {
    fitted_ = m.fitted_;
    rating_lo_ = m.rating_lo_;
    rating_hi_ = m.rating_hi_;
    seed_used_ = m.seed_used_;
    encoder_ = std::move(m.encoder_);
    privacy_ = std::move(m.privacy_);
    text_dim_ = m.text_dim_;
    has_profile_ = m.has_profile_;
    use_hist_ = m.use_hist_;
    text_ = std::move(m.text_);
    user_emb_ = std::move(m.user_emb_);
    item_emb_ = std::move(m.item_emb_);
    item_code_ = std::move(m.item_code_);
    user_prof_ = std::move(m.user_prof_);
    user_hist_ = std::move(m.user_hist_);
    user_tower_ = std::move(m.user_tower_);
    item_tower_ = std::move(m.item_tower_);
    merge_net_ = std::move(m.merge_net_);
    text_w_ = std::move(m.text_w_);
    item_code_t_ = std::move(m.item_code_t_);
    item_out_ = std::move(m.item_out_);
    item_out_t_ = std::move(m.item_out_t_);
    item_proj_t_ = std::move(m.item_proj_t_);
  }

  static bool all_zero(const Matrix& m) {
    for (float v : m.data)
      if (v != 0.0f) return false;
    return true;
  }

  size_t user_in_dim() const {
    return size_t(factors_) + (has_profile_ ? text_dim_ : 0) + (use_hist_ ? text_dim_ : 0);
  }
  size_t item_in_dim() const { return size_t(factors_) + text_dim_; }

  void build_networks() {
    const size_t f = size_t(factors_);
    auto tower = [&](size_t in) {
      std::vector<size_t> sizes{in};
      for (int l = 0; l < layers_; ++l) sizes.push_back(size_t(hidden_));
      sizes.push_back(f);
      return nn::Mlp<float>(sizes, nn::Act::relu, nn::Act::identity, dropout_);
    };
    user_tower_ = tower(user_in_dim());
    item_tower_ = tower(item_in_dim());
    merge_net_ = merge_ == "mlp"
                     ? nn::Mlp<float>({2 * f, size_t(merge_hidden_), 1}, nn::Act::relu, nn::Act::identity)
                     : nn::Mlp<float>();
  }

  // Mean of the text codes of the given items that have text, plus an extra code, L2-normalised (zeros when
  // none has text).
  void pool_history(std::span<const uint32_t> items, const float* extra, float* out) const {
    const size_t t = text_dim_;
    std::vector<double> acc(t, 0.0);
    for (uint32_t i : items) {
      const float* c = item_code_.row(i);
      for (size_t j = 0; j < t; ++j) acc[j] += c[j];
    }
    if (extra)
      for (size_t j = 0; j < t; ++j) acc[j] += extra[j];
    for (size_t j = 0; j < t; ++j) out[j] = float(acc[j]);
    normalize(out, t);
  }

  bool text_skip_active() const { return text_skip_ && text_dim_ > 0 && (has_profile_ || use_hist_); }

  // The user's text query for text_skip: the sum of the text parts of a user tower input row.
  void text_query(const float* user_in, float* q) const {
    const size_t f = size_t(factors_), t = text_dim_;
    std::fill(q, q + t, 0.0f);
    const size_t parts = size_t(has_profile_) + size_t(use_hist_);
    for (size_t p = 0; p < parts; ++p)
      for (size_t j = 0; j < t; ++j) q[j] += user_in[f + p * t + j];
  }

  void user_input(uint32_t u, float* in) const {
    const size_t f = size_t(factors_);
    std::copy(user_emb_.table.row(u), user_emb_.table.row(u) + f, in);
    size_t at = f;
    if (has_profile_) {
      std::copy(user_prof_.row(u), user_prof_.row(u) + text_dim_, in + at);
      at += text_dim_;
    }
    if (use_hist_) std::copy(user_hist_.row(u), user_hist_.row(u) + text_dim_, in + at);
  }

  void item_input(uint32_t i, float* in) const {
    const size_t f = size_t(factors_);
    std::copy(item_emb_.table.row(i), item_emb_.table.row(i) + f, in);
    if (text_dim_ > 0) std::copy(item_code_.row(i), item_code_.row(i) + text_dim_, in + f);
  }

  // Item tower outputs (transposed: factors x items) and, for merge=mlp, their projection through the item
  // half of the first merge layer (merge_hidden x items).
  void refresh_item_cache(int threads) {
    const size_t ni = item_emb_.size(), f = size_t(factors_);
    MatF io(ni, f);
    parallel_for(ni, resolve_threads(threads), 256, [&](size_t lo, size_t hi) {
      std::vector<float> in(item_in_dim());
      for (size_t i = lo; i < hi; ++i) {
        item_input(uint32_t(i), in.data());
        item_tower_.predict_row(in.data(), io.row(i));
      }
    });
    item_out_ = io;
    if (text_skip_active()) {
      item_code_t_.resize(text_dim_, ni);
      for (size_t i = 0; i < ni; ++i)
        for (size_t j = 0; j < text_dim_; ++j) item_code_t_(j, i) = item_code_(i, j);
    }
    item_out_t_.resize(f, ni);
    for (size_t i = 0; i < ni; ++i)
      for (size_t k = 0; k < f; ++k) item_out_t_(k, i) = io(i, k);
    if (merge_ == "mlp") {
      const size_t h = size_t(merge_hidden_);
      const auto& l1 = merge_net_.layer(0);
      item_proj_t_.resize(h, ni);
      for (size_t i = 0; i < ni; ++i)
        for (size_t k = 0; k < f; ++k) {
          const float v = io(i, k);
          const float* w = l1.w.row(f + k);
          for (size_t j = 0; j < h; ++j) item_proj_t_(j, i) += v * w[j];
        }
    }
  }

  // Logits of the pairs (uo.row(us[p]), io.row(is[p])) and, when dlogits_out is given, the gradients with
  // respect to uo and io (duo, dio: zeroed and filled here) and the merge parameters (added to mgrads).
  void merge_forward(Workspace& ws, const MatF& uo, const MatF& io, const std::vector<uint32_t>& us,
                     const std::vector<uint32_t>& is, nn::TaskPool* pool, uint64_t seed,
                     uint64_t stream) const {
    const size_t np = us.size(), f = size_t(factors_);
    ws.logits.resize(np, 1);
    if (merge_ == "mlp") {
      ws.mx.reshape(np, 2 * f);
      for (size_t p = 0; p < np; ++p) {
        std::copy(uo.row(us[p]), uo.row(us[p]) + f, ws.mx.row(p));
        std::copy(io.row(is[p]), io.row(is[p]) + f, ws.mx.row(p) + f);
      }
      ws.merge_pass.setup(merge_net_, ws.mx, seed, stream, false);
      run_chunks({&ws.merge_pass}, false, pool);
      ws.merge_pass.output(ws.logits);
    }
    if (merge_ == "dot" || dot_skip_) {
      for (size_t p = 0; p < np; ++p) {
        const float* a = uo.row(us[p]);
        const float* b = io.row(is[p]);
        float s = 0;
        for (size_t k = 0; k < f; ++k) s += a[k] * b[k];
        ws.logits.data[p] += s;
      }
    }
    if (!ws.text_dot.empty()) {
      const float w = text_w_.data[0];
      for (size_t p = 0; p < np; ++p) ws.logits.data[p] += w * ws.text_dot[p];
    }
  }

  void merge_backward(Workspace& ws, const MatF& uo, const MatF& io, const std::vector<uint32_t>& us,
                      const std::vector<uint32_t>& is, MatF& duo, MatF* dio, std::vector<MatF>* mgrads,
                      nn::TaskPool* pool) const {
    const size_t np = us.size(), f = size_t(factors_);
    duo.resize(uo.rows, f);
    if (dio) dio->resize(io.rows, f);
    if (merge_ == "mlp") {
      std::vector<MatF> scratch;
      if (!mgrads) {
        scratch = merge_net_.make_grads();
        mgrads = &scratch;
      }
      ws.merge_pass.setup_backward(ws.dlogits, 2 * f);
      run_chunks({&ws.merge_pass}, true, pool);
      ws.merge_pass.reduce(*mgrads, &ws.dmx);
      for (size_t p = 0; p < np; ++p) {
        const float* g = ws.dmx.row(p);
        float* du = duo.row(us[p]);
        for (size_t k = 0; k < f; ++k) du[k] += g[k];
        if (dio) {
          float* di = dio->row(is[p]);
          for (size_t k = 0; k < f; ++k) di[k] += g[f + k];
        }
      }
    }
    if (merge_ == "dot" || dot_skip_) {
      for (size_t p = 0; p < np; ++p) {
        const float g = ws.dlogits.data[p];
        const float* a = uo.row(us[p]);
        const float* b = io.row(is[p]);
        float* du = duo.row(us[p]);
        for (size_t k = 0; k < f; ++k) du[k] += g * b[k];
        if (dio) {
          float* di = dio->row(is[p]);
          for (size_t k = 0; k < f; ++k) di[k] += g * a[k];
        }
      }
    }
  }

  float loss_and_grad(Workspace& ws) const {
    ws.tgt.reshape(ws.targets.size(), 1);
    std::copy(ws.targets.begin(), ws.targets.end(), ws.tgt.data.begin());
    if (loss_ == "bce") return nn::bce_with_logits(ws.logits, ws.tgt, &ws.dlogits);
    if (loss_ == "rating") {
      // The rating is the sigmoid of the score scaled to the training range; squared error on it, the
      // gradient through the sigmoid: d/dz = 2 (r - t) (hi - lo) s (1 - s) / n.
      const size_t n = ws.logits.rows;
      ws.dlogits.reshape(ws.logits.rows, ws.logits.cols);
      if (n == 0) return 0.0f;
      const float span = rating_hi_ - rating_lo_;
      double total = 0;
      for (size_t k = 0; k < ws.logits.size(); ++k) {
        const float sg = 1.0f / (1.0f + std::exp(-ws.logits.data[k]));
        const float d = rating_lo_ + span * sg - ws.tgt.data[k];
        total += double(d) * d;
        ws.dlogits.data[k] = 2.0f * d * span * sg * (1.0f - sg) / float(n);
      }
      return float(total / double(n));
    }
    return nn::squared_error(ws.logits, ws.tgt, &ws.dlogits);
  }

  // Gradients of the mean loss over the pairs in ws (users, items, targets): the dense parameters' in
  // ws.grads (the towers, the merge MLP, then the text weight with text_skip), the id embeddings' in ws.dxu /
  // ws.dxi (rows of uniq_users / uniq_items; only those with user_kept / item_kept set count). Changes only
  // ws.
  float batch_grads(Workspace& ws, Rng& rng, uint64_t seed, uint64_t batch_id, nn::TaskPool* pool) const {
    const size_t f = size_t(factors_);
    distinct(ws.users, ws.uniq_users, ws.user_slot);
    distinct(ws.items, ws.uniq_items, ws.item_slot);
    const size_t nu = ws.uniq_users.size(), ni = ws.uniq_items.size();
    // Tower inputs, with id dropout.
    ws.xu.reshape(nu, user_in_dim());
    ws.user_kept.assign(nu, 1);
    for (size_t r = 0; r < nu; ++r) {
      user_input(ws.uniq_users[r], ws.xu.row(r));
      if (id_dropout_ > 0 && rng.uniform() < id_dropout_) {
        ws.user_kept[r] = 0;
        std::fill(ws.xu.row(r), ws.xu.row(r) + f, 0.0f);
      }
      if (text_dropout_ > 0 && has_profile_ && rng.uniform() < text_dropout_)
        std::fill(ws.xu.row(r) + f, ws.xu.row(r) + f + text_dim_, 0.0f);
      if (text_dropout_ > 0 && has_profile_ && use_hist_ && rng.uniform() < text_dropout_) {
        float* h = ws.xu.row(r) + f + (has_profile_ ? text_dim_ : 0);
        std::fill(h, h + text_dim_, 0.0f);
      }
    }
    ws.xi.reshape(ni, item_in_dim());
    ws.item_kept.assign(ni, 1);
    for (size_t r = 0; r < ni; ++r) {
      item_input(ws.uniq_items[r], ws.xi.row(r));
      if (id_dropout_ > 0 && rng.uniform() < id_dropout_) {
        ws.item_kept[r] = 0;
        std::fill(ws.xi.row(r), ws.xi.row(r) + f, 0.0f);
      }
    }
    const uint64_t stream = kChunkStream + batch_id * 4;
    ws.user_pass.setup(user_tower_, ws.xu, seed, stream * 1024, true);
    ws.item_pass.setup(item_tower_, ws.xi, seed, (stream + 1) * 1024, true);
    run_chunks({&ws.user_pass, &ws.item_pass}, false, pool);
    ws.user_pass.output(ws.uo);
    ws.item_pass.output(ws.io);
    ws.text_dot.clear();
    if (text_skip_active()) {
      // From the tower inputs after dropout, so the skip sees what the towers see.
      MatF q(nu, text_dim_);
      for (size_t r = 0; r < nu; ++r) text_query(ws.xu.row(r), q.row(r));
      ws.text_dot.resize(ws.users.size());
      for (size_t p = 0; p < ws.users.size(); ++p) {
        const float* a = q.row(ws.user_slot[p]);
        const float* b = ws.xi.row(ws.item_slot[p]) + f;
        float d = 0;
        for (size_t j = 0; j < text_dim_; ++j) d += a[j] * b[j];
        ws.text_dot[p] = d;
      }
    }
    merge_forward(ws, ws.uo, ws.io, ws.user_slot, ws.item_slot, pool, seed, (stream + 2) * 1024);
    const float loss = loss_and_grad(ws);

    // Backward: merge, towers, embeddings.
    const size_t n_dense =
        2 * (user_tower_.n_layers() + item_tower_.n_layers() + (merge_ == "mlp" ? merge_net_.n_layers() : 0));
    if (ws.grads.size() > n_dense) ws.grads.resize(n_dense);  // the text weight's, added below
    if (ws.grads.empty()) {
      ws.grads = user_tower_.make_grads();
      for (auto& g : item_tower_.make_grads()) ws.grads.push_back(std::move(g));
      if (merge_ == "mlp")
        for (auto& g : merge_net_.make_grads()) ws.grads.push_back(std::move(g));
    }
    for (auto& g : ws.grads) g.zero();
    const size_t nut = user_tower_.n_layers() * 2, nit = item_tower_.n_layers() * 2;
    std::vector<MatF> ug(std::make_move_iterator(ws.grads.begin()),
                         std::make_move_iterator(ws.grads.begin() + long(nut)));
    std::vector<MatF> ig(std::make_move_iterator(ws.grads.begin() + long(nut)),
                         std::make_move_iterator(ws.grads.begin() + long(nut + nit)));
    std::vector<MatF> mg(std::make_move_iterator(ws.grads.begin() + long(nut + nit)),
                         std::make_move_iterator(ws.grads.end()));
    merge_backward(ws, ws.uo, ws.io, ws.user_slot, ws.item_slot, ws.duo, &ws.dio,
                   merge_ == "mlp" ? &mg : nullptr, pool);
    // Only the id embeddings (the first `factors` inputs) need an input gradient.
    ws.user_pass.setup_backward(ws.duo, f);
    ws.item_pass.setup_backward(ws.dio, f);
    run_chunks({&ws.user_pass, &ws.item_pass}, true, pool);
    ws.user_pass.reduce(ug, &ws.dxu);
    ws.item_pass.reduce(ig, &ws.dxi);
    ws.grads.clear();
    for (auto* v : {&ug, &ig, &mg})
      for (auto& g : *v) ws.grads.push_back(std::move(g));
    if (text_skip_active()) {
      double ga = 0;
      for (size_t p = 0; p < ws.text_dot.size(); ++p) ga += double(ws.dlogits.data[p]) * ws.text_dot[p];
      ws.grads.emplace_back(1, 1, float(ga));
    }
    return loss;
  }

  float train_batch(Workspace& ws, Rng& rng, uint64_t seed, uint64_t batch_id, nn::TaskPool* pool,
                    nn::Adam<float>& adam_dense, nn::Adam<float>& adam_emb) {
    const size_t f = size_t(factors_);
    const float loss = batch_grads(ws, rng, seed, batch_id, pool);
    adam_dense.step(ws.grads);

    auto emb_grad = [&](const std::vector<uint32_t>& uniq, const std::vector<uint8_t>& kept, const MatF& dx) {
      nn::SparseGrad<float> g;
      size_t n = 0;
      for (uint8_t k : kept) n += k;
      g.values.resize(n, f);
      for (size_t r = 0; r < uniq.size(); ++r) {
        if (!kept[r]) continue;
        std::copy(dx.row(r), dx.row(r) + f, g.values.row(g.rows.size()));
        g.rows.push_back(uniq[r]);
      }
      return g;
    };
    adam_emb.step_sparse(0, emb_grad(ws.uniq_users, ws.user_kept, ws.dxu));
    adam_emb.step_sparse(1, emb_grad(ws.uniq_items, ws.item_kept, ws.dxi));
    return loss;
  }

  // The dense parameters Adam steps: both towers, the merge MLP and the text weight (text_skip).
  std::vector<MatF*> dense_params() {
    std::vector<MatF*> dense = user_tower_.params();
    for (auto* p : item_tower_.params()) dense.push_back(p);
    if (merge_ == "mlp")
      for (auto* p : merge_net_.params()) dense.push_back(p);
    if (text_skip_active()) dense.push_back(&text_w_);
    return dense;
  }

  // `epochs` minibatch epochs of the training loss over the entries `order` (positions into x.indices),
  // shuffled each epoch by the stream (seed, shuffle_stream + epoch), batch ids from batch_base on; Adam (lr,
  // weight_decay) from fresh moments on the dense parameters and the id embeddings.
  void train_epochs(const Csr& x, std::vector<uint32_t> order, int epochs, uint64_t shuffle_stream,
                    uint64_t batch_base, int threads, const FitContext& ctx, const char* what) {
    const bool implicit = loss_ == "bce";
    const uint64_t seed = seed_used_;
    nn::AdamOptions ao;
    ao.lr = lr_;
    ao.weight_decay = weight_decay_;
    nn::Adam<float> adam_dense(dense_params(), ao);
    nn::Adam<float> adam_emb({&user_emb_.table, &item_emb_.table}, ao);
    std::vector<uint32_t> pos_user(x.nnz());
    for (uint32_t u = 0; u < x.n_rows; ++u)
      for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p) pos_user[p] = u;
    const size_t n_batches = (order.size() + size_t(batch_) - 1) / size_t(batch_);
    if (ctx.progress) ctx.progress(0, size_t(epochs), what);
    Workspace ws;
    nn::TaskPool pool(threads);
    uint64_t batch_counter = batch_base;
    for (int epoch = 0; epoch < epochs && !order.empty(); ++epoch) {
      Timer timer;
      Rng shuffle(seed, shuffle_stream + uint64_t(epoch));
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[shuffle.below(i)]);
      double loss_sum = 0;
      for (size_t b = 0; b < n_batches; ++b, ++batch_counter) {
        const size_t p0 = b * size_t(batch_), p1 = std::min(order.size(), p0 + size_t(batch_));
        Rng rng(seed, kBatchStream + batch_counter);
        ws.users.clear();
        ws.items.clear();
        ws.targets.clear();
        for (size_t k = p0; k < p1; ++k) {
          const uint32_t p = order[k];
          add_example(ws, x, pos_user[p], x.indices[p], x.values[p], implicit, rng);
        }
        loss_sum += train_batch(ws, rng, seed, batch_counter, &pool, adam_dense, adam_emb);
      }
      curve_.push_back(loss_sum / double(std::max<size_t>(1, n_batches)));
      if (ctx.verbose)
        std::fprintf(stderr, "%s %d/%d: loss %.5f%s, %.2f s\n", what, epoch + 1, epochs, curve_.back(),
                     text_skip_active() ? (", text weight " + std::to_string(text_w_.data[0])).c_str() : "",
                     timer.seconds());
      if (ctx.progress) ctx.progress(size_t(epoch) + 1, size_t(epochs), what);
    }
  }

  // Users and items without interactions in x have no learned id embedding: zero it, so they are represented
  // by their text alone (like cold ones added later). Under DP the item table is released as trained (zeroing
  // would tell which items had interactions).
  void zero_untrained(const Csr& x) {
    const Csr xt = x.transpose();
    for (uint32_t u = 0; u < x.n_rows; ++u)
      if (x.row_size(u) == 0) std::fill(user_emb_.table.row(u), user_emb_.table.row(u) + factors_, 0.0f);
    for (uint32_t i = 0; i < x.n_cols && !dp_active(); ++i)
      if (xt.row_size(i) == 0) std::fill(item_emb_.table.row(i), item_emb_.table.row(i) + factors_, 0.0f);
  }

  bool dp_active() const { return dp_.active(); }

  // One sampled user's gradient in a DP step: the released parameters' (dense, then item rows) and the
  // user's own id embedding row.
  struct UserGrad {
    std::vector<MatF> dense;
    std::vector<uint32_t> item_rows;
    MatF item_values;        // item_rows.size() x factors
    std::vector<float> own;  // the user's id embedding gradient (empty when id dropout zeroed it)
    double loss = 0;
  };

  // DP-SGD (see the top of the file). `dense` lists the dense parameters in ws.grads order.
  // One training example of user u: the pair (u, i) with its target (1 for implicit feedback, else the value)
  // and, for implicit feedback, `negatives` items drawn uniformly (up to 8 redraws away from u's items).
  void add_example(Workspace& ws, const Csr& x, uint32_t u, uint32_t i, float value, bool implicit,
                   Rng& rng) const {
    const uint32_t ni = x.n_cols;
    ws.users.push_back(u);
    ws.items.push_back(i);
    ws.targets.push_back(implicit ? 1.0f : value);
    if (!implicit) return;
    for (int n = 0; n < negatives_; ++n) {
      uint32_t j = uint32_t(rng.below(ni));
      for (int tries = 0; tries < 8 && x.contains(u, j); ++tries) j = uint32_t(rng.below(ni));
      ws.users.push_back(u);
      ws.items.push_back(j);
      ws.targets.push_back(0.0f);
    }
  }

  void train_dp(const Csr& x, uint64_t seed, int threads, const FitContext& ctx,
                const std::vector<MatF*>& dense) {
    const uint32_t nu = x.n_rows;
    const size_t f = size_t(factors_);
    const bool implicit = loss_ == "bce";
    const models::DpSgdPlan plan = models::plan_dp_sgd(dp_, nu, epochs_, "twotower");
    const double sigma = plan.sigma;
    const int64_t steps = plan.steps;
    // The released parameters laid out flat: the dense ones, then the item table.
    std::vector<size_t> offset;
    size_t dim = 0;
    for (const MatF* p : dense) {
      offset.push_back(dim);
      dim += p->size();
    }
    const size_t item_base = dim;
    dim += item_emb_.table.size();
    std::vector<MatF*> shared = dense;
    shared.push_back(&item_emb_.table);
    nn::AdamOptions ao;
    ao.lr = lr_;
    ao.weight_decay = weight_decay_;
    nn::Adam<float> adam_shared(shared, ao);
    nn::Adam<float> adam_user({&user_emb_.table}, ao);
    privacy::DpAggregator agg(dim, dp_.clip);
    std::vector<MatF> step_grads;
    for (const MatF* p : shared) step_grads.emplace_back(p->rows, p->cols);
    if (ctx.progress) ctx.progress(0, size_t(steps), "twotower DP-SGD steps");
    size_t clipped = 0, contributions = 0;
    double loss_sum = 0;
    size_t loss_n = 0;
    Timer timer;
    for (int64_t step = 0; step < steps; ++step) {
      const std::vector<uint32_t> sampled = plan.sample(seed, kDpSampleStream, step);
      std::vector<UserGrad> grads(sampled.size());
      parallel_for(sampled.size(), threads, 1, [&](size_t lo, size_t hi) {
        Workspace ws;
        for (size_t k = lo; k < hi; ++k) {
          const uint32_t u = sampled[k];
          const uint64_t id = uint64_t(step) * nu + u;
          Rng rng(seed, kDpUserStream + id);
          ws.users.clear();
          ws.items.clear();
          ws.targets.clear();
          for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p)
            add_example(ws, x, u, x.indices[p], x.values[p], implicit, rng);
          UserGrad& g = grads[k];
          if (ws.users.empty()) continue;  // a user without interactions contributes nothing
          g.loss = batch_grads(ws, rng, seed, kDpBatchBase + id, nullptr);
          g.dense = ws.grads;
          for (size_t r = 0; r < ws.uniq_items.size(); ++r)
            if (ws.item_kept[r]) g.item_rows.push_back(ws.uniq_items[r]);
          g.item_values.resize(g.item_rows.size(), f);
          for (size_t r = 0, o = 0; r < ws.uniq_items.size(); ++r)
            if (ws.item_kept[r]) std::copy(ws.dxi.row(r), ws.dxi.row(r) + f, g.item_values.row(o++));
          if (ws.user_kept[0]) g.own.assign(ws.dxu.row(0), ws.dxu.row(0) + f);
        }
      });
      // Clip and add in user order, then noise: the released parameters' step.
      agg.reset();
      nn::SparseGrad<float> own;
      std::vector<privacy::DpAggregator::Piece> pieces;
      for (size_t k = 0; k < sampled.size(); ++k) {
        const UserGrad& g = grads[k];
        pieces.clear();
        for (size_t d = 0; d < g.dense.size(); ++d) pieces.push_back({offset[d], g.dense[d].data});
        for (size_t r = 0; r < g.item_rows.size(); ++r)
          pieces.push_back({item_base + size_t(g.item_rows[r]) * f, {g.item_values.row(r), f}});
        agg.add(pieces);  // a user without interactions adds a zero contribution
        if (!g.own.empty()) {
          own.rows.push_back(sampled[k]);
          own.values.data.insert(own.values.data.end(), g.own.begin(), g.own.end());
        }
        if (!g.dense.empty()) {
          loss_sum += g.loss;
          ++loss_n;
        }
      }
      clipped += agg.clipped();
      contributions += agg.contributions();
      Rng noise(seed, kDpNoiseStream + uint64_t(step));
      agg.finish(sigma, plan.expected_users(), noise);
      const std::vector<double>& sum = agg.sum();
      for (size_t d = 0, at = 0; d < step_grads.size(); ++d)
        for (float& v : step_grads[d].data) v = float(sum[at++]);
      adam_shared.step(step_grads);
      // The users' own rows: their own gradients, not released.
      own.values.rows = own.rows.size();
      own.values.cols = f;
      if (!own.rows.empty()) adam_user.step_sparse(0, own);
      if (plan.epoch_end(step)) {
        curve_.push_back(loss_n ? loss_sum / double(loss_n) : 0.0);
        if (ctx.verbose)
          std::fprintf(stderr, "twotower DP-SGD step %lld/%lld: loss %.5f, %.2f s\n", (long long)step + 1,
                       (long long)steps, curve_.back(), timer.seconds());
        loss_sum = 0;
        loss_n = 0;
      }
      if (ctx.progress) ctx.progress(size_t(step) + 1, size_t(steps), "twotower DP-SGD steps");
    }
    privacy_ = models::dp_sgd_report(
        dp_, plan, clipped, contributions, "twotower",
        "the towers, the merge MLP, the text weight and the item id embeddings (user-level); not each user's "
        "own id embedding and history text code, which are that user's",
        ctx.verbose);
  }

  // Fits a user's id embedding to a history with everything else fixed: Adam on the training loss over the
  // history items (positives, or their values for loss=mse) and a fixed sample of other items (negatives).
  void fit_user_embedding(const model_util::History& hist, const std::vector<float>& prof,
                          const std::vector<float>& hcode, std::vector<float>& emb) const {
    const size_t f = size_t(factors_), ni = item_emb_.size();
    const bool implicit = loss_ == "bce";
    Workspace ws;
    std::vector<uint32_t> items = hist.items;
    ws.targets.assign(hist.items.size(), 1.0f);
    if (!implicit) ws.targets = hist.weights;
    if (implicit && negatives_ > 0 && hist.items.size() < ni) {
      uint64_t h = 0;
      for (uint32_t i : hist.items) h = splitmix64(h ^ i);
      Rng rng(seed_used_, kFoldStream + (h >> 8));
      const size_t want = std::min(ni - hist.items.size(), std::max<size_t>(32, 4 * hist.items.size()));
      std::vector<uint32_t> neg;
      for (size_t tries = 0; neg.size() < want && tries < 20 * want; ++tries) {
        const uint32_t j = uint32_t(rng.below(ni));
        if (std::binary_search(hist.items.begin(), hist.items.end(), j)) continue;
        if (std::find(neg.begin(), neg.end(), j) != neg.end()) continue;
        neg.push_back(j);
      }
      for (uint32_t j : neg) {
        items.push_back(j);
        ws.targets.push_back(0.0f);
      }
    }
    // Positives and negatives weigh the same in total.
    std::vector<float> w(items.size(), 1.0f);
    const size_t npos = hist.items.size(), nneg = items.size() - npos;
    if (nneg > 0)
      for (size_t k = npos; k < items.size(); ++k) w[k] = float(npos) / float(nneg);
    MatF io(items.size(), f);
    for (size_t k = 0; k < items.size(); ++k)
      std::copy(item_out_.row(items[k]), item_out_.row(items[k]) + f, io.row(k));
    std::vector<uint32_t> us(items.size(), 0), is(items.size());
    std::iota(is.begin(), is.end(), 0u);

    MatF x(1, user_in_dim());
    std::copy(prof.begin(), prof.end(), x.row(0) + f);
    std::copy(hcode.begin(), hcode.end(), x.row(0) + f + prof.size());
    if (text_skip_active()) {
      std::vector<float> q(text_dim_);
      text_query(x.row(0), q.data());
      ws.text_dot.resize(items.size());
      for (size_t k = 0; k < items.size(); ++k) {
        const float* c = item_code_.row(items[k]);
        float d = 0;
        for (size_t j = 0; j < text_dim_; ++j) d += q[j] * c[j];
        ws.text_dot[k] = d;
      }
    }
    MatF e(1, f);
    nn::AdamOptions ao;
    ao.lr = kFoldLr;
    nn::Adam<float> adam({&e}, ao);
    nn::Mlp<float>::Cache cache;
    std::vector<MatF> tower_grads = user_tower_.make_grads();
    MatF dx, duo;
    for (int step = 0; step < kFoldSteps; ++step) {
      std::copy(e.data.begin(), e.data.end(), x.row(0));
      user_tower_.forward(x, cache);
      merge_forward(ws, cache.output(), io, us, is, nullptr, 0, 0);
      loss_and_grad(ws);
      for (size_t k = 0; k < items.size(); ++k) ws.dlogits.data[k] *= w[k];
      merge_backward(ws, cache.output(), io, us, is, duo, nullptr, nullptr, nullptr);
      user_tower_.backward(x, cache, duo, tower_grads, &dx, f);
      MatF g(1, f);
      for (size_t k = 0; k < f; ++k) g.data[k] = dx.data[k] + 2.0f * kFoldReg * e.data[k];
      adam.step({g});
    }
    emb = e.data;
  }

  std::vector<double> curve_;  // mean loss per epoch of the last fit
  ParamSet params_;
  int factors_ = 32, hidden_ = 64, layers_ = 1, merge_hidden_ = 32, epochs_ = 10, batch_ = 128,
      negatives_ = 4;
  int seed_ = 0;
  models::AutoencoderParams ae_;  // ae, ae_hidden, ae_noise, ae_epochs
  double lr_ = 5e-3, weight_decay_ = 0, dropout_ = 0.1, id_dropout_ = 0.25, text_dropout_ = 0.25, init_ = 0.1;
  bool dot_skip_ = true, text_skip_ = false, use_history_text_ = true;
  models::DpSgdParams dp_;  // dp, dp_noise, dp_clip, dp_delta, dp_epsilon, dp_users
  nlohmann::json privacy_;  // the DP-SGD guarantee of the last fit (null without DP)
  std::string merge_ = "dot", loss_ = "bce";

  bool fitted_ = false;
  uint64_t seed_used_ = 0;
  std::string encoder_;
  float rating_lo_ = 0.0f, rating_hi_ = 1.0f;  // loss=rating: the training ratings' range
  size_t text_dim_ = 0;
  bool has_profile_ = false, use_hist_ = false;
  models::TextFeatures text_;
  nn::Embedding<float> user_emb_, item_emb_;
  MatF item_code_, user_prof_, user_hist_;
  nn::Mlp<float> user_tower_, item_tower_, merge_net_;
  MatF text_w_ = MatF(1, 1, 1.0f);  // weight of the text dot product in the score (text_skip)
  MatF item_out_, item_out_t_, item_proj_t_, item_code_t_;
};

XDREC_REGISTER_MODEL(
    twotower,
    "two-tower neural model over id embeddings and text codes; dot or MLP merge, BCE with sampled "
    "negatives or squared error; cold items and users through text",
    TwoTowerModel,
    {.uses_text = true,
     .thread_independent = true,
     .personalised = true,
     .fold_in = true,
     .add_item = true,
     .profile = true});

}  // namespace xdrec
