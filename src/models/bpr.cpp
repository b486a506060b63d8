// BPR-MF (Rendle et al. 2009): matrix factorisation with an item bias trained by stochastic gradient ascent
// on log sigmoid(x_u . (y_i - y_j) + b_i - b_j) for sampled (user, positive item i, negative item j) triples.
// A positive is an entry drawn uniformly from the observed entries with a value > 0; the negative is drawn
// uniformly from all items, rejecting items in the user's row. Several threads update the shared factors
// without locks (Hogwild); each thread draws from its own seeded stream, so a run with threads=1 is fully
// deterministic, while with more threads the interleaving of updates varies from run to run.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "models/factor_model.h"
#include "models/mf_kernels.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

// Streams of the per-epoch, per-thread generators (epoch e, thread t -> (e + 1) * kStreamsPerEpoch + t).
constexpr uint64_t kStreamsPerEpoch = 1 << 16;
constexpr uint64_t kItemStreamBase = uint64_t(1) << 40;
constexpr uint64_t kFoldInStreamBase = uint64_t(1) << 50;
constexpr uint64_t kResumeStreamBase = uint64_t(1) << 56;
constexpr int kNegativeTries = 32;

// Draws a negative for a user whose row (sorted item indices) is `seen`; returns false when every try hit a
// seen item.
inline bool draw_negative(Rng& rng, uint32_t n_items, std::span<const uint32_t> seen, bool verify,
                          uint32_t& j) {
  for (int t = 0; t < kNegativeTries; ++t) {
    j = uint32_t(rng.below(n_items));
    if (!verify || !std::binary_search(seen.begin(), seen.end(), j)) return true;
  }
  return false;
}

}  // namespace

