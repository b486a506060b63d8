// EvalOptions::candidate_items: only candidate items are ranked (full protocol) or drawn as negatives
// (sampled protocol), only candidate test items count as relevant, and users with none are skipped.
// Hand-computed cases, plus the equivalence with evaluating a model whose non-candidate columns are removed.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "xdrec/metrics.h"

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

Matrix make_scores(const std::vector<std::vector<float>>& rows) {
  Matrix m(rows.size(), rows[0].size());
  for (size_t u = 0; u < rows.size(); ++u)
    for (size_t i = 0; i < rows[u].size(); ++i) m(u, i) = rows[u][i];
  return m;
}

const double kL3 = 1.0 / std::log2(3.0);  // DCG of a hit at rank 2
constexpr double kEps = 1e-9;

}  // namespace

// One domain, items 0..5.
//   user 0 scores .9 .8 .7 .6 .5 .4   train {0}  test {1, 4}
//   user 1 scores .1 .2 .3 .4 .5 .6   train {}   test {2}     (2 is no candidate: user skipped)
//   user 2 scores .6 .5 .4 .3 .2 .1   train {3}  test {5, 2}
// Candidates {0, 3, 4, 5} (items 1 and 2 are not).
// User 0: ranked candidates minus train {0}: 3 (.6), 4 (.5), 5 (.4); relevant {4} (1 is no candidate):
//   top-2 = [3, 4]: hr@2 = 1, recall@2 = 1, ndcg@2 = 1/log2(3), mrr@2 = 1/2; top-1 = [3]: all 0.
// User 2: ranked candidates minus train {3}: 0 (.6), 4 (.2), 5 (.1); relevant {5}:
//   top-2 = [0, 4]: every metric 0.
TEST(Candidates, FullRankingHandComputed) {
  FixedScores model(make_scores(
      {{.9f, .8f, .7f, .6f, .5f, .4f}, {.1f, .2f, .3f, .4f, .5f, .6f}, {.6f, .5f, .4f, .3f, .2f, .1f}}));
  const Csr train = make_csr(3, 6, {{0}, {}, {3}});
  const Csr test = make_csr(3, 6, {{1, 4}, {2}, {2, 5}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {1, 2};
  opt.candidate_items = {1, 0, 0, 1, 1, 1};
  const EvalResult r = evaluate(model, train, test, nullptr, opt);
  EXPECT_EQ(r.n_users, 2u);
  EXPECT_NEAR(r.overall.at("hr@2"), 0.5, kEps);
  EXPECT_NEAR(r.overall.at("recall@2"), 0.5, kEps);
  EXPECT_NEAR(r.overall.at("ndcg@2"), kL3 / 2, kEps);
  EXPECT_NEAR(r.overall.at("mrr@2"), 0.25, kEps);
  EXPECT_NEAR(r.overall.at("precision@2"), 0.25, kEps);
  EXPECT_NEAR(r.overall.at("hr@1"), 0.0, kEps);
  // Catalogue = the 4 candidates; the top-2 lists hold {3, 4} and {0, 4}: 3 distinct items.
  EXPECT_NEAR(r.overall.at("coverage@2"), 0.75, kEps);

  // Without the restriction user 0 gets [1, 2] at k = 2 (1 relevant) and user 1 is evaluated.
  opt.candidate_items.clear();
  const EvalResult all = evaluate(model, train, test, nullptr, opt);
  EXPECT_EQ(all.n_users, 3u);
  EXPECT_NEAR(all.overall.at("hr@1"), 1.0 / 3.0, kEps);  // user 0's top-1 is item 1
}

// Two domains: items 0..4 "a", 5..9 "b".
//   user 0: train {0}, test {2, 7}; user 1: train {}, test {4} (no candidate: skipped).
// Candidates {0, 1, 2, 3, 7, 8}. Scores of user 0: item 1 .5, 2 .6, 3 .7, 4 .95, 7 .3, 8 .9, others 0.
// With more negatives asked than exist, every candidate negative is drawn:
//   target 2 vs {1, 3} (0 is seen, 4 is no candidate): rank 2; target 7 vs {8}: rank 2.
// So hr@1 = 0, hr@2 = 1, mrr@2 = 1/2, ndcg@2 = 1/log2(3) in both domains and overall.
// Without the restriction target 2 also meets item 4 (.95) and falls to rank 3: hr@2 = 0 in domain a.
TEST(Candidates, SampledHandComputed) {
  Matrix s(2, 10, 0.0f);
  s(0, 1) = .5f;
  s(0, 2) = .6f;
  s(0, 3) = .7f;
  s(0, 4) = .95f;
  s(0, 7) = .3f;
  s(0, 8) = .9f;
  FixedScores model(s);
  Dataset ds;
  ds.domains.get_or_add("a");
  ds.domains.get_or_add("b");
  ds.item_domain = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  const Csr train = make_csr(2, 10, {{0}, {}});
  const Csr test = make_csr(2, 10, {{2, 7}, {4}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {1, 2};
  opt.sampled_negatives = 50;
  opt.candidate_items = {1, 1, 1, 1, 0, 0, 0, 1, 1, 0};
  const EvalResult r = evaluate(model, train, test, &ds, opt);
  EXPECT_EQ(r.n_users, 1u);
  for (const MetricMap* m : {&r.overall, &r.by_domain.at("a"), &r.by_domain.at("b")}) {
    EXPECT_NEAR(m->at("hr@1"), 0.0, kEps);
    EXPECT_NEAR(m->at("hr@2"), 1.0, kEps);
    EXPECT_NEAR(m->at("mrr@2"), 0.5, kEps);
    EXPECT_NEAR(m->at("ndcg@2"), kL3, kEps);
  }

  opt.candidate_items.clear();
  const EvalResult all = evaluate(model, train, test, &ds, opt);
  // User 1 is evaluated now: target 4 vs {0, 1, 2, 3}, all scores 0, ties to the lower index: rank 5.
  EXPECT_EQ(all.n_users, 2u);
  // In domain a user 0's target 2 meets {1, 3, 4}: rank 3. Neither user has a hit in the top 2.
  EXPECT_NEAR(all.by_domain.at("a").at("hr@2"), 0.0, kEps);
  EXPECT_NEAR(all.by_domain.at("a").at("mrr@2"), 0.0, kEps);
}

// Full ranking per domain with candidates: the per-domain lists hold candidates of that domain only.
TEST(Candidates, FullPerDomainHandComputed) {
  // Items 0..3 "a", 4..7 "b"; one user, train {}, test {1, 6}; candidates {1, 2, 6, 7}.
  // Scores: 0 .9, 1 .2, 2 .3, 3 .8, 4 .95, 5 .85, 6 .1, 7 .4.
  // Domain a: [2, 1] -> relevant 1 at rank 2; domain b: [7, 6] -> relevant 6 at rank 2.
  // Overall: 7 (.4), 2 (.3), 1 (.2), 6 (.1): no hit in the top 2, hits at ranks 3 and 4.
  FixedScores model(make_scores({{.9f, .2f, .3f, .8f, .95f, .85f, .1f, .4f}}));
  Dataset ds;
  ds.domains.get_or_add("a");
  ds.domains.get_or_add("b");
  ds.item_domain = {0, 0, 0, 0, 1, 1, 1, 1};
  const Csr train = make_csr(1, 8, {{}});
  const Csr test = make_csr(1, 8, {{1, 6}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {2, 4};
  opt.candidate_items = {0, 1, 1, 0, 0, 0, 1, 1};
  const EvalResult r = evaluate(model, train, test, &ds, opt);
  EXPECT_NEAR(r.by_domain.at("a").at("mrr@2"), 0.5, kEps);
  EXPECT_NEAR(r.by_domain.at("b").at("mrr@2"), 0.5, kEps);
  EXPECT_NEAR(r.overall.at("hr@2"), 0.0, kEps);
  EXPECT_NEAR(r.overall.at("recall@4"), 1.0, kEps);
  // DCG@4 = 1/log2(4) + 1/log2(5) at ranks 3 and 4; IDCG@4 = 1 + 1/log2(3).
  EXPECT_NEAR(r.overall.at("ndcg@4"), (0.5 + 1.0 / std::log2(5.0)) / (1.0 + kL3), kEps);
  EXPECT_NEAR(r.by_domain.at("a").at("coverage@2"), 1.0, kEps);  // both candidates of a are listed
}

// Restricting to candidates gives the same metrics as evaluating a model on the candidate columns only.
TEST(Candidates, SameAsRemovingNonCandidateColumns) {
  const uint32_t n_users = 40, n_items = 60;
  Rng rng(7);
  Matrix s(n_users, n_items);
  for (float& x : s.data) x = static_cast<float>(rng.below(20)) / 20.0f;  // many ties
  std::vector<uint8_t> cand(n_items);
  std::vector<uint32_t> new_index(n_items, 0);
  uint32_t n_cand = 0;
  for (uint32_t i = 0; i < n_items; ++i) {
    cand[i] = rng.below(3) != 0;
    if (cand[i]) new_index[i] = n_cand++;
  }
  std::vector<std::vector<uint32_t>> tr(n_users), te(n_users), tr_c(n_users), te_c(n_users);
  for (uint32_t u = 0; u < n_users; ++u)
    for (uint32_t i = 0; i < n_items; ++i) {
      const uint64_t x = rng.below(10);
      if (x < 2) {
        tr[u].push_back(i);
        if (cand[i]) tr_c[u].push_back(new_index[i]);
      } else if (x < 3) {
        te[u].push_back(i);
        if (cand[i]) te_c[u].push_back(new_index[i]);
      }
    }
  Matrix s_c(n_users, n_cand);
  for (uint32_t u = 0; u < n_users; ++u)
    for (uint32_t i = 0; i < n_items; ++i)
      if (cand[i]) s_c(u, new_index[i]) = s(u, i);
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {1, 5, 10};
  opt.threads = 2;
  opt.candidate_items = cand;
  const EvalResult a =
      evaluate(FixedScores(s), make_csr(n_users, n_items, tr), make_csr(n_users, n_items, te), nullptr, opt);
  opt.candidate_items.clear();
  const EvalResult b = evaluate(FixedScores(s_c), make_csr(n_users, n_cand, tr_c),
                                make_csr(n_users, n_cand, te_c), nullptr, opt);
  EXPECT_EQ(a.n_users, b.n_users);
  ASSERT_EQ(a.overall.size(), b.overall.size());
  for (const auto& [k, v] : b.overall) EXPECT_NEAR(a.overall.at(k), v, 1e-12) << k;
}

TEST(Candidates, AllOnesIsNoRestriction) {
  Matrix s(5, 8);
  Rng rng(3);
  for (float& x : s.data) x = static_cast<float>(rng.uniform());
  const Csr train = make_csr(5, 8, {{0}, {1, 2}, {}, {7}, {3}});
  const Csr test = make_csr(5, 8, {{4, 5}, {0}, {6}, {}, {1, 2}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.ks = {3};
  for (size_t neg : {size_t{0}, size_t{3}}) {
    opt.sampled_negatives = neg;
    opt.candidate_items.clear();
    const EvalResult a = evaluate(FixedScores(s), train, test, nullptr, opt);
    opt.candidate_items.assign(8, 1);
    const EvalResult b = evaluate(FixedScores(s), train, test, nullptr, opt);
    EXPECT_EQ(a.overall, b.overall);
  }
}

TEST(Candidates, WrongSizeIsAnError) {
  FixedScores model(Matrix(1, 4, 0.0f));
  const Csr train = make_csr(1, 4, {{}});
  const Csr test = make_csr(1, 4, {{1}});
  EvalOptions opt;
  opt.ties = Ties::kLowerIndex;  // hand-computed lists: equal scores in index order
  opt.candidate_items = {1, 1};
  try {
    evaluate(model, train, test, nullptr, opt);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("candidate_items has 2 entries but there are 4 items"),
              std::string::npos)
        << e.what();
  }
}
