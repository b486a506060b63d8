// Splits: hand-computed sizes, determinism by seed, no leakage, the leakage check firing on crafted splits,
// cold users keeping their other domains and cold items absent from train.

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "xdrec/split.h"
#include "xdrec/synthetic.h"

namespace xdrec {
namespace {

using Pair = std::pair<uint32_t, uint32_t>;

std::set<Pair> pairs(const std::vector<Interaction>& v) {
  std::set<Pair> s;
  for (const auto& x : v) s.insert({x.user, x.item});
  return s;
}

// Independent check (sets) that no held-out pair is in train and validation and test are disjoint.
void expect_disjoint(const Split& s) {
  const auto tr = pairs(s.train), va = pairs(s.validation), te = pairs(s.test);
  for (const auto& p : te) EXPECT_FALSE(tr.count(p)) << "test pair in train";
  for (const auto& p : va) EXPECT_FALSE(tr.count(p)) << "validation pair in train";
  for (const auto& p : te) EXPECT_FALSE(va.count(p)) << "test pair in validation";
}

void expect_same(const Split& a, const Split& b) {
  auto eq = [](const std::vector<Interaction>& x, const std::vector<Interaction>& y) {
    if (x.size() != y.size()) return false;
    for (size_t k = 0; k < x.size(); ++k)
      if (x[k].user != y[k].user || x[k].item != y[k].item || x[k].timestamp != y[k].timestamp) return false;
    return true;
  };
  EXPECT_TRUE(eq(a.train, b.train));
  EXPECT_TRUE(eq(a.validation, b.validation));
  EXPECT_TRUE(eq(a.test, b.test));
  EXPECT_EQ(a.cold_user, b.cold_user);
  EXPECT_EQ(a.cold_item, b.cold_item);
}

const Dataset& synthetic() {
  static const Dataset ds = [] {
    SyntheticOptions o;
    o.n_users = 600;
    o.items_per_domain = 200;
    o.mean_interactions = 12;
    o.seed = 3;
    return make_synthetic(o);
  }();
  return ds;
}

// One user with n distinct items (timestamps 1..n) in domain "d".
Dataset one_user(size_t n) {
  Dataset ds;
  const uint32_t u = ds.add_user("u");
  for (size_t k = 0; k < n; ++k) {
    const uint32_t i = ds.add_item("i" + std::to_string(k), "d");
    ds.interactions.push_back({u, i, kNoRating, static_cast<int64_t>(k + 1)});
  }
  return ds;
}

TEST(SplitRandom, HandComputedSizes) {
  // 10 items: floor(10 * 0.2) = 2 to test, floor(8 * 0.25) = 2 to validation, 6 to train.
  Dataset ds = one_user(10);
  SplitOptions o;
  o.test_ratio = 0.2;
  o.val_ratio = 0.25;
  Split s = split_random(ds, o);
  EXPECT_EQ(s.test.size(), 2u);
  EXPECT_EQ(s.validation.size(), 2u);
  EXPECT_EQ(s.train.size(), 6u);
  expect_disjoint(s);
  EXPECT_EQ(s.protocol, "random:test=0.2,val=0.25,seed=42");
  // 3 items at 0.3: floor(0.9) = 0 to test (floors, no rounding up).
  o.test_ratio = 0.3;
  o.val_ratio = 0;
  EXPECT_EQ(split_random(one_user(3), o).test.size(), 0u);
  // 0.29 * 100 is 28.999999999999996 in floating point; the count is still 29.
  o.test_ratio = 0.29;
  EXPECT_EQ(split_random(one_user(100), o).test.size(), 29u);
}

TEST(SplitRandom, RatiosPerUserOnSyntheticData) {
  const Dataset& ds = synthetic();
  SplitOptions o;
  o.test_ratio = 0.25;
  o.val_ratio = 0.1;
  Split s = split_random(ds, o);
  std::map<uint32_t, size_t> n, nt, nv;
  for (const auto& x : ds.interactions) ++n[x.user];
  for (const auto& x : s.test) ++nt[x.user];
  for (const auto& x : s.validation) ++nv[x.user];
  for (const auto& [u, c] : n) {  // synthetic users have no repeated items
    const size_t t = static_cast<size_t>(c * 0.25 + 1e-9);
    EXPECT_EQ(nt[u], t);
    EXPECT_EQ(nv[u], static_cast<size_t>((c - t) * 0.1 + 1e-9));
  }
  EXPECT_EQ(s.train.size() + s.validation.size() + s.test.size(), ds.interactions.size());
  expect_disjoint(s);
}

TEST(SplitRandom, DeterministicBySeed) {
  const Dataset& ds = synthetic();
  SplitOptions o;
  o.val_ratio = 0.2;
  const Split a = split_random(ds, o), b = split_random(ds, o);
  expect_same(a, b);
  o.seed = 43;
  const Split c = split_random(ds, o);
  EXPECT_NE(pairs(a.test), pairs(c.test));
}

TEST(SplitRandom, RepeatedPairsStayTogether) {
  Dataset ds;
  const uint32_t u = ds.add_user("u");
  for (int k = 0; k < 6; ++k) ds.add_item("i" + std::to_string(k), "d");
  for (int rep = 0; rep < 3; ++rep)
    for (uint32_t i = 0; i < 6; ++i) ds.interactions.push_back({u, i, kNoRating, rep * 10 + i});
  SplitOptions o;
  o.test_ratio = 0.5;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    o.seed = seed;
    Split s = split_random(ds, o);
    EXPECT_EQ(s.test.size(), 9u);  // 3 of 6 distinct items, each 3 times
    expect_disjoint(s);
  }
}

TEST(SplitLeaveLastOut, ByTimestampWithTies) {
  Dataset ds;
  const uint32_t a = ds.add_user("a"), b = ds.add_user("b"), c = ds.add_user("c");
  for (int k = 0; k < 5; ++k) ds.add_item("i" + std::to_string(k), "d");
  // a: i0@5, i1@1, i2@9, i3@9 (tie: i3 comes later in the input, so it is the last), i4@3
  ds.interactions = {{a, 0, kNoRating, 5}, {a, 1, kNoRating, 1}, {a, 2, kNoRating, 9},
                     {a, 3, kNoRating, 9}, {a, 4, kNoRating, 3}, {b, 0, kNoRating, 1},  // b: one item only
                     {c, 1, kNoRating, 2}, {c, 2, kNoRating, 1}};
  SplitOptions o;
  o.val_ratio = 0.1;
  Split s = split_leave_last_out(ds, o);
  EXPECT_EQ(pairs(s.test), (std::set<Pair>{{a, 3}, {c, 1}}));
  EXPECT_EQ(pairs(s.validation), (std::set<Pair>{{a, 2}}));  // c has only two items: no validation
  EXPECT_EQ(pairs(s.train), (std::set<Pair>{{a, 0}, {a, 1}, {a, 4}, {b, 0}, {c, 2}}));
  o.val_ratio = 0;
  EXPECT_TRUE(split_leave_last_out(ds, o).validation.empty());
  ds.interactions[4].timestamp = kNoTimestamp;
  try {
    split_leave_last_out(ds, o);
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("interaction 4 (user 'a', item 'i4') has none"), std::string::npos)
        << e.what();
  }
}

