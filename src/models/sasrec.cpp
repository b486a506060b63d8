// SASRec: a self-attentive sequential recommender over each user's ordered, mixed-domain history.
//
// Input of position t: sqrt(d) * (item(i_t) + position(n - 1 - t) + domain(dom(i_t))), positions counted from
// the most recent item (so the last item of a history always has position 0, in training and at inference);
// then `blocks` pre-norm transformer blocks with causal attention and a final layer norm. The hidden state
// after item t predicts item t + 1; the score of item j is <h, item(j)> (input and output embeddings tied),
// with domain_heads a per-domain linear map of h first (a shared model with one output head per domain).
//
// item(j) is the id embedding, or with text (text=add) id embedding + adaptor(text code of j), (text=replace)
// the adaptor alone, (text=init) an id embedding initialised from the text code. The text code comes from the
// shared TextFeatures pipeline (centred raw vectors, optional autoencoder `ae`, unit length); the adaptor is
// linear (adaptor=linear) or a mixture of linear experts with a softmax gate (adaptor=moe, as in UniSRec).
// id_dropout drops an item's id embedding in a training pass, so the text path learns to stand alone and an
// item added later from its text only (add_item) is served.
//
// Objective: next-item softmax cross-entropy against `negatives` items per domain sampled uniformly for each
// minibatch and shared by its positions, drawn from the target's own domain (the softmax is over that domain:
// evaluation ranks a target against items of its domain), or (loss=bce) SASRec's original binary
// cross-entropy against one sampled item per position. balance=1 weights each target domain's positions by
// (positions of the smallest domain / positions of this domain). AdamW with linear warm-up, gradient
// clipping by global norm.
//
// Training windows: the last max_len + 1 items of each history, and with `windows` (default) every earlier
// max_len-long window too, so each item of a long history is a target once. Epochs: at least `epochs`, more
// when the data gives fewer than min_steps optimiser steps in that many (small datasets).
// Defaults (epochs=40, negatives=2000, text=add with a linear adaptor when text vectors are given) were
// chosen on the Food-Kitchen validation users (BENCHMARKS.md, "Sequential recommendation").
//
// A user is their history: scoring runs the network over the last max_len items, one user at a time, so a
// user's scores do not depend on the batch. fold_in stores a new history and is exact (the same forward pass
// as for a training user). Training is computed in fixed chunks of sequences whose gradients are added in
// chunk order, and every random draw comes from a stream named by the epoch, batch or chunk, so the result
// does not depend on the thread count.
//
// DP-SGD (dp=true, or dp_noise > 0, or dp_epsilon > 0; models/dp_training.h): user-level differential
// privacy for every trained parameter — the item table, the positional and domain tables, every transformer
// and layer-norm weight, the domain heads and the text adaptor (sasrec has no user parameters, so the whole
// network is released and private). Each step samples every user independently with rate q = dp_users /
// n_users (Poisson sampling). A sampled user is a batch of one: all of that user's training windows, against
// negatives drawn for that user alone (random stream seeded by (seed, step, user)), give the gradient of the
// user's mean loss over their positions; it is clipped as one vector to L2 norm dp_clip, the clipped
// gradients are added in user order, Gaussian noise of standard deviation dp_noise * dp_clip is added to
// every coordinate (every item row, touched or not), the sum is divided by the expected batch q * n_users,
// and AdamW steps on that noisy gradient (its moments are post-processing; the global-norm `clip` applies to
// the noisy gradient). ceil(epochs / q) steps; min_steps is not used. Under DP every item of a domain is a
// candidate negative and keeps its trained row (which items had interactions is not released), and
// balance is refused (its weights are counts over the data). Not covered: the histories the saved model
// keeps for scoring (each user's own data). ε is stored under "privacy" in the manifest.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <utility>

#include "models/dp_training.h"
#include "models/factor_model.h"
#include "models/model_util.h"
#include "models/text_features.h"
#include "xdrec/nn.h"
#include "xdrec/nn_seq.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

using nn::MatF;
using Block = nn::TransformerBlock<float>;

constexpr size_t kChunkSeqs = 16;
constexpr uint64_t kInitStream = 0;
constexpr uint64_t kShuffleStream = uint64_t(1) << 20;
constexpr uint64_t kBatchStream = uint64_t(1) << 32;
constexpr uint64_t kChunkStream = uint64_t(1) << 48;
// DP-SGD: a sampled user's batch of one takes the batch and chunk streams of "batch" step * n_users + user.
constexpr uint64_t kDpSampleStream = uint64_t(3) << 56;  // + step: which users a DP step samples
constexpr uint64_t kDpNoiseStream = uint64_t(5) << 56;   // + step: the step's Gaussian noise
// Incremental update (resume): the replayed users; + 1 + epoch: the shuffles; + 2^40 + item: new id rows.
constexpr uint64_t kResumeStream = uint64_t(7) << 56;
constexpr uint64_t kResumeStepBase = uint64_t(1) << 30;  // optimiser steps of a resume (batch streams)

// A training window: the items of `user`'s history before position `end` (at most max_len + 1 of them).
struct Window {
  uint32_t user, end;
};

// One chunk of a minibatch: its packed sequences, forward caches and gradients.
struct Chunk {
  std::vector<uint32_t> offsets, in_ids, in_rev, tgt_ids;
  std::vector<uint16_t> in_dom, tgt_dom;
  std::vector<float> in_keep, tgt_keep;  // id-dropout multipliers (1 or 0)
  MatF in_text, tgt_text;                // gathered text codes (text models)
  MatF in_adapt, tgt_adapt;              // adaptor caches: gate probabilities (moe)
  nn::Dropout<float> emb_drop;
  std::vector<MatF> xs;  // input of each block, then the last block's output
  std::vector<Block::Cache> caches;
  nn::LayerNorm<float>::Cache lnf;
  MatF h;                       // final hidden states (after the layer norm)
  std::vector<MatF> grads;      // dense parameters other than the item table
  std::vector<uint32_t> e_ids;  // item-table rows touched, in order
  MatF e_rows;                  // their gradients (one row per id)
  std::vector<MatF> dcand;      // per domain: gradient of the shared candidates' representations
  double loss = 0;
};

// The sampled-softmax candidates of one batch: per domain their ids, id-dropout multipliers and
// representations with the caches of their backward pass.
struct Candidates {
  std::vector<std::vector<uint32_t>> ids;
  std::vector<std::vector<float>> keep;
  std::vector<MatF> rep, codes, gates;
};

