// The evaluator on fake models with known score matrices: exact metric values for the full and sampled
// protocols, exclusion of training items, per-domain restriction, cohorts, thread independence.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "xdrec/metrics.h"
#include "xdrec/rank.h"

using namespace xdrec;

namespace {

// A "model" that returns rows of a fixed score matrix.
class FixedScores : public Recommender {
 public:
  explicit FixedScores(Matrix s) : s_(std::move(s)) {}
  std::string name() const override { return "fixed"; }
  std::string spec() const override { return "fixed"; }
  void fit(const Csr&, const FitContext&) override {}
  uint32_t n_users() const override { return static_cast<uint32_t>(s_.rows); }
  uint32_t n_items() const override { return static_cast<uint32_t>(s_.cols); }
  void score(std::span<const uint32_t> users, Matrix& out, int) const override {
    out.resize(users.size(), s_.cols);
    for (size_t r = 0; r < users.size(); ++r)
      std::copy(s_.row(users[r]), s_.row(users[r]) + s_.cols, out.row(r));
  }
  uint32_t fold_in(uint32_t, std::span<const uint32_t>, std::span<const float>) override {
    throw Error("fixed: no fold-in");
  }
  void save(TensorMap&, nlohmann::json&) const override {}
  void load(const TensorMap&, const nlohmann::json&) override {}

 private:
  Matrix s_;
};

Csr make_csr(uint32_t n_rows, uint32_t n_cols, const std::vector<std::vector<uint32_t>>& rows) {
  std::vector<uint32_t> r, c;
  for (uint32_t u = 0; u < rows.size(); ++u)
    for (uint32_t i : rows[u]) {
      r.push_back(u);
      c.push_back(i);
    }
  std::vector<float> v(r.size(), 1.0f);
  return Csr::from_triplets(n_rows, n_cols, r, c, v);
}

// Tiny two-domain case. Items 0-2 are "books", 3-5 "films".
//           item:  0    1    2    3    4    5
//   user 0 score: .9   .8   .1   .7   .6   .2    train {0}       test {1, 4}
//   user 1 score: .1   .2   .3   .4   .5   .6    train {5}       test {0, 3}
//   user 2 score: .5   .5   .5   .5   .5   .5    train {1, 3}    test {2}
//   user 3 score:  0    0    0    0    0    0    train {2, 3, 4} test {}   (not evaluated)
// Training popularity: item 0:1, 1:1, 2:1, 3:2, 4:1, 5:1; 4 training users.
struct Tiny {
  Matrix scores{4, 6};
  Csr train, test;
  Dataset ds;
  Tiny() {
    const float s[4][6] = {{.9f, .8f, .1f, .7f, .6f, .2f},
                           {.1f, .2f, .3f, .4f, .5f, .6f},
                           {.5f, .5f, .5f, .5f, .5f, .5f},
                           {0, 0, 0, 0, 0, 0}};
    for (size_t u = 0; u < 4; ++u)
      for (size_t i = 0; i < 6; ++i) scores(u, i) = s[u][i];
    train = make_csr(4, 6, {{0}, {5}, {1, 3}, {2, 3, 4}});
    test = make_csr(4, 6, {{1, 4}, {0, 3}, {2}, {}});
    ds.domains.get_or_add("books");
    ds.domains.get_or_add("films");
    ds.item_domain = {0, 0, 0, 1, 1, 1};
  }
};

// Item vectors of the Tiny items: 0 (1,0), 1 (0,1), 2 (1,0), 3 (0,1), 4 (1,1), 5 (1,0).
Matrix tiny_vectors() {
  Matrix v(6, 2);
  v(0, 0) = v(2, 0) = v(5, 0) = 1;
  v(1, 1) = v(3, 1) = 1;
  v(4, 0) = v(4, 1) = 1;
  return v;
}

const double kL3 = 1.0 / std::log2(3.0);  // 0.630930: DCG of a hit at rank 2
constexpr double kEps = 1e-9;

}  // namespace

