// Synthetic data: determinism, shape, and learnable structure (co-occurrence beats popularity).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "xdrec/split.h"
#include "xdrec/synthetic.h"

namespace xdrec {
namespace {

TEST(Synthetic, DeterministicBySeed) {
  SyntheticOptions o;
  o.n_users = 500;
  const Dataset a = make_synthetic(o), b = make_synthetic(o);
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  for (uint32_t i = 0; i < a.n_items(); ++i) EXPECT_EQ(a.item_text[i].title, b.item_text[i].title);
  for (uint32_t u = 0; u < a.n_users(); ++u) EXPECT_EQ(a.user_profile[u].text, b.user_profile[u].text);
  o.seed = 43;
  EXPECT_NE(make_synthetic(o).fingerprint(), a.fingerprint());
}

TEST(Synthetic, IndependentOfThreadCount) {
  SyntheticOptions o;
  o.n_users = 9000;  // more than one chunk of users
  o.threads = 1;
  const Dataset a = make_synthetic(o);
  o.threads = 3;
  const Dataset b = make_synthetic(o);
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  ASSERT_EQ(a.n_users(), b.n_users());
  for (uint32_t u = 0; u < a.n_users(); ++u) ASSERT_EQ(a.user_profile[u].text, b.user_profile[u].text);
}

TEST(Synthetic, Shape) {
  SyntheticOptions o;
  o.n_users = 3000;
  o.domains = {"books", "films", "kitchen", "music"};
  o.items_per_domain = 300;
  o.n_topics = 10;
  o.mean_interactions = 20;
  o.overlap = 0.5;
  const Dataset ds = make_synthetic(o);
  ds.validate();
  EXPECT_EQ(ds.n_users(), 3000u);
  EXPECT_EQ(ds.n_items(), 1200u);
  EXPECT_EQ(ds.domains.names(), o.domains);
  for (uint32_t i = 0; i < ds.n_items(); ++i) {
    EXPECT_EQ(ds.item_domain[i], i / 300);
    EXPECT_EQ(ds.items.name(i), o.domains[i / 300] + ":" + std::to_string(i % 300));
    const ItemText& t = ds.item_text[i];
    EXPECT_GE(t.title.size(), 5u);
    ASSERT_GE(t.categories.size(), 1u);
    EXPECT_LE(t.categories.size(), 2u);
  }
  std::set<std::string> topics;
  for (const auto& t : ds.item_text) topics.insert(t.categories[0]);
  EXPECT_EQ(topics.size(), 10u);  // every topic has items in every domain
  EXPECT_TRUE(topics.count("gardening"));

  std::vector<int> mask(ds.n_users(), 0);
  std::vector<int64_t> last(ds.n_users(), std::numeric_limits<int64_t>::min());
  std::set<std::pair<uint32_t, uint32_t>> seen;
  std::vector<size_t> per_user_domain(size_t(ds.n_users()) * 4, 0);
  for (const auto& x : ds.interactions) {
    ASSERT_TRUE(x.has_rating());
    EXPECT_TRUE(x.rating >= 1 && x.rating <= 5 && x.rating == std::round(x.rating));
    EXPECT_GT(x.timestamp, last[x.user]);  // increasing per user
    last[x.user] = x.timestamp;
    EXPECT_TRUE(seen.insert({x.user, x.item}).second) << "repeated pair";
    mask[x.user] |= 1 << ds.item_domain[x.item];
    ++per_user_domain[size_t(x.user) * 4 + ds.item_domain[x.item]];
  }
  size_t multi = 0, active = 0, total = 0;
  for (uint32_t u = 0; u < ds.n_users(); ++u) {
    EXPECT_NE(mask[u], 0) << "user without interactions";
    multi += __builtin_popcount(mask[u]) > 1;
    for (int d = 0; d < 4; ++d)
      if (per_user_domain[size_t(u) * 4 + d]) {
        ++active;
        total += per_user_domain[size_t(u) * 4 + d];
      }
  }
  EXPECT_NEAR(double(multi) / ds.n_users(), 0.5, 0.04);
  EXPECT_NEAR(double(total) / active, 20.0, 2.0);
  // Profiles describe tastes.
  EXPECT_EQ(ds.user_profile[0].text.rfind("enjoys ", 0), 0u);
}

TEST(Synthetic, PopularitySkewAndTasteAlignment) {
  SyntheticOptions o;
  o.n_users = 2000;
  const Dataset ds = make_synthetic(o);
  std::vector<size_t> pop(ds.n_items(), 0);
  for (const auto& x : ds.interactions) ++pop[x.item];
  std::vector<size_t> sorted = pop;
  std::sort(sorted.rbegin(), sorted.rend());
  size_t top = 0;
  for (size_t k = 0; k < sorted.size() / 10; ++k) top += sorted[k];
  EXPECT_GT(double(top) / ds.interactions.size(), 0.3);  // the top 10% of items take a large share
  // Most interactions fall in a topic the user's profile names.
  size_t match = 0;
  for (const auto& x : ds.interactions)
    match += ds.user_profile[x.user].text.find(ds.item_text[x.item].categories[0]) != std::string::npos;
  EXPECT_GT(double(match) / ds.interactions.size(), 0.7);
}

// Hit rate at 10 of leave-last-out targets, ranking unseen items by a score.
template <class Score>
double hit_rate(const Dataset& ds, const Split& s, Score score) {
  std::vector<std::vector<uint32_t>> hist(ds.n_users());
  for (const auto& x : s.train) hist[x.user].push_back(x.item);
  size_t hits = 0;
  std::vector<double> sc(ds.n_items());
  for (const auto& x : s.test) {
    score(hist[x.user], sc);
    for (uint32_t i : hist[x.user]) sc[i] = -1e300;
    const double target = sc[x.item];
    size_t better = 0;
    for (uint32_t i = 0; i < ds.n_items(); ++i) better += sc[i] > target || (sc[i] == target && i < x.item);
    hits += better < 10;
  }
  return double(hits) / s.test.size();
}

TEST(Synthetic, CoOccurrenceBeatsPopularity) {
  SyntheticOptions o;
  o.n_users = 2000;
  const Dataset ds = make_synthetic(o);
  const Split s = split_leave_last_out(ds, SplitOptions{});
  const uint32_t n = ds.n_items();
  std::vector<double> pop(n, 0);
  for (const auto& x : s.train) ++pop[x.item];
  std::vector<std::vector<uint32_t>> hist(ds.n_users());
  for (const auto& x : s.train) hist[x.user].push_back(x.item);
  std::vector<float> co(size_t(n) * n, 0.0f);
  for (const auto& h : hist)
    for (uint32_t a : h)
      for (uint32_t b : h)
        if (a != b) co[size_t(a) * n + b] += 1.0f;
  const double hr_pop =
      hit_rate(ds, s, [&](const std::vector<uint32_t>&, std::vector<double>& sc) { sc = pop; });
  const double hr_knn = hit_rate(ds, s, [&](const std::vector<uint32_t>& h, std::vector<double>& sc) {
    std::fill(sc.begin(), sc.end(), 0.0);
    for (uint32_t a : h)
      for (uint32_t b = 0; b < n; ++b)
        if (pop[a] > 0 && pop[b] > 0) sc[b] += co[size_t(a) * n + b] / std::sqrt(pop[a] * pop[b]);
  });
  EXPECT_GT(hr_knn, 1.5 * hr_pop) << "ItemKNN HR@10 " << hr_knn << " vs popularity " << hr_pop;
  EXPECT_GT(hr_pop, 0.0);
}

TEST(Synthetic, RejectsBadOptions) {
  SyntheticOptions o;
  o.domains = {"a", "a"};
  EXPECT_THROW(make_synthetic(o), Error);
  o = {};
  o.n_users = 0;
  EXPECT_THROW(make_synthetic(o), Error);
  o = {};
  o.overlap = 1.5;
  EXPECT_THROW(make_synthetic(o), Error);
  o = {};
  o.domains.clear();
  EXPECT_THROW(make_synthetic(o), Error);
  // Small shapes still work: more topics than items, one domain.
  o = {};
  o.domains = {"only"};
  o.items_per_domain = 5;
  o.n_topics = 30;
  o.n_users = 50;
  const Dataset ds = make_synthetic(o);
  ds.validate();
  EXPECT_EQ(ds.n_items(), 5u);
  EXPECT_GT(ds.interactions.size(), 0u);
}

}  // namespace
}  // namespace xdrec
