// BPR-MF (Rendle et al. 2009): matrix factorisation with an item bias trained by stochastic gradient ascent
// on log sigmoid(x_u . (y_i - y_j) + b_i - b_j) for sampled (user, positive item i, negative item j) triples.
// A positive is an entry drawn uniformly from the observed entries with a value > 0; the negative is drawn
// uniformly from all items, rejecting items in the user's row. Several threads update the shared factors
// without locks (Hogwild); each thread draws from its own seeded stream, so a run with threads=1 is fully
// deterministic, while with more threads the interleaving of updates varies from run to run.
//
// Synchronous mode (batch=B > 0): an epoch is a sequence of mini-batches of B triples. Triple s of epoch e is
// drawn from its own seeded stream, and its loss derivative g = sigmoid(-z) is taken at the parameters as
// they were before the batch; then every row touched by the batch takes one step with the sum of its terms'
// gradients, added in triple order (x += lr (sum_s g_s d_s - n reg x), n its terms in the batch). The result
// does not depend on the thread count, nor on the number of MPI ranks: distributed (FitContext::comm), each
// rank draws and scores its contiguous share of a batch's triples, the ranks exchange the 16-byte triples
// (u, i, j, z), and every rank applies the same updates to its full copy of the factors, so every rank ends
// with the model of one process, bitwise.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "models/factor_model.h"
#include "models/mf_kernels.h"
#include "xdrec/dist.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

