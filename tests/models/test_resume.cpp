// Incremental updates (Recommender::resume) of the SGD models bpr, hybrid and twotower: on clustered data
// that grows by new users, new items and new interactions of old users, the resumed model beats the stale one
// and comes close to a full refit; new users and items get scores (items known only by text through their
// text); save/load after a resume; determinism; bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "models/clustered.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using testing_util::Data;
using testing_util::make_clustered;

constexpr uint32_t kUsers = 300, kItems = 200, kClusters = 10, kOldUsers = 240, kOldItems = 160;
// Items from kTextOnly on have no interactions at all: a model knows them only by their text.
constexpr uint32_t kTextOnly = 185;
constexpr size_t kDim = 16;

// The clustered data without the interactions of the text-only items (their held-out cases dropped too).
Data make_data() {
  Data d = make_clustered(kUsers, kItems, kClusters, 12, 21);
  std::vector<uint32_t> r, c;
  for (uint32_t u = 0; u < kUsers; ++u)
    for (uint32_t i : d.train.row_indices(u))
      if (i < kTextOnly) r.push_back(u), c.push_back(i);
  d.train = Csr::from_triplets(kUsers, kItems, r, c, std::vector<float>(r.size(), 1.0f));
  for (auto& h : d.held_out)
    if (h >= int64_t(kTextOnly)) h = -1;
  return d;
}

// The old data: the first kOldUsers users and kOldItems items.
Csr old_part(const Csr& m) {
  std::vector<uint32_t> r, c;
  for (uint32_t u = 0; u < kOldUsers; ++u)
    for (uint32_t i : m.row_indices(u))
      if (i < kOldItems) r.push_back(u), c.push_back(i);
  return Csr::from_triplets(kOldUsers, kOldItems, r, c, std::vector<float>(r.size(), 1.0f));
}

// Item text: the item's cluster direction (i % kClusters) plus noise.
Matrix make_text(uint32_t n_items) {
  Rng rng(9);
  std::vector<std::vector<float>> centre(kClusters, std::vector<float>(kDim));
  for (auto& c : centre)
    for (float& v : c) v = rng.normal();
  Matrix t(n_items, kDim);
  for (uint32_t i = 0; i < n_items; ++i)
    for (size_t k = 0; k < kDim; ++k) t(i, k) = 1.0f + centre[i % kClusters][k] + 0.5f * rng.normal();
  return t;
}

// Hit rate at 10 of the held-out items over every user of the data, seen items excluded. A user or a target
// item the model does not know (a stale model) is a miss.
double hit_rate(const Recommender& m, const Data& d) {
  size_t hits = 0, n = 0;
  std::vector<uint32_t> users(m.n_users());
  std::iota(users.begin(), users.end(), 0u);
  Matrix s;
  m.score(users, s, 1);
  for (uint32_t u = 0; u < d.train.n_rows; ++u) {
    if (d.held_out[u] < 0) continue;
    ++n;
    const uint32_t target = uint32_t(d.held_out[u]);
    if (u >= m.n_users() || target >= m.n_items()) continue;
    const auto seen = d.train.row_indices(u);
    size_t above = 0;
    for (uint32_t i = 0; i < m.n_items(); ++i)
      if (!std::binary_search(seen.begin(), seen.end(), i) && s(u, i) > s(u, target)) ++above;
    hits += above < 10;
  }
  return double(hits) / double(n);
}

Matrix score_all(const Recommender& m, int threads = 1) {
  std::vector<uint32_t> users(m.n_users());
  std::iota(users.begin(), users.end(), 0u);
  Matrix s;
  m.score(users, s, threads);
  return s;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

std::unique_ptr<Recommender> copy_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  auto c = create_model(m.spec());
  c->load(t, extra);
  return c;
}