TEST(SplitColdUsers, ColdUsersKeepTheirOtherDomains) {
  const Dataset& ds = synthetic();
  const uint16_t target = 1;
  std::vector<int> mask(ds.n_users(), 0);
  for (const auto& x : ds.interactions) mask[x.user] |= ds.item_domain[x.item] == target ? 1 : 2;
  const size_t eligible = std::count(mask.begin(), mask.end(), 3);
  ASSERT_GT(eligible, 50u);
  SplitOptions o;
  o.target_domain = target;
  o.cold_ratio = 0.3;
  o.val_ratio = 0.1;
  Split s = split_cold_users(ds, o);
  expect_disjoint(s);
  const size_t n_cold = static_cast<size_t>(eligible * 0.3 + 1e-9);
  EXPECT_EQ(static_cast<size_t>(std::count(s.cold_user.begin(), s.cold_user.end(), 1)), n_cold);
  EXPECT_EQ(s.target_domain, target);
  std::set<uint32_t> test_users, val_users;
  for (const auto& x : s.test) {
    EXPECT_TRUE(s.cold_user[x.user]);
    EXPECT_EQ(ds.item_domain[x.item], target);
    test_users.insert(x.user);
  }
  for (const auto& x : s.validation) {
    EXPECT_TRUE(s.cold_user[x.user]);
    EXPECT_EQ(ds.item_domain[x.item], target);
    val_users.insert(x.user);
  }
  EXPECT_EQ(val_users.size(), n_cold / 2);
  EXPECT_EQ(test_users.size(), n_cold - n_cold / 2);
  for (uint32_t u : val_users) EXPECT_FALSE(test_users.count(u));
  // Every cold user keeps all of their non-target interactions in train, and nothing of the target domain.
  std::vector<size_t> other_all(ds.n_users(), 0), other_train(ds.n_users(), 0);
  for (const auto& x : ds.interactions)
    if (ds.item_domain[x.item] != target) ++other_all[x.user];
  for (const auto& x : s.train) {
    if (ds.item_domain[x.item] != target)
      ++other_train[x.user];
    else
      EXPECT_FALSE(s.cold_user[x.user]);
  }
  for (uint32_t u = 0; u < ds.n_users(); ++u)
    if (s.cold_user[u]) {
      EXPECT_GT(other_train[u], 0u);
      EXPECT_EQ(other_train[u], other_all[u]);
    }
  // Deterministic by seed.
  expect_same(s, split_cold_users(ds, o));
  // A target domain is required.
  o.target_domain = -1;
  EXPECT_THROW(split_cold_users(ds, o), Error);
}