// <a, b> with eight partial sums (k mod 8) added in a fixed order: the same value wherever it is computed.
inline float dot8(const float* __restrict a, const float* __restrict b, size_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t k = 0;
  for (; k + 8 <= d; k += 8)
    for (size_t l = 0; l < 8; ++l) acc[l] += a[k + l] * b[k + l];
  for (size_t l = 0; k < d; ++k, ++l) acc[l] += a[k] * b[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

class SasrecModel final : public Recommender {
 public:
  explicit SasrecModel(const Spec& spec) : params_("sasrec") {
    params_.add("dim", &dim_, 64, 4, 1024, "width of the embeddings and of the transformer")
        .add("blocks", &blocks_, 2, 1, 16, "transformer blocks")
        .add("heads", &heads_, 1, 1, 64, "attention heads (dim must be a multiple)")
        .add("ff", &ff_, 0, 0, 16384, "feed-forward hidden width (0: dim)")
        .add("act", &act_, "gelu", {"gelu", "relu"}, "feed-forward activation")
        .add("max_len", &max_len_, 50, 2, 4096, "most recent items of a history the model reads")
        .add("windows", &windows_, true,
             "train on every max_len-long window of a longer history (from the most recent backwards), not "
             "only on the most recent one")
        .add("dropout", &dropout_, 0.3, 0.0, 0.95,
             "dropout on the embeddings, residual branches and attention")
        .add("epochs", &epochs_, 40, 0, 100000,
             "passes over the training sequences (at least; see min_steps)")
        .add("min_steps", &min_steps_, 1000, 0, 1 << 30,
             "more epochs when needed for this many optimiser steps (small datasets: few steps per epoch)")
        .add("batch", &batch_, 256, 1, 1 << 20, "sequences per minibatch")
        .add("lr", &lr_, 1e-3, 1e-7, 10.0, "AdamW learning rate (after warm-up)")
        .add("warmup", &warmup_, 100, 0, 1 << 30, "optimiser steps of linear learning-rate warm-up")
        .add("decay", &decay_, false, "decay the learning rate linearly to 0 over the training")
        .add("weight_decay", &weight_decay_, 0.0, 0.0, 1.0, "decoupled weight decay of every parameter")
        .add("clip", &clip_, 5.0, 0.0, 1e6, "gradient clipping by global L2 norm (0: none)")
        .add("loss", &loss_, "softmax", {"softmax", "bce"},
             "sampled softmax over the target's domain, or binary cross-entropy with one negative")
        .add("negatives", &negatives_, 2000, 1, 1 << 20,
             "loss=softmax: sampled items per domain per minibatch, shared by its positions")
        .add("balance", &balance_, false, "weight each target domain's positions equally in the loss")
        .add("domain_emb", &domain_emb_, true, "add a learned domain embedding to each input item")
        .add("domain_heads", &domain_heads_, false, "a separate output map of the hidden state per domain")
        .add("text", &text_, "add", {"none", "add", "replace", "init"},
             "how item text enters (when the fit gives text vectors): added to the id embedding through the "
             "adaptor, replacing it, or initialising it")
        .add("adaptor", &adaptor_, "linear", {"linear", "moe"},
             "text adaptor: one linear map, or a gated mixture of linear experts (UniSRec)")
        .add("experts", &experts_, 4, 1, 64, "adaptor=moe: experts")
        .add("id_dropout", &id_dropout_, 0.0, 0.0, 1.0,
             "text models: probability of dropping an item's id embedding in a training pass (cold items)")
        .add("user_state", &user_state_, "last", {"last", "mean"},
             "a user's state when scoring: the output at the last position of the history (the next-item "
             "prediction), or the mean of the outputs over every position of the whole history, read in "
             "max_len windows (the history's long-run taste)")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    ae_.declare(params_);
    dp_.declare(params_);
    params_.apply(spec.values);
    ae_.validate("sasrec");
    check(dim_ % heads_ == 0,
          "sasrec: dim " + std::to_string(dim_) + " is not a multiple of heads " + std::to_string(heads_));
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t d = uint64_t(dim_), ff = uint64_t(ff_ > 0 ? ff_ : dim_);
    const uint64_t dt = s.text_dim ? model_util::text_feature_dim(s, ae_.ae) : 0;
    ModelCost c;
    // Item table with its gradient and Adam moments, histories, the per-chunk caches of one minibatch, the
    // item representations for scoring, the text codes and adaptor, the text pipeline.
    const uint64_t tokens = std::min<uint64_t>(s.nnz, uint64_t(batch_) * uint64_t(max_len_));
    c.bytes = s.n_items * d * 4 * 5 + s.nnz * 4 + s.n_users * 8 + tokens * (d * 20 + ff * 4) * 4 * blocks_ +
              uint64_t(batch_) * max_len_ * max_len_ * heads_ * blocks_ * 8 +
              uint64_t(negatives_) * s.n_domains * d * 4 * 4 + s.n_items * dt * 4 +
              (dt ? model_util::text_pipeline_bytes(s, ae_.ae) : 0) + model_util::score_batch_bytes(s);
    const double per_token = double(blocks_) * (12.0 * d * d + 4.0 * d * ff + 4.0 * max_len_ * d) +
                             (loss_ == "softmax" ? 3.0 * negatives_ * d : 6.0 * d);
    const uint64_t tok = windows_ ? s.nnz : std::min<uint64_t>(s.nnz, s.n_users * uint64_t(max_len_));
    const uint64_t wins = windows_ ? std::max<uint64_t>(s.n_users, s.nnz / uint64_t(max_len_)) : s.n_users;
    const uint64_t steps = std::max<uint64_t>(1, (wins + uint64_t(batch_) - 1) / uint64_t(batch_));
    const double epochs = std::max<double>(epochs_, std::ceil(double(min_steps_) / double(steps)));
    c.seconds = double(tok) * per_token * epochs / 4e9;
    c.note = "attention caches of a minibatch and the item table with Adam moments";
    return c;
  }
  std::string name() const override { return "sasrec"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return uint32_t(hist_.size()); }
  uint32_t n_items() const override { return fitted_ ? uint32_t(emb_.rows) : 0; }
  bool uses_text() const override { return fitted_ && text_dim_ > 0; }
  std::string text_encoder() const override { return uses_text() ? encoder_ : ""; }
  std::map<std::string, std::vector<double>> training_curves() const override {
    if (curve_.empty()) return {};
    return {{"loss", curve_}};
  }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    const Csr x = model_util::prepare_interactions(user_items, true, "sasrec");
    const uint32_t ni = x.n_cols;
    check(ni > 0, "sasrec: no items");
    seed_used_ = seed_ > 0 ? uint64_t(seed_) : ctx.seed;
    d_ = size_t(dim_);
    privacy_ = nlohmann::json();
    check(!dp_.active() || !balance_,
          "sasrec: balance does not go with DP-SGD (its domain weights are counts over the training data)");
    set_domains(ctx.item_domain, ni);

    const std::vector<std::vector<uint32_t>> seqs = sequences(x, ctx, "sasrec");

    // Text codes.
    text_dim_ = 0;
    encoder_.clear();
    if (ctx.item_text && ctx.item_text->rows > 0 && text_ != "none") {
      check(ctx.item_text->rows == ni, "sasrec: item text has " + std::to_string(ctx.item_text->rows) +
                                           " rows but the matrix has " + std::to_string(ni) + " items");
      features_ = models::TextFeatures();
      features_.fit(*ctx.item_text, nullptr, ae_.options("sasrec", ctx.item_text->cols), seed_used_,
                    ctx.threads);
      const Matrix codes = features_.transform(*ctx.item_text, ctx.threads);
      code_ = nn::from_matrix<float>(codes);
      text_dim_ = code_.cols;
      encoder_ = ctx.text_encoder;
    } else {
      code_ = MatF();
    }
    init_params(ni);
    if (!id_on()) emb_.zero();  // text=replace: the id table is never read

    // Items that occur in training: the only ones sampled as negatives; the others keep a zero id embedding.
    // Under DP every item counts as seen (which items occur is not released).
    build_pools(seqs);
    std::vector<uint8_t> seen(ni, 0);
    for (uint16_t dd = 0; dd < n_domains_; ++dd)
      for (uint32_t i : pool_[dd]) seen[i] = 1;
    for (uint32_t i = 0; i < ni; ++i)
      if (!seen[i]) std::fill(emb_.row(i), emb_.row(i) + d_, 0.0f);

    train(seqs, ctx);

    store_histories(seqs);
    fitted_ = true;
    refresh_items();
  }

  // Incremental update. The item table grows by the new items: an id row drawn as a fit draws it (N(0,
  // 1/dim), by the stream of the item) for a new item with interactions, zero for one without (known by its
  // text, as add_item) or under text=replace; with text=init, a new item with interactions starts from the id
  // row of the old item nearest by text code. The histories are the full sequences (the context's, or the
  // rows of user_items in item order, as fit reads them); `sweeps` epochs of the fit's training (same loss,
  // negatives, dropouts, lr schedule with warm-up from fresh AdamW moments: the saved model keeps no
  // optimiser state) run over the windows of the touched and new users plus as many other users drawn at
  // random (seeded), then the stored histories are replaced by the new ones. A DP-SGD model is refused: an
  // incremental update is not DP-SGD training.
  bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
              int sweeps) override {
    check(fitted_, "sasrec resume: the model is not fitted (call fit or load first)");
    check(
        !dp_.active(),
        "sasrec resume: the model was trained with DP-SGD and an incremental update is not DP-SGD training; "
        "train it again");
    check(sweeps >= 0, "sasrec resume: sweeps must be >= 0");
    const Csr x = model_util::prepare_interactions(user_items, true, "sasrec resume");
    const uint32_t nu = x.n_rows, ni = x.n_cols, old_users = n_users(), old_items = n_items();
    check(nu >= old_users && ni >= old_items,
          "sasrec resume: the data has " + std::to_string(nu) + " users and " + std::to_string(ni) +
              " items, fewer than the model's " + std::to_string(old_users) + " and " +
              std::to_string(old_items));
    models::FactorModel::check_touched(touched_users, nu, "sasrec resume");
    const Matrix* it = ctx.item_text;
    if (text_dim_ > 0 && ni > old_items) {
      check(it && it->rows == ni && it->cols == features_.input_dim(),
            "sasrec resume: the model reads new items through their text: give the text vectors of all " +
                std::to_string(ni) + " items (" + std::to_string(features_.input_dim()) + "-d, from " +
                encoder_ + ")");
      for (size_t k = size_t(old_items) * it->cols; k < it->data.size(); ++k)
        check(std::isfinite(it->data[k]), "sasrec resume: item_text has a non-finite value");
    }
    check(ctx.item_domain.empty() || ctx.item_domain.size() == ni,
          "sasrec resume: item_domain has " + std::to_string(ctx.item_domain.size()) + " entries for " +
              std::to_string(ni) + " items");
    for (uint32_t i = 0; i < ctx.item_domain.size(); ++i)
      check(ctx.item_domain[i] < n_domains_ && (i >= old_items || ctx.item_domain[i] == item_domain_[i]),
            "sasrec resume: item " + std::to_string(i) + "'s domain is new or changed (the model has " +
                std::to_string(n_domains_) + " domains)");
    const std::vector<std::vector<uint32_t>> seqs = sequences(x, ctx, "sasrec resume");

    // ---- Grow the item table ----
    std::vector<uint8_t> occurs(ni, 0);
    for (const auto& q : seqs)
      for (uint32_t i : q) occurs[i] = 1;
    emb_.data.resize(size_t(ni) * d_, 0.0f);
    emb_.rows = ni;
    code_.data.resize(size_t(ni) * text_dim_, 0.0f);
    if (text_dim_ > 0) code_.rows = ni;
    for (uint32_t i = old_items; i < ni; ++i) {
      item_domain_.push_back(ctx.item_domain.empty() ? 0 : ctx.item_domain[i]);
      if (text_dim_ > 0) features_.transform_row(it->row(i), code_.row(i));
      if (!occurs[i] || !id_on()) continue;
      if (text_dim_ > 0 && text_ == "init") {
        uint32_t best = 0;
        float best_dot = -INFINITY;
        for (uint32_t j = 0; j < old_items; ++j) {
          float dot = 0;
          for (size_t k = 0; k < text_dim_; ++k) dot += code_(i, k) * code_(j, k);
          if (dot > best_dot) best_dot = dot, best = j;
        }
        if (old_items > 0) std::copy(emb_.row(best), emb_.row(best) + d_, emb_.row(i));
      } else {
        Rng rng(seed_used_, kResumeStream + (uint64_t(1) << 40) + i);
        const double sd = 1.0 / std::sqrt(double(d_));
        for (size_t k = 0; k < d_; ++k) emb_(i, k) = float(rng.normal() * sd);
      }
    }
    build_pools(seqs);

    // ---- Epochs over the touched and new users' windows and as many replayed ones ----
    std::vector<uint8_t> only(nu, 0);
    const std::vector<uint32_t> users = models::FactorModel::resume_users(touched_users, old_users, nu);
    for (uint32_t u : users) only[u] = 1;
    std::vector<uint32_t> others;
    for (uint32_t u = 0; u < nu; ++u)
      if (!only[u] && seqs[u].size() >= 2) others.push_back(u);
    const size_t n_replay = std::min(others.size(), users.size());
    Rng rng(seed_used_, kResumeStream);
    for (size_t k = 0; k < n_replay; ++k) std::swap(others[k], others[k + rng.below(others.size() - k)]);
    for (size_t k = 0; k < n_replay; ++k) only[others[k]] = 1;
    train(seqs, ctx, &only, sweeps);

    store_histories(seqs);
    refresh_items();
    return true;
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(fitted_, "sasrec: score before fit");
    model_util::check_users(users, n_users(), "sasrec");
    const size_t nu = users.size(), ni = emb_.rows, nh = domain_heads_ ? n_domains_ : 1;
    out.rows = nu;
    out.cols = ni;
    out.data.assign(nu * ni, 0.0f);
    // Hidden state of each user, one user at a time.
    std::vector<MatF> hs(nh, MatF(nu, d_));
    parallel_for(nu, threads, 8, [&](size_t b, size_t e) {
      std::vector<float> h(d_), t(d_);
      for (size_t k = b; k < e; ++k) {
        hidden(hist_[users[k]], h.data());
        for (size_t hd = 0; hd < nh; ++hd) {
          if (domain_heads_) {
            heads_w_[hd].forward_row(h.data(), t.data());
            std::copy(t.begin(), t.end(), hs[hd].row(k));
          } else {
            std::copy(h.begin(), h.end(), hs[hd].row(k));
          }
        }
      }
    });
    // Scores: per head, the users' states against the representations of that head's items, each a dot
    // product in a fixed order (so a user's scores do not depend on the users scored with them).
    constexpr size_t kUserBlock = 32, kItemBlock = 512;
    const size_t ublocks = (nu + kUserBlock - 1) / kUserBlock;
    parallel_for(ublocks, threads, 1, [&](size_t b, size_t e) {
      for (size_t w = b; w < e; ++w) {
        const size_t u0 = w * kUserBlock, u1 = std::min(nu, u0 + kUserBlock);
        for (size_t hd = 0; hd < nh; ++hd) {
          const MatF& items = domain_heads_ ? item_rep_dom_[hd] : item_rep_;
          for (size_t j0 = 0; j0 < items.rows; j0 += kItemBlock) {
            const size_t j1 = std::min(items.rows, j0 + kItemBlock);
            for (size_t k = u0; k < u1; ++k) {
              float* o = out.data.data() + k * ni;
              const float* h = hs[hd].row(k);
              if (domain_heads_) {
                const auto& ids = dom_items_[hd];
                for (size_t j = j0; j < j1; ++j) o[ids[j]] = dot8(h, items.row(j), d_);
              } else {
                for (size_t j = j0; j < j1; ++j) o[j] = dot8(h, items.row(j), d_);
              }
            }
          }
        }
      }
    });
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(fitted_, "sasrec: fold_in before fit");
    check(user <= n_users(), "sasrec fold_in: user " + std::to_string(user) + " is out of range (" +
                                 std::to_string(n_users()) + " users; " + std::to_string(n_users()) +
                                 " appends)");
    check(weights.empty() || weights.size() == items.size(),
          "sasrec fold_in: " + std::to_string(items.size()) + " items but " + std::to_string(weights.size()) +
              " weights");
    // The history in the order given; items with a non-positive weight are left out.
    std::vector<uint32_t> h;
    for (size_t k = 0; k < items.size(); ++k) {
      check(items[k] < emb_.rows, "sasrec fold_in: item index " + std::to_string(items[k]) +
                                      " is out of range (model has " + std::to_string(emb_.rows) + " items)");
      if (!weights.empty()) {
        check(std::isfinite(weights[k]), "sasrec fold_in: weight " + std::to_string(k) + " is not finite");
        if (weights[k] <= 0.0f) continue;
      }
      h.push_back(items[k]);
    }
    if (user_state_ != "mean" && h.size() > size_t(max_len_)) h.erase(h.begin(), h.end() - max_len_);
    if (user == n_users()) {
      hist_.push_back(std::move(h));
    } else {
      hist_[user] = std::move(h);
    }
    return user;
  }

  uint32_t add_item(std::span<const float> text_vector, uint16_t domain) override {
    check(fitted_, "sasrec: add_item before fit");
    check(uses_text(), "sasrec: add_item needs a model fitted with item text (text=add, replace or init)");
    check(text_vector.size() == features_.input_dim(),
          "sasrec add_item: text vector has " + std::to_string(text_vector.size()) +
              " dimensions, expected " + std::to_string(features_.input_dim()));
    for (size_t k = 0; k < text_vector.size(); ++k)
      check(std::isfinite(text_vector[k]),
            "sasrec add_item: text vector entry " + std::to_string(k) + " is not finite");
    check(domain < n_domains_, "sasrec add_item: domain " + std::to_string(domain) + " is out of range (" +
                                   std::to_string(n_domains_) + " domains)");
    const uint32_t i = uint32_t(emb_.rows);
    MatF e(emb_.rows + 1, d_);
    std::copy(emb_.data.begin(), emb_.data.end(), e.data.begin());
    emb_ = std::move(e);  // a zero id embedding: the item is known by its text only
    MatF c(code_.rows + 1, text_dim_);
    std::copy(code_.data.begin(), code_.data.end(), c.data.begin());
    features_.transform_row(text_vector.data(), c.row(i));
    code_ = std::move(c);
    item_domain_.push_back(domain);
    refresh_items();
    return i;
  }

  // Every weight matrix and embedding table (save_model skips the 1-row biases and norms); not the stored
  // text codes.
  bool prunable_tensor(const std::string& name) const override { return name != "text.code"; }
  void save(TensorMap& t, nlohmann::json& extra) const override {
    check(fitted_, "sasrec: save before fit");
    auto put = [&](const std::string& name, const MatF& m) {
      t[name] = Tensor::from_f32({int64_t(m.rows), int64_t(m.cols)}, m.data.data());
    };
    put("item_emb", emb_);
    for (const auto& [name, m] : named_params()) put(name, *m);
    std::vector<uint16_t> dom16 = item_domain_;
    std::vector<uint32_t> dom32(dom16.begin(), dom16.end());
    t["item_domain"] = Tensor::from_u32({int64_t(dom32.size())}, dom32.data());
    std::vector<uint64_t> off(hist_.size() + 1, 0);
    std::vector<uint32_t> items;
    for (size_t u = 0; u < hist_.size(); ++u) {
      items.insert(items.end(), hist_[u].begin(), hist_[u].end());
      off[u + 1] = items.size();
    }
    t["hist.offsets"] = Tensor::from_u64({int64_t(off.size())}, off.data());
    t["hist.items"] = Tensor::from_u32({int64_t(items.size())}, items.data());
    if (text_dim_ > 0) {
      put("text.code", code_);
      features_.save(t, "text.");
    }
    extra["n_domains"] = n_domains_;
    extra["text_dim"] = text_dim_;
    extra["encoder"] = encoder_;
    if (!privacy_.is_null()) extra["privacy"] = privacy_;
  }

  void load(const TensorMap& t, const nlohmann::json& extra) override {
    auto get = [&](const std::string& name) {
      return nn::from_matrix<float>(get_tensor(t, name).to_matrix("sasrec " + name));
    };
    d_ = size_t(dim_);
    n_domains_ = extra.value("n_domains", uint16_t(1));
    text_dim_ = extra.value("text_dim", size_t(0));
    encoder_ = extra.value("encoder", std::string());
    privacy_ = extra.contains("privacy") ? extra.at("privacy") : nlohmann::json();
    emb_ = get("item_emb");
    check(emb_.cols == d_, "sasrec load: item embeddings have width " + std::to_string(emb_.cols) +
                               ", the spec says dim " + std::to_string(d_));
    const uint32_t ni = uint32_t(emb_.rows);
    Rng rng(1);
    build_layers(rng);
    auto get_into = [&](const std::string& name, MatF& m) {
      MatF v = get(name);
      check(v.rows == m.rows && v.cols == m.cols, "sasrec load: tensor " + name + " has the wrong shape");
      m = std::move(v);
    };
    for (const auto& [name, m] : named_params()) get_into(name, *const_cast<MatF*>(m));
    const auto dom32 = get_tensor(t, "item_domain").to_u32("sasrec item_domain");
    check(dom32.size() == ni, "sasrec load: item_domain has the wrong length");
    item_domain_.assign(dom32.begin(), dom32.end());
    for (uint16_t dd : item_domain_) check(dd < n_domains_, "sasrec load: item domain out of range");
    const auto off = get_tensor(t, "hist.offsets").to_u64("sasrec hist.offsets");
    const auto items = get_tensor(t, "hist.items").to_u32("sasrec hist.items");
    check(!off.empty() && off.front() == 0 && off.back() == items.size(),
          "sasrec load: histories are inconsistent");
    hist_.assign(off.size() - 1, {});
    for (size_t u = 0; u + 1 < off.size(); ++u) {
      check(off[u] <= off[u + 1], "sasrec load: history offsets decrease");
      for (uint64_t p = off[u]; p < off[u + 1]; ++p) {
        check(items[p] < ni, "sasrec load: history item out of range");
        hist_[u].push_back(items[p]);
      }
    }
    if (text_dim_ > 0) {
      code_ = get("text.code");
      check(code_.rows == ni && code_.cols == text_dim_, "sasrec load: text codes have the wrong shape");
      features_.load(t, "text.");
    } else {
      code_ = MatF();
    }
    fitted_ = true;
    refresh_items();
  }

 private:
  uint16_t dom(uint32_t i) const { return item_domain_[i]; }
  bool text_on() const { return text_dim_ > 0 && text_ != "init"; }
  bool id_on() const { return text_dim_ == 0 || text_ != "replace"; }

  // Ordered histories: the context's sequences (restricted to the matrix's positive entries' users), or
  // each row of x in item order.
  static std::vector<std::vector<uint32_t>> sequences(const Csr& x, const FitContext& ctx,
                                                      const std::string& who) {
    const uint32_t nu = x.n_rows, ni = x.n_cols;
    std::vector<std::vector<uint32_t>> seqs(nu);
    if (ctx.sequences && ctx.sequences->n_users() == nu) {
      for (uint32_t u = 0; u < nu; ++u) {
        for (uint32_t i : ctx.sequences->of(u)) {
          check(i < ni, who + ": sequence item " + std::to_string(i) + " is out of range (" +
                            std::to_string(ni) + " items)");
          seqs[u].push_back(i);
        }
      }
    } else {
      check(!ctx.sequences || ctx.sequences->n_users() == 0,
            who + ": the sequences have " + std::to_string(ctx.sequences ? ctx.sequences->n_users() : 0) +
                " users but the matrix has " + std::to_string(nu));
      for (uint32_t u = 0; u < nu; ++u)
        for (uint64_t p = x.indptr[u]; p < x.indptr[u + 1]; ++p) seqs[u].push_back(x.indices[p]);
    }
    return seqs;
  }

  // The candidate negatives of each domain: the items that occur in `seqs` (every item under DP).
  void build_pools(const std::vector<std::vector<uint32_t>>& seqs) {
    const size_t ni = emb_.rows;
    std::vector<uint8_t> seen(ni, dp_.active() ? 1 : 0);
    for (const auto& q : seqs)
      for (uint32_t i : q) seen[i] = 1;
    pool_.assign(n_domains_, {});
    for (uint32_t i = 0; i < ni; ++i)
      if (seen[i]) pool_[dom(i)].push_back(i);
  }

  // Histories for scoring: the most recent max_len items of each sequence (all of it for user_state=mean).
  void store_histories(const std::vector<std::vector<uint32_t>>& seqs) {
    hist_.assign(seqs.size(), {});
    for (size_t u = 0; u < seqs.size(); ++u) {
      const auto& q = seqs[u];
      const size_t n = user_state_ == "mean" ? q.size() : std::min(q.size(), size_t(max_len_));
      hist_[u].assign(q.end() - n, q.end());
    }
  }

  void set_domains(std::span<const uint16_t> item_domain, uint32_t ni) {
    check(item_domain.empty() || item_domain.size() == ni,
          "sasrec: item_domain has " + std::to_string(item_domain.size()) + " entries for " +
              std::to_string(ni) + " items");
    item_domain_.assign(ni, 0);
    n_domains_ = 1;
    for (uint32_t i = 0; i < item_domain.size(); ++i) {
      item_domain_[i] = item_domain[i];
      n_domains_ = std::max<uint16_t>(n_domains_, uint16_t(item_domain[i] + 1));
    }
  }

  void rebuild_domain_lists() {
    dom_items_.assign(n_domains_, {});
    for (uint32_t i = 0; i < item_domain_.size(); ++i) dom_items_[item_domain_[i]].push_back(i);
  }

  // Layers with their shapes (values drawn from rng).
  void build_layers(Rng& rng) {
    const double sd = 1.0 / std::sqrt(double(d_));
    pos_.resize(size_t(max_len_), d_);
    dom_.resize(n_domains_, d_);
    for (auto& v : pos_.data) v = float(rng.normal() * sd);
    for (auto& v : dom_.data) v = domain_emb_ ? float(rng.normal() * sd) : 0.0f;
    blocks_w_.assign(size_t(blocks_), Block());
    for (auto& b : blocks_w_) {
      b.act = nn::parse_ff_act(act_);
      b.dropout = dropout_;
      b.init(d_, size_t(ff_ > 0 ? ff_ : dim_), size_t(heads_), dropout_, rng);
    }
    ln_f_.init(d_);
    heads_w_.clear();
    if (domain_heads_) {
      heads_w_.assign(n_domains_, nn::Linear<float>(d_, d_));
      for (auto& h : heads_w_) {
        h.w.zero();
        for (size_t k = 0; k < d_; ++k) h.w(k, k) = 1.0f;  // starts as the shared head
      }
    }
    adapt_w_.clear();
    if (text_dim_ > 0) {
      const size_t ne = adaptor_ == "moe" ? size_t(experts_) : 1;
      adapt_w_.assign(ne, nn::Linear<float>(text_dim_, d_));
      for (auto& a : adapt_w_) a.init(rng, 1.0);
      if (adaptor_ == "moe") {
        gate_ = nn::Linear<float>(text_dim_, ne);
        gate_.init(rng, 1.0);
      }
      // Adaptor outputs on the scale of the id embeddings.
      for (auto& a : adapt_w_)
        for (auto& v : a.w.data) v *= float(sd);
    }
  }

  void init_params(uint32_t ni) {
    Rng rng(seed_used_, kInitStream);
    const double sd = 1.0 / std::sqrt(double(d_));
    emb_.resize(ni, d_);
    for (auto& v : emb_.data) v = float(rng.normal() * sd);
    build_layers(rng);
    if (text_dim_ > 0 && text_ == "init") {
      // Id embeddings start as a random projection of the text codes, at the id embeddings' scale.
      MatF proj(text_dim_, d_);
      for (auto& v : proj.data) v = float(rng.normal());
      MatF e;
      nn::gemm(code_, false, proj, false, 1.0f, 0.0f, e);
      double ss = 0;
      for (float v : e.data) ss += double(v) * v;
      const float f = float(sd / std::sqrt(std::max(1e-12, ss / double(e.size()))));
      for (size_t k = 0; k < e.size(); ++k) emb_.data[k] = e.data[k] * f;
    }
  }

  // Dense parameters other than the item table with their tensor names, in a fixed order: the order of the
  // gradient buffers, and what save / load write and read.
  std::vector<std::pair<std::string, const MatF*>> named_params() const {
    std::vector<std::pair<std::string, const MatF*>> p{{"pos_emb", &pos_}, {"dom_emb", &dom_}};
    for (size_t b = 0; b < blocks_w_.size(); ++b) {
      const auto ps = blocks_w_[b].params();
      for (size_t k = 0; k < ps.size(); ++k)
        p.emplace_back("block" + std::to_string(b) + "." + std::to_string(k), ps[k]);
    }
    p.emplace_back("ln_f.gamma", &ln_f_.gamma);
    p.emplace_back("ln_f.beta", &ln_f_.beta);
    for (size_t hd = 0; hd < heads_w_.size(); ++hd) {
      p.emplace_back("head" + std::to_string(hd) + ".w", &heads_w_[hd].w);
      p.emplace_back("head" + std::to_string(hd) + ".b", &heads_w_[hd].b);
    }
    if (text_on()) {
      for (size_t e = 0; e < adapt_w_.size(); ++e) {
        p.emplace_back("adaptor" + std::to_string(e) + ".w", &adapt_w_[e].w);
        p.emplace_back("adaptor" + std::to_string(e) + ".b", &adapt_w_[e].b);
      }
      if (adaptor_ == "moe") p.emplace_back("gate.w", &gate_.w), p.emplace_back("gate.b", &gate_.b);
    }
    return p;
  }
  std::vector<const MatF*> dense_params() const {
    std::vector<const MatF*> p;
    for (const auto& [name, m] : named_params()) p.push_back(m);
    return p;
  }
  std::vector<MatF*> dense_params() {
    std::vector<MatF*> p;
    for (const MatF* m : std::as_const(*this).dense_params()) p.push_back(const_cast<MatF*>(m));
    return p;
  }
  size_t adaptor_param_index() const {
    return 2 + blocks_w_.size() * Block::kParams + 2 + heads_w_.size() * 2;
  }

  // ---- Item representations -----------------------------------------------------------------------------

  // out(k) = keep_k * id(ids_k) + adaptor(code(ids_k)); codes and gate values are kept for the backward pass.
  void item_rep(std::span<const uint32_t> ids, const float* keep, MatF& out, MatF* codes, MatF* gates) const {
    const size_t n = ids.size();
    out.resize(n, d_);
    if (id_on()) {
      for (size_t k = 0; k < n; ++k) {
        const float w = keep ? keep[k] : 1.0f;
        if (w == 0.0f) continue;
        const float* e = emb_.row(ids[k]);
        float* o = out.row(k);
        for (size_t j = 0; j < d_; ++j) o[j] = w * e[j];
      }
    }
    if (!text_on()) return;
    MatF local;
    MatF& c = codes ? *codes : local;
    c.reshape(n, text_dim_);
    for (size_t k = 0; k < n; ++k) std::copy(code_.row(ids[k]), code_.row(ids[k]) + text_dim_, c.row(k));
    adapt_forward(c, out, gates);
  }

  // out += adaptor(c).
  void adapt_forward(const MatF& c, MatF& out, MatF* gates) const {
    MatF y;
    if (adaptor_ != "moe") {
      adapt_w_[0].forward(c, y);
      nn::add_into(out, y);
      return;
    }
    MatF gl;
    gate_.forward(c, gl);
    softmax_rows(gl);
    for (size_t e = 0; e < adapt_w_.size(); ++e) {
      adapt_w_[e].forward(c, y);
      for (size_t k = 0; k < y.rows; ++k) {
        const float g = gl(k, e);
        float* o = out.row(k);
        const float* s = y.row(k);
        for (size_t j = 0; j < d_; ++j) o[j] += g * s[j];
      }
    }
    if (gates) *gates = std::move(gl);
  }

  static void softmax_rows(MatF& m) {
    for (size_t r = 0; r < m.rows; ++r) {
      float* p = m.row(r);
      const float mx = *std::max_element(p, p + m.cols);
      float s = 0;
      for (size_t k = 0; k < m.cols; ++k) s += (p[k] = std::exp(p[k] - mx));
      for (size_t k = 0; k < m.cols; ++k) p[k] /= s;
    }
  }

  // Backward of item_rep: the id part goes to (e_ids, e_rows), the adaptor's to grads[ai...].
  void item_rep_backward(std::span<const uint32_t> ids, const float* keep, const MatF& codes,
                         const MatF& gates, const MatF& dout, std::vector<MatF>& grads,
                         std::vector<uint32_t>& e_ids, MatF& e_rows) const {
    const size_t n = ids.size();
    if (id_on()) {
      const size_t r0 = e_rows.rows;
      e_rows.reshape(r0 + n, d_);  // appends n rows, the earlier ones kept
      for (size_t k = 0; k < n; ++k) {
        const float w = keep ? keep[k] : 1.0f;
        float* o = e_rows.row(r0 + k);
        const float* s = dout.row(k);
        for (size_t j = 0; j < d_; ++j) o[j] = w * s[j];
        e_ids.push_back(ids[k]);
      }
    }
    if (!text_on()) return;
    const size_t ai = adaptor_param_index();
    if (adaptor_ != "moe") {
      adapt_w_[0].backward(codes, dout, grads[ai], grads[ai + 1], nullptr);
      return;
    }
    // y = sum_e g_e (c W_e + b_e), g = softmax(c Wg + bg).
    const size_t ne = adapt_w_.size();
    MatF ye, dye(n, d_), dgate(n, ne);
    for (size_t e = 0; e < ne; ++e) {
      adapt_w_[e].forward(codes, ye);
      for (size_t k = 0; k < n; ++k) {
        const float g = gates(k, e);
        const float* s = dout.row(k);
        float* o = dye.row(k);
        float dg = 0;
        for (size_t j = 0; j < d_; ++j) {
          o[j] = g * s[j];
          dg += s[j] * ye(k, j);
        }
        dgate(k, e) = dg;
      }
      adapt_w_[e].backward(codes, dye, grads[ai + 2 * e], grads[ai + 2 * e + 1], nullptr);
    }
    for (size_t k = 0; k < n; ++k) {
      float dot = 0;
      for (size_t e = 0; e < ne; ++e) dot += gates(k, e) * dgate(k, e);
      for (size_t e = 0; e < ne; ++e) dgate(k, e) = gates(k, e) * (dgate(k, e) - dot);
    }
    gate_.backward(codes, dgate, grads[ai + 2 * ne], grads[ai + 2 * ne + 1], nullptr);
  }

  // Representations of every item for scoring (and per domain with domain heads).
  void refresh_items() {
    rebuild_domain_lists();
    std::vector<uint32_t> all(emb_.rows);
    std::iota(all.begin(), all.end(), 0u);
    item_rep(all, nullptr, item_rep_, nullptr, nullptr);
    item_rep_dom_.clear();
    if (domain_heads_) {
      for (uint16_t dd = 0; dd < n_domains_; ++dd) {
        MatF m(dom_items_[dd].size(), d_);
        for (size_t c = 0; c < dom_items_[dd].size(); ++c)
          std::copy(item_rep_.row(dom_items_[dd][c]), item_rep_.row(dom_items_[dd][c]) + d_, m.row(c));
        item_rep_dom_.push_back(std::move(m));
      }
    }
  }

  // ---- Forward for scoring ------------------------------------------------------------------------------

  // The final hidden state after the most recent item of `h` (zeros for an empty history).
  // The transformer's outputs (before the final layer norm) over one window of at most max_len items.
  void window_forward(std::span<const uint32_t> ids, MatF& x) const {
    const size_t n = ids.size();
    MatF y;
    item_rep(ids, nullptr, x, nullptr, nullptr);
    const float s = std::sqrt(float(d_));
    for (size_t t = 0; t < n; ++t) {
      float* r = x.row(t);
      const float* p = pos_.row(n - 1 - t);
      const float* g = dom_.row(dom(ids[t]));
      for (size_t j = 0; j < d_; ++j) r[j] = s * (r[j] + p[j] + g[j]);
    }
    const uint32_t off[2] = {0, uint32_t(n)};
    Block::Cache cache;
    for (const auto& b : blocks_w_) {
      b.forward(x, off, y, cache, nullptr);
      std::swap(x, y);
    }
  }

  // A user's state: the normalised output at the last position of the most recent window (user_state=last),
  // or the mean of the normalised outputs at every position of the whole history, read in consecutive
  // max_len windows from the most recent backwards as in training (user_state=mean).
  void hidden(const std::vector<uint32_t>& h, float* out) const {
    std::fill(out, out + d_, 0.0f);
    if (h.empty()) return;
    const size_t w = size_t(max_len_);
    MatF x, o;
    if (user_state_ == "mean") {
      size_t count = 0;
      for (size_t end = h.size(); end > 0;) {
        const size_t b = end - std::min(end, w);
        window_forward(std::span<const uint32_t>(h.data() + b, end - b), x);
        ln_f_.forward(x, o, nullptr);
        for (size_t t = 0; t < o.rows; ++t)
          for (size_t j = 0; j < d_; ++j) out[j] += o.row(t)[j];
        count += o.rows;
        end = b;
      }
      for (size_t j = 0; j < d_; ++j) out[j] /= float(count);
      return;
    }
    const size_t n = std::min(h.size(), w);
    window_forward(std::span<const uint32_t>(h.data() + h.size() - n, n), x);
    MatF last(1, d_);
    std::copy(x.row(n - 1), x.row(n - 1) + d_, last.row(0));
    ln_f_.forward(last, o, nullptr);
    std::copy(o.data.begin(), o.data.end(), out);
  }

  // ---- Training -----------------------------------------------------------------------------------------

  // Trains on the windows of `seqs`. A resume (resume_epochs >= 0) trains only the windows of the users
  // marked in `only`, for exactly resume_epochs epochs, from its own streams (the fit's min_steps does not
  // apply).
  void train(const std::vector<std::vector<uint32_t>>& seqs, const FitContext& ctx,
             const std::vector<uint8_t>* only = nullptr, int resume_epochs = -1) {
    const bool resuming = resume_epochs >= 0;
    curve_.clear();
    // Training windows (user, end): the items seq[end - max_len - 1 .. end) of a history, at least two of
    // them; each item is a target in exactly one window (with `windows`; else only the most recent window).
    std::vector<Window> users;
    std::vector<uint64_t> dom_positions(n_domains_, 0);
    for (uint32_t u = 0; u < seqs.size(); ++u) {
      for (size_t end = seqs[u].size(); end >= 2;) {
        users.push_back({u, uint32_t(end)});
        const size_t b = end - std::min(end, size_t(max_len_) + 1);
        for (size_t t = b + 1; t < end; ++t) ++dom_positions[dom(seqs[u][t])];
        if (!windows_) break;
        end = b + 1;
      }
    }
    domain_weight_.assign(n_domains_, 1.0f);
    if (balance_) {
      uint64_t least = UINT64_MAX;
      for (uint64_t c : dom_positions)
        if (c > 0) least = std::min(least, c);
      for (uint16_t dd = 0; dd < n_domains_; ++dd)
        if (dom_positions[dd] > 0) domain_weight_[dd] = float(double(least) / double(dom_positions[dd]));
    }
    if (only) std::erase_if(users, [&](const Window& w) { return !(*only)[w.user]; });
    if (users.empty() || (resuming ? resume_epochs : epochs_) == 0) return;
    if (dp_.active()) return train_dp(seqs, users, ctx);
    std::vector<MatF*> params = dense_params();
    const size_t np = params.size();
    params.push_back(&emb_);
    nn::AdamOptions ao;
    ao.lr = lr_;
    ao.weight_decay = weight_decay_;
    nn::Adam<float> adam(params, ao);
    std::vector<MatF> grads(params.size());
    for (size_t k = 0; k < params.size(); ++k) grads[k].resize(params[k]->rows, params[k]->cols);
    const size_t bsz = size_t(batch_);
    const int64_t steps_per_epoch = int64_t((users.size() + bsz - 1) / bsz);
    const int epochs =
        resuming ? resume_epochs
                 : int(std::max<int64_t>(epochs_, (min_steps_ + steps_per_epoch - 1) / steps_per_epoch));
    const int64_t total = steps_per_epoch * epochs;
    const uint64_t step_base = resuming ? kResumeStepBase : 0;
    const char* what = resuming ? "sasrec resume epochs" : "sasrec epochs";
    nn::TaskPool pool(std::max(1, ctx.threads));
    std::vector<Chunk> chunks;
    Candidates cand;
    std::vector<uint32_t> e_ids;
    MatF e_rows;
    int64_t step = 0;
    Timer timer;
    for (int ep = 0; ep < epochs; ++ep) {
      Rng shuffle(seed_used_, (resuming ? kResumeStream + 1 : kShuffleStream) + uint64_t(ep));
      std::shuffle(users.begin(), users.end(), shuffle);
      double loss = 0;
      uint64_t positions = 0;
      for (size_t b0 = 0; b0 < users.size(); b0 += bsz, ++step) {
        const size_t b1 = std::min(users.size(), b0 + bsz);
        const std::span<const Window> batch(users.data() + b0, b1 - b0);
        for (auto& g : grads) g.zero();
        loss += batch_gradient(seqs, batch, step_base + uint64_t(step), chunks, cand, grads, e_ids, e_rows,
                               [&](size_t n, const std::function<void(size_t)>& f) { pool.run(n, f); });
        MatF& ge = grads[np];
        for (size_t r = 0; r < e_ids.size(); ++r) {
          float* o = ge.row(e_ids[r]);
          const float* s = e_rows.row(r);
          for (size_t j = 0; j < d_; ++j) o[j] += s[j];
        }
        positions += batch_positions(batch);
        nn::clip_grad_norm<float>(grads, clip_);
        adam.set_lr(nn::scheduled_lr(lr_, step, warmup_, total, decay_));
        adam.step(grads);
      }
      curve_.push_back(loss / double(std::max<uint64_t>(1, positions)));
      if (ctx.verbose)
        std::fprintf(stderr, "%s %d: loss %.4f (%.1f s)\n", what, ep + 1,
                     loss / double(std::max<uint64_t>(1, positions)), timer.seconds());
      if (ctx.progress) ctx.progress(size_t(ep + 1), size_t(epochs), what);
    }
  }

  // Target positions of a set of windows.
  uint64_t batch_positions(std::span<const Window> batch) const {
    uint64_t n = 0;
    for (const Window& w : batch) n += std::min(size_t(w.end), size_t(max_len_) + 1) - 1;
    return n;
  }

  // The gradient of the (domain-weighted) mean loss over the target positions of `batch`, which is the
  // minibatch of step `step` of the optimiser (a DP-SGD user's batch of one: step * n_users + user): its
  // candidates drawn from the batch stream, its chunks of kChunkSeqs windows computed through `run` (each
  // chunk from its own stream) and their gradients added in chunk order. The dense parameters' gradients are
  // added into grads[0 .. dense_params().size()); the item table's rows are returned as (e_ids, e_rows), in
  // order, one row per use. Returns the summed loss of the positions.
  double batch_gradient(const std::vector<std::vector<uint32_t>>& seqs, std::span<const Window> batch,
                        uint64_t step, std::vector<Chunk>& chunks, Candidates& cand, std::vector<MatF>& grads,
                        std::vector<uint32_t>& e_ids, MatF& e_rows,
                        const std::function<void(size_t, const std::function<void(size_t)>&)>& run) const {
    const size_t np = named_params().size();
    Rng brng(seed_used_, kBatchStream + step);
    // Shared candidates per domain. Id dropout applies to the candidates as to the positives, so that an
    // item known by its text only is not a sign of a positive.
    const bool idd = id_dropout_ > 0 && text_on() && id_on();
    cand.ids.assign(n_domains_, {});
    cand.keep.assign(n_domains_, {});
    cand.rep.assign(n_domains_, MatF()), cand.codes.assign(n_domains_, MatF()),
        cand.gates.assign(n_domains_, MatF());
    if (loss_ == "softmax") {
      for (uint16_t dd = 0; dd < n_domains_; ++dd) {
        if (pool_[dd].empty()) continue;
        cand.ids[dd].resize(size_t(negatives_));
        for (auto& c : cand.ids[dd]) c = pool_[dd][brng.below(pool_[dd].size())];
        if (idd) {
          cand.keep[dd].resize(cand.ids[dd].size());
          for (auto& k : cand.keep[dd]) k = brng.uniform() < id_dropout_ ? 0.0f : 1.0f;
        }
        item_rep(cand.ids[dd], idd ? cand.keep[dd].data() : nullptr, cand.rep[dd], &cand.codes[dd],
                 &cand.gates[dd]);
      }
    }
    // The batch's (weighted) positions, for the mean.
    double weight_sum = 0;
    for (const Window& w : batch) {
      const auto& s = seqs[w.user];
      const size_t n = std::min(size_t(w.end), size_t(max_len_) + 1);
      for (size_t t = w.end - n + 1; t < w.end; ++t) weight_sum += domain_weight_[dom(s[t])];
    }
    const size_t nc = (batch.size() + kChunkSeqs - 1) / kChunkSeqs;
    if (chunks.size() < nc) chunks.resize(nc);
    const float scale = float(1.0 / std::max(1e-12, weight_sum));
    run(nc, [&](size_t c) {
      const size_t s0 = c * kChunkSeqs, s1 = std::min(batch.size(), s0 + kChunkSeqs);
      run_chunk(chunks[c], seqs, batch.subspan(s0, s1 - s0), cand.ids, cand.rep, scale,
                Rng(seed_used_, kChunkStream + step * 4096 + c));
    });
    // Gradients of the chunks, added in chunk order, then the candidates'.
    e_ids.clear();
    e_rows.resize(0, d_);
    double loss = 0;
    std::vector<MatF> dcand(n_domains_);
    auto append_rows = [&](const std::vector<uint32_t>& ids, const MatF& rows) {
      const size_t r0 = e_rows.rows;
      e_rows.reshape(r0 + ids.size(), d_);
      std::copy(rows.data.begin(), rows.data.begin() + ids.size() * d_, e_rows.row(r0));
      e_ids.insert(e_ids.end(), ids.begin(), ids.end());
    };
    for (size_t c = 0; c < nc; ++c) {
      Chunk& ch = chunks[c];
      for (size_t k = 0; k < np; ++k) nn::add_into(grads[k], ch.grads[k]);
      append_rows(ch.e_ids, ch.e_rows);
      for (uint16_t dd = 0; dd < n_domains_; ++dd) {
        if (ch.dcand[dd].rows == 0) continue;
        if (dcand[dd].rows == 0) {
          dcand[dd] = ch.dcand[dd];
        } else {
          nn::add_into(dcand[dd], ch.dcand[dd]);
        }
      }
      loss += ch.loss;
    }
    for (uint16_t dd = 0; dd < n_domains_; ++dd) {
      if (dcand[dd].rows == 0) continue;
      std::vector<uint32_t> ids;
      MatF rows(0, d_);
      item_rep_backward(cand.ids[dd], idd ? cand.keep[dd].data() : nullptr, cand.codes[dd], cand.gates[dd],
                        dcand[dd], grads, ids, rows);
      append_rows(ids, rows);
    }
    return loss;
  }

  // User-level DP-SGD (see the top of the file). `windows` lists each user's windows together, users in
  // order. The released parameters laid out flat: the dense parameters in their order, then the item table.
  void train_dp(const std::vector<std::vector<uint32_t>>& seqs, const std::vector<Window>& windows,
                const FitContext& ctx) {
    const uint32_t nu = uint32_t(seqs.size());
    const models::DpSgdPlan plan = models::plan_dp_sgd(dp_, nu, epochs_, "sasrec");
    std::vector<size_t> wbeg(size_t(nu) + 1, 0);  // user u's windows: [wbeg[u], wbeg[u + 1])
    for (const Window& w : windows) ++wbeg[w.user + 1];
    for (uint32_t u = 0; u < nu; ++u) wbeg[u + 1] += wbeg[u];
    std::vector<MatF*> params = dense_params();
    const size_t np = params.size();
    params.push_back(&emb_);
    std::vector<size_t> off(params.size() + 1, 0);
    for (size_t k = 0; k < params.size(); ++k) off[k + 1] = off[k] + params[k]->size();
    privacy::DpAggregator agg(off.back(), dp_.clip);
    nn::AdamOptions ao;
    ao.lr = lr_;
    ao.weight_decay = weight_decay_;
    nn::Adam<float> adam(params, ao);
    std::vector<MatF> grads(params.size());
    for (size_t k = 0; k < params.size(); ++k) grads[k].resize(params[k]->rows, params[k]->cols);
    // Users run in groups, in parallel within a group; their gradients are clipped and added in user order.
    struct UserGrad {
      std::vector<Chunk> chunks;
      Candidates cand;
      std::vector<MatF> dense;
      std::vector<uint32_t> e_ids, rows;  // item rows as used, then merged (ascending, unique)
      MatF e_rows, row_g;
      double loss = 0;
      uint64_t positions = 0;
    };
    const size_t group = size_t(std::max(1, ctx.threads)) * 4;
    std::vector<UserGrad> ug(group);
    for (UserGrad& g : ug)
      for (const MatF* p : std::as_const(*this).dense_params()) g.dense.emplace_back(p->rows, p->cols);
    nn::TaskPool pool(std::max(1, ctx.threads));
    const auto serial = [](size_t n, const std::function<void(size_t)>& f) {
      for (size_t c = 0; c < n; ++c) f(c);
    };
    std::vector<privacy::DpAggregator::Piece> pieces;
    size_t clipped = 0, contributions = 0;
    double loss = 0;
    uint64_t positions = 0;
    Timer timer;
    if (ctx.progress) ctx.progress(0, size_t(plan.steps), "sasrec DP-SGD steps");
    for (int64_t step = 0; step < plan.steps; ++step) {
      const std::vector<uint32_t> sampled = plan.sample(seed_used_, kDpSampleStream, step);
      agg.reset();
      for (size_t g0 = 0; g0 < sampled.size(); g0 += group) {
        const size_t n = std::min(group, sampled.size() - g0);
        pool.run(n, [&](size_t k) {
          const uint32_t u = sampled[g0 + k];
          UserGrad& g = ug[k];
          for (MatF& m : g.dense) m.zero();
          g.rows.clear();
          g.row_g.resize(0, d_);
          g.loss = 0;
          const std::span<const Window> mine(windows.data() + wbeg[u], wbeg[u + 1] - wbeg[u]);
          g.positions = batch_positions(mine);
          if (mine.empty()) return;
          g.loss = batch_gradient(seqs, mine, uint64_t(step) * nu + u, g.chunks, g.cand, g.dense, g.e_ids,
                                  g.e_rows, serial);
          // Merge the item rows: ascending ids, each once, summed in order of use.
          std::vector<uint32_t> order(g.e_ids.size());
          std::iota(order.begin(), order.end(), 0u);
          std::stable_sort(order.begin(), order.end(),
                           [&](uint32_t a, uint32_t b) { return g.e_ids[a] < g.e_ids[b]; });
          for (uint32_t r : order) {
            if (g.rows.empty() || g.rows.back() != g.e_ids[r]) {
              g.rows.push_back(g.e_ids[r]);
              g.row_g.reshape(g.rows.size(), d_);
              std::fill(g.row_g.row(g.rows.size() - 1), g.row_g.row(g.rows.size() - 1) + d_, 0.0f);
            }
            float* o = g.row_g.row(g.rows.size() - 1);
            const float* s = g.e_rows.row(r);
            for (size_t j = 0; j < d_; ++j) o[j] += s[j];
          }
        });
        for (size_t k = 0; k < n; ++k) {
          const UserGrad& g = ug[k];
          pieces.clear();
          for (size_t p = 0; p < np; ++p)
            pieces.push_back({off[p], {g.dense[p].data.data(), g.dense[p].size()}});
          for (size_t r = 0; r < g.rows.size(); ++r)
            pieces.push_back({off[np] + size_t(g.rows[r]) * d_, {g.row_g.row(r), d_}});
          agg.add(pieces);  // a user without windows adds a zero contribution
          loss += g.loss;
          positions += g.positions;
        }
      }
      clipped += agg.clipped();
      contributions += agg.contributions();
      Rng noise(seed_used_, kDpNoiseStream + uint64_t(step));
      agg.finish(plan.sigma, plan.expected_users(), noise);
      for (size_t k = 0; k < params.size(); ++k)
        std::transform(agg.sum().begin() + ptrdiff_t(off[k]), agg.sum().begin() + ptrdiff_t(off[k + 1]),
                       grads[k].data.begin(), [](double v) { return float(v); });
      nn::clip_grad_norm<float>(grads, clip_);
      adam.set_lr(nn::scheduled_lr(lr_, step, warmup_, plan.steps, decay_));
      adam.step(grads);
      if (plan.epoch_end(step)) {
        curve_.push_back(loss / double(std::max<uint64_t>(1, positions)));
        if (ctx.verbose)
          std::fprintf(stderr, "sasrec DP-SGD step %lld/%lld: loss %.4f (%.1f s)\n", (long long)step + 1,
                       (long long)plan.steps, curve_.back(), timer.seconds());
        loss = 0;
        positions = 0;
      }
      if (ctx.progress) ctx.progress(size_t(step) + 1, size_t(plan.steps), "sasrec DP-SGD steps");
    }
    privacy_ = models::dp_sgd_report(dp_, plan, clipped, contributions, "sasrec",
                                     "every parameter: the item, position and domain tables, the "
                                     "transformer, layer-norm, head and adaptor "
                                     "weights (user-level); not the histories kept for scoring",
                                     ctx.verbose);
  }

  void run_chunk(Chunk& ch, const std::vector<std::vector<uint32_t>>& seqs, std::span<const Window> windows,
                 const std::vector<std::vector<uint32_t>>& cand, const std::vector<MatF>& cand_rep,
                 float scale, Rng rng) const {
    // Pack the chunk's windows: inputs s[b .. end-2], targets s[b+1 .. end-1], b = end - n.
    ch.offsets.assign(1, 0);
    ch.in_ids.clear(), ch.in_rev.clear(), ch.tgt_ids.clear(), ch.in_dom.clear(), ch.tgt_dom.clear();
    for (const Window& w : windows) {
      const auto& s = seqs[w.user];
      const size_t n = std::min(size_t(w.end), size_t(max_len_) + 1), b = w.end - n;
      for (size_t t = 0; t + 1 < n; ++t) {
        ch.in_ids.push_back(s[b + t]);
        ch.in_rev.push_back(uint32_t(n - 2 - t));
        ch.in_dom.push_back(dom(s[b + t]));
        ch.tgt_ids.push_back(s[b + t + 1]);
        ch.tgt_dom.push_back(dom(s[b + t + 1]));
      }
      ch.offsets.push_back(uint32_t(ch.in_ids.size()));
    }
    const size_t T = ch.in_ids.size();
    const bool idd = id_dropout_ > 0 && text_on() && id_on();
    ch.in_keep.assign(T, 1.0f);
    ch.tgt_keep.assign(T, 1.0f);
    if (idd)
      for (size_t k = 0; k < T; ++k) {
        ch.in_keep[k] = rng.uniform() < id_dropout_ ? 0.0f : 1.0f;
        ch.tgt_keep[k] = rng.uniform() < id_dropout_ ? 0.0f : 1.0f;
      }
    // Forward.
    const float sq = std::sqrt(float(d_));
    ch.xs.resize(blocks_w_.size() + 1);
    ch.caches.resize(blocks_w_.size());
    item_rep(ch.in_ids, ch.in_keep.data(), ch.xs[0], &ch.in_text, &ch.in_adapt);
    for (size_t t = 0; t < T; ++t) {
      float* r = ch.xs[0].row(t);
      const float* p = pos_.row(ch.in_rev[t]);
      const float* g = dom_.row(ch.in_dom[t]);
      for (size_t j = 0; j < d_; ++j) r[j] = sq * (r[j] + p[j] + g[j]);
    }
    if (dropout_ > 0) {
      ch.emb_drop.rate = dropout_;
      ch.emb_drop.forward(ch.xs[0], rng);
    }
    for (size_t b = 0; b < blocks_w_.size(); ++b)
      blocks_w_[b].forward(ch.xs[b], ch.offsets, ch.xs[b + 1], ch.caches[b], &rng);
    ln_f_.forward(ch.xs.back(), ch.h, &ch.lnf);

    // Loss per target domain.
    if (ch.grads.empty()) {
      for (const MatF* p : dense_params()) ch.grads.emplace_back(p->rows, p->cols);
    } else {
      for (auto& g : ch.grads) g.zero();
    }
    ch.e_ids.clear();
    ch.e_rows.resize(0, d_);
    ch.dcand.assign(n_domains_, MatF());
    ch.loss = 0;
    MatF dh(T, d_);
    MatF tgt_rep;
    item_rep(ch.tgt_ids, ch.tgt_keep.data(), tgt_rep, &ch.tgt_text, &ch.tgt_adapt);
    MatF dtgt(T, d_);
    const size_t hoff = 2 + blocks_w_.size() * Block::kParams + 2;
    for (uint16_t dd = 0; dd < n_domains_; ++dd) {
      std::vector<uint32_t> rows;
      for (size_t t = 0; t < T; ++t)
        if (ch.tgt_dom[t] == dd) rows.push_back(uint32_t(t));
      if (rows.empty()) continue;
      const size_t m = rows.size();
      MatF hq(m, d_), pq(m, d_), hz;
      std::vector<uint32_t> pid(m);
      for (size_t r = 0; r < m; ++r) {
        std::copy(ch.h.row(rows[r]), ch.h.row(rows[r]) + d_, hq.row(r));
        std::copy(tgt_rep.row(rows[r]), tgt_rep.row(rows[r]) + d_, pq.row(r));
        pid[r] = ch.tgt_ids[rows[r]];
      }
      if (domain_heads_) heads_w_[dd].forward(hq, hz);
      const MatF& hin = domain_heads_ ? hz : hq;
      const float sc = scale * domain_weight_[dd];
      MatF dhq, dpq;
      if (loss_ == "softmax") {
        ch.loss +=
            nn::sampled_softmax<float>(hin, pq, cand_rep[dd], pid, cand[dd], sc, &dhq, &dpq, &ch.dcand[dd]) /
            scale;
      } else {
        // One negative per position from the target's domain (not the target itself when possible).
        std::vector<uint32_t> nid(m);
        const auto& pl = pool_[dd];
        for (size_t r = 0; r < m; ++r) {
          uint32_t j = pl[rng.below(pl.size())];
          for (int tries = 0; j == pid[r] && pl.size() > 1 && tries < 8; ++tries)
            j = pl[rng.below(pl.size())];
          nid[r] = j;
        }
        MatF nq, ncodes, ngates, dnq;
        std::vector<float> nkeep(m, 1.0f);
        if (idd)
          for (auto& k : nkeep) k = rng.uniform() < id_dropout_ ? 0.0f : 1.0f;
        item_rep(nid, nkeep.data(), nq, &ncodes, &ngates);
        ch.loss += nn::pairwise_bce<float>(hin, pq, nq, sc, &dhq, &dpq, &dnq) / scale;
        item_rep_backward(nid, nkeep.data(), ncodes, ngates, dnq, ch.grads, ch.e_ids, ch.e_rows);
      }
      if (domain_heads_) {
        MatF dhin = dhq;
        heads_w_[dd].backward(hq, dhin, ch.grads[hoff + 2 * dd], ch.grads[hoff + 2 * dd + 1], &dhq);
      }
      for (size_t r = 0; r < m; ++r) {
        std::copy(dhq.row(r), dhq.row(r) + d_, dh.row(rows[r]));
        std::copy(dpq.row(r), dpq.row(r) + d_, dtgt.row(rows[r]));
      }
    }
    // Backward.
    item_rep_backward(ch.tgt_ids, ch.tgt_keep.data(), ch.tgt_text, ch.tgt_adapt, dtgt, ch.grads, ch.e_ids,
                      ch.e_rows);
    MatF dx;
    ln_f_.backward(dh, ch.lnf, ch.grads[2 + blocks_w_.size() * Block::kParams],
                   ch.grads[2 + blocks_w_.size() * Block::kParams + 1], dx);
    for (size_t b = blocks_w_.size(); b-- > 0;) {
      MatF dprev;
      blocks_w_[b].backward(ch.xs[b], ch.offsets, ch.caches[b], dx,
                            std::span<MatF>(ch.grads.data() + 2 + b * Block::kParams, Block::kParams), dprev);
      dx = std::move(dprev);
    }
    if (dropout_ > 0) ch.emb_drop.backward(dx);
    // x0 = sqrt(d) * (item + pos + dom)
    MatF dit(T, d_);
    for (size_t t = 0; t < T; ++t) {
      const float* s = dx.row(t);
      float* gp = ch.grads[0].row(ch.in_rev[t]);
      float* gd = ch.grads[1].row(ch.in_dom[t]);
      float* o = dit.row(t);
      for (size_t j = 0; j < d_; ++j) {
        const float v = sq * s[j];
        o[j] = v;
        gp[j] += v;
        if (domain_emb_) gd[j] += v;
      }
    }
    item_rep_backward(ch.in_ids, ch.in_keep.data(), ch.in_text, ch.in_adapt, dit, ch.grads, ch.e_ids,
                      ch.e_rows);
  }

  ParamSet params_;
  int dim_ = 64, blocks_ = 2, heads_ = 1, ff_ = 0, max_len_ = 50, epochs_ = 40, batch_ = 256, warmup_ = 100;
  int negatives_ = 2000, experts_ = 4, seed_ = 0, min_steps_ = 1000;
  double dropout_ = 0.3, lr_ = 1e-3, weight_decay_ = 0, clip_ = 5, id_dropout_ = 0;
  bool decay_ = false, balance_ = false, domain_emb_ = true, domain_heads_ = false, windows_ = true;
  std::vector<double> curve_;  // mean loss per epoch of the last fit
  std::string act_ = "gelu", loss_ = "softmax", text_ = "add", adaptor_ = "linear", user_state_ = "last";
  models::AutoencoderParams ae_;
  models::DpSgdParams dp_;  // dp, dp_noise, dp_clip, dp_delta, dp_epsilon, dp_users
  nlohmann::json privacy_;  // the DP-SGD guarantee of the last fit (null without DP)

  bool fitted_ = false;
  uint64_t seed_used_ = 42;
  size_t d_ = 64, text_dim_ = 0;
  uint16_t n_domains_ = 1;
  std::string encoder_;
  std::vector<uint16_t> item_domain_;
  std::vector<std::vector<uint32_t>> dom_items_, pool_;
  std::vector<float> domain_weight_;
  MatF emb_, pos_, dom_, code_;
  std::vector<Block> blocks_w_;
  nn::LayerNorm<float> ln_f_;
  std::vector<nn::Linear<float>> heads_w_, adapt_w_;
  nn::Linear<float> gate_;
  models::TextFeatures features_;
  std::vector<std::vector<uint32_t>> hist_;
  MatF item_rep_;
  std::vector<MatF> item_rep_dom_;
};

XDREC_REGISTER_MODEL(sasrec,
                     "self-attentive sequential model over each user's ordered mixed-domain history; sampled "
                     "softmax per domain; item text through an adaptor; fold-in is a forward pass",
                     SasrecModel,
                     {.uses_text = true,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = true,
                      .profile = false});

}  // namespace xdrec