// Streams of the per-epoch, per-thread generators (epoch e, thread t -> (e + 1) * kStreamsPerEpoch + t).
constexpr uint64_t kStreamsPerEpoch = 1 << 16;
constexpr uint64_t kItemStreamBase = uint64_t(1) << 40;
constexpr uint64_t kFoldInStreamBase = uint64_t(1) << 50;
// Synchronous mode: triple s of epoch e uses stream kSyncStreamBase + (e << 34) + s.
constexpr uint64_t kSyncStreamBase = uint64_t(1) << 56;
constexpr uint32_t kNoNegative = UINT32_MAX;
constexpr uint64_t kResumeStreamBase = uint64_t(1) << 60;
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
        .add("batch", &batch_, 0, 0, 1 << 24,
             "0: Hogwild SGD; B > 0: synchronous mini-batches of B triples (same model for any thread count "
             "and any number of MPI ranks; needed by --distributed)")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_));
    ModelCost c;
    // Factors and item bias, the packed positive entries.
    c.bytes = (s.n_users + s.n_items) * ld * 4 + s.n_items * 4 + s.nnz * 8 + model_util::score_batch_bytes(s);
    // Synchronous mode: gradient sums and term counts per row, the batch's triples.
    if (batch_ > 0) c.bytes += (s.n_users + s.n_items) * (ld + 1) * 4 + s.n_items * 4 + uint64_t(batch_) * 16;
    // One SGD step touches three factor rows, mostly cache misses; the synchronous mode passes over the
    // touched rows again (1.5-2.5x Hogwild's time on one thread on MovieLens 100k).
    c.seconds = double(epochs_) * double(s.nnz) * (60e-9 + double(ld) * 1e-9) * (batch_ > 0 ? 2.0 : 1.0);
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
    Communicator* comm = ctx.comm && ctx.comm->size() > 1 ? ctx.comm : nullptr;
    check(!comm || batch_ > 0,
          "bpr: a distributed fit needs the synchronous mode (batch=B > 0, e.g. bpr:batch=1024); Hogwild "
          "(batch=0) runs in one process");
    if (batch_ > 0) return fit_sync(user_items, pos, ctx, threads, comm);
    run_epochs(user_items, pos, epochs_, 0, threads, ctx);
  }

  // Incremental update: new users and items get rows drawn as a fit draws them (item bias 0); the touched and
  // new users are folded in from their rows of `user_items` against the current items; then `sweeps` epochs
  // of the fit's SGD (same lr, reg, negatives) over the touched and new users' entries plus as many replayed
  // entries of the other users (FactorModel::resume_entries), updating users and items. The epochs are
  // Hogwild's, also for a model fitted in the synchronous mode (batch=B).
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
  // A triple of the synchronous mode and its score difference z at the batch's starting parameters
  // (j == kNoNegative: no unseen negative was found, the triple is skipped).
  struct SyncTriple {
    uint32_t u, i, j;
    float z;
  };

  // The synchronous mode (see the top of the file).
  void fit_sync(const Csr& m, const std::vector<uint64_t>& pos, const FitContext& ctx, int threads,
                Communicator* comm) {
    const size_t B = size_t(batch_), ld = users_.ld;
    const int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
    const uint32_t n_items = uint32_t(items_.rows);
    const float lr = float(lr_), reg = float(reg_);
    std::vector<SyncTriple> batch(B);
    // Gradient sums and term counts of the touched rows (zero elsewhere), the touched rows in order.
    mf::AlignedFloats gu(users_.data.size(), 0.0f), gi(items_.data.size(), 0.0f);
    std::vector<float> gb(items_.rows, 0.0f);
    std::vector<uint32_t> nu(users_.rows, 0), ni(items_.rows, 0), touched_u, touched_i;
    std::vector<size_t> bytes(static_cast<size_t>(ranks));
    for (int e = 0; e < epochs_; ++e) {
      Timer timer;
      model_util::CommTime ct;
      const double cpu0 = model_util::process_cpu_seconds();
      double score_s = 0;
      uint64_t correct = 0, done = 0;
      for (size_t start = 0; start < pos.size(); start += B) {
        const size_t n = std::min(B, pos.size() - start);
        // This rank's share of the triples, scored at the current parameters.
        const auto [lo, hi] = block_range(n, rank, ranks);
        Timer st;
        parallel_for(hi - lo, threads, 64, [&](size_t a, size_t b) {
          for (size_t s = lo + a; s < lo + b; ++s) {
            Rng rng(seed_used_, kSyncStreamBase + (uint64_t(e) << 34) + start + s);
            const uint64_t entry = pos[rng.below(pos.size())];
            SyncTriple t{uint32_t(entry >> 32), uint32_t(entry), kNoNegative, 0.0f};
            if (draw_negative(rng, n_items, m.row_indices(t.u), verify_negatives_, t.j)) {
              const float *x = users_.row(t.u), *yi = items_.row(t.i), *yj = items_.row(t.j);
              float z = mf::dot(x, yi, ld) - mf::dot(x, yj, ld);
              if (bias_) z += item_bias_[t.i] - item_bias_[t.j];
              t.z = z;
            } else {
              t.j = kNoNegative;
            }
            batch[s] = t;
          }
        });
        score_s += st.seconds();
        if (comm) {
          for (int r = 0; r < ranks; ++r) {
            const auto [a, b] = block_range(n, r, ranks);
            bytes[size_t(r)] = (b - a) * sizeof(SyncTriple);
          }
          ct.run([&] { comm->allgather_bytes(batch.data(), bytes); });
        }
        // Every rank: the gradient sums in triple order, then one step per touched row.
        for (size_t s = 0; s < n; ++s) {
          const SyncTriple& t = batch[s];
          if (t.j == kNoNegative) continue;
          const float g = 1.0f / (1.0f + std::exp(std::clamp(t.z, -30.0f, 30.0f)));
          const float *x = users_.row(t.u), *yi = items_.row(t.i), *yj = items_.row(t.j);
          float *dx = gu.data() + size_t(t.u) * ld, *di = gi.data() + size_t(t.i) * ld,
                *dj = gi.data() + size_t(t.j) * ld;
          const __m256 vg = _mm256_set1_ps(g);
          for (size_t k = 0; k < ld;
               k += 8) {  // (dj is di when j == i: each is loaded after the other's store)
            const __m256 xv = _mm256_load_ps(x + k);
            _mm256_store_ps(dx + k,
                            _mm256_fmadd_ps(vg, _mm256_sub_ps(_mm256_load_ps(yi + k), _mm256_load_ps(yj + k)),
                                            _mm256_load_ps(dx + k)));
            _mm256_store_ps(di + k, _mm256_fmadd_ps(vg, xv, _mm256_load_ps(di + k)));
            _mm256_store_ps(dj + k, _mm256_fnmadd_ps(vg, xv, _mm256_load_ps(dj + k)));
          }
          gb[t.i] += g;
          gb[t.j] -= g;
          if (nu[t.u]++ == 0) touched_u.push_back(t.u);
          if (ni[t.i]++ == 0) touched_i.push_back(t.i);
          if (ni[t.j]++ == 0) touched_i.push_back(t.j);
          correct += t.z > 0;
          ++done;
        }
        auto step = [&](mf::Factors& f, mf::AlignedFloats& g, std::vector<uint32_t>& count,
                        const std::vector<uint32_t>& rows, bool item_side) {
          parallel_for(rows.size(), rows.size() < 2048 ? 1 : threads, 256, [&](size_t a, size_t b) {
            for (size_t k = a; k < b; ++k) {
              const uint32_t r = rows[k];
              const float decay = float(count[r]) * reg;
              float *x = f.row(r), *d = g.data() + size_t(r) * ld;
              const __m256 vlr = _mm256_set1_ps(lr), vdecay = _mm256_set1_ps(decay);
              for (size_t c = 0; c < ld; c += 8) {
                const __m256 xv = _mm256_load_ps(x + c);
                _mm256_store_ps(
                    x + c, _mm256_fmadd_ps(vlr, _mm256_fnmadd_ps(vdecay, xv, _mm256_load_ps(d + c)), xv));
                _mm256_store_ps(d + c, _mm256_setzero_ps());
              }
              if (item_side) {
                if (bias_) item_bias_[r] += lr * (gb[r] - decay * item_bias_[r]);
                gb[r] = 0.0f;
              }
              count[r] = 0;
            }
          });
        };
        step(users_, gu, nu, touched_u, false);
        step(items_, gi, ni, touched_i, true);
        touched_u.clear();
        touched_i.clear();
      }
      last_epoch_accuracy_ = done ? double(correct) / double(done) : 0.0;
      if (ctx.verbose)
        std::fprintf(stderr,
                     "bpr epoch %d: %.4f of sampled triples ranked correctly, %.3f s (scoring %.3f, steps "
                     "%.3f; rank %d of %d: compute %.3f s cpu, communication %.3f s)\n",
                     e + 1, last_epoch_accuracy_, timer.seconds(), score_s,
                     timer.seconds() - score_s - ct.wall, rank, ranks,
                     model_util::process_cpu_seconds() - cpu0 - ct.cpu, ct.wall);
      if (ctx.progress) ctx.progress(size_t(e) + 1, size_t(epochs_), "bpr epochs");
    }
  }

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
  int factors_ = 64, epochs_ = 100, foldin_epochs_ = 30, batch_ = 0, seed_ = 0;
  double lr_ = 0.05, reg_ = 0.01, init_ = 0.01;
  bool bias_ = true, verify_negatives_ = true;
  uint64_t seed_used_ = 0;
  double last_epoch_accuracy_ = 0;
};

XDREC_REGISTER_MODEL(
    bpr,
    "BPR-MF: pairwise ranking matrix factorisation with item bias, Hogwild SGD or synchronous "
    "mini-batches (distributed)",
    BprModel,
    {.uses_text = false,
     .thread_independent = false,
     .personalised = true,
     .fold_in = true,
     .add_item = false,
     .profile = false,
     .distributed = true});

}  // namespace xdrec
