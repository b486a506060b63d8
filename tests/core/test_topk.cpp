// Top-K selection and batched recommend(), checked on hand-made score rows.
#include <gtest/gtest.h>

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
