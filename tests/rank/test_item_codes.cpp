// Item codes for retrieval (item_codes.h): sq8 and product quantisation. Codebooks are deterministic by seed
// and thread count; ADC scores equal the decoded vectors' dot products; re-ranking every candidate gives the
// exact list; bad specs are errors; and on MovieLens 100k (iALS, random 80/20 split, seed 42) the coded
// lists keep recall@10 against exact retrieval and NDCG@10 within stated bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "models/ml100k.h"
#include "test_util.h"
#include "xdrec/item_codes.h"
#include "xdrec/metrics.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

using namespace xdrec;
using testing_util::throws_error;

namespace {

Matrix random_items(size_t n, size_t f, uint64_t seed) {
  Rng rng(seed);
  Matrix m(n, f);
  for (float& v : m.data) v = rng.normal();
  return m;
}

std::vector<float> random_bias(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> b(n);
  for (float& v : b) v = 0.1f * rng.normal();
  return b;
}

TEST(ItemCodes, SpecsParseAndBadOnesAreErrors) {
  EXPECT_EQ(CodesSpec::parse("pq:m=16").str(), "pq:bits=8,iters=20,m=16,rerank=0,seed=42");
  EXPECT_EQ(CodesSpec::parse("sq8:rerank=50").str(), "sq8:rerank=50");
  EXPECT_TRUE(is_codes_spec("pq") && is_codes_spec("sq8:rerank=5") && !is_codes_spec("hnsw"));
  EXPECT_TRUE(throws_error([] { CodesSpec::parse("opq:m=4"); }, {"sq8 or pq", "opq"}));
  EXPECT_TRUE(throws_error([] { CodesSpec::parse("pq:bits=9"); }, {"bits"}));
  EXPECT_TRUE(throws_error([] { CodesSpec::parse("pq:x=1"); }, {"x"}));
  EXPECT_TRUE(throws_error([] { CodesSpec::parse("sq8:m=4"); }, {"m"}));
  const Matrix items = random_items(50, 12, 1);
  EXPECT_TRUE(
      throws_error([&] { ItemCodes::build(items, {}, CodesSpec::parse("pq:m=13")); }, {"m=13", "12"}));
  EXPECT_TRUE(throws_error([&] { ItemCodes::build(Matrix(), {}, CodesSpec::parse("sq8")); }, {"no item"}));
  Matrix bad = items;
  bad(3, 4) = NAN;
  EXPECT_TRUE(throws_error([&] { ItemCodes::build(bad, {}, CodesSpec::parse("pq:m=4")); }, {"not finite"}));
}

TEST(ItemCodes, CodebooksAreDeterministicBySeedAndThreadCount) {
  const Matrix items = random_items(3000, 32, 7);
  const CodesSpec spec = CodesSpec::parse("pq:m=8,bits=6,iters=10,seed=5");
  const ItemCodes a = ItemCodes::build(items, {}, spec, 1), b = ItemCodes::build(items, {}, spec, 2);
  const ItemCodes c = ItemCodes::build(items, {}, CodesSpec::parse("pq:m=8,bits=6,iters=10,seed=6"), 2);
  std::vector<float> va(32), vb(32), vc(32);
  size_t differ = 0;
  for (uint32_t i = 0; i < items.rows; ++i) {
    a.decode(i, va.data());
    b.decode(i, vb.data());
    c.decode(i, vc.data());
    ASSERT_EQ(va, vb) << "item " << i;
    differ += va != vc;
  }
  EXPECT_GT(differ, items.rows / 2) << "another seed should give other codebooks";
  EXPECT_EQ(a.centroids(), 64u);
  EXPECT_EQ(a.code_bytes(), items.rows * 8);
}

TEST(ItemCodes, AdcScoresEqualDecodedDotProducts) {
  const Matrix items = random_items(500, 16, 3);
  const std::vector<float> bias = random_bias(500, 4);
  const Matrix queries = random_items(5, 16, 9);
  for (const std::string s : {"sq8", "pq:m=4", "pq:m=16,bits=4", "pq:m=5", "pq:m=12"}) {
    SCOPED_TRACE(s);
    const ItemCodes codes = ItemCodes::build(items, bias, CodesSpec::parse(s));
    std::vector<float> row(500), v(16);
    for (size_t q = 0; q < queries.rows; ++q) {
      codes.scores(queries.row(q), row.data());
      for (uint32_t i = 0; i < 500; ++i) {
        codes.decode(i, v.data());
        double want = bias[i];
        for (size_t j = 0; j < 16; ++j) want += double(queries(q, j)) * v[j];
        ASSERT_NEAR(row[i], want, 1e-4 * (1 + std::fabs(want))) << "item " << i;
      }
    }
    if (s == "sq8") {
      // Each coordinate within half a step of its range.
      std::vector<float> lo(16, INFINITY), hi(16, -INFINITY);
      for (size_t i = 0; i < items.rows; ++i)
        for (size_t j = 0; j < 16; ++j)
          lo[j] = std::min(lo[j], items(i, j)), hi[j] = std::max(hi[j], items(i, j));
      for (uint32_t i = 0; i < items.rows; ++i) {
        codes.decode(i, v.data());
        for (size_t j = 0; j < 16; ++j)
          ASSERT_LE(std::fabs(v[j] - items(i, j)), (hi[j] - lo[j]) / 255.0f * 0.5f + 1e-5f);
      }
    }
  }
}

TEST(ItemCodes, RerankingEveryCandidateGivesTheExactList) {
  const Matrix items = random_items(400, 16, 11);
  const std::vector<float> bias = random_bias(400, 12);
  const Matrix q = random_items(1, 16, 13);
  std::vector<float> exact(400);
  for (uint32_t i = 0; i < 400; ++i) {
    exact[i] = bias[i];
    for (size_t j = 0; j < 16; ++j) exact[i] += q(0, j) * items(i, j);
  }
  const std::vector<uint32_t> exclude = {2, 50, 51};
  const auto want = top_k(exact.data(), 400, 10, exclude, {}, -1);
  const ItemCodes codes = ItemCodes::build(items, bias, CodesSpec::parse("pq:m=4,bits=4,rerank=400"));
  const auto got = codes_top_k(codes, q.row(0), 10, exclude, {}, -1, items, bias);
  ASSERT_EQ(got.size(), want.size());
  for (size_t r = 0; r < got.size(); ++r) EXPECT_EQ(got[r].item, want[r].item);
  // A new item is encoded with the trained codebooks and found.
  ItemCodes grown = codes;
  std::vector<float> v(q.row(0), q.row(0) + 16);
  for (float& x : v) x *= 10;
  grown.add(v.data(), 0.0f);
  Matrix items2 = items;
  items2.data.insert(items2.data.end(), v.begin(), v.end());
  ++items2.rows;
  std::vector<float> bias2 = bias;
  bias2.push_back(0.0f);
  EXPECT_EQ(codes_top_k(grown, q.row(0), 1, {}, {}, -1, items2, bias2)[0].item, 400u);
}

// The gate on MovieLens 100k: iALS (default spec) on the random 80/20 split (seed 42); each user's top-10
// by exact scores and through the codes (ties by lower index in both), recall@10 of the coded lists against
// the exact ones and NDCG@10 against the test items.
TEST(ItemCodes, MovieLensRecallAndNdcgGate) {
  const auto ml = testing_util::load_ml100k_split();
  if (!ml) GTEST_SKIP() << "MovieLens 100k not found at " << testing_util::ml100k_path();
  const Csr &train = ml->train, &test = ml->test;
  auto model = create_model("ials");
  FitContext ctx;
  ctx.threads = 2;
  ctx.seed = 42;
  model->fit(train, ctx);
  std::vector<uint32_t> users;
  for (uint32_t u = 0; u < test.n_rows; ++u)
    if (test.indptr[u + 1] > test.indptr[u]) users.push_back(u);
  RecommendOptions ro;
  ro.k = 10;
  ro.exclude = &train;
  ro.threads = 2;
  auto ndcg = [&](const std::vector<std::vector<ScoredItem>>& lists) {
    double s = 0;
    for (size_t r = 0; r < users.size(); ++r) {
      std::vector<uint32_t> ranked;
      for (const ScoredItem& si : lists[r]) ranked.push_back(si.item);
      s += ndcg_at_k(ranked, test.row_indices(users[r]), 10);
    }
    return s / double(users.size());
  };
  const auto exact = recommend(*model, users, ro);
  const double base = ndcg(exact);
  EXPECT_GT(base, 0.2);
  Matrix items;
  std::vector<float> bias;
  ASSERT_TRUE(model->item_vectors(items, bias));
  struct Gate {
    std::string spec;
    double min_recall, max_drop;
  };
  for (const Gate& g :
       {Gate{"sq8", 0.95, 0.005}, Gate{"pq:m=16", 0.80, 0.02}, Gate{"pq:m=16,rerank=50", 0.97, 0.005}}) {
    SCOPED_TRACE(g.spec);
    const ItemCodes codes = ItemCodes::build(items, bias, CodesSpec::parse(g.spec), 2);
    const auto lists = recommend_codes(*model, codes, users, ro);
    double hit = 0, total = 0;
    for (size_t r = 0; r < users.size(); ++r) {
      for (const ScoredItem& e : exact[r])
        for (const ScoredItem& a : lists[r]) hit += a.item == e.item;
      total += double(exact[r].size());
    }
    const double recall = hit / total, got = ndcg(lists);
    std::printf("ml-100k ials %s: recall@10 vs exact %.4f, NDCG@10 %.4f -> %.4f\n", g.spec.c_str(), recall,
                base, got);
    EXPECT_GE(recall, g.min_recall);
    EXPECT_LE(base - got, g.max_drop);
  }
  EXPECT_TRUE(throws_error(
      [&] {
        recommend_codes(*create_model("popular"), ItemCodes::build(items, bias, CodesSpec::parse("sq8")),
                        users, ro);
      },
      {"dot-product"}));
}

}  // namespace