TEST(Evaluate, FullRankingExactValues) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2};
  opt.per_domain = false;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  // Rankings without the training items:
  //   u0: [1 .8, 3 .7, 4 .6, 5 .2, 2 .1] (item 0 .9 excluded) top2 [1, 3], rel {1,4}: hit at rank 1
  //       P 1/2, R 1/2, F1 1/2, NDCG 1/(1+L3) = 0.613147, HR 1, AP (1/1)/2 = 1/2, RR 1
  //   u1: [4, 3, 2, 1, 0] top2 [4, 3], rel {0,3}: hit at rank 2
  //       P 1/2, R 1/2, F1 1/2, NDCG L3/(1+L3) = 0.386853, HR 1, AP (1/2)/2 = 1/4, RR 1/2
  //   u2: ties broken by index: [0, 2, 4, 5] top2 [0, 2], rel {2}: hit at rank 2
  //       P 1/2, R 1, F1 2/3, NDCG L3/1 = 0.630930, HR 1, AP (1/2)/1 = 1/2, RR 1/2
  EXPECT_EQ(r.n_users, 3u);
  EXPECT_EQ(r.protocol, "full");
  const auto& m = r.overall;
  EXPECT_NEAR(m.at("precision@2"), 0.5, kEps);
  EXPECT_NEAR(m.at("recall@2"), (0.5 + 0.5 + 1.0) / 3, kEps);
  EXPECT_NEAR(m.at("f1@2"), (0.5 + 0.5 + 2.0 / 3) / 3, kEps);
  // 1/(1+L3) + L3/(1+L3) = 1, so NDCG = (1 + L3) / 3 = 0.543643
  EXPECT_NEAR(m.at("ndcg@2"), (1.0 + kL3) / 3, kEps);
  EXPECT_NEAR(m.at("hr@2"), 1.0, kEps);
  EXPECT_NEAR(m.at("map@2"), (0.5 + 0.25 + 0.5) / 3, kEps);
  EXPECT_NEAR(m.at("mrr@2"), (1.0 + 0.5 + 0.5) / 3, kEps);
  // Lists [1,3], [4,3], [0,2]: distinct {0,1,2,3,4} = 5 of 6 items.
  EXPECT_NEAR(m.at("coverage@2"), 5.0 / 6, kEps);
  // Counts: item 3 twice, items 0,1,2,4 once, item 5 never -> sorted [0,1,1,1,1,2], total 6, n = 6.
  // Weights 2j-7 = -5,-3,-1,1,3,5: sum = 0 - 3 - 1 + 1 + 3 + 10 = 10; G = 10 / 36.
  EXPECT_NEAR(m.at("gini@2"), 10.0 / 36, kEps);
  // Self-information with 4 training users: pop 1 -> log2(4) = 2; item 3 (pop 2) -> 1.
  // [1,3]: 1.5, [4,3]: 1.5, [0,2]: 2 -> mean 5/3.
  EXPECT_NEAR(m.at("novelty@2"), 5.0 / 3, kEps);
  EXPECT_EQ(m.count("diversity@2"), 0u);  // no item vectors given
  EXPECT_TRUE(r.by_domain.empty());
  // The 95% CI of the NDCG per user {0.613147, 0.386853, 0.630930} (t with 2 df = 4.302653).
  const std::vector<double> per_user{1 / (1 + kL3), kL3 / (1 + kL3), kL3};
  EXPECT_NEAR(r.overall_ci95.at("ndcg@2"), mean_ci95(per_user).ci95, kEps);
}

TEST(Evaluate, SerendipityAndLongTailByHand) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;
  opt.ks = {3};
  opt.per_domain = false;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  // Popularity order (ties by index): [3, 0, 1, 2, 4, 5]. Top 3 against each user's popularity list:
  //   u0: [1, 3, 4], popularity [3, 1, 2]: relevant 1 is in it, relevant 4 is not -> 1/3
  //   u1: [4, 3, 2], popularity [3, 0, 1]: relevant 3 is in it -> 0
  //   u2: [0, 2, 4], popularity [0, 2, 4]: relevant 2 is in it -> 0
  EXPECT_NEAR(r.overall.at("serendipity@3"), (1.0 / 3) / 3, kEps);
  // Deciles of the six items by popularity rank r: floor(10 r / 6) -> item 3: 0, 0: 1, 1: 3, 2: 5, 4: 6,
  // 5: 8. Recommended: d0 2, d1 1, d3 1, d5 2, d6 3 of 9. Training: items 0,5,1,3,2,3,4 -> d0 2, d1, d3, d5,
  // d6, d8.
  const std::vector<double> rec{2. / 9, 1. / 9, 0, 1. / 9, 0, 2. / 9, 3. / 9, 0, 0, 0};
  const std::vector<double> inter{2. / 7, 1. / 7, 0, 1. / 7, 0, 1. / 7, 1. / 7, 0, 1. / 7, 0};
  ASSERT_EQ(r.long_tail.recommended.size(), 10u);
  for (size_t d = 0; d < 10; ++d) {
    EXPECT_NEAR(r.long_tail.recommended[d], rec[d], kEps) << d;
    EXPECT_NEAR(r.long_tail.interacted[d], inter[d], kEps) << d;
  }
  // The sampled protocol has neither.
  opt.sampled_negatives = 2;
  const EvalResult s = evaluate(model, t.train, t.test, nullptr, opt);
  EXPECT_EQ(s.overall.count("serendipity@3"), 0u);
  EXPECT_TRUE(s.long_tail.recommended.empty());
}

