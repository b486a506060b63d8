// Augmentation of a sparse domain: which users get generated interactions, how many, in which domain, that
// real interactions are never changed, determinism, the spec parser, and the experiment runner's use of it.
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"
#include "xdrec/augment.h"
#include "xdrec/pipeline.h"
#include "xdrec/synthetic.h"

using namespace xdrec;
using xdrec::testing_util::throws_error;

namespace {

// Three domains with the kitchen domain thinned to a tenth: many users have 0-2 kitchen interactions.
const Dataset& data() {
  static const Dataset ds = [] {
    SyntheticOptions o;
    o.n_users = 400;
    o.items_per_domain = 100;
    o.seed = 5;
    Dataset d = make_synthetic(o);
    thin_domain(d, "kitchen", 0.1, 9);
    return d;
  }();
  return ds;
}

float value_at(const Csr& m, uint32_t u, uint32_t i) {
  for (uint64_t p = m.indptr[u]; p < m.indptr[u + 1]; ++p)
    if (m.indices[p] == i) return m.values[p];
  return 0.0f;
}

uint32_t count_in(const Csr& m, uint32_t u, int domain, const Dataset& ds) {
  uint32_t n = 0;
  for (uint32_t i : m.row_indices(u)) n += ds.item_domain[i] == domain ? 1 : 0;
  return n;
}

}  // namespace

TEST(Augment, ParsesItsKeysAndPassesTheRestToTheGenerator) {
  const AugmentOptions o =
      parse_augment("gan:domain=kitchen,per_user=7,max_history=2,weight=0.5,epochs=3", data());
  EXPECT_EQ(o.by, "gan");
  EXPECT_EQ(o.domain, domain_index(data(), "kitchen"));
  EXPECT_EQ(o.per_user, 7u);
  EXPECT_EQ(o.max_history, 2u);
  EXPECT_FLOAT_EQ(o.weight, 0.5f);
  EXPECT_EQ(o.generator, "cfgan:epochs=3");
  EXPECT_TRUE(parse_augment("popular", data()).generator.empty());
  EXPECT_TRUE(throws_error([] { parse_augment("vae:domain=kitchen", data()); }, {"unknown generator"}));
  EXPECT_TRUE(throws_error([] { parse_augment("gan:domain=garden", data()); }, {"garden"}));
  EXPECT_TRUE(throws_error([] { parse_augment("popular:epochs=3", data()); }, {"no parameter"}));
  EXPECT_TRUE(throws_error([] { parse_augment("gan:per_user=-1", data()); }, {"per_user"}));
}

TEST(Augment, AddsPerUserItemsOfTheDomainToTheSparseUsersOnly) {
  const Dataset& ds = data();
  const Csr train = ds.user_item_matrix(false);
  const int kitchen = domain_index(ds, "kitchen");
  for (const std::string by : {"popular", "itemknn", "gan"}) {
    SCOPED_TRACE(by);
    AugmentOptions o = parse_augment(
        by + ":domain=kitchen,per_user=4,max_history=1" + (by == "gan" ? ",epochs=20,hidden=32" : ""), ds);
    AugmentReport rep;
    const Csr aug = augment_interactions(train, ds.item_domain, o, 3, 2, &rep);
    ASSERT_EQ(aug.n_rows, train.n_rows);
    ASSERT_EQ(aug.n_cols, train.n_cols);
    uint32_t augmented = 0;
    for (uint32_t u = 0; u < train.n_rows; ++u) {
      // Every real interaction is kept with its value.
      for (uint64_t p = train.indptr[u]; p < train.indptr[u + 1]; ++p)
        ASSERT_EQ(value_at(aug, u, train.indices[p]), train.values[p]);
      const uint64_t extra = (aug.indptr[u + 1] - aug.indptr[u]) - (train.indptr[u + 1] - train.indptr[u]);
      const bool eligible = train.indptr[u + 1] > train.indptr[u] && count_in(train, u, kitchen, ds) <= 1;
      if (!eligible) {
        ASSERT_EQ(extra, 0u) << "user " << u;
        continue;
      }
      ASSERT_EQ(extra, 4u) << "user " << u;
      ++augmented;
      EXPECT_EQ(count_in(aug, u, kitchen, ds), count_in(train, u, kitchen, ds) + 4);
    }
    EXPECT_GT(augmented, 50u);
    EXPECT_EQ(rep.users, augmented);
    EXPECT_EQ(rep.added, uint64_t(augmented) * 4);
    // The same seed gives the same matrix, whatever the thread count.
    const Csr again = augment_interactions(train, ds.item_domain, o, 3, 1);
    EXPECT_EQ(again.indices, aug.indices);
    EXPECT_EQ(again.indptr, aug.indptr);
  }
}

TEST(Augment, GanGeneratesItemsOfTheUsersTaste) {
  // Synthetic users draw items of their topics in every domain: the generator's kitchen items for a user
  // with little kitchen history should be hit by their held-out kitchen items more often than popularity
  // sampling's are.
  const Dataset& ds = data();
  const int kitchen = domain_index(ds, "kitchen");
  SplitOptions so;
  so.seed = 1;
  const Split sp = split_random(ds, so);
  const Csr train = ds.user_item_matrix(sp.train, false), test = ds.user_item_matrix(sp.test, false);
  auto hits = [&](const std::string& spec) {
    const Csr aug = augment_interactions(train, ds.item_domain, parse_augment(spec, ds), 4, 2);
    uint64_t h = 0;
    for (uint32_t u = 0; u < train.n_rows; ++u)
      for (uint32_t i : aug.row_indices(u))
        if (ds.item_domain[i] == kitchen && !train.contains(u, i) && test.contains(u, i)) ++h;
    return h;
  };
  const uint64_t gan = hits("gan:domain=kitchen,per_user=5,max_history=2,epochs=60,hidden=64");
  const uint64_t pop = hits("popular:domain=kitchen,per_user=5,max_history=2");
  EXPECT_GT(gan, pop);
}

TEST(Augment, ExperimentFitsOnTheAugmentedMatrixAndKeysTheRun) {
  const Dataset& ds = data();
  ExperimentOptions x;
  x.protocol = "random";
  x.seeds = {1};
  x.threads = 2;
  x.binary = true;
  x.target_domain = "kitchen";
  ModelRun plain = ModelRun::of("ials:factors=16,iterations=5");
  ModelRun aug = plain;
  aug.augment = "popular:domain=kitchen,per_user=3,max_history=1";
  x.models = {plain, aug};
  const ExperimentResult r = Experiment(ds, x).run();
  ASSERT_EQ(r.keys.size(), 2u);
  EXPECT_EQ(r.keys[1], "ials:factors=16,iterations=5 +popular:domain=kitchen,per_user=3,max_history=1");
  const auto& a = r.runs.at(r.keys[0]).front().metrics;
  const auto& b = r.runs.at(r.keys[1]).front().metrics;
  ASSERT_TRUE(a.count("ndcg@10") && b.count("ndcg@10"));
  EXPECT_NE(a.at("ndcg@10"), b.at("ndcg@10"));  // a different training matrix, a different model
}
