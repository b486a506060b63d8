// Top-K selection and batched recommend(), checked on hand-made score rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "test_util.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

using xdrec::testing_util::throws_error;

std::vector<uint32_t> items_of(const std::vector<ScoredItem>& v) {
  std::vector<uint32_t> out;
  for (auto& s : v) out.push_back(s.item);
  return out;
}

// A model whose score for (user u, item i) is a fixed function, for testing recommend().
class FormulaModel final : public Recommender {
 public:
  FormulaModel(uint32_t users, uint32_t items) : users_(users), items_(items) {}
  std::string name() const override { return "formula"; }
  std::string spec() const override { return "formula"; }
  void fit(const Csr&, const FitContext&) override {}
  uint32_t n_users() const override { return users_; }
  uint32_t n_items() const override { return items_; }
  static float value(uint32_t u, uint32_t i) { return float((u * 7 + i * 13) % 17) - float(i % 3) * 0.5f; }
  void score(std::span<const uint32_t> users, Matrix& out, int) const override {
    ++calls;
    max_batch = std::max(max_batch, users.size());
    out.resize(users.size(), items_);
    for (size_t r = 0; r < users.size(); ++r)
      for (uint32_t i = 0; i < items_; ++i) out(r, i) = value(users[r], i);
  }
  uint32_t fold_in(uint32_t, std::span<const uint32_t>, std::span<const float>) override { return 0; }
  void save(TensorMap&, nlohmann::json&) const override {}
  void load(const TensorMap&, const nlohmann::json&) override {}
  mutable int calls = 0;
  mutable size_t max_batch = 0;

 private:
  uint32_t users_, items_;
};

}  // namespace

TEST(TopK, OrdersByScoreThenLowerIndex) {
  //                      0    1    2    3    4    5    6
  const float s[] = {1.0f, 3.0f, 3.0f, 2.0f, 5.0f, 3.0f, -1.0f};
  auto top = top_k(s, 7, 4, {}, {}, -1);
  EXPECT_EQ(items_of(top), (std::vector<uint32_t>{4, 1, 2, 5}));
  EXPECT_EQ(top[0].score, 5.0f);
  EXPECT_EQ(top[3].score, 3.0f);
  // The tie at the cut keeps the lower indices.
  EXPECT_EQ(items_of(top_k(s, 7, 2, {}, {}, -1)), (std::vector<uint32_t>{4, 1}));
  EXPECT_EQ(items_of(top_k(s, 7, 3, {}, {}, -1)), (std::vector<uint32_t>{4, 1, 2}));
  // k beyond the number of items returns everything, sorted.
  EXPECT_EQ(items_of(top_k(s, 7, 100, {}, {}, -1)), (std::vector<uint32_t>{4, 1, 2, 5, 3, 0, 6}));
  EXPECT_TRUE(top_k(s, 7, 0, {}, {}, -1).empty());
  EXPECT_TRUE(top_k(s, 0, 5, {}, {}, -1).empty());
}

TEST(TopK, AllEqualScoresGiveTheFirstItems) {
  std::vector<float> s(50, 0.25f);
  EXPECT_EQ(items_of(top_k(s.data(), 50, 3, {}, {}, -1)), (std::vector<uint32_t>{0, 1, 2}));
}

TEST(TopK, ExcludedItemsAreSkipped) {
  const float s[] = {1.0f, 3.0f, 3.0f, 2.0f, 5.0f, 3.0f, -1.0f};
  const std::vector<uint32_t> ex{1, 4};  // sorted, as a Csr row
  EXPECT_EQ(items_of(top_k(s, 7, 3, ex, {}, -1)), (std::vector<uint32_t>{2, 5, 3}));
  const std::vector<uint32_t> all{0, 1, 2, 3, 4, 5, 6};
  EXPECT_TRUE(top_k(s, 7, 3, all, {}, -1).empty());
  const std::vector<uint32_t> beyond{6, 9};  // indices past the end are harmless
  EXPECT_EQ(items_of(top_k(s, 7, 7, beyond, {}, -1)), (std::vector<uint32_t>{4, 1, 2, 5, 3, 0}));
}

