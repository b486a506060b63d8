// Re-ranking: MMR against hand-computed cases, quotas, exploration.
#include <gtest/gtest.h>

#include "xdrec/rerank.h"

using namespace xdrec;

namespace {

// Items 0..3: 0 and 1 point the same way, 2 is orthogonal to them, 3 is opposite to 0.
Matrix vectors() {
  Matrix m(4, 2);
  m(0, 0) = 1, m(0, 1) = 0;
  m(1, 0) = 1, m(1, 1) = 0.01f;
  m(2, 0) = 0, m(2, 1) = 1;
  m(3, 0) = -1, m(3, 1) = 0;
  return m;
}

std::vector<uint32_t> ids(const std::vector<ScoredItem>& l) {
  std::vector<uint32_t> out;
  for (auto& x : l) out.push_back(x.item);
  return out;
}

}  // namespace

TEST(Rerank, ZeroDiversityKeepsTheModelsOrder) {
  const std::vector<ScoredItem> pool{{0, 4}, {1, 3}, {2, 2}, {3, 1}};
  RerankOptions o;
  o.k = 3;
  const Matrix v = vectors();
  EXPECT_EQ(ids(rerank(pool, &v, {}, o)), (std::vector<uint32_t>{0, 1, 2}));
}

TEST(Rerank, MmrByHand) {
  // Relevance scaled over the pool: item 0 -> 1, 1 -> 2/3, 2 -> 1/3, 3 -> 0; the redundancy term is the
  // largest cosine to a picked item, floored at 0 (an opposite item is as new as an orthogonal one). lambda
  // 0.5:
  //   pick 1: item 0 (0.5 * 1).
  //   pick 2: item 1: 0.5*2/3 - 0.5*cos(1,0)=0.99995 -> -0.167; item 2: 0.5/3 - 0 = 0.167; item 3: 0 - 0 = 0.
  //   pick 3: item 1 still -0.167; item 3: 0.
  const std::vector<ScoredItem> pool{{0, 4}, {1, 3}, {2, 2}, {3, 1}};
  RerankOptions o;
  o.k = 3;
  o.diversity = 0.5;
  const Matrix v = vectors();
  EXPECT_EQ(ids(rerank(pool, &v, {}, o)), (std::vector<uint32_t>{0, 2, 3}));
  // lambda 0.1, mostly relevance: after 0, item 1 = 0.9*2/3 - 0.1*0.99995 = 0.5 beats item 2 = 0.3.
  o.diversity = 0.1;
  EXPECT_EQ(ids(rerank(pool, &v, {}, o)), (std::vector<uint32_t>{0, 1, 2}));
}

TEST(Rerank, QuotasCapADomain) {
  const std::vector<ScoredItem> pool{{0, 5}, {1, 4}, {2, 3}, {3, 2}};
  const std::vector<uint16_t> dom{0, 0, 0, 1};
  RerankOptions o;
  o.k = 3;
  o.quota[0] = 1;
  EXPECT_EQ(ids(rerank(pool, nullptr, dom, o)), (std::vector<uint32_t>{0, 3}));  // fewer than k: none left
}

TEST(Rerank, ExplorationIsSeededAndSkipsListedItems) {
  std::vector<ScoredItem> list{{0, 5}, {1, 4}, {2, 3}, {3, 2}};
  const std::vector<ScoredItem> outside{{1, 1}, {7, 0.5f}, {8, 0.4f}, {9, 0.3f}};
  auto a = list;
  const auto slots = explore_slots(a, outside, 1.0, 42);
  EXPECT_EQ(slots, (std::vector<size_t>{1, 2, 3}));  // every slot after the first; item 1 is already listed
  EXPECT_EQ(ids(a), (std::vector<uint32_t>{0, 7, 8, 9}));
  auto b = list, c = list;
  EXPECT_EQ(explore_slots(b, outside, 0.5, 9), explore_slots(c, outside, 0.5, 9));
  auto d = list;
  EXPECT_TRUE(explore_slots(d, outside, 0.0, 1).empty());
  EXPECT_THROW(explore_slots(d, outside, 1.5, 1), Error);
}
