// The fake factor model of bench/eval_throughput (score() is one GEMM per block of users, as in the real
// factor models) and the evaluator agree with a direct computation. The throughput measurement itself is
// bench/eval_throughput.
#include <gtest/gtest.h>

#include <vector>

#include "../../bench/eval_models.h"
#include "xdrec/metrics.h"
#include "xdrec/rank.h"

using namespace xdrec;
using namespace xdrec::eval_bench;

TEST(EvalThroughput, FactorModelMatchesDirectScores) {
  openblas_set_num_threads(1);
  FactorModel model(300, 500, 16, 1);
  const Interactions data = random_interactions(300, 500, 10, 3, 2);
  EvalOptions opt;
  opt.ks = {10};
  opt.threads = 2;
  opt.block_users = 64;
  const EvalResult r = evaluate(model, data.train, data.test, nullptr, opt);
  // Direct: score one user at a time, top_k, NDCG.
  double ndcg = 0;
  size_t n = 0;
  Matrix row;
  for (uint32_t u = 0; u < 300; ++u) {
    if (data.test.row_size(u) == 0) continue;
    const uint32_t users[1] = {u};
    model.score(users, row, 1);
    std::vector<uint32_t> l;
    for (auto& s : top_k(row.row(0), 500, 10, data.train.row_indices(u), {}, -1)) l.push_back(s.item);
    ndcg += ndcg_at_k(l, data.test.row_indices(u), 10);
    ++n;
  }
  EXPECT_EQ(r.n_users, n);
  EXPECT_NEAR(r.overall.at("ndcg@10"), ndcg / n, 1e-12);
}