TEST(Evaluate, TrainItemsAreNeverRanked) {
  // User 0's training item 0 has the best score. If it were ranked it would push item 1 (relevant) to rank 2.
  // Making item 0 also a test item checks that it stays excluded: relevant {0, 1}, top1 = [1] -> P@1 = 1,
  // R@1 = 1/2 (item 0 can never be retrieved).
  Tiny t;
  FixedScores model(t.scores);
  Csr test = make_csr(4, 6, {{0, 1}, {}, {}, {}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {1};
  const EvalResult r = evaluate(model, t.train, test, nullptr, opt);
  EXPECT_EQ(r.n_users, 1u);
  EXPECT_NEAR(r.overall.at("precision@1"), 1.0, kEps);
  EXPECT_NEAR(r.overall.at("recall@1"), 0.5, kEps);
  // With nothing in training, item 0 ranks first and is a hit too: the exclusion is what changed the list.
  Csr empty_train = make_csr(4, 6, {{}, {}, {}, {}});
  const EvalResult r2 = evaluate(model, empty_train, test, nullptr, opt);
  EXPECT_NEAR(r2.overall.at("precision@1"), 1.0, kEps);
  Csr test_only_1 = make_csr(4, 6, {{1}, {}, {}, {}});
  EXPECT_NEAR(evaluate(model, empty_train, test_only_1, nullptr, opt).overall.at("hr@1"), 0.0, kEps);
  EXPECT_NEAR(evaluate(model, t.train, test_only_1, nullptr, opt).overall.at("hr@1"), 1.0, kEps);
}

TEST(Evaluate, PerDomainRestriction) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2};
  const EvalResult r = evaluate(model, t.train, t.test, &t.ds, opt);
  ASSERT_EQ(r.by_domain.size(), 2u);
  // books {0,1,2}:
  //   u0: candidates {1 .8, 2 .1} (0 in train) -> [1, 2], rel {1}: P 1/2 R 1 F1 2/3 NDCG 1 HR 1 AP 1 RR 1
  //   u1: [2 .3, 1 .2] (0 .1 third), rel {0}: all 0
  //   u2: candidates {0, 2} tied -> [0, 2], rel {2}: P 1/2 R 1 F1 2/3 NDCG L3 HR 1 AP 1/2 RR 1/2
  const auto& b = r.by_domain.at("books");
  EXPECT_NEAR(b.at("n_users"), 3, kEps);
  EXPECT_NEAR(b.at("precision@2"), 1.0 / 3, kEps);
  EXPECT_NEAR(b.at("recall@2"), 2.0 / 3, kEps);
  EXPECT_NEAR(b.at("f1@2"), 4.0 / 9, kEps);
  EXPECT_NEAR(b.at("ndcg@2"), (1.0 + kL3) / 3, kEps);
  EXPECT_NEAR(b.at("hr@2"), 2.0 / 3, kEps);
  EXPECT_NEAR(b.at("map@2"), 0.5, kEps);
  EXPECT_NEAR(b.at("mrr@2"), 0.5, kEps);
  EXPECT_NEAR(b.at("coverage@2"), 1.0, kEps);  // [1,2], [2,1], [0,2] cover all 3 books
  // films {3,4,5} (user 2 has no film in test: skipped):
  //   u0: [3 .7, 4 .6], rel {4}: hit at rank 2; u1: [4 .5, 3 .4] (5 in train), rel {3}: hit at rank 2
  //   both: P 1/2 R 1 F1 2/3 NDCG L3 HR 1 AP 1/2 RR 1/2
  const auto& f = r.by_domain.at("films");
  EXPECT_NEAR(f.at("n_users"), 2, kEps);
  EXPECT_NEAR(f.at("precision@2"), 0.5, kEps);
  EXPECT_NEAR(f.at("recall@2"), 1.0, kEps);
  EXPECT_NEAR(f.at("ndcg@2"), kL3, kEps);
  EXPECT_NEAR(f.at("map@2"), 0.5, kEps);
  EXPECT_NEAR(f.at("coverage@2"), 2.0 / 3, kEps);  // {3, 4} of 3 films
  // Film counts [0, 2, 2] (item 5 never), total 4: (-2*0 + 0*2 + 2*2) / (3*4) = 1/3
  EXPECT_NEAR(f.at("gini@2"), 1.0 / 3, kEps);
  // Overall is unaffected by per_domain.
  EXPECT_NEAR(r.overall.at("ndcg@2"), (1.0 + kL3) / 3, kEps);
  // per_domain = false or a single domain: no breakdown.
  opt.per_domain = false;
  EXPECT_TRUE(evaluate(model, t.train, t.test, &t.ds, opt).by_domain.empty());
}