TEST(SplitColdItems, ColdItemsAbsentFromTrain) {
  const Dataset& ds = synthetic();
  std::set<uint32_t> used;
  for (const auto& x : ds.interactions) used.insert(x.item);
  SplitOptions o;
  o.cold_ratio = 0.2;
  o.val_ratio = 0.1;
  Split s = split_cold_items(ds, o);
  expect_disjoint(s);
  const size_t n_test = static_cast<size_t>(used.size() * 0.2 + 1e-9);
  const size_t n_val = static_cast<size_t>((used.size() - n_test) * 0.1 + 1e-9);
  EXPECT_EQ(static_cast<size_t>(std::count(s.cold_item.begin(), s.cold_item.end(), 1)), n_test + n_val);
  std::set<uint32_t> test_items, val_items;
  for (const auto& x : s.test) test_items.insert(x.item);
  for (const auto& x : s.validation) val_items.insert(x.item);
  EXPECT_EQ(test_items.size(), n_test);
  EXPECT_EQ(val_items.size(), n_val);
  for (const auto& x : s.train) EXPECT_FALSE(s.cold_item[x.item]);
  // All interactions of a cold item are held out.
  size_t held = 0;
  for (const auto& x : ds.interactions) held += s.cold_item[x.item];
  EXPECT_EQ(held, s.test.size() + s.validation.size());
  // Restricted to a target domain.
  o.target_domain = 2;
  Split t = split_cold_items(ds, o);
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    if (t.cold_item[i]) {
      EXPECT_EQ(ds.item_domain[i], 2);
    }
}

TEST(SplitFixed, UsesTheDatasetSplit) {
  Dataset ds = one_user(4);
  EXPECT_THROW(split_fixed(ds), Error);
  ds.fixed_split = {0, 0, 1, 2};
  Split s = split_fixed(ds);
  EXPECT_EQ(s.train.size(), 2u);
  ASSERT_EQ(s.validation.size(), 1u);
  ASSERT_EQ(s.test.size(), 1u);
  EXPECT_EQ(s.test[0].item, 3u);
  // A dataset whose own split leaks is refused.
  ds.interactions.push_back(ds.interactions[3]);
  ds.fixed_split.push_back(0);
  EXPECT_THROW(split_fixed(ds), Error);
}

