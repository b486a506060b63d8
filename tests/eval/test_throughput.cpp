// Evaluation throughput on a fake factor model whose score() is one GEMM per block of users (cblas_sgemm),
// as in the real factor models. The full-size measurement (100k users x 50k items, 64 factors) is disabled
// by default; run it with
//   eval_test_throughput --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
// Sizes can be changed with XDREC_EVAL_BENCH_USERS / XDREC_EVAL_BENCH_ITEMS / XDREC_EVAL_BENCH_THREADS;
// XDREC_EVAL_BENCH_ONLY=0|1|2 runs one of the evaluations (full, full per domain, sampled).
// The small enabled test only checks that the fake model and the evaluator agree with a direct computation.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "xdrec/metrics.h"
#include "xdrec/rank.h"

extern "C" {
// CBLAS (OpenBLAS) entry points, declared here so that the test needs no BLAS header.
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int n);
}

using namespace xdrec;

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

class FactorModel : public Recommender {
 public:
  FactorModel(uint32_t n_users, uint32_t n_items, uint32_t dim, uint64_t seed)
      : nu_(n_users), ni_(n_items), dim_(dim), u_(n_users, dim), v_(n_items, dim) {
    Rng rng(seed);
    for (auto& x : u_.data) x = rng.normal();
    for (auto& x : v_.data) x = rng.normal();
  }
  std::string name() const override { return "factors"; }
  std::string spec() const override { return "factors"; }
  void fit(const Csr&, const FitContext&) override {}
  uint32_t n_users() const override { return nu_; }
  uint32_t n_items() const override { return ni_; }
  void score(std::span<const uint32_t> users, Matrix& out, int) const override {
    Matrix ub(users.size(), dim_);
    for (size_t r = 0; r < users.size(); ++r) std::copy(u_.row(users[r]), u_.row(users[r]) + dim_, ub.row(r));
    out.rows = users.size();
    out.cols = ni_;
    out.data.resize(out.rows * out.cols);  // every entry is written by the GEMM (beta = 0)
    cblas_sgemm(kRowMajor, kNoTrans, kTrans, static_cast<int>(users.size()), static_cast<int>(ni_),
                static_cast<int>(dim_), 1.0f, ub.data.data(), static_cast<int>(dim_), v_.data.data(),
                static_cast<int>(dim_), 0.0f, out.data.data(), static_cast<int>(ni_));
  }
  uint32_t fold_in(uint32_t, std::span<const uint32_t>, std::span<const float>) override {
    throw Error("factors: no fold-in");
  }
  void save(TensorMap&, nlohmann::json&) const override {}
  void load(const TensorMap&, const nlohmann::json&) override {}

 private:
  uint32_t nu_, ni_, dim_;
  Matrix u_, v_;
};

// Returns precomputed rows (row u % n_rows of a random matrix): isolates the evaluator's own cost.
class CopyModel : public Recommender {
 public:
  CopyModel(uint32_t n_users, uint32_t n_items, uint32_t n_rows, uint64_t seed)
      : nu_(n_users), ni_(n_items), rows_(n_rows, n_items) {
    Rng rng(seed);
    for (auto& x : rows_.data) x = rng.normal();
  }
  std::string name() const override { return "copy"; }
  std::string spec() const override { return "copy"; }
  void fit(const Csr&, const FitContext&) override {}
  uint32_t n_users() const override { return nu_; }
  uint32_t n_items() const override { return ni_; }
  void score(std::span<const uint32_t> users, Matrix& out, int) const override {
    out.rows = users.size();
    out.cols = ni_;
    out.data.resize(out.rows * out.cols);
    for (size_t r = 0; r < users.size(); ++r) {
      const float* src = rows_.row(users[r] % rows_.rows);
      std::copy(src, src + ni_, out.row(r));
    }
  }
  uint32_t fold_in(uint32_t, std::span<const uint32_t>, std::span<const float>) override {
    throw Error("copy: no fold-in");
  }
  void save(TensorMap&, nlohmann::json&) const override {}
  void load(const TensorMap&, const nlohmann::json&) override {}

 private:
  uint32_t nu_, ni_;
  Matrix rows_;
};

struct Interactions {
  Csr train, test;
};

Interactions random_interactions(uint32_t n_users, uint32_t n_items, uint32_t per_user_train,
                                 uint32_t per_user_test, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint32_t> r, c, r2, c2;
  for (uint32_t u = 0; u < n_users; ++u) {
    for (uint32_t j = 0; j < per_user_train; ++j) {
      r.push_back(u);
      c.push_back(static_cast<uint32_t>(rng.below(n_items)));
    }
    for (uint32_t j = 0; j < per_user_test; ++j) {
      r2.push_back(u);
      c2.push_back(static_cast<uint32_t>(rng.below(n_items)));
    }
  }
  std::vector<float> v(r.size(), 1.0f), v2(r2.size(), 1.0f);
  Interactions out{Csr::from_triplets(n_users, n_items, r, c, v),
                   Csr::from_triplets(n_users, n_items, r2, c2, v2)};
  // Drop test items that collide with a training item of the same user (keeps the split leak-free).
  std::vector<uint32_t> tr, tc;
  for (uint32_t u = 0; u < n_users; ++u)
    for (uint32_t i : out.test.row_indices(u))
      if (!out.train.contains(u, i)) {
        tr.push_back(u);
        tc.push_back(i);
      }
  std::vector<float> tv(tr.size(), 1.0f);
  out.test = Csr::from_triplets(n_users, n_items, tr, tc, tv);
  return out;
}