struct Scenario {
  Data d = make_data();
  Csr old = old_part(d.train);
  Matrix text = make_text(kItems), old_text;
  std::vector<uint32_t> touched;
  Scenario() {
    old_text.resize(kOldItems, kDim);
    std::copy(text.data.begin(), text.data.begin() + ptrdiff_t(kOldItems * kDim), old_text.data.begin());
    for (uint32_t u = 0; u < kOldUsers; ++u)
      if (d.train.row_size(u) != old.row_size(u)) touched.push_back(u);
  }
  FitContext ctx(bool full, int threads = 1) const {
    FitContext c;
    c.threads = threads;
    c.seed = 5;
    c.item_text = full ? &text : &old_text;
    c.text_encoder = "test-encoder";
    return c;
  }
};

// min_full: the hit rate a full refit must reach (the data's clusters are easy for the factor models; sasrec,
// reading the histories in item order, has no sequential signal to use and reaches less).
void check_resume_quality(const std::string& spec, int sweeps, double tolerance, double min_full = 0.3) {
  const Scenario s;
  ASSERT_GT(s.touched.size(), 100u);
  auto stale = create_model(spec);
  stale->fit(s.old, s.ctx(false));
  auto m = copy_of(*stale);
  ASSERT_TRUE(m->resume(s.d.train, s.touched, s.ctx(true), sweeps));
  EXPECT_EQ(m->n_users(), kUsers);
  EXPECT_EQ(m->n_items(), kItems);
  for (float v : score_all(*m).data) ASSERT_TRUE(std::isfinite(v));
  auto full = create_model(spec);
  full->fit(s.d.train, s.ctx(true));
  const double hr_stale = hit_rate(*stale, s.d), hr_resume = hit_rate(*m, s.d),
               hr_full = hit_rate(*full, s.d);
  std::printf("[ %s ] HR@10 stale %.3f, resumed (%d sweeps) %.3f, full refit %.3f\n", spec.c_str(), hr_stale,
              sweeps, hr_resume, hr_full);
  EXPECT_GT(hr_full, min_full);
  EXPECT_GT(hr_resume, hr_stale + 0.1);
  EXPECT_GT(hr_resume, hr_full - tolerance);

  // Save / load after the resume: the same scores.
  auto back = copy_of(*m);
  EXPECT_TRUE(bitwise_equal(score_all(*back), score_all(*m)));
  // Deterministic: a second resume from the same model gives the same model.
  auto again = copy_of(*stale);
  ASSERT_TRUE(again->resume(s.d.train, s.touched, s.ctx(true), sweeps));
  EXPECT_TRUE(bitwise_equal(score_all(*again), score_all(*m)));
}

}  // namespace

TEST(Resume, BprApproachesAFullRefit) {
  check_resume_quality("bpr:factors=16,epochs=60", 10, 0.06);
}

TEST(Resume, HybridBprApproachesAFullRefit) {
  check_resume_quality("hybrid:factors=16,epochs=20,loss=bpr", 3, 0.06);
}

TEST(Resume, HybridWarpApproachesAFullRefit) {
  check_resume_quality("hybrid:factors=16,epochs=20,loss=warp", 3, 0.06);
}

TEST(Resume, TwoTowerApproachesAFullRefit) {
  check_resume_quality("twotower:factors=16,hidden=32,epochs=10", 3, 0.06);
}

TEST(Resume, SasrecApproachesAFullRefit) {
  check_resume_quality("sasrec:dim=32,epochs=60,min_steps=0,negatives=64,batch=16,lr=3e-3,dropout=0", 5, 0.06,
                       0.12);
}

static void check_thread_independent_and_text_only_items(const std::string& spec) {
  const Scenario s;
  auto stale = create_model(spec);
  stale->fit(s.old, s.ctx(false));
  auto a = copy_of(*stale), b = copy_of(*stale);
  ASSERT_TRUE(a->resume(s.d.train, s.touched, s.ctx(true, 1), 2));
  ASSERT_TRUE(b->resume(s.d.train, s.touched, s.ctx(true, 2), 2));
  const Matrix sa = score_all(*a);
  EXPECT_TRUE(bitwise_equal(sa, score_all(*b, 2)));
  // Items without any interaction are scored through their text: for a user, the text-only items of the
  // user's cluster above those of the other clusters (pairwise, over every user).
  size_t right = 0, pairs = 0;
  for (uint32_t u = 0; u < kUsers; ++u)
    for (uint32_t i = kTextOnly; i < kItems; ++i)
      for (uint32_t j = kTextOnly; j < kItems; ++j)
        if (i % kClusters == u % kClusters && j % kClusters != u % kClusters) {
          right += sa(u, i) > sa(u, j);
          ++pairs;
        }
  EXPECT_GT(double(right) / double(pairs), 0.8) << spec;
}