TEST(TopK, DomainFilter) {
  const float s[] = {1.0f, 3.0f, 3.0f, 2.0f, 5.0f, 3.0f, -1.0f};
  const std::vector<uint16_t> dom{0, 1, 0, 1, 0, 1, 2};
  EXPECT_EQ(items_of(top_k(s, 7, 10, {}, dom, 1)), (std::vector<uint32_t>{1, 5, 3}));
  EXPECT_EQ(items_of(top_k(s, 7, 2, {}, dom, 0)), (std::vector<uint32_t>{4, 2}));
  EXPECT_EQ(items_of(top_k(s, 7, 10, {}, dom, 2)), (std::vector<uint32_t>{6}));
  EXPECT_TRUE(top_k(s, 7, 10, {}, dom, 3).empty());
  const std::vector<uint32_t> ex{5};
  EXPECT_EQ(items_of(top_k(s, 7, 10, ex, dom, 1)), (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(top_k(s, 7, 10, {}, dom, -1).size(), 7u) << "domain -1 means any domain";
  const std::vector<uint16_t> short_dom{0, 1};
  EXPECT_TRUE(throws_error([&] { top_k(s, 7, 3, {}, short_dom, 0); }, {"domains"}));
}

TEST(TopK, NanRanksLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float s[] = {nan, 0.5f, nan, -3.0f};
  auto top = top_k(s, 4, 4, {}, {}, -1);
  EXPECT_EQ(items_of(top), (std::vector<uint32_t>{1, 3, 0, 2}));
  EXPECT_EQ(top[2].score, -INFINITY);
}

TEST(TopK, MatchesAFullSortOnRandomRows) {
  Rng rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    const uint32_t n = 1 + uint32_t(rng.below(200));
    std::vector<float> s(n);
    for (auto& v : s) v = float(rng.below(20));  // many ties
    std::vector<uint32_t> ex;
    for (uint32_t i = 0; i < n; ++i)
      if (rng.below(4) == 0) ex.push_back(i);
    const size_t k = rng.below(n + 5);
    std::vector<ScoredItem> want;
    for (uint32_t i = 0; i < n; ++i)
      if (!std::binary_search(ex.begin(), ex.end(), i)) want.push_back({i, s[i]});
    std::stable_sort(want.begin(), want.end(), [](auto& a, auto& b) { return a.score > b.score; });
    want.resize(std::min(want.size(), k));
    EXPECT_EQ(items_of(top_k(s.data(), n, k, ex, {}, -1)), items_of(want)) << "trial " << trial;
  }
}

TEST(Recommend, ExcludesEachUsersRowAndFiltersTheDomain) {
  const uint32_t users = 600, items = 40;  // more users than one scoring block
  FormulaModel m(users, items);
  std::vector<uint32_t> ru, ci;
  for (uint32_t u = 0; u < users; ++u)
    for (uint32_t i = u % 5; i < items; i += 5 + u % 3) {
      ru.push_back(u);
      ci.push_back(i);
    }
  std::vector<float> ones(ru.size(), 1.0f);
  const Csr seen = Csr::from_triplets(users, items, ru, ci, ones);
  std::vector<uint16_t> dom(items);
  for (uint32_t i = 0; i < items; ++i) dom[i] = uint16_t(i % 3 == 0);
  std::vector<uint32_t> query;
  for (uint32_t u = 0; u < users; u += 1) query.push_back(users - 1 - u);  // any order
  RecommendOptions opt;
  opt.k = 6;
  opt.exclude = &seen;
  opt.item_domain = dom;
  opt.domain = 1;
  opt.threads = 2;
  auto recs = recommend(m, query, opt);
  ASSERT_EQ(recs.size(), query.size());
  EXPECT_GE(m.calls, 3) << "users are scored in blocks";
  EXPECT_LE(m.max_batch, 256u);
  for (size_t q = 0; q < query.size(); ++q) {
    const uint32_t u = query[q];
    std::vector<float> row(items);
    for (uint32_t i = 0; i < items; ++i) row[i] = FormulaModel::value(u, i);
    auto want = top_k(row.data(), items, 6, seen.row_indices(u), dom, 1);
    EXPECT_EQ(items_of(recs[q]), items_of(want)) << "user " << u;
    for (auto& it : recs[q]) {
      EXPECT_FALSE(seen.contains(u, it.item));
      EXPECT_EQ(dom[it.item], 1);
      EXPECT_EQ(it.score, FormulaModel::value(u, it.item));
    }
  }
}

TEST(Recommend, UsersBeyondTheExcludeMatrixExcludeNothing) {
  FormulaModel m(3, 5);
  std::vector<uint32_t> r{0}, c{0};
  std::vector<float> v{1};
  const Csr seen = Csr::from_triplets(1, 5, r, c, v);
  RecommendOptions opt;
  opt.k = 5;
  opt.exclude = &seen;
  std::vector<uint32_t> users{0, 2};
  auto recs = recommend(m, users, opt);
  EXPECT_EQ(recs[0].size(), 4u);
  EXPECT_EQ(recs[1].size(), 5u);
}

TEST(Recommend, RejectsBadRequests) {
  FormulaModel m(3, 5);
  RecommendOptions opt;
  std::vector<uint32_t> bad{1, 3};
  EXPECT_TRUE(throws_error([&] { recommend(m, bad, opt); }, {"user index 3", "3 users"}));
  opt.domain = 0;
  std::vector<uint32_t> ok{1};
  EXPECT_TRUE(throws_error([&] { recommend(m, ok, opt); }, {"domain"}));
  EXPECT_TRUE(recommend(m, std::span<const uint32_t>{}, RecommendOptions{}).empty());
}

// ---- Tie rules ----

// The reference order under Ties::kRandom: score descending, then the tie key ascending (via a selector of
// k = n, which only sorts).
static std::vector<uint32_t> full_order(const std::vector<float>& s, uint64_t salt) {
  TopK sel;
  sel.reset(s.size(), Ties::kRandom, salt);
  for (uint32_t i = 0; i < s.size(); ++i) sel.push(i, s[i]);
  std::vector<uint32_t> out;
  sel.finish(out);
  return out;
}

TEST(Ties, RandomOrderIsAShuffleNotTheIndexOrder) {
  // 200 equal scores: the first 10 under the random rule are a seeded selection, not items 0..9, and differ
  // between users (salts) while the same salt always gives the same list.
  std::vector<float> s(200, 1.0f);
  const auto a = top_k(s.data(), 200, 10, {}, {}, -1, Ties::kRandom, tie_salt(7, 1));
  const auto b = top_k(s.data(), 200, 10, {}, {}, -1, Ties::kRandom, tie_salt(7, 1));
  const auto c = top_k(s.data(), 200, 10, {}, {}, -1, Ties::kRandom, tie_salt(7, 2));
  EXPECT_EQ(items_of(a), items_of(b));
  EXPECT_NE(items_of(a), items_of(c));
  EXPECT_NE(items_of(a), (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Chance level: over many users the mean of the first pick is near the middle of the catalogue.
  double mean_first = 0;
  for (uint64_t u = 0; u < 400; ++u)
    mean_first += top_k(s.data(), 200, 1, {}, {}, -1, Ties::kRandom, tie_salt(3, u))[0].item;
  mean_first /= 400;
  EXPECT_NEAR(mean_first, 99.5, 12.0);
}

TEST(Ties, RandomRuleStillOrdersByScoreAndMatchesAFullSort) {
  Rng rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    const uint32_t n = 1 + uint32_t(rng.below(300));
    std::vector<float> s(n);
    for (auto& v : s) v = float(rng.below(6));  // many ties
    if (trial % 7 == 0) s[rng.below(n)] = std::numeric_limits<float>::quiet_NaN();
    std::vector<uint32_t> ex;
    for (uint32_t i = 0; i < n; ++i)
      if (rng.below(5) == 0) ex.push_back(i);
    const uint64_t salt = tie_salt(trial, 3);
    std::vector<uint32_t> want;
    for (uint32_t i : full_order(s, salt))
      if (!std::binary_search(ex.begin(), ex.end(), i)) want.push_back(i);
    const size_t k = rng.below(n + 3);
    want.resize(std::min(want.size(), k));
    // The SIMD scan (skips groups that cannot enter) gives the same list as the plain sort.
    EXPECT_EQ(items_of(top_k(s.data(), n, k, ex, {}, -1, Ties::kRandom, salt)), want) << "trial " << trial;
    for (size_t j = 1; j < want.size(); ++j) {
      const float a = std::isnan(s[want[j - 1]]) ? -INFINITY : s[want[j - 1]];
      const float b = std::isnan(s[want[j]]) ? -INFINITY : s[want[j]];
      EXPECT_GE(a, b);
    }
  }
}

TEST(Ties, MultiSelectorEqualsOneSelectorPerGroup) {
  Rng rng(5);
  for (int trial = 0; trial < 30; ++trial) {
    const uint32_t n = 20 + uint32_t(rng.below(300));
    std::vector<float> s(n);
    for (auto& v : s) v = float(rng.below(8));
    std::vector<uint16_t> dom(n);
    for (auto& d : dom) d = uint16_t(rng.below(3));
    std::vector<uint32_t> ex;
    for (uint32_t i = 0; i < n; ++i)
      if (rng.below(6) == 0) ex.push_back(i);
    for (Ties ties : {Ties::kLowerIndex, Ties::kRandom}) {
      const uint64_t salt = ties == Ties::kRandom ? tie_salt(1, trial) : 0;
      TopK all, g[3];
      all.reset(7, ties, salt);
      std::vector<std::vector<uint64_t>> bits(3, std::vector<uint64_t>((n + 63) / 64, 0));
      std::vector<SelectorGroup> groups;
      for (int d = 0; d < 3; ++d) {
        g[d].reset(5, ties, salt);
        for (uint32_t i = 0; i < n; ++i)
          if (dom[i] == d) bits[d][i >> 6] |= uint64_t{1} << (i & 63);
        groups.push_back({&g[d], bits[d].data()});
      }
      select_multi(s.data(), n, ex, &all, groups);
      std::vector<uint32_t> got;
      all.finish(got);
      EXPECT_EQ(got, items_of(top_k(s.data(), n, 7, ex, {}, -1, ties, salt)));
      for (int d = 0; d < 3; ++d) {
        g[d].finish(got);
        EXPECT_EQ(got, items_of(top_k(s.data(), n, 5, ex, dom, d, ties, salt))) << "domain " << d;
      }
    }
  }
}

TEST(Ties, PessimisticRankPutsTheTargetBelowEqualScores) {
  // Row item 0 is the target (its score set per case); items 1..4 are the others.
  std::vector<float> row{0.0f, 0.5f, 0.9f, 0.5f, 0.1f};
  const std::vector<uint32_t> others{1, 2, 3, 4};
  auto rank_of = [&](float target) {
    row[0] = target;
    return pessimistic_rank(row.data(), 0, others);
  };
  EXPECT_EQ(rank_of(0.5f).rank, 4u);  // 0.9 and both 0.5 rank above
  EXPECT_EQ(rank_of(0.5f).tied, 2u);
  EXPECT_EQ(rank_of(0.95f).rank, 1u);
  EXPECT_EQ(rank_of(0.95f).tied, 0u);
  EXPECT_EQ(rank_of(0.0f).rank, 5u);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(rank_of(nan).rank, 5u);  // NaN counts as -inf: last
  const std::vector<float> with_nan{0.0f, nan};
  EXPECT_EQ(pessimistic_rank(with_nan.data(), 0, std::vector<uint32_t>{1}).rank,
            1u);  // NaN ranks below a number
  const std::vector<float> tied(1000, 0.0f);
  std::vector<uint32_t> rest(999);
  for (uint32_t i = 0; i < 999; ++i) rest[i] = i + 1;
  const PessimisticRank all = pessimistic_rank(tied.data(), 0, rest);
  EXPECT_EQ(all.rank, 1000u);  // a model that ties everything gets the last rank
  EXPECT_EQ(all.tied, 999u);
}

TEST(Ties, TiedFractionCountsEqualCandidatesOnly) {
  const float s[] = {1.0f, 2.0f, 1.0f, 1.0f, 3.0f, 1.0f};
  // Target 0 (score 1): other candidates 1..5 -> equal: 2, 3, 5 = 3 of 5.
  EXPECT_DOUBLE_EQ(tied_fraction(s, 6, {}, 0), 3.0 / 5);
  // Excluding items 2 and 4: candidates 1, 3, 5 -> equal: 3, 5 = 2 of 3.
  const std::vector<uint32_t> ex{2, 4};
  EXPECT_DOUBLE_EQ(tied_fraction(s, 6, ex, 0), 2.0 / 3);
  EXPECT_DOUBLE_EQ(tied_fraction(s, 6, {}, 4), 0.0);
  std::vector<float> flat(100, 0.25f);
  EXPECT_DOUBLE_EQ(tied_fraction(flat.data(), 100, {}, 17), 1.0);  // 99 of 99 (AVX-512 path and tail)
}

TEST(Recommend, RandomTiesAndAllowedMask) {
  FormulaModel m(4, 40);
  RecommendOptions opt;
  opt.k = 40;
  std::vector<uint8_t> allowed(40, 1);
  allowed[3] = allowed[7] = 0;
  opt.allowed = allowed;
  opt.ties = Ties::kRandom;
  opt.tie_seed = 9;
  const std::vector<uint32_t> users{0, 1, 2, 3};
  const auto recs = recommend(m, users, opt);
  for (size_t q = 0; q < users.size(); ++q) {
    EXPECT_EQ(recs[q].size(), 38u);
    for (auto& it : recs[q]) EXPECT_TRUE(it.item != 3 && it.item != 7);
    for (size_t j = 1; j < recs[q].size(); ++j) EXPECT_GE(recs[q][j - 1].score, recs[q][j].score);
  }
  EXPECT_EQ(items_of(recommend(m, users, opt)[2]), items_of(recs[2])) << "seeded: the same lists again";
}