class BprModel final : public models::FactorModel {
 public:
  explicit BprModel(const Spec& spec) : params_("bpr") {
    params_.add("factors", &factors_, 64, 1, mf::kMaxFactors, "number of latent factors")
        .add("lr", &lr_, 0.05, 1e-9, 10.0, "SGD learning rate")
        .add("reg", &reg_, 0.01, 0.0, 1e3, "L2 regularisation of the factors and biases updated by a step")
        .add("epochs", &epochs_, 100, 0, 100000,
             "epochs; one epoch draws as many triples as positive entries")
        .add("bias", &bias_, true, "learn an item bias")
        .add("verify_negatives", &verify_negatives_, true, "reject sampled negatives that the user has seen")
        .add("init", &init_, 0.01, 0.0, 10.0, "standard deviation of the normal initial factors")
        .add("foldin_epochs", &foldin_epochs_, 30, 1, 100000,
             "fold-in: passes over the new user's history, updating only that user's factors")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_));
    ModelCost c;
    // Factors and item bias, the packed positive entries.
    c.bytes = (s.n_users + s.n_items) * ld * 4 + s.n_items * 4 + s.nnz * 8 + model_util::score_batch_bytes(s);
    // One SGD step touches three factor rows, mostly cache misses.
    c.seconds = double(epochs_) * double(s.nnz) * (60e-9 + double(ld) * 1e-9);
    c.note = "factors x (users + items) floats";
    return c;
  }
  std::string name() const override { return "bpr"; }
  std::string spec() const override { return name() + ":" + params_.current(); }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    model_util::check_interactions(user_items, "bpr");
    const int threads = resolve_threads(ctx.threads);
    seed_used_ = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    users_.resize(user_items.n_rows, size_t(factors_));
    items_.resize(user_items.n_cols, size_t(factors_));
    users_.init_normal(seed_used_, 0, float(init_), threads);
    items_.init_normal(seed_used_, kItemStreamBase, float(init_), threads);
    item_bias_.assign(user_items.n_cols, 0.0f);

    // Positive entries packed as (user << 32 | item).
    std::vector<uint64_t> pos;
    pos.reserve(user_items.nnz());
    for (uint32_t u = 0; u < user_items.n_rows; ++u)
      for (uint64_t p = user_items.indptr[u]; p < user_items.indptr[u + 1]; ++p)
        if (user_items.values[p] > 0) pos.push_back((uint64_t(u) << 32) | user_items.indices[p]);

    last_epoch_accuracy_ = 0;
    if (ctx.progress) ctx.progress(0, size_t(epochs_), "bpr epochs");
    if (pos.empty() || user_items.n_cols == 0) {
      if (ctx.progress) ctx.progress(size_t(epochs_), size_t(epochs_), "bpr epochs");
      return;
    }
    run_epochs(user_items, pos, epochs_, 0, threads, ctx);
  }

  // Incremental update: new users and items get rows drawn as a fit draws them (item bias 0); the touched and
  // new users are folded in from their rows of `user_items` against the current items; then `sweeps` epochs
  // of the fit's SGD (same lr, reg, negatives) over the touched and new users' entries plus as many replayed
  // entries of the other users (FactorModel::resume_entries), updating users and items.
  bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
              int sweeps) override {
    check_resume(user_items, touched_users);
    check(sweeps >= 0, "bpr resume: sweeps must be >= 0");
    const int threads = resolve_threads(ctx.threads);
    const uint32_t old_users = n_users();
    grow_rows(users_, user_items.n_rows, seed_used_, 0, float(init_));
    grow_rows(items_, user_items.n_cols, seed_used_, kItemStreamBase, float(init_));
    if (bias_) item_bias_.resize(user_items.n_cols, 0.0f);
    const std::vector<uint32_t> users = resume_users(touched_users, old_users, user_items.n_rows);
    // The fold-in of each user reads only the items: the users are independent (any thread count).
    parallel_for(users.size(), threads, 16, [&](size_t lo, size_t hi) {
      for (size_t k = lo; k < hi; ++k) {
        const uint32_t u = users[k];
        const model_util::History h = model_util::make_history(
            user_items.row_indices(u),
            {user_items.values.data() + user_items.indptr[u], user_items.row_size(u)}, items_.rows, false,
            name());
        std::fill(users_.row(u), users_.row(u) + users_.ld, 0.0f);
        solve_user(h, users_.row(u));
      }
    });
    std::vector<uint64_t> pos;
    for (uint64_t p : resume_entries(user_items, users, seed_used_, kResumeStreamBase)) {
      const uint32_t u = uint32_t(std::upper_bound(user_items.indptr.begin(), user_items.indptr.end(), p) -
                                  user_items.indptr.begin() - 1);
      pos.push_back((uint64_t(u) << 32) | user_items.indices[p]);
    }
    run_epochs(user_items, pos, sweeps, kResumeStreamBase, threads, ctx);
    return true;
  }

  std::vector<std::string> compressible_tensors() const override { return {"user_factors", "item_factors"}; }
  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    save_factors(tensors, "user_factors", "item_factors", "item_bias");
    extra["factors"] = factors_;
    extra["seed"] = seed_used_;
  }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    load_factors(tensors, "user_factors", "item_factors", size_t(factors_),
                 "factors=" + std::to_string(factors_), "item_bias");
    seed_used_ = extra.contains("seed") ? extra["seed"].get<uint64_t>() : uint64_t(seed_);
  }

  double last_epoch_accuracy() const { return last_epoch_accuracy_; }

 protected:
  // Fold-in: SGD on the history's positives against sampled negatives, updating only the user's factors.
  void solve_user(const model_util::History& hist, float* x) override {
    const std::vector<uint32_t>& seen = hist.items;
    std::vector<uint32_t> positives;
    for (size_t k = 0; k < seen.size(); ++k)
      if (hist.weights[k] > 0) positives.push_back(seen[k]);
    // The random stream depends on the history only (not on the user's index).
    const uint64_t h = fnv1a64(positives.data(), positives.size() * sizeof(uint32_t),
                               fnv1a64(seen.data(), seen.size() * sizeof(uint32_t)));
    Rng rng(seed_used_, kFoldInStreamBase ^ h);
    for (size_t k = 0; k < users_.f; ++k) x[k] = float(init_) * rng.normal();
    if (positives.empty()) return;
    const int nv = int(users_.ld / 8);
    const float lr = float(lr_), reg = float(reg_);
    for (int e = 0; e < foldin_epochs_; ++e) {
      for (size_t s = 0; s < positives.size(); ++s) {
        const uint32_t i = positives[rng.below(positives.size())];
        uint32_t j;
        if (!draw_negative(rng, uint32_t(items_.rows), seen, true, j)) continue;
        float* bi = bias_ ? &item_bias_[i] : nullptr;
        float* bj = bias_ ? &item_bias_[j] : nullptr;
        mf::dispatch_width(nv, [&]<int NV>() {
          return mf::detail::bpr_step<NV>(x, items_.row(i), items_.row(j), bi, bj, lr, reg, false, nv);
        });
      }
    }
  }

 private:
  // `epochs` epochs of SGD on triples whose positives are drawn from `pos` (user << 32 | item) as many times
  // as it has entries; epoch e, thread t draws from the stream (stream_base + (e + 1) * kStreamsPerEpoch +
  // t).
  void run_epochs(const Csr& user_items, const std::vector<uint64_t>& pos, int epochs, uint64_t stream_base,
                  int threads, const FitContext& ctx) {
    const int nv = int(users_.ld / 8);
    for (int e = 0; e < epochs && !pos.empty(); ++e) {
      std::vector<uint64_t> correct(size_t(threads), 0), done(size_t(threads), 0);
      parallel_for(size_t(threads), threads, 1, [&](size_t lo, size_t hi) {
        for (size_t t = lo; t < hi; ++t) {
          const uint64_t n = pos.size() / threads + (t < pos.size() % threads ? 1 : 0);
          Rng rng(seed_used_, stream_base + uint64_t(e + 1) * kStreamsPerEpoch + t);
          mf::dispatch_width(
              nv, [&]<int NV>() { run_samples<NV>(user_items, pos, n, rng, nv, correct[t], done[t]); });
        }
      });
      uint64_t c = 0, d = 0;
      for (int t = 0; t < threads; ++t) c += correct[size_t(t)], d += done[size_t(t)];
      last_epoch_accuracy_ = d ? double(c) / double(d) : 0.0;
      if (ctx.verbose)
        std::fprintf(stderr, "bpr epoch %d: %.4f of sampled triples ranked correctly\n", e + 1,
                     last_epoch_accuracy_);
      if (ctx.progress) ctx.progress(size_t(e) + 1, size_t(epochs), "bpr epochs");
    }
  }

  // n SGD steps on sampled triples, software-pipelined to hide memory latency: while triple s is applied, the
  // packed entry of triple s + 4 is prefetched, and triple s + 2 is formed from its entry and a candidate
  // negative whose factor rows and user row are prefetched (the negative is verified when applied).
  template <int NV>
  void run_samples(const Csr& m, const std::vector<uint64_t>& pos, uint64_t n, Rng& rng, int nv,
                   uint64_t& correct, uint64_t& done) {
    const float lr = float(lr_), reg = float(reg_);
    const uint32_t n_items = uint32_t(items_.rows);
    const size_t row_bytes = users_.ld * sizeof(float);
    auto prefetch_row = [&](const float* p) {
      const char* q = reinterpret_cast<const char*>(p);
      for (size_t off = 0; off < row_bytes; off += 64) _mm_prefetch(q + off, _MM_HINT_T0);
    };
    struct Triple {
      uint32_t u, i, j;
    };
    auto draw_entry = [&]() {
      const uint64_t k = rng.below(pos.size());
      _mm_prefetch(reinterpret_cast<const char*>(&pos[k]), _MM_HINT_T0);
      return k;
    };
    auto make_triple = [&](uint64_t k) {
      const uint64_t e = pos[k];
      Triple t{uint32_t(e >> 32), uint32_t(e), uint32_t(rng.below(n_items))};
      prefetch_row(users_.row(t.u));
      prefetch_row(items_.row(t.i));
      prefetch_row(items_.row(t.j));
      _mm_prefetch(reinterpret_cast<const char*>(m.indices.data() + m.indptr[t.u]), _MM_HINT_T0);
      return t;
    };
    // Ring buffers: entries drawn kAhead1 triples ahead, triples built kAhead2 ahead.
    constexpr uint64_t kAhead1 = 4, kAhead2 = 2, kRing = 8;
    static_assert(kAhead2 < kAhead1 && kAhead1 < kRing);
    uint64_t c = 0, d = 0;
    uint64_t ks[kRing];
    Triple ts[kRing];
    for (uint64_t s = 0; s < std::min(n, kAhead1); ++s) ks[s % kRing] = draw_entry();
    for (uint64_t s = 0; s < std::min(n, kAhead2); ++s) ts[s % kRing] = make_triple(ks[s % kRing]);
    for (uint64_t s = 0; s < n; ++s) {
      if (s + kAhead1 < n) ks[(s + kAhead1) % kRing] = draw_entry();
      if (s + kAhead2 < n) ts[(s + kAhead2) % kRing] = make_triple(ks[(s + kAhead2) % kRing]);
      Triple cur = ts[s % kRing];
      if (verify_negatives_) {
        const std::span<const uint32_t> seen = m.row_indices(cur.u);
        if (std::binary_search(seen.begin(), seen.end(), cur.j) &&
            !draw_negative(rng, n_items, seen, true, cur.j))
          continue;
      }
      float* bi = bias_ ? &item_bias_[cur.i] : nullptr;
      float* bj = bias_ ? &item_bias_[cur.j] : nullptr;
      const float z = mf::detail::bpr_step<NV>(users_.row(cur.u), items_.row(cur.i), items_.row(cur.j), bi,
                                               bj, lr, reg, true, nv);
      c += z > 0;
      ++d;
    }
    correct = c;
    done = d;
  }

  ParamSet params_;
  int factors_ = 64, epochs_ = 100, foldin_epochs_ = 30, seed_ = 0;
  double lr_ = 0.05, reg_ = 0.01, init_ = 0.01;
  bool bias_ = true, verify_negatives_ = true;
  uint64_t seed_used_ = 0;
  double last_epoch_accuracy_ = 0;
};

XDREC_REGISTER_MODEL(bpr, "BPR-MF: pairwise ranking matrix factorisation with item bias, Hogwild SGD",
                     BprModel,
                     {.uses_text = false,
                      .thread_independent = false,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false});

}  // namespace xdrec