TEST(Resume, HybridIsThreadIndependentAndRanksTextOnlyItemsByText) {
  check_thread_independent_and_text_only_items("hybrid:factors=16,epochs=10");
}

TEST(Resume, TwoTowerIsThreadIndependentAndRanksTextOnlyItemsByText) {
  check_thread_independent_and_text_only_items("twotower:factors=16,hidden=32,epochs=5");
}

TEST(Resume, SasrecIsThreadIndependentAndRanksTextOnlyItemsByText) {
  check_thread_independent_and_text_only_items(
      "sasrec:dim=32,epochs=30,min_steps=0,negatives=64,batch=16,lr=3e-3,dropout=0");
}

TEST(Resume, BadInputIsAnError) {
  const Scenario s;
  for (const char* spec : {"bpr:factors=8,epochs=5", "hybrid:factors=8,epochs=2",
                           "twotower:factors=8,hidden=8,epochs=1", "sasrec:dim=8,epochs=1,min_steps=0"}) {
    auto m = create_model(spec);
    EXPECT_THROW(m->resume(s.d.train, {}, s.ctx(true), 1), Error) << spec;  // not fitted
    m->fit(s.old, s.ctx(false));
    auto fitted = copy_of(*m);
    const Csr smaller = make_clustered(kUsers, kOldItems - 1, kClusters, 8, 1).train;
    EXPECT_THROW(m->resume(smaller, {}, s.ctx(true), 1), Error) << spec;  // fewer items than the model
    const std::vector<uint32_t> unsorted{5, 3}, out_of_range{kUsers};
    EXPECT_THROW(m->resume(s.d.train, unsorted, s.ctx(true), 1), Error) << spec;
    EXPECT_THROW(m->resume(s.d.train, out_of_range, s.ctx(true), 1), Error) << spec;
    EXPECT_THROW(m->resume(s.d.train, s.touched, s.ctx(true), -1), Error) << spec;
    // A failed check leaves the model as it was.
    EXPECT_TRUE(bitwise_equal(score_all(*m), score_all(*fitted))) << spec;
  }
  // hybrid and twotower read new items through their text: without it, an error.
  FitContext no_text = s.ctx(true);
  no_text.item_text = nullptr;
  for (const char* spec : {"hybrid:factors=8,epochs=2", "twotower:factors=8,hidden=8,epochs=1",
                           "sasrec:dim=8,epochs=1,min_steps=0"}) {
    auto h = create_model(spec);
    h->fit(s.old, s.ctx(false));
    EXPECT_THROW(h->resume(s.d.train, s.touched, no_text, 1), Error) << spec;
  }
  // A DP-SGD model is refused: an incremental update is not DP-SGD training.
  for (const char* spec : {"twotower:factors=8,hidden=8,epochs=1,dp_noise=1,dp_users=60",
                           "sasrec:dim=8,epochs=1,dp_noise=1,dp_users=60"}) {
    auto dp = create_model(spec);
    dp->fit(s.old, s.ctx(false));
    EXPECT_THROW(dp->resume(s.d.train, s.touched, s.ctx(true), 1), Error) << spec;
  }
  // Models without an incremental path say so.
  for (const char* spec : {"hybrid:factors=8,epochs=2,loss=mse"}) {
    auto m = create_model(spec);
    m->fit(s.old, s.ctx(false));
    EXPECT_FALSE(m->resume(s.d.train, s.touched, s.ctx(true), 1)) << spec;
  }
}
