// MostPopular on a hand-made matrix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

// 4 users x 5 items:
//   u0: item 0, item 1
//   u1: item 1, item 2 (value 3)
//   u2: item 1, item 4 (value -1: a dislike)
//   u3: nothing
Csr hand_matrix() {
  std::vector<uint32_t> r{0, 0, 1, 1, 2, 2}, c{0, 1, 1, 2, 1, 4};
  std::vector<float> v{1, 1, 1, 3, 1, -1};
  return Csr::from_triplets(4, 5, r, c, v);
}

std::unique_ptr<Recommender> fit(const std::string& spec) {
  auto m = create_model(spec);
  m->fit(hand_matrix(), FitContext{});
  return m;
}

std::vector<float> row(const Recommender& m, uint32_t u) {
  Matrix out;
  std::vector<uint32_t> users{u};
  m.score(users, out, 1);
  return out.data;
}

}  // namespace

TEST(Popular, CountsUsersWithAPositiveInteraction) {
  auto m = fit("popular");
  EXPECT_EQ(m->spec(), "popular:weighted=false");
  EXPECT_EQ(m->n_users(), 4u);
  EXPECT_EQ(m->n_items(), 5u);
  const std::vector<float> want{1, 3, 1, 0, 0};
  for (uint32_t u = 0; u < 4; ++u) EXPECT_EQ(row(*m, u), want) << "user " << u;
}

TEST(Popular, WeightedSumsTheValues) {
  auto m = fit("popular:weighted=true");
  EXPECT_EQ(row(*m, 3), (std::vector<float>{1, 3, 3, 0, -1}));
}

TEST(Popular, RecommendSkipsSeenItemsAndBreaksTiesByIndex) {
  auto m = fit("popular");
  const Csr x = hand_matrix();
  RecommendOptions opt;
  opt.k = 3;
  opt.exclude = &x;
  std::vector<uint32_t> users{0, 3};
  auto recs = recommend(*m, users, opt);
  ASSERT_EQ(recs[0].size(), 3u);
  EXPECT_EQ(recs[0][0].item, 2u);  // 1 is seen; 2 has count 1; 3 and 4 tie at 0
  EXPECT_EQ(recs[0][1].item, 3u);
  EXPECT_EQ(recs[0][2].item, 4u);
  EXPECT_EQ(recs[1][0].item, 1u);
  EXPECT_EQ(recs[1][1].item, 0u);
  EXPECT_EQ(recs[1][2].item, 2u);
}

TEST(Popular, FoldInRegistersUsersWithoutChangingCounts) {
  auto m = fit("popular");
  std::vector<uint32_t> h{3, 3, 4};
  EXPECT_EQ(m->fold_in(4, h, {}), 4u);
  EXPECT_EQ(m->n_users(), 5u);
  EXPECT_EQ(row(*m, 4), (std::vector<float>{1, 3, 1, 0, 0}));
  EXPECT_EQ(m->fold_in(1, h, {}), 1u);
  EXPECT_EQ(m->n_users(), 5u);
  EXPECT_THROW(m->fold_in(6, h, {}), Error);
  std::vector<uint32_t> bad{5};
  EXPECT_THROW(m->fold_in(5, bad, {}), Error);
  EXPECT_EQ(m->n_users(), 5u);
}

TEST(Popular, SaveLoadKeepsUsersAndCounts) {
  auto m = fit("popular:weighted=true");
  std::vector<uint32_t> h{0};
  m->fold_in(4, h, {});
  const auto dir = std::filesystem::temp_directory_path() / ("xdrec_popular_" + std::to_string(::getpid()));
  save_model(*m, dir.string());
  auto l = load_model(dir.string());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(l->spec(), "popular:weighted=true");
  EXPECT_EQ(l->n_users(), 5u);
  EXPECT_EQ(row(*l, 4), (std::vector<float>{1, 3, 3, 0, -1}));
}

TEST(Popular, Errors) {
  auto m = create_model("popular");
  std::vector<uint32_t> u0{0};
  Matrix out;
  EXPECT_THROW(m->score(u0, out, 1), Error);
  EXPECT_THROW(m->fold_in(0, u0, {}), Error);
  Csr empty;
  empty.n_rows = 3;
  empty.indptr.assign(4, 0);
  EXPECT_THROW(m->fit(empty, FitContext{}), Error);
  auto f = fit("popular");
  std::vector<uint32_t> u4{4};
  EXPECT_THROW(f->score(u4, out, 1), Error);
  EXPECT_THROW(create_model("popular:weighted=sometimes"), Error);
}
