// Dataset basics: id maps, sized side tables, the interaction matrix, fingerprint, validate, summary.

#include <gtest/gtest.h>

#include <cmath>

#include "xdrec/dataset.h"

namespace xdrec {
namespace {

TEST(IdMap, StableFirstSeenOrder) {
  IdMap m;
  EXPECT_EQ(m.get_or_add("b"), 0u);
  EXPECT_EQ(m.get_or_add("a"), 1u);
  EXPECT_EQ(m.get_or_add("b"), 0u);
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.name(1), "a");
  EXPECT_EQ(m.find("a"), std::optional<uint32_t>(1));
  EXPECT_FALSE(m.find("c").has_value());
  EXPECT_EQ(m.names(), (std::vector<std::string>{"b", "a"}));
}

Dataset tiny() {
  Dataset ds;
  ds.name = "tiny";
  const uint32_t u0 = ds.add_user("u0"), u1 = ds.add_user("u1");
  const uint32_t a = ds.add_item("a", "books"), b = ds.add_item("b", "films"), c = ds.add_item("c", "books");
  ds.interactions = {{u0, a, 4.0f, 1}, {u0, b, kNoRating, 2}, {u1, c, 2.0f, 3}, {u0, a, 1.0f, 4}};
  return ds;
}

TEST(Dataset, AddKeepsSideTablesSized) {
  Dataset ds = tiny();
  EXPECT_EQ(ds.n_users(), 2u);
  EXPECT_EQ(ds.n_items(), 3u);
  EXPECT_EQ(ds.n_domains(), 2u);
  EXPECT_EQ(ds.item_domain, (std::vector<uint16_t>{0, 1, 0}));
  EXPECT_EQ(ds.item_text.size(), 3u);
  EXPECT_EQ(ds.user_profile.size(), 2u);
  EXPECT_EQ(ds.add_item("a", "books"), 0u);  // existing item, same domain
  try {
    ds.add_item("a", "films");
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "item 'a' is already in domain 'books', not 'films'");
  }
  EXPECT_NO_THROW(ds.validate());
}

TEST(Dataset, UserItemMatrix) {
  const Dataset ds = tiny();
  const Csr m = ds.user_item_matrix();
  EXPECT_EQ(m.n_rows, 2u);
  EXPECT_EQ(m.n_cols, 3u);
  EXPECT_EQ(m.nnz(), 3u);
  EXPECT_EQ(m.row_indices(0)[0], 0u);
  EXPECT_FLOAT_EQ(m.row_values(0)[0], 2.0f);  // (u0, a) twice, implicit: 1 + 1
  const Csr r = ds.user_item_matrix(true);
  EXPECT_FLOAT_EQ(r.row_values(0)[0], 5.0f);  // ratings 4 + 1
  EXPECT_FLOAT_EQ(r.row_values(0)[1], 1.0f);  // no rating: 1
  EXPECT_FLOAT_EQ(r.row_values(1)[0], 2.0f);
  const Csr sub = ds.user_item_matrix({ds.interactions[2]});
  EXPECT_EQ(sub.nnz(), 1u);
  EXPECT_TRUE(sub.contains(1, 2));
  std::vector<Interaction> bad = {{5, 0}};
  EXPECT_THROW(ds.user_item_matrix(bad), Error);
}

TEST(Dataset, FingerprintCoversIdsAndInteractionsNotText) {
  const Dataset base = tiny();
  const uint64_t f = base.fingerprint();
  EXPECT_EQ(tiny().fingerprint(), f);
  Dataset d = tiny();
  d.item_text[0].title = "changed";
  d.user_profile[0].text = "changed";
  EXPECT_EQ(d.fingerprint(), f);
  d = tiny();
  d.interactions[1].rating = 3.0f;
  EXPECT_NE(d.fingerprint(), f);
  d = tiny();
  d.interactions[0].timestamp = 9;
  EXPECT_NE(d.fingerprint(), f);
  d = tiny();
  d.add_user("u2");
  EXPECT_NE(d.fingerprint(), f);
  d = tiny();
  d.item_domain[2] = 1;
  EXPECT_NE(d.fingerprint(), f);
  d = tiny();
  std::swap(d.interactions[0], d.interactions[3]);
  EXPECT_NE(d.fingerprint(), f);
}

TEST(Dataset, ValidateNamesTheProblem) {
  auto expect_invalid = [](const Dataset& d, const std::string& fragment) {
    try {
      d.validate();
      ADD_FAILURE() << "expected Error containing " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  Dataset d = tiny();
  d.interactions.push_back({7, 0});
  expect_invalid(d, "interaction 4 has user 7 >= 2 users");
  d = tiny();
  d.interactions[2].item = 3;
  expect_invalid(d, "interaction 2 has item 3 >= 3 items");
  d = tiny();
  d.item_text.pop_back();
  expect_invalid(d, "item_text has 2 entries for 3 items");
  d = tiny();
  d.item_domain[1] = 5;
  expect_invalid(d, "item 1 ('b') has domain 5 but there are 2 domains");
  d = tiny();
  d.fixed_split = {0, 1};
  expect_invalid(d, "fixed_split has 2 entries for 4 interactions");
  d = tiny();
  d.fixed_split = {0, 1, 3, 2};
  expect_invalid(d, "fixed_split[2] = 3");
  d = tiny();
  d.interactions[0].rating = INFINITY;
  expect_invalid(d, "non-finite rating");
}

TEST(Dataset, Summary) {
  Dataset d = tiny();
  d.fixed_split = {0, 0, 2, 1};
  EXPECT_EQ(
      d.summary(),
      "tiny: 2 users, 3 items, 4 interactions, 2 domains (books: 2 users, 2 items, 3 interactions; films: 1 "
      "users, 1 items, 1 interactions); ratings: 3, timestamps: all; fixed split 2/1/1 "
      "train/validation/test");
}

}  // namespace
}  // namespace xdrec
