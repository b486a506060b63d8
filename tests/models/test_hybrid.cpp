// Hybrid factorisation: gradients of every loss against finite differences, ranking on clustered data with
// informative text (warm users, items known only by text, profile-only users, history in another domain),
// the effect of id dropout on cold items, save/load, thread independence and parameter errors.
//
// Real-data checks run only with XDREC_SLOW_TESTS=1, which `scripts/test --slow` sets (and the data under
// XDREC_SHARED_DATA): MovieLens latest-small warm users (random split) against popularity, cold items (20% of
// the movies held out; tfidf text) against text cosine, and Food-Kitchen validation HR@10 (use-lite vectors
// from the embedding cache) against popularity; every model of a check must clear the check's floor, which
// its baseline stays below. HYB_ML_SPECS="spec;spec;..." replaces the model list (a trailing "@none" fits
// Food-Kitchen without text), HYB_THREADS sets the fit threads (default 2), HYB_VERBOSE=1 prints the epochs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "models/clustered.h"
#include "models/hybrid_core.h"
#include "test_util.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/metrics.h"
#include "xdrec/rank.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

namespace fs = std::filesystem;
using namespace xdrec;
using xdrec::testing_util::throws_error;

namespace {

// ---- Gradient checks
// ----------------------------------------------------------------------------------------

struct GradCase {
  hybrid::Loss loss;
  size_t f;
};

class HybridGradient : public ::testing::TestWithParam<GradCase> {};

// A small model with every block present: ids, item text, profiles, pooled history, categories.
struct Tiny {
  hybrid::Blocks b;
  hybrid::Side side;
  hybrid::Caches c;
  std::vector<float> item_text, user_profile, user_hist;
  std::vector<uint32_t> hist_count;
  Csr cats;
  std::vector<std::vector<uint32_t>> hist;
};

void make_tiny(Tiny& t, size_t f, bool mse, uint64_t seed) {
  const size_t nu = 5, ni = 7, dt = 6, nc = 3;
  Rng rng(seed);
  t.b.resize(hybrid::Dims::make(f, dt, dt, nc, true), nu, ni);
  const hybrid::Dims& d = t.b.d;
  auto fill = [&](hybrid::Floats& x, size_t rows, size_t cols, size_t ld, float scale) {
    for (size_t r = 0; r < rows; ++r)
      for (size_t k = 0; k < cols; ++k) x[r * ld + k] = scale * rng.normal();
  };
  fill(t.b.user_id, nu, f, d.ld, 0.5f);
  fill(t.b.item_id, ni, f + 1, d.ld, 0.5f);
  fill(t.b.W, f + 1, dt, dt, 0.3f);
  fill(t.b.H, f, dt, dt, 0.3f);
  fill(t.b.P, f, dt, dt, 0.3f);
  fill(t.b.C, nc, f + 1, d.ld, 0.3f);
  for (auto& v : t.b.user_bias) v = 0.3f * rng.normal();
  t.item_text.assign(ni * dt, 0.0f);
  for (size_t i = 0; i + 1 < ni; ++i)  // the last item has no text
    for (size_t k = 0; k < dt; ++k) t.item_text[i * dt + k] = rng.normal();
  t.user_profile.assign(nu * dt, 0.0f);
  for (auto& v : t.user_profile) v = rng.normal();
  t.hist = {{0, 1, 2}, {3}, {1, 4, 5, 6}, {0, 2}, {2, 3, 5}};
  t.user_hist.assign(nu * dt, 0.0f);
  t.hist_count.assign(nu, 0);
  for (size_t u = 0; u < nu; ++u) {
    t.hist_count[u] = uint32_t(t.hist[u].size());
    for (uint32_t i : t.hist[u])
      for (size_t k = 0; k < dt; ++k)
        t.user_hist[u * dt + k] += t.item_text[i * dt + k] / float(t.hist[u].size());
  }
  std::vector<uint32_t> r{0, 0, 1, 3, 4, 4, 6}, cc{0, 2, 1, 0, 1, 2, 2};
  std::vector<float> v{0.7f, 0.7f, 1.0f, 1.0f, 0.6f, 0.8f, 1.0f};
  t.cats = Csr::from_triplets(uint32_t(ni), uint32_t(nc), r, cc, v);
  t.side.item_text = t.item_text.data();
  t.side.user_profile = t.user_profile.data();
  t.side.user_hist = t.user_hist.data();
  t.side.hist_count = t.hist_count.data();
  t.side.item_cat = &t.cats;
  t.side.mse = mse;
  t.side.mu = mse ? 0.4f : 0.0f;
  t.c.resize(d, nu, ni);
  hybrid::refresh(t.b, t.side, t.c, {}, {}, 1);
}

// Terms over the histories: each user's items, negatives and id / category flags varied, with repeats.
std::vector<hybrid::Record> tiny_records(const Tiny& t, bool mse) {
  std::vector<hybrid::Record> recs;
  const uint32_t negs[] = {6, 0, 5, 1, 4, 3, 2};
  int n = 0;
  for (int rep = 0; rep < 2; ++rep)
    for (uint32_t u = 0; u < t.hist.size(); ++u)
      for (uint32_t i : t.hist[u]) {
        hybrid::Record r;
        r.u = u;
        r.i = i;
        r.flags = uint8_t((n * 7 + rep * 3) % 32);
        r.label = mse ? 1.0f + 0.5f * float(n % 5) : 0.0f;
        r.weight = 0.5f + 0.25f * float(n % 4);
        r.j = mse ? hybrid::kNone : negs[(u + i + rep) % 7];
        if (r.j == i) r.j = (i + 1) % 7;
        recs.push_back(r);
        ++n;
      }
  return recs;
}

double total_loss(hybrid::Loss loss, const Tiny& t, const std::vector<hybrid::Record>& recs, double margin) {
  double s = 0;
  for (auto& r : recs) s += hybrid::record_loss(loss, t.b, t.side, r, margin);
  return s;
}

TEST(HybridLoss, PairTermDerivativesMatchFiniteDifferences) {
  for (auto loss : {hybrid::Loss::Warp, hybrid::Loss::Bpr, hybrid::Loss::Mse}) {
    for (double si : {-1.3, 0.2, 2.5}) {
      for (double sj : {-0.7, 0.4, 1.9}) {
        const double h = 1e-6, label = 1.5, w = 1.7, margin = 1.0;
        if (loss == hybrid::Loss::Warp && std::fabs(si - sj - margin) < 1e-3) continue;  // the hinge's kink
        const auto t = hybrid::pair_term(loss, si, sj, label, w, margin);
        const double ni = (hybrid::pair_term(loss, si + h, sj, label, w, margin).loss -
                           hybrid::pair_term(loss, si - h, sj, label, w, margin).loss) /
                          (2 * h);
        const double nj = (hybrid::pair_term(loss, si, sj + h, label, w, margin).loss -
                           hybrid::pair_term(loss, si, sj - h, label, w, margin).loss) /
                          (2 * h);
        EXPECT_NEAR(t.gi, ni, 1e-6) << int(loss) << " " << si << " " << sj;
        EXPECT_NEAR(t.gj, nj, 1e-6) << int(loss) << " " << si << " " << sj;
      }
    }
  }
  // Hand-computed values.
  EXPECT_NEAR(hybrid::pair_term(hybrid::Loss::Bpr, 0.0, 0.0, 0, 1.0, 1.0).loss, std::log(2.0), 1e-12);
  EXPECT_NEAR(hybrid::pair_term(hybrid::Loss::Warp, 0.5, 0.25, 0, 2.0, 1.0).loss, 2.0 * 0.75, 1e-12);
  EXPECT_EQ(hybrid::pair_term(hybrid::Loss::Warp, 2.0, 0.5, 0, 2.0, 1.0).loss, 0.0);
  EXPECT_NEAR(hybrid::pair_term(hybrid::Loss::Mse, 3.0, 0, 1.0, 1.0, 1.0).loss, 2.0, 1e-12);
  EXPECT_NEAR(hybrid::pair_term(hybrid::Loss::Bpr, 800.0, 0.0, 0, 1.0, 1.0).loss, 0.0, 1e-12);
  EXPECT_NEAR(hybrid::pair_term(hybrid::Loss::Bpr, -800.0, 0.0, 0, 1.0, 1.0).loss, 800.0, 1e-9);
  // WARP's rank weight: log(1 + floor((n - 1) / trials)).
  EXPECT_NEAR(hybrid::warp_weight(101, 1), std::log(101.0), 1e-12);
  EXPECT_NEAR(hybrid::warp_weight(101, 30), std::log(4.0), 1e-12);
}

TEST_P(HybridGradient, EveryBlockMatchesFiniteDifferences) {
  const auto [loss, f] = GetParam();
  const bool mse = loss == hybrid::Loss::Mse;
  // A margin large enough that every WARP term is inside the hinge (the kink is not differentiable).
  const double margin = loss == hybrid::Loss::Warp ? 100.0 : 1.0;
  Tiny t;
  make_tiny(t, f, mse, 11 + f);
  const auto recs = tiny_records(t, mse);
  hybrid::Grad g;
  hybrid::batch_gradient(loss, t.b, t.side, t.c, recs, margin, 1, g);
  EXPECT_NEAR(g.loss, total_loss(loss, t, recs, margin), 1e-4 * (1 + std::fabs(g.loss)));

  const hybrid::Dims& d = t.b.d;
  const double h = 1e-2;
  int checked = 0;
  auto check_block = [&](const char* name, hybrid::Floats& x, size_t rows, size_t cols, size_t ld,
                         const std::function<float(size_t, size_t)>& analytic) {
    for (size_t r = 0; r < rows; ++r) {
      for (size_t k = 0; k < cols; ++k) {
        float& v = x[r * ld + k];
        const float v0 = v;
        v = v0 + float(h);
        const double lp = total_loss(loss, t, recs, margin);
        v = v0 - float(h);
        const double lm = total_loss(loss, t, recs, margin);
        v = v0;
        const double num = (lp - lm) / (2 * h), ana = analytic(r, k);
        EXPECT_NEAR(ana, num, 2e-3 * (1 + std::fabs(num))) << name << "[" << r << "," << k << "]";
        ++checked;
      }
    }
  };
  auto sparse = [&](const hybrid::RowGrad& rg) {
    return [&rg, &d](size_t r, size_t k) -> float {
      auto it = std::find(rg.rows.begin(), rg.rows.end(), uint32_t(r));
      return it == rg.rows.end() ? 0.0f : rg.g[size_t(it - rg.rows.begin()) * d.ld + k];
    };
  };
  auto dense = [](const hybrid::Floats& G, size_t ld) {
    return [&G, ld](size_t r, size_t k) -> float { return G[r * ld + k]; };
  };
  check_block("user_id", t.b.user_id, t.b.n_users, f, d.ld, sparse(g.users));
  check_block("item_id", t.b.item_id, t.b.n_items, f + 1, d.ld, sparse(g.items));
  check_block("W", t.b.W, f + 1, d.dt, d.dt, dense(g.W, d.dt));
  check_block("H", t.b.H, f, d.dt, d.dt, dense(g.H, d.dt));
  check_block("P", t.b.P, f, d.dp, d.dp, dense(g.P, d.dp));
  check_block("C", t.b.C, d.nc, f + 1, d.ld, dense(g.C, d.ld));
  if (mse) {
    for (uint32_t u = 0; u < t.b.n_users; ++u) {
      float& v = t.b.user_bias[u];
      const float v0 = v;
      v = v0 + float(h);
      const double lp = total_loss(loss, t, recs, margin);
      v = v0 - float(h);
      const double lm = total_loss(loss, t, recs, margin);
      v = v0;
      auto it = std::find(g.users.rows.begin(), g.users.rows.end(), u);
      const double ana = it == g.users.rows.end() ? 0.0 : g.users.bias[size_t(it - g.users.rows.begin())];
      EXPECT_NEAR(ana, (lp - lm) / (2 * h), 2e-3);
    }
  }
  EXPECT_GT(checked, 150);
  // The same gradient with two threads, bit for bit.
  hybrid::Grad g2;
  hybrid::batch_gradient(loss, t.b, t.side, t.c, recs, margin, 2, g2);
  EXPECT_EQ(g.W, g2.W);
  EXPECT_EQ(g.H, g2.H);
  EXPECT_EQ(g.items.g, g2.items.g);
  EXPECT_EQ(g.users.g, g2.users.g);
}

std::string grad_case_name(const ::testing::TestParamInfo<GradCase>& i) {
  static const char* const names[] = {"warp", "bpr", "mse"};
  return std::string(names[int(i.param.loss)]) + "_f" + std::to_string(i.param.f);
}

INSTANTIATE_TEST_SUITE_P(Losses, HybridGradient,
                         ::testing::Values(GradCase{hybrid::Loss::Warp, 5}, GradCase{hybrid::Loss::Bpr, 5},
                                           GradCase{hybrid::Loss::Mse, 5}, GradCase{hybrid::Loss::Warp, 8},
                                           GradCase{hybrid::Loss::Bpr, 8}, GradCase{hybrid::Loss::Mse, 8}),
                         grad_case_name);

// ---- Clustered data with text
// -------------------------------------------------------------------------------

constexpr size_t kDim = 32;

// Text of an item or profile of `cluster`: a shared offset (which the model must centre away), the cluster's
// direction and noise.
struct TextGen {
  std::vector<std::vector<float>> centre;
  explicit TextGen(uint32_t clusters, uint64_t seed) {
    Rng rng(seed);
    centre.resize(clusters, std::vector<float>(kDim));
    for (auto& c : centre)
      for (float& v : c) v = rng.normal();
  }
  void make(Rng& rng, uint32_t cluster, float noise, float* out) const {
    for (size_t k = 0; k < kDim; ++k) out[k] = 2.0f + centre[cluster][k] + noise * rng.normal();
  }
};

std::unique_ptr<Recommender> fit_model(const std::string& spec, const Csr& x, const Matrix* item_text,
                                       const Matrix* user_text = nullptr, int threads = 1,
                                       std::span<const uint16_t> domain = {}) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  ctx.seed = 5;
  ctx.item_text = item_text;
  ctx.user_text = user_text;
  ctx.item_domain = domain;
  ctx.text_encoder = "test-encoder";
  m->fit(x, ctx);
  return m;
}