TEST(Evaluate, Cohorts) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2};
  opt.cold_user = {0, 1, 0, 0};  // user 1 cold
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  // cold = {u1}: P 1/2, R 1/2, NDCG L3/(1+L3), MRR 1/2
  const auto& cold = r.by_cohort.at("cold-users");
  EXPECT_NEAR(cold.at("n_users"), 1, kEps);
  EXPECT_NEAR(cold.at("recall@2"), 0.5, kEps);
  EXPECT_NEAR(cold.at("ndcg@2"), kL3 / (1 + kL3), kEps);
  EXPECT_NEAR(cold.at("mrr@2"), 0.5, kEps);
  // warm = {u0, u2}: R (1/2 + 1)/2, NDCG (1/(1+L3) + L3)/2, MRR (1 + 1/2)/2
  const auto& warm = r.by_cohort.at("warm-users");
  EXPECT_NEAR(warm.at("n_users"), 2, kEps);
  EXPECT_NEAR(warm.at("recall@2"), 0.75, kEps);
  EXPECT_NEAR(warm.at("ndcg@2"), (1 / (1 + kL3) + kL3) / 2, kEps);
  EXPECT_NEAR(warm.at("mrr@2"), 0.75, kEps);
  // head_fraction 0.2 of 6 items -> ceil(1.2) = 2 head items: item 3 (pop 2), then item 0 (pop 1, lowest
  // index among the ties). head = {0, 3}.
  //   head: only u1 has head test items {0, 3}; list [4, 3]: recall 1/2, NDCG L3/(1+L3)
  //   tail: u0 {1, 4} with list [1, 3]: recall 1/2, NDCG 1/(1+L3); u2 {2} with [0, 2]: recall 1, NDCG L3
  const auto& head = r.by_cohort.at("head-items");
  EXPECT_NEAR(head.at("n_users"), 1, kEps);
  EXPECT_NEAR(head.at("recall@2"), 0.5, kEps);
  EXPECT_NEAR(head.at("ndcg@2"), kL3 / (1 + kL3), kEps);
  const auto& tail = r.by_cohort.at("tail-items");
  EXPECT_NEAR(tail.at("n_users"), 2, kEps);
  EXPECT_NEAR(tail.at("recall@2"), 0.75, kEps);
  EXPECT_NEAR(tail.at("ndcg@2"), (1 / (1 + kL3) + kL3) / 2, kEps);
  // Without cold flags there are no user cohorts.
  opt.cold_user.clear();
  const EvalResult r2 = evaluate(model, t.train, t.test, nullptr, opt);
  EXPECT_EQ(r2.by_cohort.count("cold-users"), 0u);
  EXPECT_EQ(r2.by_cohort.count("head-items"), 1u);
}

TEST(Evaluate, DiversityFromItemVectors) {
  Tiny t;
  FixedScores model(t.scores);
  const Matrix v = tiny_vectors();
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2};
  opt.item_vectors = &v;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  // Lists [1,3]: cos 1 -> 0; [4,3]: cos 1/sqrt(2) -> 1 - 0.707107; [0,2]: cos 1 -> 0. Mean 0.097631.
  EXPECT_NEAR(r.overall.at("diversity@2"), (1 - 1 / std::sqrt(2.0)) / 3, 1e-7);
}

TEST(Evaluate, DiversityReRankingByHand) {
  // MMR with lambda 1 (similarity only) over the same vectors, pools of every candidate, k = 2:
  //   u0 candidates by score 1,3,4,5,2: picks 1, then the least like (0,1) first in score order: 5 -> [1,5]
  //   u1 candidates 4,3,2,1,0: picks 4, then every other is at cos 0.707 to (1,1): 3 -> [4,3]
  //   u2 all tied, index order 0,2,4,5: picks 0, then 4 (cos 0.707 < 1) -> [0,4]
  // Diversity@2: [1,5] 1, [4,3] 1 - 0.707, [0,4] 1 - 0.707 (plain lists: [1,3] 0, [4,3], [0,2] 0).
  Tiny t;
  FixedScores model(t.scores);
  const Matrix v = tiny_vectors();
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;
  opt.ks = {2};
  opt.item_vectors = &v;
  opt.per_domain = false;
  opt.diversity = 1.0;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  EXPECT_NEAR(r.overall.at("diversity@2"), (1 + 2 * (1 - 1 / std::sqrt(2.0))) / 3, 1e-6);
  // u2's list lost its hit (item 2): HR@2 falls from 1 to 2/3.
  EXPECT_NEAR(r.overall.at("hr@2"), 2.0 / 3, 1e-9);
  opt.diversity = 0;
  EXPECT_NEAR(evaluate(model, t.train, t.test, nullptr, opt).overall.at("hr@2"), 1.0, 1e-9);
  opt.diversity = 0.5;
  opt.item_vectors = nullptr;
  EXPECT_THROW(evaluate(model, t.train, t.test, nullptr, opt), Error);
}

