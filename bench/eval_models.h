// Fake models and random interactions for measuring the evaluator (bench/eval_throughput.cpp); the test
// tests/eval/test_throughput.cpp checks that they and the evaluator agree with a direct computation.
//   FactorModel: score() is one GEMM per block of users (cblas_sgemm), as in the real factor models.
//   CopyModel:   returns precomputed rows (row u % n_rows of a random matrix): isolates the evaluator's cost.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xdrec/recommender.h"

extern "C" {
// CBLAS (OpenBLAS) entry points, declared here so that users need no BLAS header.
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int n);
}

namespace xdrec::eval_bench {

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
    constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
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

// Uniformly random items per user; test items that collide with a training item of the same user are dropped
// (the split stays leak-free).
inline Interactions random_interactions(uint32_t n_users, uint32_t n_items, uint32_t per_user_train,
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

}  // namespace xdrec::eval_bench