uint32_t env_or(const char* name, uint32_t fallback) {
  const char* v = std::getenv(name);
  return v ? static_cast<uint32_t>(std::stoul(v)) : fallback;
}

}  // namespace

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

TEST(EvalThroughput, DISABLED_Throughput) {
  const uint32_t n_users = env_or("XDREC_EVAL_BENCH_USERS", 100000);
  const uint32_t n_items = env_or("XDREC_EVAL_BENCH_ITEMS", 50000);
  const int threads = static_cast<int>(env_or("XDREC_EVAL_BENCH_THREADS", 2));
  openblas_set_num_threads(1);  // the evaluator parallelises over blocks of users
  Timer setup;
  FactorModel model(n_users, n_items, 64, 1);
  const Interactions data = random_interactions(n_users, n_items, 20, 5, 2);
  Dataset ds;
  ds.domains.get_or_add("a");
  ds.domains.get_or_add("b");
  ds.item_domain.resize(n_items);
  for (uint32_t i = 0; i < n_items; ++i) ds.item_domain[i] = i % 2;
  std::printf(
      "setup %.1f s: %u users x %u items, 64 factors, %zu train / %zu test interactions, %d threads\n",
      setup.seconds(), n_users, n_items, data.train.nnz(), data.test.nnz(), threads);

  // Scoring alone (the same blocks as the evaluator, same threads): the floor for any evaluation.
  {
    const size_t block = std::clamp<size_t>((size_t{4} << 20) / n_items, 8, 512);
    std::vector<uint32_t> users(n_users);
    for (uint32_t u = 0; u < n_users; ++u) users[u] = u;
    const size_t n_blocks = (n_users + block - 1) / block;
    std::atomic<size_t> next{0};
    Timer t;
    const std::clock_t c0 = std::clock();
    parallel_for(static_cast<size_t>(threads), threads, 1, [&](size_t, size_t) {
      Matrix out;
      for (size_t b; (b = next.fetch_add(1)) < n_blocks;) {
        const size_t lo = b * block, hi = std::min<size_t>(n_users, lo + block);
        model.score(std::span<const uint32_t>(users).subspan(lo, hi - lo), out, 1);
      }
    });
    const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    std::printf("score only (GEMM):               %6.1f s  %8.0f users/s  (CPU %6.1f s: %6.1f us/user)\n",
                t.seconds(), n_users / t.seconds(), cpu, 1e6 * cpu / n_users);
  }
  EvalOptions opt;
  opt.ks = {10, 20};
  opt.threads = threads;
  // XDREC_EVAL_BENCH_ONLY=0/1/2 runs one variant (for profiling). The second pass uses precomputed score
  // rows (copied, no GEMM): the evaluator's own cost.
  const int only = static_cast<int>(env_or("XDREC_EVAL_BENCH_ONLY", 99));
  const CopyModel copy(n_users, n_items, 512, 3);
  // XDREC_EVAL_BENCH_MODELS=1: GEMM model only, 2: precomputed rows only, 3: both.
  const uint32_t models = env_or("XDREC_EVAL_BENCH_MODELS", 3);
  for (const Recommender* m :
       {static_cast<const Recommender*>(&model), static_cast<const Recommender*>(&copy)}) {
    if (!(models & (m == &model ? 1u : 2u))) continue;
    std::printf("%s\n", m == &model ? "GEMM model:" : "precomputed rows (evaluator cost only):");
    for (int variant = 0; variant < 3; ++variant) {
      if (only != 99 && variant != only) continue;
      opt.per_domain = variant == 1;
      opt.sampled_negatives = variant == 2 ? 100 : 0;
      const std::clock_t c0 = std::clock();
      const EvalResult r = evaluate(*m, data.train, data.test, variant == 0 ? nullptr : &ds, opt);
      const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      const char* label = variant == 0   ? "  evaluate full, 1 domain:    "
                          : variant == 1 ? "  evaluate full, 2 domains:   "
                                         : "  evaluate sampled (100 neg.):";
      std::printf("%s %6.1f s  %8.0f users/s  (CPU %6.1f s: %6.1f us/user)  ndcg@10 %.5f\n", label, r.seconds,
                  r.n_users / r.seconds, cpu, 1e6 * cpu / r.n_users, r.overall.at("ndcg@10"));
    }
  }
}