TEST(Evaluate, SampledProtocolExactValues) {
  // With N = 100 negatives and pools smaller than that, every unseen item of the target's domain is a
  // negative, so the ranks are known:
  //   u0 (seen {0,1,4}): target 1 vs books pool {2}: .8 > .1 -> rank 1
  //                      target 4 vs films pool {3,5}: 3 (.7) beats 4 (.6) -> rank 2
  //   u1 (seen {0,3,5}): target 0 vs {1,2}: .1 is last -> rank 3 (a miss at k = 2)
  //                      target 3 vs {4}: .4 < .5 -> rank 2
  //   u2 (seen {1,2,3}): target 2 vs {0}: tie .5, item 0 has the lower index -> rank 2
  // Per pair at k = 2: rank 1: P 1/2 R 1 NDCG 1 HR 1 AP 1 RR 1; rank 2: P 1/2 R 1 NDCG L3 HR 1 AP 1/2 RR 1/2;
  // rank 3: all 0. Per user the mean over its targets:
  //   u0: NDCG (1+L3)/2, HR 1, MRR 3/4, P 1/2;  u1: NDCG L3/2, HR 1/2, MRR 1/4, P 1/4;  u2: NDCG L3, HR 1,
  //   MRR 1/2
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2};
  opt.sampled_negatives = 100;
  const EvalResult r = evaluate(model, t.train, t.test, &t.ds, opt);
  EXPECT_EQ(r.protocol, "sampled:100");
  EXPECT_EQ(r.n_users, 3u);
  const auto& m = r.overall;
  EXPECT_NEAR(m.at("ndcg@2"), ((1 + kL3) / 2 + kL3 / 2 + kL3) / 3, kEps);
  EXPECT_NEAR(m.at("hr@2"), (1 + 0.5 + 1) / 3, kEps);
  EXPECT_NEAR(m.at("recall@2"), (1 + 0.5 + 1) / 3, kEps);
  EXPECT_NEAR(m.at("mrr@2"), (0.75 + 0.25 + 0.5) / 3, kEps);
  EXPECT_NEAR(m.at("map@2"), (0.75 + 0.25 + 0.5) / 3, kEps);
  EXPECT_NEAR(m.at("precision@2"), (0.5 + 0.25 + 0.5) / 3, kEps);
  EXPECT_EQ(m.count("coverage@2"), 0u);  // beyond-accuracy only under full ranking
  // Per domain, each user averages its targets in that domain:
  //   books: u0 rank 1, u1 rank 3, u2 rank 2 -> NDCG (1 + 0 + L3)/3, HR 2/3
  //   films: u0 rank 2, u1 rank 2 -> NDCG L3, HR 1
  EXPECT_NEAR(r.by_domain.at("books").at("ndcg@2"), (1 + kL3) / 3, kEps);
  EXPECT_NEAR(r.by_domain.at("books").at("hr@2"), 2.0 / 3, kEps);
  EXPECT_NEAR(r.by_domain.at("films").at("ndcg@2"), kL3, kEps);
  EXPECT_NEAR(r.by_domain.at("films").at("n_users"), 2, kEps);
  // Head items {0, 3}: u1's targets 0 (rank 3) and 3 (rank 2): recall (0 + 1)/2 = 1/2.
  // Tail: u0 targets 1 (rank 1), 4 (rank 2): recall 1, NDCG (1+L3)/2; u2 target 2 (rank 2): recall 1, NDCG
  // L3.
  EXPECT_NEAR(r.by_cohort.at("head-items").at("recall@2"), 0.5, kEps);
  EXPECT_NEAR(r.by_cohort.at("tail-items").at("recall@2"), 1.0, kEps);
  EXPECT_NEAR(r.by_cohort.at("tail-items").at("ndcg@2"), ((1 + kL3) / 2 + kL3) / 2, kEps);
}

namespace {

// A larger random case: n_users x n_items scores, two domains (first half / second half of the items).
struct RandomCase {
  uint32_t n_users, n_items;
  Matrix scores;
  Csr train, test;
  Dataset ds;
  RandomCase(uint32_t nu, uint32_t ni, uint64_t seed) : n_users(nu), n_items(ni), scores(nu, ni) {
    Rng rng(seed);
    for (auto& x : scores.data) x = static_cast<float>(rng.below(50)) / 50.0f;  // many ties on purpose
    std::vector<std::vector<uint32_t>> tr(nu), te(nu);
    for (uint32_t u = 0; u < nu; ++u)
      for (uint32_t i = 0; i < ni; ++i) {
        const uint64_t x = rng.below(100);
        if (x < 8)
          tr[u].push_back(i);
        else if (x < 11)
          te[u].push_back(i);
      }
    train = make_csr(nu, ni, tr);
    test = make_csr(nu, ni, te);
    ds.domains.get_or_add("a");
    ds.domains.get_or_add("b");
    ds.item_domain.resize(ni);
    for (uint32_t i = 0; i < ni; ++i) ds.item_domain[i] = i < ni / 2 ? 0 : 1;
  }
};

void expect_same(const EvalResult& a, const EvalResult& b) {
  nlohmann::json ja = a.to_json(), jb = b.to_json();
  ja.erase("seconds");
  jb.erase("seconds");
  EXPECT_EQ(ja.dump(), jb.dump());
}

}  // namespace