Matrix score_all(const Recommender& m, int threads = 1) {
  std::vector<uint32_t> users(m.n_users());
  for (uint32_t u = 0; u < users.size(); ++u) users[u] = u;
  Matrix s;
  m.score(users, s, threads);
  return s;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// Hit rate at 10 of each user's held-out item among the items the user has not seen.
double hit_rate(const Matrix& s, const testing_util::Data& d) {
  int hits = 0, n = 0;
  for (uint32_t u = 0; u < d.train.n_rows; ++u) {
    if (d.held_out[u] < 0) continue;
    auto seen = d.train.row_indices(u);
    auto top = top_k(s.row(u), d.train.n_cols, 10, seen, {}, -1);
    for (auto& t : top) hits += t.item == uint32_t(d.held_out[u]);
    ++n;
  }
  return double(hits) / n;
}

TEST(Hybrid, WarmRankingBeatsPopularity) {
  const uint32_t nu = 400, ni = 240, k = 6;
  const auto d = testing_util::make_clustered(nu, ni, k, 12, 3);
  TextGen gen(k, 9);
  Rng rng(4);
  Matrix text(ni, kDim);
  for (uint32_t i = 0; i < ni; ++i) gen.make(rng, i % k, 0.8f, text.row(i));
  Matrix pop(nu, ni);
  for (uint32_t u = 0; u < nu; ++u)
    for (uint32_t v = 0; v < nu; ++v)
      for (uint32_t i : d.train.row_indices(v)) pop(u, i) += 1.0f;
  const double hr_pop = hit_rate(pop, d);
  for (const char* loss : {"warp", "bpr"}) {
    auto with_text = fit_model(std::string("hybrid:factors=16,epochs=20,loss=") + loss, d.train, &text);
    auto ids_only = fit_model(std::string("hybrid:factors=16,epochs=20,loss=") + loss, d.train, nullptr);
    EXPECT_TRUE(with_text->uses_text());
    EXPECT_EQ(with_text->text_encoder(), "test-encoder");
    EXPECT_FALSE(ids_only->uses_text());
    EXPECT_EQ(ids_only->text_encoder(), "");
    const double hr_text = hit_rate(score_all(*with_text), d), hr_ids = hit_rate(score_all(*ids_only), d);
    std::printf("[ %s ] warm HR@10: text %.3f, ids only %.3f, popularity %.3f\n", loss, hr_text, hr_ids,
                hr_pop);
    EXPECT_GT(hr_text, hr_pop + 0.1) << loss;
    EXPECT_GT(hr_ids, hr_pop + 0.1) << loss;
  }
}

// Users and items in clusters; 20% of the items (every fifth) are held out of training entirely.
struct ColdData {
  uint32_t nu = 500, ni = 300, k = 6;
  std::vector<uint32_t> warm_of;             // item -> index among warm items, or UINT32_MAX
  std::vector<uint32_t> cold_items;          // original indices
  Csr train;                                 // users x warm items
  std::vector<std::set<uint32_t>> cold_pos;  // per user: cold items the user interacted with
  Matrix warm_text, cold_text, user_text;
  TextGen gen{6, 21};
};

const ColdData& cold_data() {
  static const ColdData d = [] {
    ColdData c;
    const auto full = testing_util::make_clustered(c.nu, c.ni, c.k, 20, 8);
    c.warm_of.assign(c.ni, UINT32_MAX);
    uint32_t nw = 0;
    for (uint32_t i = 0; i < c.ni; ++i) {
      if (i % 5 == 0) {
        c.cold_items.push_back(i);
      } else {
        c.warm_of[i] = nw++;
      }
    }
    std::vector<uint32_t> ru, ri;
    c.cold_pos.resize(c.nu);
    for (uint32_t u = 0; u < c.nu; ++u) {
      for (uint32_t i : full.train.row_indices(u)) {
        if (c.warm_of[i] == UINT32_MAX) {
          c.cold_pos[u].insert(i);
        } else {
          ru.push_back(u);
          ri.push_back(c.warm_of[i]);
        }
      }
    }
    std::vector<float> ones(ru.size(), 1.0f);
    c.train = Csr::from_triplets(c.nu, nw, ru, ri, ones);
    Rng rng(31);
    c.warm_text.resize(nw, kDim);
    c.cold_text.resize(c.cold_items.size(), kDim);
    for (uint32_t i = 0; i < c.ni; ++i) {
      float* out = c.warm_of[i] == UINT32_MAX ? c.cold_text.row(i / 5) : c.warm_text.row(c.warm_of[i]);
      c.gen.make(rng, i % c.k, 2.0f, out);
    }
    c.user_text.resize(c.nu, kDim);
    for (uint32_t u = 0; u < c.nu; ++u) c.gen.make(rng, u % c.k, 1.0f, c.user_text.row(u));
    return c;
  }();
  return d;
}

// Adds the held-out items through add_item; returns the mean over users of the AUC of the cold items they
// interacted with against the other cold items (0.5: chance).
double cold_item_auc(Recommender& m) {
  const ColdData& c = cold_data();
  const uint32_t first = m.n_items();
  for (size_t k = 0; k < c.cold_items.size(); ++k) {
    const uint32_t idx = m.add_item(std::span<const float>(c.cold_text.row(k), kDim), 0);
    EXPECT_EQ(idx, first + k);
  }
  const Matrix s = score_all(m);
  double total = 0;
  int users = 0;
  for (uint32_t u = 0; u < c.nu; ++u) {
    if (c.cold_pos[u].empty()) continue;
    double wins = 0, pairs = 0;
    for (size_t a = 0; a < c.cold_items.size(); ++a) {
      if (!c.cold_pos[u].count(c.cold_items[a])) continue;
      for (size_t b = 0; b < c.cold_items.size(); ++b) {
        if (c.cold_pos[u].count(c.cold_items[b])) continue;
        const float sa = s(u, first + a), sb = s(u, first + b);
        wins += sa > sb ? 1.0 : sa == sb ? 0.5 : 0.0;
        pairs += 1;
      }
    }
    total += wins / pairs;
    ++users;
  }
  return total / users;
}

TEST(Hybrid, ItemsAddedByTextAreRankedForTheirClusterAndIdDropoutHelps) {
  // Long enough training that the id embeddings can fit the training entries on their own: without id
  // dropout the text projection then stops learning (WARP finds no violating negatives), with it the terms
  // whose ids are dropped keep teaching the text to score alone.
  const ColdData& c = cold_data();
  std::map<std::string, double> auc;
  for (const char* loss : {"warp", "bpr"})
    for (const char* drop : {"0.5", "0"}) {
      auto m = fit_model(std::string("hybrid:factors=32,epochs=60,loss=") + loss + ",id_dropout=" + drop,
                         c.train, &c.warm_text);
      auc[std::string(loss) + drop] = cold_item_auc(*m);
    }
  std::printf(
      "cold-item AUC (chance 0.5): warp %.3f with id dropout, %.3f without; bpr %.3f with, %.3f without\n",
      auc["warp0.5"], auc["warp0"], auc["bpr0.5"], auc["bpr0"]);
  EXPECT_GT(auc["warp0.5"], 0.75);
  EXPECT_GT(auc["bpr0.5"], 0.75);
  EXPECT_GT(auc["warp0.5"], auc["warp0"] + 0.02);
  EXPECT_GT(auc["bpr0.5"], auc["bpr0"] - 0.01);
}

TEST(Hybrid, ProfileOnlyUserGetsTheirClustersItems) {
  const ColdData& c = cold_data();
  const uint32_t nw = c.train.n_cols;
  std::vector<uint32_t> cluster_of(nw);
  for (uint32_t i = 0; i < c.ni; ++i)
    if (c.warm_of[i] != UINT32_MAX) cluster_of[c.warm_of[i]] = i % c.k;
  for (bool with_profiles : {true, false}) {
    // Without profiles at fit time, a profile is read as pooled history text.
    auto m = fit_model("hybrid:factors=16,epochs=20", c.train, &c.warm_text,
                       with_profiles ? &c.user_text : nullptr);
    Rng rng(77);
    std::vector<float> prof(kDim);
    for (uint32_t k = 0; k < c.k; ++k) {
      c.gen.make(rng, k, 0.3f, prof.data());
      const uint32_t u = m->fold_in_profile(m->n_users(), prof, {}, {});
      EXPECT_EQ(u + 1, m->n_users());
      Matrix s;
      std::vector<uint32_t> one{u};
      m->score(one, s, 1);
      auto top = top_k(s.row(0), nw, 10, {}, {}, -1);
      int in = 0;
      for (auto& t : top) in += cluster_of[t.item] == k;
      EXPECT_GE(in, 8) << "cluster " << k << (with_profiles ? " (profiles)" : " (no profiles)");
    }
  }
}

TEST(Hybrid, HistoryInOneDomainRanksTheOtherDomainThroughText) {
  // Two domains with no shared users: users 0..299 use domain 0 (items 0..119), users 300..599 domain 1
  // (items 120..239). Item clusters are i % 6 in both domains and share their text directions, so only the
  // text connects the domains.
  const uint32_t k = 6, per = 120, nu = 600;
  TextGen gen(k, 41);
  Rng rng(42);
  std::vector<uint32_t> ru, ri;
  for (uint32_t u = 0; u < nu; ++u) {
    const uint32_t dom = u < nu / 2 ? 0 : 1, cu = u % k;
    std::set<uint32_t> items;
    while (items.size() < 10) {
      const uint32_t i =
          rng.uniform() < 0.85 ? cu + k * uint32_t(rng.below(per / k)) : uint32_t(rng.below(per));
      items.insert(dom * per + i);
    }
    for (uint32_t i : items) ru.push_back(u), ri.push_back(i);
  }
  std::vector<float> ones(ru.size(), 1.0f);
  const Csr x = Csr::from_triplets(nu, 2 * per, ru, ri, ones);
  Matrix text(2 * per, kDim);
  std::vector<uint16_t> domain(2 * per);
  for (uint32_t i = 0; i < 2 * per; ++i) {
    gen.make(rng, i % k, 0.8f, text.row(i));
    domain[i] = uint16_t(i / per);
  }
  auto m = fit_model("hybrid:factors=16,epochs=20", x, &text, nullptr, 1, domain);
  int total = 0;
  for (uint32_t c = 0; c < k; ++c) {
    std::vector<uint32_t> hist{c, c + k, c + 2 * k, c + 3 * k, c + 4 * k};  // domain 0, cluster c
    const uint32_t u = m->fold_in_profile(m->n_users(), {}, hist, {});
    Matrix s;
    std::vector<uint32_t> one{u};
    m->score(one, s, 1);
    auto top = top_k(s.row(0), 2 * per, 10, hist, domain, 1);
    int in = 0;
    for (auto& t : top) in += t.item % k == c;
    EXPECT_GE(in, 7) << "cluster " << c;
    total += in;
  }
  std::printf("cross-domain through text: %d of %d top-10 items in the history's cluster (chance %d)\n",
              total, int(10 * k), int(10 * k / k));
}

TEST(Hybrid, SaveLoadKeepsScoresFoldInAndAddItem) {
  const ColdData& c = cold_data();
  auto m = fit_model("hybrid:factors=12,epochs=5,ae=8,ae_hidden=16,ae_epochs=3", c.train, &c.warm_text,
                     &c.user_text);
  m->add_item(std::span<const float>(c.cold_text.row(0), kDim), 0);
  m->fold_in_profile(m->n_users(), std::span<const float>(c.user_text.row(3), kDim),
                     std::vector<uint32_t>{1, 2}, {});
  const fs::path dir = fs::temp_directory_path() / ("xdrec_hybrid_" + std::to_string(::getpid()));
  save_model(*m, dir.string());
  auto l = load_model(dir.string());
  fs::remove_all(dir);
  EXPECT_EQ(l->spec(), m->spec());
  EXPECT_TRUE(l->uses_text());
  EXPECT_EQ(l->text_encoder(), "test-encoder");
  EXPECT_TRUE(bitwise_equal(score_all(*m), score_all(*l)));
  // The same operations after the reload give the same results.
  for (Recommender* r : {m.get(), l.get()}) {
    r->add_item(std::span<const float>(c.cold_text.row(1), kDim), 0);
    r->fold_in_profile(r->n_users(), std::span<const float>(c.user_text.row(5), kDim),
                       std::vector<uint32_t>{4, 7, r->n_items() - 1}, {});
    r->fold_in(2, std::vector<uint32_t>{9, 10}, std::vector<float>{1.0f, 2.0f});
  }
  EXPECT_TRUE(bitwise_equal(score_all(*m), score_all(*l)));
}

TEST(Hybrid, ThreadCountDoesNotChangeTheModel) {
  const ColdData& c = cold_data();
  for (const char* loss : {"warp", "bpr", "mse"}) {
    const std::string spec = std::string("hybrid:factors=10,epochs=2,batch=256,loss=") + loss;
    auto a = fit_model(spec, c.train, &c.warm_text, &c.user_text, 1);
    auto b = fit_model(spec, c.train, &c.warm_text, &c.user_text, 2);
    const Matrix sa = score_all(*a);
    EXPECT_TRUE(bitwise_equal(sa, score_all(*b, 2))) << loss << ": 1 vs 2 threads";
    if (std::string(loss) == "warp") {
      auto c3 = fit_model(spec, c.train, &c.warm_text, &c.user_text, 3);
      EXPECT_TRUE(bitwise_equal(sa, score_all(*c3, 3))) << loss << ": 1 vs 3 threads";
    }
  }
}

TEST(Hybrid, SquaredErrorPredictsRatings) {
  // Ratings = 3 + user offset + item offset + a cluster affinity; the model must beat the global mean.
  const uint32_t nu = 300, ni = 150, k = 5;
  Rng rng(3);
  std::vector<float> uo(nu), io(ni);
  for (auto& v : uo) v = 0.5f * rng.normal();
  for (auto& v : io) v = 0.5f * rng.normal();
  std::vector<uint32_t> ru, ri, tu, ti;
  std::vector<float> rv, tv;
  for (uint32_t u = 0; u < nu; ++u)
    for (uint32_t i = 0; i < ni; ++i) {
      if (rng.uniform() > 0.15) continue;
      const float r = 3.0f + uo[u] + io[i] + (u % k == i % k ? 1.0f : -0.3f) + 0.2f * rng.normal();
      const bool test = rng.uniform() < 0.2;
      (test ? tu : ru).push_back(u);
      (test ? ti : ri).push_back(i);
      (test ? tv : rv).push_back(r);
    }
  const Csr x = Csr::from_triplets(nu, ni, ru, ri, rv);
  auto m = fit_model("hybrid:loss=mse,factors=8,epochs=40,id_dropout=0", x, nullptr);
  const Matrix s = score_all(*m);
  double mean = 0;
  for (float v : rv) mean += v;
  mean /= double(rv.size());
  double se_model = 0, se_mean = 0;
  for (size_t e = 0; e < tv.size(); ++e) {
    se_model += std::pow(s(tu[e], ti[e]) - tv[e], 2);
    se_mean += std::pow(mean - tv[e], 2);
  }
  const double rmse = std::sqrt(se_model / double(tv.size())),
               rmse_mean = std::sqrt(se_mean / double(tv.size()));
  std::printf("squared error: RMSE %.3f vs %.3f for the global mean\n", rmse, rmse_mean);
  EXPECT_LT(rmse, 0.7 * rmse_mean);
}

TEST(Hybrid, BadParametersAndInputsGiveClearErrors) {
  EXPECT_TRUE(throws_error([] { create_model("hybrid:loss=hinge"); }, {"loss", "hinge"}));
  EXPECT_TRUE(throws_error([] { create_model("hybrid:factors=0"); }, {"factors"}));
  EXPECT_TRUE(throws_error([] { create_model("hybrid:id_dropout=1.5"); }, {"id_dropout"}));
  EXPECT_TRUE(throws_error([] { create_model("hybrid:ae=64,ae_hidden=32"); }, {"ae_hidden", "ae=64"}));
  const ColdData& c = cold_data();
  Matrix short_text(c.train.n_cols - 1, kDim);
  EXPECT_TRUE(throws_error([&] { fit_model("hybrid:epochs=1", c.train, &short_text); }, {"item_text"}));
  Matrix bad_users(c.nu, kDim + 1);
  EXPECT_TRUE(
      throws_error([&] { fit_model("hybrid:epochs=1", c.train, &c.warm_text, &bad_users); }, {"user_text"}));
  Matrix nan_text = c.warm_text;
  nan_text(3, 4) = std::nanf("");
  EXPECT_TRUE(throws_error([&] { fit_model("hybrid:epochs=1", c.train, &nan_text); }, {"non-finite"}));
  std::vector<float> v(kDim, 1.0f), zeros(kDim, 0.0f), short_v(kDim - 2, 1.0f);
  auto m = create_model("hybrid");
  EXPECT_TRUE(throws_error([&] { m->add_item(v, 0); }, {"not fitted"}));
  EXPECT_TRUE(throws_error([&] { m->fold_in_profile(0, v, {}, {}); }, {"not fitted"}));
  auto ids = fit_model("hybrid:epochs=1,factors=4", c.train, nullptr);
  EXPECT_TRUE(throws_error([&] { ids->add_item(v, 0); }, {"without retraining"}));
  EXPECT_TRUE(throws_error([&] { ids->fold_in_profile(ids->n_users(), v, {}, {}); }, {"profile"}));
  auto t = fit_model("hybrid:epochs=1,factors=4", c.train, &c.warm_text);
  EXPECT_TRUE(throws_error([&] { t->add_item(short_v, 0); }, {"30 values", "32"}));
  EXPECT_TRUE(throws_error([&] { t->add_item(zeros, 0); }, {"all zeros"}));
  EXPECT_TRUE(throws_error([&] { t->fold_in_profile(t->n_users(), short_v, {}, {}); }, {"profile"}));
  EXPECT_TRUE(throws_error([&] { t->fold_in_profile(t->n_users() + 1, v, {}, {}); }, {"beyond"}));
  EXPECT_EQ(t->n_items(), c.train.n_cols);
  EXPECT_EQ(t->n_users(), c.nu);
  // The text switch turns text off even when the fit is given text.
  auto off = fit_model("hybrid:epochs=1,factors=4,text=false", c.train, &c.warm_text);
  EXPECT_FALSE(off->uses_text());
}

// ---- Real data (slow; XDREC_SLOW_TESTS=1, set by scripts/test --slow)
// ----------------------------------------

int slow_threads() {
  return std::getenv("HYB_THREADS") ? std::atoi(std::getenv("HYB_THREADS")) : 2;
}

// NDCG@10 of each test user's held-out cold items ranked among all cold items (the items held out in test).
double cold_ndcg(const Matrix& scores, const Csr& test, const std::vector<uint8_t>& cold) {
  std::vector<uint32_t> cand;
  for (uint32_t i = 0; i < cold.size(); ++i)
    if (cold[i]) cand.push_back(i);
  double sum = 0;
  int n = 0;
  for (uint32_t u = 0; u < test.n_rows; ++u) {
    auto rel = test.row_indices(u);
    if (rel.empty()) continue;
    std::vector<uint32_t> ranked = cand;
    const float* s = scores.row(u);
    std::partial_sort(ranked.begin(), ranked.begin() + std::min<size_t>(10, ranked.size()), ranked.end(),
                      [&](uint32_t a, uint32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
    ranked.resize(std::min<size_t>(10, ranked.size()));
    sum += ndcg_at_k(ranked, rel, 10);
    ++n;
  }
  return sum / n;
}

// Specs for the slow tests: `defaults`, or the ';'-separated list in HYB_ML_SPECS.
std::vector<std::string> slow_specs(std::vector<std::string> defaults) {
  const char* e = std::getenv("HYB_ML_SPECS");
  if (!e) return defaults;
  std::vector<std::string> specs;
  const std::string all = e;
  for (size_t a = 0; a <= all.size();) {
    const size_t b = std::min(all.find(';', a), all.size());
    if (b > a) specs.push_back(all.substr(a, b - a));
    a = b + 1;
  }
  return specs;
}

TEST(HybridMovieLens, WarmUsersBeatPopularity) {
  REQUIRE_SLOW_TESTS();
  const std::string dir = std::string(XDREC_SHARED_DATA) + "/movielens_ml-latest-small";
  if (!fs::exists(dir + "/ratings.csv")) GTEST_SKIP() << "MovieLens latest-small not found in " << dir;
  ReadOptions ro;
  ro.use_cache = false;
  const Dataset ds = read_dataset(dir, "ml-latest-small", ro);
  const Split sp = make_split(ds, "random:test=0.2,seed=42", SplitOptions{});
  const Csr train = ds.user_item_matrix(sp.train), test = ds.user_item_matrix(sp.test);
  const auto item_texts = item_text_with_tags(ds, sp);
  std::vector<std::string> texts;
  for (auto& t : item_texts) texts.push_back(render_item_text("{title}. {categories}.", t));
  auto enc = create_encoder("tfidf");
  enc->fit(texts, 2);
  const Matrix x = enc->encode(texts, 2);
  const Matrix cats = ds.category_vectors();
  auto warm_ndcg = [&](const std::string& spec) {
    Timer t;
    auto m = create_model(spec);
    FitContext ctx;
    ctx.threads = slow_threads();
    ctx.item_categories = &cats;
    ctx.item_text = &x;
    ctx.item_domain = ds.item_domain;
    m->fit(train, ctx);
    const double fit_s = t.seconds();
    EvalOptions eo;
    eo.threads = 2;
    const EvalResult r = evaluate(*m, train, test, &ds, eo);
    std::printf("  %-60s warm NDCG@10 %.4f recall@10 %.4f (fit %.1f s)\n", spec.c_str(),
                r.overall.at("ndcg@10"), r.overall.at("recall@10"), fit_s);
    return r.overall.at("ndcg@10");
  };
  // Measured (Release, 2 threads): popularity 0.196, hybrid 0.318, hybrid:id_dropout=0 0.327.
  const double min_ndcg = 0.26;
  const double popular = warm_ndcg("popular");
  EXPECT_LT(popular, min_ndcg) << "popularity reaches the floor: the check no longer separates the models";
  for (auto& spec : slow_specs({"hybrid", "hybrid:id_dropout=0"}))
    EXPECT_GT(warm_ndcg(spec), min_ndcg) << spec << " (popularity " << popular << ")";
}

TEST(HybridMovieLens, ColdItemsBeatTextCosine) {
  REQUIRE_SLOW_TESTS();
  const std::string dir = std::string(XDREC_SHARED_DATA) + "/movielens_ml-latest-small";
  if (!fs::exists(dir + "/ratings.csv")) GTEST_SKIP() << "MovieLens latest-small not found in " << dir;
  ReadOptions ro;
  ro.use_cache = false;
  const Dataset ds = read_dataset(dir, "ml-latest-small", ro);
  const Split sp = make_split(ds, "cold-items:cold=0.2,seed=42", SplitOptions{});
  const Csr train = ds.user_item_matrix(sp.train), test = ds.user_item_matrix(sp.test);
  std::vector<uint8_t> cold(ds.n_items(), 0);
  for (auto& x : sp.test) cold[x.item] = 1;
  const auto item_texts = item_text_with_tags(ds, sp);
  std::vector<std::string> texts;
  for (auto& t : item_texts) texts.push_back(render_item_text("{title}. {categories}.", t));
  auto enc = create_encoder("tfidf");
  enc->fit(texts, 2);
  const Matrix x = enc->encode(texts, 2);

  // Baseline: cosine between each cold item's text and the mean text of the user's history, both centred on
  // the mean text of the training items.
  std::vector<double> mean(x.cols, 0.0);
  size_t nw = 0;
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    if (train.indptr.size() && !cold[i]) {
      for (size_t k = 0; k < x.cols; ++k) mean[k] += x(i, k);
      ++nw;
    }
  Matrix xc = x;
  for (uint32_t i = 0; i < xc.rows; ++i) {
    double nn = 0;
    for (size_t k = 0; k < xc.cols; ++k) nn += std::pow(xc(i, k) -= float(mean[k] / double(nw)), 2);
    for (size_t k = 0; k < xc.cols; ++k) xc(i, k) /= float(std::sqrt(nn) + 1e-12);
  }
  Matrix cos(train.n_rows, ds.n_items());
  for (uint32_t u = 0; u < train.n_rows; ++u) {
    std::vector<float> h(x.cols, 0.0f);
    for (uint32_t i : train.row_indices(u))
      for (size_t k = 0; k < x.cols; ++k) h[k] += xc(i, k);
    for (uint32_t i = 0; i < ds.n_items(); ++i) cos(u, i) = hybrid::dot(h.data(), xc.row(i), x.cols);
  }
  const double base = cold_ndcg(cos, test, cold);
  std::printf("MovieLens latest-small cold items (tfidf %zu-d): text cosine NDCG@10 %.4f\n", x.cols, base);

  // Measured (Release, 2 threads): text cosine 0.149, hybrid 0.164. Without id dropout (hybrid:id_dropout=0,
  // 0.142) the model does not beat text cosine on cold items: it is not in the default list.
  const double min_ndcg = 0.155;
  EXPECT_LT(base, min_ndcg) << "text cosine reaches the floor: the check no longer separates the models";
  const Matrix cats = ds.category_vectors();
  for (auto& spec : slow_specs({"hybrid"})) {
    Timer t;
    auto m = create_model(spec);
    FitContext ctx;
    ctx.threads = slow_threads();
    ctx.verbose = std::getenv("HYB_VERBOSE") != nullptr;
    ctx.item_categories = &cats;
    ctx.item_text = &x;
    ctx.item_domain = ds.item_domain;
    m->fit(train, ctx);
    const double fit_s = t.seconds();
    const double ndcg = cold_ndcg(score_all(*m, 2), test, cold);
    std::printf("  %-60s cold NDCG@10 %.4f (fit %.1f s)\n", spec.c_str(), ndcg, fit_s);
    EXPECT_GT(ndcg, min_ndcg) << spec << " (text cosine " << base << ")";
  }
}

// Food-Kitchen (fixed split, fitted on the training part, evaluated on the validation targets against 999
// sampled negatives of their domain): HR@10 per domain of every model above a floor that popularity, measured
// the same way, stays below; fit time and peak memory are printed. Use-lite vectors come from the embedding
// cache when present. HYB_VERBOSE prints the per-epoch phases.
TEST(HybridFoodKitchen, FitTimeAndValidationHitRate) {
  REQUIRE_SLOW_TESTS();
  const std::string dir = std::string(XDREC_SHARED_DATA) + "/amazon_food-kitchen_llmcdsr";
  if (!fs::exists(dir + "/train_A.txt")) GTEST_SKIP() << "Food-Kitchen not found in " << dir;
  const Dataset ds = read_dataset(dir, "food-kitchen");
  const Split sp = make_split(ds, "fixed", SplitOptions{});
  const Csr train = ds.user_item_matrix(sp.train), valid = ds.user_item_matrix(sp.validation);
  std::vector<std::string> texts;
  for (auto& t : ds.item_text) texts.push_back(render_item_text("{title}. {categories}. {description}", t));
  auto enc = create_encoder("use-lite");
  EmbedOptions eo;
  eo.threads = 2;
  const Matrix x = encode_with_cache(*enc, texts, eo);
  const Matrix cats = ds.category_vectors();
  // HR@10 of the validation targets per domain.
  auto hit_rates = [&](const std::string& spec0) {
    // A trailing "@none" fits without text.
    const bool no_text = spec0.size() > 5 && spec0.substr(spec0.size() - 5) == "@none";
    const std::string spec = no_text ? spec0.substr(0, spec0.size() - 5) : spec0;
    Timer t;
    auto m = create_model(spec);
    FitContext ctx;
    ctx.threads = slow_threads();
    ctx.verbose = std::getenv("HYB_VERBOSE") != nullptr;
    ctx.item_categories = &cats;
    ctx.item_text = no_text ? nullptr : &x;
    ctx.item_domain = ds.item_domain;
    m->fit(train, ctx);
    const double fit_s = t.seconds();
    EvalOptions ev;
    ev.threads = 2;
    ev.sampled_negatives = 999;
    const EvalResult r = evaluate(*m, train, valid, &ds, ev);
    const std::map<std::string, double> hr = {{"food", r.by_domain.at("food").at("hr@10")},
                                              {"kitchen", r.by_domain.at("kitchen").at("hr@10")}};
    std::printf("  %-60s food hr@10 %.4f kitchen hr@10 %.4f (fit %.1f s, peak RSS %.0f MiB)\n", spec0.c_str(),
                hr.at("food"), hr.at("kitchen"), fit_s, peak_rss_mb());
    return hr;
  };
  // Measured (Release, 2 threads): popularity food 0.259, kitchen 0.102; hybrid:epochs=2 food 0.311, kitchen
  // 0.250.
  const std::map<std::string, double> min_hr = {{"food", 0.285}, {"kitchen", 0.18}};
  const auto popular = hit_rates("popular");
  for (auto& [domain, f] : min_hr)
    EXPECT_LT(popular.at(domain), f) << domain << ": popularity reaches the floor";
  for (auto& spec : slow_specs({"hybrid:epochs=2"})) {
    const auto hr = hit_rates(spec);
    for (auto& [domain, f] : min_hr)
      EXPECT_GT(hr.at(domain), f) << spec << " in " << domain << " (popularity " << popular.at(domain) << ")";
  }
}

}  // namespace

TEST(Hybrid, AutoencoderNotShorterThanTheTextIsAnError) {
  const ColdData& c = cold_data();
  const std::string dim = std::to_string(kDim);
  EXPECT_TRUE(throws_error([&] { fit_model("hybrid:epochs=1,ae=" + dim, c.train, &c.warm_text); },
                           {"hybrid", "ae=" + dim, dim}));
  // Without text (or with text=false) the autoencoder is not used and not checked.
  EXPECT_NO_THROW(fit_model("hybrid:epochs=1,factors=4,ae=" + dim, c.train, nullptr));
  EXPECT_NO_THROW(fit_model("hybrid:epochs=1,factors=4,text=false,ae=" + dim, c.train, &c.warm_text));
}