TEST(CheckNoLeakage, FiresOnCraftedSplits) {
  Dataset ds;
  const uint32_t u1 = ds.add_user("u1"), u2 = ds.add_user("u2");
  const uint32_t b1 = ds.add_item("b1", "books"), b2 = ds.add_item("b2", "books");
  const uint32_t f1 = ds.add_item("f1", "films");
  auto expect_leak = [&](const Split& s, const std::string& message) {
    try {
      check_no_leakage(ds, s);
      ADD_FAILURE() << "expected Error: " << message;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  };
  Split s;
  s.train = {{u1, b1}, {u2, b2}, {u1, f1}};
  s.test = {{u2, b1}, {u2, b2}, {u1, b2}};
  expect_leak(s, "leakage: test pair (user 'u2', item 'b2') also appears in train");
  s.test = {{u2, b1}};
  s.validation = {{u1, b2}, {u1, f1}};
  expect_leak(s, "leakage: validation pair (user 'u1', item 'f1') also appears in train");
  s.validation = {{u2, f1}, {u2, b1}};
  expect_leak(s, "leakage: test pair (user 'u2', item 'b1') also appears in validation");
  s.validation.clear();
  EXPECT_NO_THROW(check_no_leakage(ds, s));
  // Cold user u1 in books still has a books interaction in train.
  s.cold_user = {1, 0};
  s.target_domain = 0;
  expect_leak(s, "leakage: cold user 'u1' has a target-domain (books) interaction in train (item 'b1')");
  s.cold_user = {0, 1};
  expect_leak(s, "leakage: cold user 'u2' has a target-domain (books) interaction in train (item 'b2')");
  s.target_domain = 1;  // u2 has no films interaction in train
  EXPECT_NO_THROW(check_no_leakage(ds, s));
  s.cold_user.clear();
  s.target_domain = -1;
  s.cold_item = {0, 0, 1};
  expect_leak(s, "leakage: cold item 'f1' appears in train (user 'u1')");
  s.cold_item = {0, 1, 0, 0};
  EXPECT_THROW(check_no_leakage(ds, s), Error);  // wrong size
}

TEST(MakeSplit, ProtocolStrings) {
  const Dataset& ds = synthetic();
  SplitOptions o;
  Split a = make_split(ds, "random:test=0.1,val=0.2,seed=7", o);
  SplitOptions manual;
  manual.test_ratio = 0.1;
  manual.val_ratio = 0.2;
  manual.seed = 7;
  expect_same(a, split_random(ds, manual));
  EXPECT_EQ(a.protocol, "random:test=0.1,val=0.2,seed=7");
  Split c = make_split(ds, "cold-users:target=films,cold=0.5", o);
  EXPECT_EQ(c.target_domain, 1);
  EXPECT_EQ(c.protocol, "cold-users:target=films,cold=0.5,val=0,seed=42");
  EXPECT_EQ(make_split(ds, "cold-users:target=2", o).target_domain, 2);
  EXPECT_NO_THROW(make_split(ds, "leave-last-out", o));
  EXPECT_NO_THROW(make_split(ds, "cold-items:cold=0.1", o));
  EXPECT_THROW(make_split(ds, "fixed", o), Error);
  EXPECT_THROW(make_split(ds, "random:tset=0.1", o), Error);
  EXPECT_THROW(make_split(ds, "random:test=abc", o), Error);
  EXPECT_THROW(make_split(ds, "random:test=1.5", o), Error);
  EXPECT_THROW(make_split(ds, "cold-users:target=music", o), Error);
  EXPECT_THROW(make_split(ds, "cold-users:target=9", o), Error);
  EXPECT_THROW(make_split(ds, "kfold", o), Error);
}

}  // namespace
}  // namespace xdrec

TEST(KeepLastOccurrence, EachItemOnceAtItsLastPlace) {
  const std::vector<uint32_t> h{5, 7, 5, 9, 7, 7};
  EXPECT_EQ(xdrec::keep_last_occurrence(h), (std::vector<uint32_t>{5, 9, 7}));
  EXPECT_TRUE(xdrec::keep_last_occurrence(std::vector<uint32_t>{}).empty());
  EXPECT_EQ(xdrec::keep_last_occurrence(std::vector<uint32_t>{3, 1, 2}), (std::vector<uint32_t>{3, 1, 2}));
}