// The evaluator's lists must equal the library's top_k over the same rows (ties and NaN scores included),
// overall and per domain, and its means the per-user metrics of those lists.
TEST(Evaluate, FullRankingMatchesBruteForce) {
  RandomCase c(120, 300, 7);
  for (size_t j = 0; j < c.scores.data.size(); j += 37) c.scores.data[j] = std::nanf("");
  FixedScores model(c.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {1, 5, 10};
  opt.block_users = 16;
  const EvalResult r = evaluate(model, c.train, c.test, &c.ds, opt);
  for (int d = -1; d < 2; ++d) {
    double ndcg10 = 0, map5 = 0, p1 = 0;
    size_t n = 0;
    std::vector<std::vector<uint32_t>> lists10;
    for (uint32_t u = 0; u < c.n_users; ++u) {
      std::vector<uint32_t> rel;
      for (uint32_t i : c.test.row_indices(u))
        if (d < 0 || c.ds.item_domain[i] == d) rel.push_back(i);
      if (rel.empty()) continue;
      auto top = top_k(c.scores.row(u), c.n_items, 10, c.train.row_indices(u), c.ds.item_domain, d);
      std::vector<uint32_t> l;
      for (auto& s : top) l.push_back(d < 0 ? s.item : s.item - (d == 1 ? c.n_items / 2 : 0));
      std::vector<uint32_t> global;
      for (auto& s : top) global.push_back(s.item);
      ndcg10 += ndcg_at_k(global, rel, 10);
      map5 += average_precision_at_k(global, rel, 5);
      p1 += precision_at_k(global, rel, 1);
      lists10.push_back(l);  // domain-local indices for the domain's catalogue
      ++n;
    }
    const MetricMap& m = d < 0 ? r.overall : r.by_domain.at(d == 0 ? "a" : "b");
    const uint32_t catalogue = d < 0 ? c.n_items : c.n_items / 2;
    if (d < 0)
      ASSERT_EQ(r.n_users, n);
    else
      ASSERT_EQ(m.at("n_users"), static_cast<double>(n));
    EXPECT_NEAR(m.at("ndcg@10"), ndcg10 / n, 1e-12) << "domain " << d;
    EXPECT_NEAR(m.at("map@5"), map5 / n, 1e-12) << "domain " << d;
    EXPECT_NEAR(m.at("precision@1"), p1 / n, 1e-12) << "domain " << d;
    EXPECT_NEAR(m.at("coverage@10"), catalogue_coverage(lists10, catalogue), 1e-12) << "domain " << d;
    EXPECT_NEAR(m.at("gini@10"), gini_index(lists10, catalogue), 1e-12) << "domain " << d;
  }
}

TEST(Evaluate, ResultsIndependentOfThreadCount) {
  RandomCase c(150, 80, 11);
  FixedScores model(c.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {3, 10};
  opt.block_users = 7;  // many blocks, so that two threads really share the work
  opt.cold_user.assign(c.n_users, 0);
  for (uint32_t u = 0; u < c.n_users; u += 3) opt.cold_user[u] = 1;
  for (size_t negatives : {size_t{0}, size_t{20}}) {
    opt.sampled_negatives = negatives;
    opt.threads = 1;
    const EvalResult one = evaluate(model, c.train, c.test, &c.ds, opt);
    opt.threads = 2;
    const EvalResult two = evaluate(model, c.train, c.test, &c.ds, opt);
    opt.threads = 3;
    const EvalResult three = evaluate(model, c.train, c.test, &c.ds, opt);
    expect_same(one, two);
    expect_same(one, three);
    EXPECT_EQ(one.by_domain.size(), 2u);
    EXPECT_EQ(one.by_cohort.size(), 4u);
  }
}

TEST(Evaluate, SampledIsSeededAndReproducible) {
  RandomCase c(100, 400, 3);
  FixedScores model(c.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {5};
  opt.sampled_negatives = 50;
  const EvalResult a = evaluate(model, c.train, c.test, &c.ds, opt);
  const EvalResult b = evaluate(model, c.train, c.test, &c.ds, opt);
  expect_same(a, b);
  opt.seed = 43;
  const EvalResult d = evaluate(model, c.train, c.test, &c.ds, opt);
  EXPECT_NE(a.overall.at("ndcg@5"), d.overall.at("ndcg@5"));
}

// Negatives come only from the target's domain and never from the user's train or test items. Per domain d:
// the other domain's items score 20, training items 10, the user's test items (all in d) 5 + something
// below 1, distinct, and the allowed negatives 0. Every target then ranks first unless a forbidden item was
// drawn (the lowest test item would lose to any other test item). P@2 = 1/2 checks that the target is not
// also drawn as its own negative. Both samplers are covered: rejection (N = 30) and enumeration (N = 1000).
TEST(Evaluate, SampledNegativesFromOwnDomainAndUnseen) {
  RandomCase c(60, 300, 5);
  for (uint16_t d = 0; d < 2; ++d) {
    Matrix s(c.n_users, c.n_items, 0.0f);
    std::vector<std::vector<uint32_t>> te(c.n_users);
    for (uint32_t u = 0; u < c.n_users; ++u) {
      for (uint32_t i = 0; i < c.n_items; ++i)
        if (c.ds.item_domain[i] != d) s(u, i) = 20.0f;
      for (uint32_t i : c.train.row_indices(u)) s(u, i) = 10.0f;
      for (uint32_t i : c.test.row_indices(u))
        if (c.ds.item_domain[i] == d) {
          s(u, i) = 5.0f + 0.01f * static_cast<float>(te[u].size());
          te[u].push_back(i);
        }
    }
    FixedScores model(s);
    for (size_t negatives : {size_t{30}, size_t{1000}}) {
      EvalOptions opt;
      opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
      opt.ks = {1, 2};
      opt.sampled_negatives = negatives;
      const EvalResult r = evaluate(model, c.train, make_csr(c.n_users, c.n_items, te), &c.ds, opt);
      ASSERT_GT(r.n_users, 30u);
      EXPECT_NEAR(r.overall.at("hr@1"), 1.0, kEps) << "domain " << d << ", N " << negatives;
      EXPECT_NEAR(r.overall.at("precision@2"), 0.5, kEps) << "domain " << d << ", N " << negatives;
    }
  }
}

// Uniformity: the target beats all but B of the M unseen items of its domain; with N negatives drawn
// uniformly without replacement, P(hit@1) = C(M-B, N) / C(M, N) = prod_{j<B} (M-N-j) / (M-j)
// (hypergeometric: no beater drawn). The beaters are put at the lowest and then at the highest item
// indices, so that a sampler favouring either end of the catalogue fails. Two settings cover both samplers:
//   no training items, M = 399, N = 150, B = 6: P = 0.0579 (with replacement it would be 0.103);
//   300 training items per user, M = 99, N = 40, B = 10: P = 0.0043 (the pool is enumerated).
TEST(Evaluate, SampledNegativesAreUniform) {
  const uint32_t n_users = 1500, n_items = 400;  // one domain; each user: 1 target
  struct Setting {
    uint32_t n_train, beaters;
    size_t negatives;
  };
  for (const Setting& st : {Setting{0, 6, 150}, Setting{300, 10, 40}}) {
    const double m = n_items - 1.0 - st.n_train;
    double p = 1.0;
    for (uint32_t j = 0; j < st.beaters; ++j) p *= (m - st.negatives - j) / (m - j);
    const double se = std::sqrt(p * (1 - p) / n_users);
    for (bool low : {true, false}) {
      Matrix s(n_users, n_items, 0.0f);
      std::vector<std::vector<uint32_t>> tr(n_users), te(n_users);
      Rng rng(9);
      for (uint32_t u = 0; u < n_users; ++u) {
        const uint32_t target = static_cast<uint32_t>(rng.below(n_items));
        te[u].push_back(target);
        s(u, target) = 0.5f;
        std::vector<uint8_t> used(n_items, 0);
        used[target] = 1;
        uint32_t placed = 0;
        for (uint32_t j = 0; j < n_items && placed < st.beaters; ++j) {
          const uint32_t i = low ? j : n_items - 1 - j;
          if (used[i]) continue;
          s(u, i) = 1.0f;
          used[i] = 1;
          ++placed;
        }
        // Training items: random among the others (they score 2, above everything, if they were ranked).
        while (tr[u].size() < st.n_train) {
          const uint32_t i = static_cast<uint32_t>(rng.below(n_items));
          if (used[i]) continue;
          used[i] = 1;
          s(u, i) = 2.0f;
          tr[u].push_back(i);
        }
        std::sort(tr[u].begin(), tr[u].end());
      }
      FixedScores model(s);
      EvalOptions opt;
      opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
      opt.ks = {1};
      opt.sampled_negatives = st.negatives;
      const EvalResult r =
          evaluate(model, make_csr(n_users, n_items, tr), make_csr(n_users, n_items, te), nullptr, opt);
      EXPECT_NEAR(r.overall.at("hr@1"), p, 4 * se)
          << "expected " << p << (low ? " (low)" : " (high)") << ", train " << st.n_train;
    }
  }
}

TEST(Evaluate, JsonShapeProgressAndErrors) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2, 1, 2};            // unsorted with a duplicate: evaluated as {1, 2}
  size_t last_done = 0, calls = 0;
  opt.progress = [&](size_t done, size_t total, const std::string&) {
    EXPECT_EQ(total, 3u);
    EXPECT_GT(done, last_done);
    last_done = done;
    ++calls;
  };
  opt.block_users = 2;
  const EvalResult r = evaluate(model, t.train, t.test, &t.ds, opt);
  EXPECT_EQ(last_done, 3u);
  EXPECT_EQ(calls, 2u);
  const nlohmann::json j = r.to_json();
  for (const char* key :
       {"overall", "by_domain", "by_cohort", "n_users", "seconds", "protocol", "overall_ci95"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["n_users"], 3);
  EXPECT_TRUE(j["overall"].contains("ndcg@1"));
  EXPECT_TRUE(j["overall"].contains("gini@2"));
  EXPECT_TRUE(j["by_domain"]["films"].contains("recall@2"));
  EXPECT_TRUE(j["by_cohort"].is_object());
  // Errors: mismatched shapes, bad k, bad cold-user flags, out-of-range user.
  EvalOptions bad;
  bad.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  bad.ks = {0};
  EXPECT_THROW(evaluate(model, t.train, t.test, nullptr, bad), Error);
  bad.ks = {2};
  bad.cold_user = {1};
  EXPECT_THROW(evaluate(model, t.train, t.test, nullptr, bad), Error);
  EXPECT_THROW(evaluate(model, t.train, make_csr(4, 5, {{}, {}, {}, {}}), nullptr, EvalOptions{}), Error);
  FixedScores small(Matrix(2, 6));
  EXPECT_THROW(evaluate(small, t.train, t.test, nullptr, EvalOptions{}), Error);
  // No test users: an empty result, no error.
  const EvalResult e = evaluate(model, t.train, make_csr(4, 6, {{}, {}, {}, {}}), &t.ds, EvalOptions{});
  EXPECT_EQ(e.n_users, 0u);
  EXPECT_TRUE(e.overall.empty());
}

// ---- Honest ties ----

namespace {
// n_users x n_items, every user's held-out items are the first items (index order is "right"), scores all
// equal: a model that cannot tell the candidates apart.
struct AllTied {
  uint32_t n_users = 300, n_items = 500;
  Matrix scores{300, 500};
  Csr train, test;
  AllTied() {
    std::fill(scores.data.begin(), scores.data.end(), 0.5f);
    std::vector<std::vector<uint32_t>> tr(n_users), te(n_users);
    for (uint32_t u = 0; u < n_users; ++u) {
      te[u] = {0, 1, 2};  // the lowest indices: index-order ties would find them all
      tr[u] = {100 + u % 300, 450};
    }
    train = make_csr(n_users, n_items, tr);
    test = make_csr(n_users, n_items, te);
  }
};
}  // namespace

TEST(EvaluateTies, FullRankingOfATiedModelIsAtTheChanceLevel) {
  AllTied t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ks = {10};
  opt.per_domain = false;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);  // default: seeded random order
  // Chance: 3 relevant among 498 candidates, 10 drawn -> recall@10 = 10/498 = 0.0201 on average.
  EXPECT_NEAR(r.overall.at("recall@10"), 10.0 / 498, 0.01);
  EXPECT_DOUBLE_EQ(r.overall.at("tied_share"), 1.0);
  // The index order would put the three relevant items first: the bias the random rule removes.
  opt.ties = Ties::kLowerIndex;
  const EvalResult biased = evaluate(model, t.train, t.test, nullptr, opt);
  EXPECT_DOUBLE_EQ(biased.overall.at("recall@10"), 1.0);
  // Seeded: the same numbers again, and for another thread count.
  opt.ties = Ties::kRandom;
  opt.threads = 2;
  opt.block_users = 7;
  EXPECT_EQ(evaluate(model, t.train, t.test, nullptr, opt).overall, r.overall);
}

TEST(EvaluateTies, SampledProtocolIsPessimistic) {
  AllTied t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ks = {10, 1000};
  opt.per_domain = false;
  opt.sampled_negatives = 99;
  const EvalResult r = evaluate(model, t.train, t.test, nullptr, opt);
  // Every negative ties with the target, so the target ranks last (100 of 100), whatever the tie rule.
  EXPECT_DOUBLE_EQ(r.overall.at("hr@10"), 0.0);
  EXPECT_NEAR(r.overall.at("mrr@1000"), 1.0 / 100, 1e-12);
  EXPECT_NEAR(r.overall.at("ndcg@1000"), 1.0 / std::log2(101.0), 1e-12);
  EXPECT_DOUBLE_EQ(r.overall.at("tied_share"), 1.0);
  // A model that scores the target strictly above every negative gets the first rank and no ties.
  Matrix s = t.scores;
  for (uint32_t u = 0; u < t.n_users; ++u)
    for (uint32_t i : {0u, 1u, 2u}) s(u, i) = 1.0f;
  const EvalResult good = evaluate(FixedScores(s), t.train, t.test, nullptr, opt);
  EXPECT_DOUBLE_EQ(good.overall.at("hr@10"), 1.0);
  EXPECT_DOUBLE_EQ(good.overall.at("tied_share"), 0.0);
}

TEST(EvaluateTies, TargetDomainRanksWithinItEverywhere) {
  Tiny t;
  FixedScores model(t.scores);
  EvalOptions opt;
  opt.ks = {2};
  opt.ties = Ties::kLowerIndex;
  opt.target_domain = 1;  // films: items 3-5
  const EvalResult r = evaluate(model, t.train, t.test, &t.ds, opt);
  // Only film test items count and only films are ranked: u0 (test film 4) ranks [3 .7, 4 .6, 5 .2] -> hit at
  // 2; u1 (test film 3, train 5) ranks [4 .5, 3 .4] -> hit at 2; u2 has no film test item.
  EXPECT_EQ(r.n_users, 2u);
  EXPECT_NEAR(r.overall.at("hr@2"), 1.0, kEps);
  EXPECT_NEAR(r.overall.at("ndcg@2"), kL3, kEps);
  ASSERT_TRUE(r.by_domain.count("films"));
  EXPECT_EQ(r.by_domain.count("books"), 0u);
  EXPECT_NEAR(r.by_domain.at("films").at("ndcg@2"), r.overall.at("ndcg@2"), kEps);
}
